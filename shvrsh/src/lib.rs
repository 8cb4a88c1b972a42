//! shvrsh
