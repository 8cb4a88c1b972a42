//! `tunnel`: where tunnel ends reach this broker, and the recording and audit of the
//! sessions it hosts.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TunnelConfig {
    /// `host:port`, or a URL (`ssl://host:3756`, `wss://host/shv`), at which a tunnel end
    /// (shvrexec) can reach this broker; tunnels are hosted by the nearest broker to the
    /// operator that has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_address: Option<String>,
    /// Seconds a tunnel secret stays valid.
    #[serde(with = "super::seconds")]
    pub secret_ttl: Duration,
    /// Record every tunnel hosted here into this directory (asciicast v2, one file per
    /// session, named in the audit entry).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_dir: Option<std::path::PathBuf>,
    /// Record what the operator types too (off by default: it may hold passwords).
    pub record_input: bool,
    /// Bytes one recording may take on disk; then it ends with a marker event
    /// (0: no cap).
    pub record_max_bytes: u64,
    /// Bytes all recordings in `record_dir` may take together (0: no cap).
    pub record_dir_max_bytes: u64,
    /// What happens when `record_dir` is at its cap: `delete_oldest` finished
    /// recordings, or `refuse` to record new sessions (they still run; the audit says
    /// they were not recorded).
    pub record_when_full: WhenFull,
    /// JSON lines of every session's open and close (who, from where, what, bytes each
    /// way, exit status, recording file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_log: Option<std::path::PathBuf>,
    /// Also write open and close lines for sessions hosted by brokers below this one
    /// (learnt from their session signals; with `host`, the hosting broker's path).
    pub audit_below: bool,
}

/// `tunnel.record_when_full`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    #[default]
    DeleteOldest,
    Refuse,
}

/// What the recorder may put on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordLimits {
    pub max_bytes: u64,
    pub dir_max_bytes: u64,
    pub when_full: WhenFull,
}

impl TunnelConfig {
    pub fn record_limits(&self) -> RecordLimits {
        RecordLimits {
            max_bytes: self.record_max_bytes,
            dir_max_bytes: self.record_dir_max_bytes,
            when_full: self.record_when_full,
        }
    }
}

impl Default for TunnelConfig {
    fn default() -> Self {
        TunnelConfig {
            public_address: None,
            secret_ttl: Duration::from_secs(10),
            record_dir: None,
            record_input: false,
            record_max_bytes: 64 * 1024 * 1024,
            record_dir_max_bytes: 1024 * 1024 * 1024,
            record_when_full: WhenFull::default(),
            audit_log: None,
            audit_below: false,
        }
    }
}

/// Parses `tunnel.public_address`: `host:port` (plain TCP) or a network transport URL
/// without user or options.
pub fn public_tunnel_address(a: &str) -> anyhow::Result<libshv::url::Transport> {
    if a.contains("://") {
        return libshv::tunnel::parse_tunnel_address(a, None)
            .map_err(|e| anyhow::anyhow!("tunnel.public_address: {e}"));
    }
    match a.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() => match p.parse::<u16>() {
            Ok(port) => Ok(libshv::url::Transport::tcp(
                h.trim_start_matches('[').trim_end_matches(']'),
                port,
            )),
            Err(_) => anyhow::bail!("tunnel.public_address '{a}' must be host:port or a URL"),
        },
        _ => anyhow::bail!("tunnel.public_address '{a}' must be host:port or a URL"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_tunnel_address_is_host_port_or_a_network_url() {
        let t = public_tunnel_address("central.example:3755").unwrap();
        assert_eq!(t.to_string(), "tcp://central.example:3755");
        let t = public_tunnel_address("ssl://central.example:3756").unwrap();
        assert_eq!(t.to_string(), "ssl://central.example:3756");
        for bad in ["nohost", ":3755", "h:x", "unix:/x", "ssl://u@h?password=p"] {
            assert!(public_tunnel_address(bad).is_err(), "{bad}");
        }
    }
}
