//! `connections`: the parent brokers this broker logs in to as a device.

use std::time::Duration;

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
    #[serde(default = "default_heartbeat", with = "super::seconds")]
    pub heartbeat: Duration,
    /// Maximum reconnect back-off in seconds.
    #[serde(default = "default_reconnect", with = "super::seconds")]
    pub reconnect_max: Duration,
}

fn default_heartbeat() -> Duration {
    Duration::from_secs(60)
}
fn default_reconnect() -> Duration {
    Duration::from_secs(30)
}
