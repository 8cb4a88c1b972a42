//! What connection tasks tell the broker task, the one owner of broker state.

use std::time::Duration;

use libshv::message::RpcError;
use libshv::RpcFrame;
use tokio::sync::{oneshot, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;

use crate::access::Grants;
use crate::peers::PeerId;
use crate::queue::QueueSender;

/// Messages from connections to the broker task (the one owner of broker state).
pub enum Event {
    /// Boxed: it is rare, and the event channel's slots are sized by the largest event.
    Register(Box<Registration>, oneshot::Sender<Result<(), RpcError>>),
    /// A frame and its share of the in-flight byte budget, given back once the broker
    /// task has dealt with it.
    Frame(PeerId, RpcFrame, OwnedSemaphorePermit),
    Gone(PeerId),
    /// A parent link (by index in `connections`) changed state.
    Link(usize, LinkStatus),
}

pub struct Registration {
    pub id: PeerId,
    pub login: LoginInfo,
    pub tx: QueueSender,
    pub cancel: CancellationToken,
    pub addr: String,
    /// The idle watchdog in force for this client (None: off).
    pub idle_timeout: Option<Duration>,
    /// The meta of the `login` request: the broker task answers it, so that the login
    /// response reaches the peer before anything the broker sends it after mounting.
    pub login_request: Option<shvproto::MetaMap>,
}

pub enum LoginInfo {
    User {
        user: String,
        grants: Grants,
        device_id: Option<String>,
        mount_point: Option<String>,
        user_agent: Option<String>,
    },
    /// A tunnel end (shvrexec) logging in with a one-time secret.
    Tunnel { secret: String },
    /// Our link to a parent broker (we logged in there as a device).
    Parent { link: usize, url: String },
}

/// Link state changes reported to the broker task (shown by `.broker:parents`).
#[derive(Debug, Clone)]
pub enum LinkStatus {
    Connected { peer: i64 },
    Disconnected { error: String },
}
