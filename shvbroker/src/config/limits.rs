//! `limits`: the bounds on frames, queues, subscriptions, logins and timeouts that keep
//! one peer from exhausting the broker.

use serde::{Deserialize, Serialize};
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest accepted frame in bytes; bigger frames are drained and refused.
    #[serde(default = "default_max_frame")]
    pub max_frame_size: usize,
    /// Frames queued to one client before it is disconnected as too slow.
    #[serde(default = "default_queue")]
    pub client_queue: usize,
    /// Bytes queued to one client before it is disconnected as too slow.
    #[serde(default = "default_queue_bytes")]
    pub client_queue_bytes: usize,
    /// Bytes queued to all clients together; past it, clients whose queue holds more
    /// than an eighth of `client_queue_bytes` are disconnected as too slow.
    #[serde(default = "default_outgoing_bytes")]
    pub outgoing_bytes: usize,
    /// Bytes of received frames waiting for the broker task, all clients together;
    /// readers pause when it is used up.
    #[serde(default = "default_inflight_bytes")]
    pub inflight_bytes: usize,
    /// Subscriptions one client may hold.
    #[serde(default = "default_max_subscriptions")]
    pub max_subscriptions: usize,
    /// Bytes of subscriptions (each RI's length plus 64) one user may hold over all of
    /// its connections: every signal is matched against every subscription.
    #[serde(default = "default_max_subscription_bytes_per_user")]
    pub max_subscription_bytes_per_user: usize,
    /// Longest RI (in bytes) of a subscription or access rule a client may send.
    #[serde(default = "default_max_ri_len")]
    pub max_ri_len: usize,
    /// Requests one client may have waiting for an answer; more are refused.
    #[serde(default = "default_max_pending")]
    pub max_pending: usize,
    /// Requests one user may have waiting over all of its connections.
    #[serde(default = "default_max_pending_per_user")]
    pub max_pending_per_user: usize,
    /// Largest request body (bytes) the broker decodes for its own methods.
    #[serde(default = "default_local_param_size")]
    pub local_param_size: usize,
    /// Failed logins on one connection before it is closed.
    #[serde(default = "default_login_attempts")]
    pub login_attempts: u32,
    /// Seconds a new connection has to complete login.
    #[serde(default = "default_login_timeout")]
    pub login_timeout: u64,
    /// Default idle watchdog in seconds (a client may ask for another value at login).
    #[serde(default = "default_idle")]
    pub idle_timeout: u64,
    /// The longest idle watchdog a client may ask for, in seconds: a client asking for
    /// none (`idleWatchDogTimeOut: 0`) or a longer one gets this.
    #[serde(default = "default_max_idle")]
    pub max_idle_timeout: u64,
    /// Bytes of frames being read (announced, not yet whole) all connections together
    /// may hold; frames beyond 64 KiB wait for their share before they are read.
    #[serde(default = "default_read_bytes")]
    pub read_bytes: usize,
    /// The same for the connections of one user together (tunnel ends: of one address).
    #[serde(default = "default_read_bytes_per_user")]
    pub read_bytes_per_user: usize,
    /// Seconds a frame beyond 64 KiB may take to arrive whole once it waits for or holds
    /// its share of `read_bytes`; then its connection is closed.
    #[serde(default = "default_frame_timeout")]
    pub frame_timeout: u64,
    /// Seconds a connection's socket may take no bytes while frames wait for it; then
    /// it is closed and its queue freed (0: never).
    #[serde(default = "default_write_stall_timeout")]
    pub write_stall_timeout: u64,
    /// Connections in all, logged in or not; more are closed at once. 0: as many as
    /// the open-files limit allows, less 256 kept for the broker's own files.
    #[serde(default)]
    pub max_connections: usize,
    /// Logged-in connections of one user (0: no limit); a user's own `max_sessions`
    /// overrides it (e.g. for a fleet of devices sharing one login).
    #[serde(default = "default_max_sessions_per_user")]
    pub max_sessions_per_user: usize,
    /// Connections that have not logged in yet, in all; more are closed at once.
    #[serde(default = "default_max_unauthenticated")]
    pub max_unauthenticated: usize,
    /// The same, per source address.
    #[serde(default = "default_max_unauthenticated_per_address")]
    pub max_unauthenticated_per_address: usize,
}

fn default_max_sessions_per_user() -> usize {
    4096
}
fn default_write_stall_timeout() -> u64 {
    60
}
fn default_max_unauthenticated() -> usize {
    512
}
fn default_max_unauthenticated_per_address() -> usize {
    128
}

fn default_max_frame() -> usize {
    libshv::codec::DEFAULT_MAX_FRAME
}
fn default_queue() -> usize {
    4096
}
fn default_queue_bytes() -> usize {
    32 * 1024 * 1024
}
fn default_outgoing_bytes() -> usize {
    1024 * 1024 * 1024
}
fn default_inflight_bytes() -> usize {
    64 * 1024 * 1024
}
fn default_max_subscriptions() -> usize {
    1024
}
fn default_max_subscription_bytes_per_user() -> usize {
    256 * 1024
}
fn default_max_ri_len() -> usize {
    1024
}
fn default_max_pending() -> usize {
    1024
}
fn default_max_pending_per_user() -> usize {
    8192
}
fn default_local_param_size() -> usize {
    64 * 1024
}
fn default_login_attempts() -> u32 {
    3
}
fn default_login_timeout() -> u64 {
    30
}
fn default_idle() -> u64 {
    180
}
fn default_max_idle() -> u64 {
    3600
}
fn default_read_bytes() -> usize {
    256 * 1024 * 1024
}
fn default_read_bytes_per_user() -> usize {
    32 * 1024 * 1024
}
fn default_frame_timeout() -> u64 {
    60
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_size: default_max_frame(),
            client_queue: default_queue(),
            client_queue_bytes: default_queue_bytes(),
            inflight_bytes: default_inflight_bytes(),
            outgoing_bytes: default_outgoing_bytes(),
            max_subscriptions: default_max_subscriptions(),
            max_subscription_bytes_per_user: default_max_subscription_bytes_per_user(),
            max_ri_len: default_max_ri_len(),
            max_pending: default_max_pending(),
            max_pending_per_user: default_max_pending_per_user(),
            local_param_size: default_local_param_size(),
            login_attempts: default_login_attempts(),
            login_timeout: default_login_timeout(),
            idle_timeout: default_idle(),
            max_idle_timeout: default_max_idle(),
            read_bytes: default_read_bytes(),
            read_bytes_per_user: default_read_bytes_per_user(),
            frame_timeout: default_frame_timeout(),
            write_stall_timeout: default_write_stall_timeout(),
            max_connections: 0,
            max_sessions_per_user: default_max_sessions_per_user(),
            max_unauthenticated: default_max_unauthenticated(),
            max_unauthenticated_per_address: default_max_unauthenticated_per_address(),
        }
    }
}
