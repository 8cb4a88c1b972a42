//! shvbench: load generator and side-by-side benchmarks for SHV 3 brokers.
//!
//! - [`scenarios`]: `rpc` (N callers → a mounted device), `fanout` (1 device → M
//!   subscribers), `idle` (K logged-in clients, broker RSS per client);
//! - [`tunnel`]: bulk bytes and keystroke echo through shvrsh → tunnel → shvrexec
//!   (our broker only), with the raw relay as the bulk baseline;
//! - [`relay`]: the raw frame relay used as the "physical limit" baseline;
//! - [`brokers`]: starting ours, the crates.io Rust shvbroker and pyshv with
//!   equivalent generated configs;
//! - [`compare`]: rounds over all of them and the Markdown table;
//! - [`smoke`]: each scenario for about a second, to keep the tool working in CI.

pub(crate) mod brokers;
mod cli;
mod commands;
pub(crate) mod compare;
pub(crate) mod files;
pub(crate) mod proto;
pub(crate) mod relay;
pub(crate) mod scenarios;
mod smoke;
pub(crate) mod ssh;
pub(crate) mod stats;
pub(crate) mod table;
pub(crate) mod transports;
pub(crate) mod tree;
pub mod tunnel;

pub use cli::{Cli, Command, CompareArgs, TargetArgs, TreeArgs, TunnelArgs};
pub use commands::run;
pub use smoke::{smoke, SmokeReport};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("login to {0} failed: {1}")]
    Login(String, String),
    #[error("I/O: {0}")]
    Io(String),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("RPC: {0}")]
    Rpc(String),
    #[error("timeout: {0}")]
    Timeout(String),
    #[error("connection closed")]
    Closed,
    #[error("config: {0}")]
    Config(String),
}

/// Raises the open-files soft limit to the hard limit (children inherit it, so the
/// brokers `compare` starts can hold as many sockets as the idle scenario opens).
pub fn raise_nofile_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!("cannot raise the open-files limit: {e}");
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .map(|(soft, _)| soft)
                .unwrap_or(1024)
        }
    }
}
