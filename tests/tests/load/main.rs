//! Tests that load the machine (bounded resources under pressure, processes killed mid-session): a binary of their own, so that no other test shares the machine with them.

mod chaos;
mod resources;
