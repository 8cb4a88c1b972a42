//! `connections`: the parent brokers this broker logs in to as a device.

use serde::{Deserialize, Serialize};
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Connection {
    /// Parent broker URL (credentials included).
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_point: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// Seconds between heartbeats to the parent.
    #[serde(default = "default_heartbeat")]
    pub heartbeat: u64,
    /// Maximum reconnect back-off in seconds.
    #[serde(default = "default_reconnect")]
    pub reconnect_max: u64,
}

fn default_heartbeat() -> u64 {
    60
}
fn default_reconnect() -> u64 {
    30
}
