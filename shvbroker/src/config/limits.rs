//! `limits`: the bounds on frames, queues, subscriptions, logins and timeouts that keep
//! one peer from exhausting the broker.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest accepted frame in bytes; bigger frames are drained and refused.
    pub max_frame_size: usize,
    /// Frames queued to one client before it is disconnected as too slow.
    pub client_queue: usize,
    /// Bytes queued to one client before it is disconnected as too slow.
    pub client_queue_bytes: usize,
    /// Bytes queued to all clients together; past it, clients whose queue holds more
    /// than an eighth of `client_queue_bytes` are disconnected as too slow.
    pub outgoing_bytes: usize,
    /// Bytes of received frames waiting for the broker task, all clients together;
    /// readers pause when it is used up.
    pub inflight_bytes: usize,
    /// Subscriptions one client may hold.
    pub max_subscriptions: usize,
    /// Bytes of subscriptions (each RI's length plus 64) one user may hold over all of
    /// its connections: every signal is matched against every subscription.
    pub max_subscription_bytes_per_user: usize,
    /// Longest RI (in bytes) of a subscription or access rule a client may send.
    pub max_ri_len: usize,
    /// Requests one client may have waiting for an answer; more are refused.
    pub max_pending: usize,
    /// Requests one user may have waiting over all of its connections.
    pub max_pending_per_user: usize,
    /// Largest request body (bytes) the broker decodes for its own methods.
    pub local_param_size: usize,
    /// Failed logins on one connection before it is closed.
    pub login_attempts: u32,
    /// Seconds a new connection has to complete login.
    #[serde(with = "super::seconds")]
    pub login_timeout: Duration,
    /// Default idle watchdog in seconds (a client may ask for another value at login).
    #[serde(with = "super::seconds")]
    pub idle_timeout: Duration,
    /// The longest idle watchdog a client may ask for, in seconds: a client asking for
    /// none (`idleWatchDogTimeOut: 0`) or a longer one gets this.
    #[serde(with = "super::seconds")]
    pub max_idle_timeout: Duration,
    /// Bytes of frames being read (announced, not yet whole) all connections together
    /// may hold; frames beyond 64 KiB wait for their share before they are read.
    pub read_bytes: usize,
    /// The same for the connections of one user together (tunnel ends: of one address).
    pub read_bytes_per_user: usize,
    /// Seconds a frame beyond 64 KiB may take to arrive whole once it waits for or holds
    /// its share of `read_bytes`; then its connection is closed.
    #[serde(with = "super::seconds")]
    pub frame_timeout: Duration,
    /// Seconds a connection's socket may take no bytes while frames wait for it; then
    /// it is closed and its queue freed (0: never).
    #[serde(with = "super::seconds")]
    pub write_stall_timeout: Duration,
    /// Connections in all, logged in or not; more are closed at once. 0: as many as
    /// the open-files limit allows, less 256 kept for the broker's own files.
    pub max_connections: usize,
    /// Logged-in connections of one user (0: no limit); a user's own `max_sessions`
    /// overrides it (e.g. for a fleet of devices sharing one login).
    pub max_sessions_per_user: usize,
    /// Connections that have not logged in yet, in all; more are closed at once.
    pub max_unauthenticated: usize,
    /// The same, per source address.
    pub max_unauthenticated_per_address: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_size: libshv::codec::DEFAULT_MAX_FRAME,
            client_queue: 4096,
            client_queue_bytes: 32 * 1024 * 1024,
            outgoing_bytes: 1024 * 1024 * 1024,
            inflight_bytes: 64 * 1024 * 1024,
            max_subscriptions: 1024,
            max_subscription_bytes_per_user: 256 * 1024,
            max_ri_len: 1024,
            max_pending: 1024,
            max_pending_per_user: 8192,
            local_param_size: 64 * 1024,
            login_attempts: 3,
            login_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(180),
            max_idle_timeout: Duration::from_secs(3600),
            read_bytes: 256 * 1024 * 1024,
            read_bytes_per_user: 32 * 1024 * 1024,
            frame_timeout: Duration::from_secs(60),
            write_stall_timeout: Duration::from_secs(60),
            max_connections: 0,
            max_sessions_per_user: 4096,
            max_unauthenticated: 512,
            max_unauthenticated_per_address: 128,
        }
    }
}
