//! What the router decides for one frame. [`super::Broker::decide`] reads the state and
//! changes nothing; [`super::Broker::apply`] carries the decision out (queues, the
//! pending table, the tunnel table's counters, the broker's own API). Keeping the two
//! apart is what lets a test ask "what would happen to this frame?" and get an answer
//! it can compare, and lets a reader find every way a routed frame can go in one enum. (Tunnel control
//! frames are taken before routing, by `tunneling::intercept_tunnel`.)

use std::fmt;

use libshv::message::RpcError;
use libshv::{RpcFrame, RpcValue};
use shvproto::MetaMap;

use crate::peers::PeerId;
use crate::pending;

/// The fate of one frame from one peer.
#[derive(Debug)]
pub enum Decision {
    /// Send `frame` (its meta already rewritten: path made relative, access lowered,
    /// CallerIds pushed or popped) to `to`, and do `effect` alongside.
    Forward {
        to: PeerId,
        frame: RpcFrame,
        effect: Effect,
    },
    /// Answer the request from the broker's own tree at access `level`.
    Local {
        request: MetaMap,
        path: String,
        method: String,
        level: i64,
        param: Option<RpcValue>,
    },
    /// Answer the request with this error.
    Refuse { request: MetaMap, error: RpcError },
    /// A signal, its path already under the sender's mount: to every subscriber that
    /// may see it.
    Publish(RpcFrame),
    /// The answer to a request the broker sent on its own behalf (request id `rid`).
    OwnAnswer { rid: i64, frame: RpcFrame },
    /// Nothing is sent.
    Drop(Dropped),
}

/// Bookkeeping that goes with a forwarded frame.
#[derive(Debug)]
pub enum Effect {
    /// A request: remember it, so that exactly one answer is let back; a `launchRexec`
    /// keeps what the tunnel table will need, a `runCmd` (`run_cmd`: the agent's path)
    /// is audited as it passes.
    Expect {
        key: pending::Key,
        budget: pending::Budget,
        launch: Option<pending::Launch>,
        run_cmd: Option<String>,
    },
    /// A response: the pending request it answers is settled.
    Answer(pending::Key),
    /// Data of tunnel `tid`: counted (and recorded, if the tunnel is).
    TunnelData(u64),
}

/// Why a frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Neither request, response nor signal.
    NotAMessage,
    /// From a peer that is gone: its frames were on their way when it was removed.
    GoneSender,
    /// A response without CallerIds that answers nothing the broker asked.
    NoCallerIds,
    /// A parent's answer to our heartbeat ping: expected, and needs nothing.
    HeartbeatAnswer,
    /// A response to `target` (request id `rid`) that no pending request and no
    /// tunnel authorizes.
    Unsolicited { target: PeerId, rid: i64 },
    /// A signal from a client that has no mount point.
    UnmountedSignal,
    /// A signal whose path is not canonical or too long.
    BadSignalPath,
}

impl Dropped {
    /// Counted in `dropped_responses` (shown by the broker's API).
    pub fn is_response(self) -> bool {
        matches!(self, Dropped::NoCallerIds | Dropped::Unsolicited { .. })
    }

    /// The variant's name (the broker's tests compare it).
    #[cfg(test)]
    pub fn name(self) -> &'static str {
        match self {
            Dropped::NotAMessage => "NotAMessage",
            Dropped::GoneSender => "GoneSender",
            Dropped::NoCallerIds => "NoCallerIds",
            Dropped::HeartbeatAnswer => "HeartbeatAnswer",
            Dropped::Unsolicited { .. } => "Unsolicited",
            Dropped::UnmountedSignal => "UnmountedSignal",
            Dropped::BadSignalPath => "BadSignalPath",
        }
    }
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dropped::NotAMessage => "frame that is neither request, response nor signal",
            Dropped::GoneSender => "frame from a peer that is gone",
            Dropped::NoCallerIds => "response without CallerIds",
            Dropped::HeartbeatAnswer => "answer to a heartbeat",
            Dropped::Unsolicited { .. } => "unsolicited response",
            Dropped::UnmountedSignal => "signal from an unmounted client",
            Dropped::BadSignalPath => "signal with a non-canonical or too long path",
        })
    }
}
