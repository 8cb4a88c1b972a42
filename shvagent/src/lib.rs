//! shvagent
