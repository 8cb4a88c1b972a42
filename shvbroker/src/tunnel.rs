//! The tunnel table (spec/tunnel.md): the tunnels this broker takes part in, their
//! one-time secrets, and the frames and audit lines that concern them. What the broker
//! does with tunnel frames is in `broker/tunneling.rs`.
//!
//! Every broker on the way from the tunnel's host to rsh keeps an entry: the host a
//! *hosted* one (rexec connects to it with the secret), the brokers above it a *transit*
//! one (their rexec side is the link the FindTunnelRequest came up by). An entry
//! authorizes exactly two flows: rexec side → rsh side with id R, and rsh side → rexec
//! side with id W. Brokers between the agent and the host only let the one
//! FindTunnelResponse back down.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use libshv::message::RpcMessage;
use libshv::meta::{self, tag};
use libshv::{RpcFrame, RpcValue};
use rand::RngCore;
use shvproto::{IMap, Map, MetaMap, Value};

use libshv::logsafe::shown;

use libshv::login::constant_time_eq;

use crate::peers::PeerId;
use crate::settings::SessionPolicy;

use libshv::tunnel::{tctl_key as key, TunnelState, TUNNEL_CTL_META_TYPE};

pub struct Tunnel {
    pub id: u64,
    /// Hosted here: rexec logs in to this broker with the secret.
    pub hosted: bool,
    /// The one-time secret (hosted only; cleared once presented).
    secret: String,
    /// Until when rexec may come (hosted) or CreateTunnelRequest pass (transit).
    deadline: Instant,
    /// The connection towards rsh, the CallerIds below it, and rsh's request id R.
    pub rsh_peer: PeerId,
    pub rsh_rest: Vec<i64>,
    pub request_id: i64,
    /// The connection the FindTunnelRequest came by (the agent, or a sub-broker).
    pub agent_side: PeerId,
    /// The connection towards rexec, the CallerIds below it, and rexec's request id W.
    pub rexec_peer: Option<PeerId>,
    pub rexec_rest: Vec<i64>,
    pub rexec_request_id: Option<i64>,
    pub agent_path: String,
    pub user: String,
    pub command: String,
    pub opened_at: SystemTime,
    pub last_activity: SystemTime,
    pub bytes_to_rsh: u64,
    pub bytes_to_rexec: u64,
    /// `shell`, `command`, `forward`, `copy` (for the audit trail).
    pub kind: &'static str,
    /// The terminal size the session started with.
    pub cols: u16,
    pub rows: u16,
    /// Where the operator's connection comes from (this broker's view).
    pub client_addr: String,
    /// The user this broker authenticated on the operator's connection.
    pub login: String,
    /// The session's recording file (hosted, with `tunnel.record_dir`).
    pub recording: Option<String>,
    /// The limits of the operator's roles, where this broker authenticated the
    /// operator (elsewhere none: the operator's own broker applies them).
    pub policy: SessionPolicy,
    /// When the tunnel opened and when a byte last went either way (the clocks of
    /// `policy`), and which warnings the operator has had since.
    pub opened: Instant,
    pub active_at: Instant,
    pub warned_idle: bool,
    pub warned_max: bool,
    /// The connections of a forward that are open (a forward carrying them is not
    /// idle), at most [`MAX_TRACKED_CONNS`], each with the directions that have
    /// ended (`ConnEof`: 1 towards the operator, 2 towards the device).
    pub open_conns: HashMap<u32, u8>,
}

/// Forward connections tracked per tunnel for the idle clock: past this many, more
/// are not recorded (an end cannot grow the table).
pub const MAX_TRACKED_CONNS: usize = 1024;

pub use crate::pending::Launch;

/// The tunnels this broker takes part in (hosted or transit) and the FindTunnel
/// responses it lets back down. Its invariants: a secret is used once and only before
/// its deadline; ids are never reused; at most [`MAX_TUNNELS_PER_PEER`] per operator
/// and per agent, [`MAX_TUNNELS_PER_LINK`] per connection.
pub struct Tunnels {
    open: HashMap<u64, Tunnel>,
    /// FindTunnelRequests forwarded up: (upstream peer, downstream peer, R) → how many
    /// and when the last went, so that exactly as many FindTunnelResponses may come
    /// back down (several operators' launches may share R on one link).
    find_pending: HashMap<(PeerId, PeerId, i64), (usize, Instant)>,
    next_id: u64,
    secret_ttl: Duration,
}

impl Tunnel {
    /// A new entry; `hosted` ones get a fresh secret, valid for the table's TTL.
    #[allow(clippy::too_many_arguments)]
    fn new(
        id: u64,
        hosted: bool,
        ttl: Duration,
        rsh_peer: PeerId,
        rsh_rest: Vec<i64>,
        request_id: i64,
        agent_side: PeerId,
        launch: Launch,
    ) -> Tunnel {
        let now = SystemTime::now();
        Tunnel {
            id,
            hosted,
            secret: if hosted { new_secret() } else { String::new() },
            deadline: Instant::now() + ttl,
            rsh_peer,
            rsh_rest,
            request_id,
            agent_side,
            // In transit, rexec's traffic comes up the link the request came by.
            rexec_peer: if hosted { None } else { Some(agent_side) },
            rexec_rest: Vec::new(),
            rexec_request_id: None,
            agent_path: launch.agent_path,
            user: launch.user,
            command: launch.command,
            kind: launch.kind,
            cols: launch.cols,
            rows: launch.rows,
            client_addr: String::new(),
            login: String::new(),
            recording: None,
            opened_at: now,
            last_activity: now,
            policy: SessionPolicy::default(),
            opened: Instant::now(),
            active_at: Instant::now(),
            warned_idle: false,
            warned_max: false,
            open_conns: HashMap::new(),
            bytes_to_rsh: 0,
            bytes_to_rexec: 0,
        }
    }

    /// The secret rexec logs in with (hosted, not yet presented).
    pub fn secret(&self) -> &str {
        &self.secret
    }
}

impl Tunnels {
    pub fn new(secret_ttl: Duration) -> Self {
        Tunnels {
            open: HashMap::new(),
            find_pending: HashMap::new(),
            next_id: 1,
            secret_ttl,
        }
    }

    /// Opens an entry for rsh's launch `request_id` (coming from `rsh_peer`, with
    /// `rsh_rest` below it; `relays`: that connection is our parent link, whose
    /// CallerIds name its operators truly) whose FindTunnelRequest came by
    /// `agent_side`. None when the operator, the agent or either connection already
    /// takes part in too many tunnels.
    pub fn open(
        &mut self,
        hosted: bool,
        (rsh_peer, relays): (PeerId, bool),
        rsh_rest: Vec<i64>,
        request_id: i64,
        agent_side: PeerId,
        launch: Launch,
    ) -> Option<&Tunnel> {
        // Counted per operator (its connection, and below a parent link the CallerIds
        // that name it: any other client could make those up) and per agent (the
        // connection and the path launched, which this broker routed): one link to a
        // parent or a child broker carries many of both, and one of them must not use
        // up the link's share. A link in all: MAX_TUNNELS_PER_LINK.
        let (mut rsh_link, mut rsh_mine, mut agent_link, mut agent_mine) = (0, 0, 0, 0);
        for t in self.open.values() {
            if t.rsh_peer == rsh_peer {
                rsh_link += 1;
                rsh_mine += usize::from(!relays || t.rsh_rest == rsh_rest);
            }
            if t.agent_side == agent_side {
                agent_link += 1;
                agent_mine += usize::from(t.agent_path == launch.agent_path);
            }
        }
        if rsh_mine >= MAX_TUNNELS_PER_PEER
            || agent_mine >= MAX_TUNNELS_PER_PEER
            || rsh_link >= MAX_TUNNELS_PER_LINK
            || agent_link >= MAX_TUNNELS_PER_LINK
        {
            return None;
        }
        let id = self.next_id;
        self.next_id += 1;
        let t = Tunnel::new(
            id,
            hosted,
            self.secret_ttl,
            rsh_peer,
            rsh_rest,
            request_id,
            agent_side,
            launch,
        );
        Some(self.open.entry(id).or_insert(t))
    }

    pub fn get(&self, id: u64) -> Option<&Tunnel> {
        self.open.get(&id)
    }

    pub fn get_mut(&mut self, id: u64) -> Option<&mut Tunnel> {
        self.open.get_mut(&id)
    }

    pub fn remove(&mut self, id: u64) -> Option<Tunnel> {
        self.open.remove(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Tunnel> {
        self.open.values()
    }

    /// The first tunnel `pred` accepts.
    pub fn find_mut(&mut self, pred: impl Fn(&Tunnel) -> bool) -> Option<&mut Tunnel> {
        self.open.values_mut().find(|t| pred(t))
    }

    /// The ids of the tunnels `pred` accepts.
    pub fn ids(&self, pred: impl Fn(&Tunnel) -> bool) -> Vec<u64> {
        self.open
            .values()
            .filter(|t| pred(t))
            .map(|t| t.id)
            .collect()
    }

    /// Tunnels whose rexec never connected by their deadline.
    pub fn overdue(&self, now: Instant) -> Vec<u64> {
        self.ids(|t| t.rexec_request_id.is_none() && t.deadline < now)
    }

    /// Notes a FindTunnelRequest forwarded up from `down` to `up` for R.
    pub fn note_find_pending(&mut self, up: PeerId, down: PeerId, rid: i64) {
        let e = self
            .find_pending
            .entry((up, down, rid))
            .or_insert((0, Instant::now()));
        e.0 += 1;
        e.1 = Instant::now();
    }

    /// Lets one FindTunnelResponse from `up` down to `down` for R pass.
    pub fn take_find_pending(&mut self, up: PeerId, down: PeerId, rid: i64) -> bool {
        let key = (up, down, rid);
        let Some(e) = self.find_pending.get_mut(&key) else {
            return false;
        };
        e.0 -= 1;
        if e.0 == 0 {
            self.find_pending.remove(&key);
        }
        true
    }

    /// Forgets FindTunnel responses that did not come back within a while, and those
    /// from or to a peer that is gone.
    pub fn expire_find_pending(&mut self, now: Instant, gone: Option<PeerId>) {
        let ttl = self.secret_ttl * 6;
        self.find_pending.retain(|(up, down, _), (_, t)| {
            now.duration_since(*t) < ttl && gone.is_none_or(|g| *up != g && *down != g)
        });
    }

    /// Accepts a tunnel secret once, before it expires; binds `peer` as the tunnel's rexec.
    pub fn claim_secret(&mut self, secret: &str, peer: PeerId) -> Option<u64> {
        let now = Instant::now();
        let t = self.open.values_mut().find(|t| {
            t.hosted
                && t.rexec_peer.is_none()
                && !t.secret.is_empty()
                && constant_time_eq(&t.secret, secret)
        })?;
        // Single use: forget the secret whether or not it is still valid.
        t.secret.clear();
        if t.deadline < now {
            return None;
        }
        t.rexec_peer = Some(peer);
        Some(t.id)
    }
}

pub(crate) fn tctl_of(frame: &RpcFrame) -> Option<IMap> {
    match &frame.tunnel_ctl()?.value {
        Value::IMap(m) => Some((**m).clone()),
        _ => None,
    }
}

pub(crate) fn tctl_state(frame: &RpcFrame) -> Option<TunnelState> {
    let state = frame.tunnel_ctl()?.get(key::STATE)?.as_int();
    TunnelState::try_from(state).ok()
}

pub(crate) fn tctl_value(m: IMap) -> RpcValue {
    let mut meta = MetaMap::new();
    meta.insert(tag::META_TYPE_ID, RpcValue::from(TUNNEL_CTL_META_TYPE));
    RpcValue::new(Value::IMap(Box::new(m)), Some(meta))
}

fn new_secret() -> String {
    let mut b = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// A notice for the operator's end (`{"notice": text}` on the control channel, our
/// extension): shvrsh and the web page show it in the terminal.
pub(crate) fn notice_frame(request_id: i64, cids: &[i64], text: &str) -> RpcFrame {
    let control = libshv::tunnel::Control::Notice(text.to_string()).to_value();
    let result = RpcValue::from(vec![
        RpcValue::from(libshv::tunnel::channel::CONTROL),
        control,
    ]);
    libshv::tunnel::tunnel_frame(request_id, cids, false, None, Some(result))
}

pub(crate) fn close_frame(request_id: i64, cids: &[i64], error: &str) -> RpcFrame {
    let mut m = IMap::new();
    m.insert(key::STATE, RpcValue::from(TunnelState::CloseTunnel as i64));
    let mut status = Map::new();
    status.insert("error".into(), RpcValue::from(error));
    let mut msg = RpcMessage {
        meta: MetaMap::new(),
        body: IMap::new(),
    }
    .with_result(status.into());
    msg.meta.insert(tag::META_TYPE_ID, RpcValue::from(1));
    msg.meta.insert(tag::REQUEST_ID, RpcValue::from(request_id));
    if !cids.is_empty() {
        msg.meta.insert(tag::CALLER_IDS, meta::stack_to_value(cids));
    }
    msg.meta.insert(tag::TUNNEL_CTL, tctl_value(m));
    msg.into_frame()
}

/// Open tunnels (hosted or transit) one operator or one agent may take part in.
pub const MAX_TUNNELS_PER_PEER: usize = 64;
/// Open tunnels one connection may carry in all (a link to a parent or child broker
/// carries many operators' or agents').
pub const MAX_TUNNELS_PER_LINK: usize = 16 * MAX_TUNNELS_PER_PEER;

pub(crate) fn audit_close(t: &Tunnel, status: &str) {
    tracing::info!(
        target: "audit",
        tunnel = t.id,
        user = %shown(&t.user),
        agent = %shown(&t.agent_path),
        command = %shown(&t.command),
        bytes_to_rsh = t.bytes_to_rsh,
        bytes_to_rexec = t.bytes_to_rexec,
        status = %shown(status),
        "tunnel closed"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch(agent: &str) -> Launch {
        Launch {
            user: "op".into(),
            agent_path: agent.into(),
            command: "sh".into(),
            kind: "shell",
            cols: 80,
            rows: 24,
            level: libshv::access::level::COMMAND,
        }
    }

    #[test]
    fn tunnels_are_bounded_per_operator_and_agent_and_per_link() {
        let mut t = Tunnels::new(Duration::from_secs(10));
        let child = 9; // a child broker: its devices' tunnels all come by it
        let mut rid = 0;
        let parent = 3; // our parent link: its CallerIds name its operators
        let mut open = |t: &mut Tunnels, rsh: PeerId, rest: &[i64], agent: &str| {
            rid += 1;
            let rsh = (rsh, rsh == parent);
            t.open(true, rsh, rest.to_vec(), rid, child, launch(agent))
                .is_some()
        };
        for _ in 0..MAX_TUNNELS_PER_PEER {
            assert!(open(&mut t, 1, &[], "site/a"));
        }
        assert!(!open(&mut t, 1, &[], "site/a"), "operator 1 at its bound");
        // Another operator, another device under the same child broker: still room.
        assert!(open(&mut t, 2, &[], "site/b"));
        assert!(!open(&mut t, 2, &[], "site/a"), "device a at its bound");
        // A plain client's own CallerIds name nobody: still operator 2's bound.
        for i in 0..MAX_TUNNELS_PER_PEER as i64 {
            open(&mut t, 2, &[i], &format!("site/c{i}"));
        }
        assert!(!open(&mut t, 2, &[999], "site/d"), "made-up CallerIds");
        let by_2 = t.open.values().filter(|x| x.rsh_peer == 2).count();
        assert_eq!(by_2, MAX_TUNNELS_PER_PEER);
        // Operators behind the parent link each have their own.
        for op in 0..15 {
            for _ in 0..MAX_TUNNELS_PER_PEER {
                open(&mut t, parent, &[op], &format!("site/dev{op}"));
            }
        }
        let by_parent = t.open.values().filter(|x| x.rsh_peer == parent).count();
        assert!(by_parent > MAX_TUNNELS_PER_PEER, "{by_parent}");
        let by_child = t.open.values().filter(|x| x.agent_side == child).count();
        assert_eq!(
            by_child, MAX_TUNNELS_PER_LINK,
            "the child link's bound in all"
        );
        assert!(!open(&mut t, 4, &[], "site/new"));
    }
}
