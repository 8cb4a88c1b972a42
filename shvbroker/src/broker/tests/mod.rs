//! The broker core through its synchronous seam, [`Broker::handle`]: fake peers are
//! bare queues, events are handed in one at a time, and what every peer's queue holds
//! afterwards is compared with a table. No sockets, no tasks, no clock waits.
//!
//! A [`Case`] is one row: the peers of a standard world ([`World::new`]), a few setup
//! steps, one frame in, the [`Decision`] the router must reach for it (checked through
//! [`Broker::decide`], which changes nothing), and the frames each peer must then have
//! received — every other peer must have received nothing.

mod registry;
mod requests;
mod responses;
mod signals;
mod tunnels;

use std::collections::HashMap;
use std::sync::Arc;

use libshv::access::level;
use libshv::message::{RpcError, RpcMessage};
use libshv::meta::{self, tag};
use libshv::{RpcFrame, RpcValue};
use tokio::sync::{oneshot, Semaphore};
use tokio_util::sync::CancellationToken;

use super::decision::{Decision, Effect};
use super::Broker;
use crate::access::Grants;
use crate::config::Config;
use crate::events::{Event, LoginInfo, Registration};
use crate::peers::PeerId;
use crate::queue::{self, QueueReceiver};
use crate::settings::Settings;

/// Users of the standard world: `admin` (su everywhere), `viewer` (rd), `browser`
/// (bws), `limited` (rd on `public/**` only), `op` (cmd on `test/**`), `device`
/// (may mount under `test/**`).
pub const CONFIG: &str = "name: core
users:
  admin: {password: x, roles: [admin]}
  viewer: {password: x, roles: [viewer]}
  browser: {password: x, roles: [browser]}
  limited: {password: x, roles: [limited]}
  op: {password: x, roles: [op]}
  device: {password: x, roles: [device]}
roles:
  admin: {access: [{ri: '**:*', grant: su}], mount_points: ['**']}
  viewer: {access: [{ri: '**:*', grant: rd}]}
  browser: {access: [{ri: '**:*', grant: bws}]}
  limited: {access: [{ri: 'public/**:*', grant: rd}]}
  op: {access: [{ri: 'test/**:*', grant: cmd}, {ri: '**:*', grant: rd}]}
  device: {access: [{ri: '**:*', grant: rd}], mount_points: ['test/**']}
";

/// Peers of the standard world, in the order they log in (ids 1, 2, …).
pub const PEERS: &[(&str, Login)] = &[
    ("admin", Login::User("admin", None)),
    ("viewer", Login::User("viewer", None)),
    ("browser", Login::User("browser", None)),
    ("limited", Login::User("limited", None)),
    ("op", Login::User("op", None)),
    ("dev", Login::User("device", Some("test/dev"))),
    ("dev2", Login::User("device", Some("test/dev2"))),
    ("parent", Login::Parent),
];

#[derive(Clone, Copy)]
pub enum Login {
    /// A user, and the mount point it asks for.
    User(&'static str, Option<&'static str>),
    /// A user with a deviceId (placed by the autosetup rules).
    Device(&'static str, &'static str),
    /// A tunnel end with its one-time secret.
    Tunnel(&'static str),
    /// Our link to a parent broker.
    Parent,
}

pub struct World {
    pub broker: Broker,
    pub settings: Arc<Settings>,
    ids: HashMap<&'static str, PeerId>,
    queues: HashMap<PeerId, QueueReceiver>,
    /// The last request each peer received: `Send::Reply` answers it.
    last_request: HashMap<PeerId, RpcFrame>,
    permits: Arc<Semaphore>,
    total: Arc<queue::Total>,
    next_rid: i64,
}

impl World {
    /// The standard world, `extra` YAML appended to [`CONFIG`].
    pub fn new(extra: &str) -> World {
        let mut w = World::empty(extra);
        for (alias, login) in PEERS {
            w.login(alias, *login).expect("standard peers log in");
        }
        w.drain_all();
        w
    }

    /// No peers yet.
    pub fn empty(extra: &str) -> World {
        let config = Config::parse(&format!("{CONFIG}{extra}"), "test").expect("config");
        let settings = Arc::new(Settings::new(&config).expect("valid test config"));
        let total = queue::Total::new(64 << 20);
        let broker = Broker::new(
            settings.clone(),
            None,
            crate::audit::AuditLog::disabled(),
            None,
            total.clone(),
        );
        World {
            broker,
            settings,
            ids: HashMap::new(),
            queues: HashMap::new(),
            last_request: HashMap::new(),
            permits: Arc::new(Semaphore::new(1 << 30)),
            total,
            next_rid: 100,
        }
    }

    pub fn id(&self, alias: &str) -> PeerId {
        *self
            .ids
            .get(alias)
            .unwrap_or_else(|| panic!("no peer '{alias}'"))
    }

    /// Logs a peer in as the peer task would; its queue holds `frames` frames.
    pub fn login_with_queue(
        &mut self,
        alias: &'static str,
        login: Login,
        frames: usize,
    ) -> Result<PeerId, RpcError> {
        let id = self.ids.len() as PeerId + 1;
        let (tx, rx) = queue::channel(frames, 1 << 20, self.total.clone());
        let login = match login {
            Login::User(user, mount) => LoginInfo::User {
                user: user.to_string(),
                grants: Grants::for_user(&self.settings, user),
                device_id: None,
                mount_point: mount.map(str::to_string),
                user_agent: None,
            },
            Login::Device(user, device_id) => LoginInfo::User {
                user: user.to_string(),
                grants: Grants::for_user(&self.settings, user),
                device_id: Some(device_id.to_string()),
                mount_point: None,
                user_agent: None,
            },
            Login::Tunnel(secret) => LoginInfo::Tunnel {
                secret: secret.to_string(),
            },
            Login::Parent => LoginInfo::Parent {
                link: 0,
                url: "tcp://parent".into(),
            },
        };
        let reg = Registration {
            id,
            login,
            tx,
            cancel: CancellationToken::new(),
            addr: format!("test:{alias}"),
            idle_timeout: None,
            login_request: None,
        };
        self.register(id, alias, reg, rx)
    }

    pub fn login(&mut self, alias: &'static str, login: Login) -> Result<PeerId, RpcError> {
        self.login_with_queue(alias, login, 1000)
    }

    /// Hands a registration in and returns the broker's answer to it.
    pub fn register(
        &mut self,
        id: PeerId,
        alias: &'static str,
        reg: Registration,
        rx: QueueReceiver,
    ) -> Result<PeerId, RpcError> {
        let (reply, answer) = oneshot::channel();
        self.broker.handle(Event::Register(Box::new(reg), reply));
        let r = answer.blocking_recv_now();
        if r.is_ok() {
            self.ids.insert(alias, id);
            self.queues.insert(id, rx);
        }
        r.map(|()| id)
    }

    pub fn gone(&mut self, alias: &str) {
        let id = self.id(alias);
        self.broker.handle(Event::Gone(id));
    }

    /// Hands a frame from `alias` to the broker task.
    pub fn frame_from(&mut self, alias: &str, frame: RpcFrame) {
        let id = self.id(alias);
        self.frame_from_id(id, frame);
    }

    /// A frame from peer `id`, which need not be (or be still) logged in.
    pub fn frame_from_id(&mut self, id: PeerId, frame: RpcFrame) {
        let permit = self.permits.clone().try_acquire_many_owned(1).unwrap();
        self.broker.handle(Event::Frame(id, frame, permit));
    }

    /// Builds the frame `send` describes, as sent by `alias`.
    pub fn build(&mut self, send: &Send) -> RpcFrame {
        self.next_rid += 1;
        let rid = self.next_rid;
        match send {
            Send::Req(path, method, param) => {
                RpcMessage::new_request(rid, path, method, param.map(cpon)).into_frame()
            }
            Send::ReqMeta(path, method, tag, value) => {
                let mut f = RpcMessage::new_request(rid, path, method, None).into_frame();
                f.meta.insert(*tag, cpon(value));
                f
            }
            Send::ReqBody(path, method, size) => {
                let param = RpcValue::from("x".repeat(*size));
                RpcMessage::new_request(rid, path, method, Some(param)).into_frame()
            }
            Send::ReqRaw(path, method, body) => {
                let mut f = RpcMessage::new_request(rid, path, method, None).into_frame();
                f.body = bytes::Bytes::from_static(body);
                f
            }
            Send::Reply(of, result) => {
                let req = self
                    .last_request
                    .get(&self.id(of))
                    .unwrap_or_else(|| panic!("{of} got no request"))
                    .clone();
                RpcMessage::response_to(&req.meta)
                    .with_result(cpon(result))
                    .into_frame()
            }
            Send::ReplyError(of, msg) => {
                let req = self.last_request[&self.id(of)].clone();
                RpcMessage::response_to(&req.meta)
                    .with_error(&RpcError::method_not_found(*msg))
                    .into_frame()
            }
            Send::Response(rid, to) => {
                let mut meta = shvproto::MetaMap::new();
                meta.insert(tag::REQUEST_ID, RpcValue::from(*rid));
                if let Some(to) = to {
                    meta::push_id(&mut meta, tag::CALLER_IDS, self.id(to));
                }
                RpcMessage::response_to(&meta)
                    .with_result(RpcValue::from(1))
                    .into_frame()
            }
            Send::Signal(path, name, level) => {
                let mut m = RpcMessage::new_signal(path, name, "get", Some(RpcValue::from(1)));
                if let Some(l) = level {
                    m.meta.insert(tag::ACCESS_LEVEL, RpcValue::from(*l));
                }
                m.into_frame()
            }
            Send::Frame(make) => make(self),
            Send::Gone => unreachable!("a setup step, not a frame"),
        }
    }

    /// Takes everything queued to `alias`, as messages.
    pub fn drain(&mut self, alias: &str) -> Vec<RpcFrame> {
        let id = self.id(alias);
        let mut out = Vec::new();
        let Some(q) = self.queues.get_mut(&id) else {
            return out;
        };
        while let Some(item) = q.try_recv() {
            let frame = match item {
                queue::Outgoing::Frame(f) => f,
                queue::Outgoing::Encoded(b) => {
                    let (start, end) = libshv::codec::next_block(&b).expect("a whole frame");
                    // After the length: the format byte, then the message.
                    RpcFrame::parse(b.slice(start + 1..end)).expect("a frame")
                }
            };
            if frame.is_request() {
                self.last_request.insert(id, frame.clone());
            }
            out.push(frame);
        }
        out
    }

    pub fn drain_all(&mut self) {
        let aliases: Vec<&'static str> = self.ids.keys().copied().collect();
        for a in aliases {
            self.drain(a);
        }
    }
}

/// A frame a case sends.
pub enum Send {
    /// A request: path, method, parameter as Cpon.
    Req(&'static str, &'static str, Option<&'static str>),
    /// A request with one meta tag set to a Cpon value.
    ReqMeta(&'static str, &'static str, i32, &'static str),
    /// A request with a String parameter of this many bytes.
    ReqBody(&'static str, &'static str, usize),
    /// A request whose body is these bytes.
    ReqRaw(&'static str, &'static str, &'static [u8]),
    /// The answer (Cpon) to the last request the named peer received.
    Reply(&'static str, &'static str),
    /// An error answer to the last request the named peer received.
    ReplyError(&'static str, &'static str),
    /// A response with this request id and CallerIds naming this peer (or none).
    Response(i64, Option<&'static str>),
    /// A signal: path, name, its access level.
    Signal(&'static str, &'static str, Option<i64>),
    Frame(fn(&World) -> RpcFrame),
    /// Not a frame (setup only): the peer's connection is gone.
    Gone,
}

/// A frame a peer must receive.
#[derive(Debug)]
pub enum Out {
    /// A response with this result (Cpon).
    Answer(&'static str),
    /// A response with any result.
    AnyAnswer,
    /// An error response of this code whose message contains the text.
    Error(i64, &'static str),
    /// A request: path (relative to the receiver), method, access level.
    Call(&'static str, &'static str, i64),
    /// A signal: path and name.
    Sig(&'static str, &'static str),
}

impl Out {
    fn check(&self, f: &RpcFrame) -> Result<(), String> {
        let msg = RpcMessage::from_frame(f).map_err(|e| e.to_string())?;
        let ok = match self {
            Out::Answer(v) => f.is_response() && msg.result().ok() == Some(cpon(v)),
            Out::AnyAnswer => f.is_response() && msg.result().is_ok(),
            Out::Error(code, text) => {
                f.is_response()
                    && msg
                        .result()
                        .err()
                        .is_some_and(|e| e.code == *code && e.message.contains(text))
            }
            Out::Call(path, method, lvl) => {
                f.is_request()
                    && f.shv_path() == *path
                    && f.method() == Some(method)
                    && f.access_level() == Some(*lvl)
            }
            Out::Sig(path, name) => {
                f.is_signal() && f.shv_path() == *path && f.method() == Some(name)
            }
        };
        if ok {
            Ok(())
        } else {
            Err(format!("expected {self:?}, got {}", describe(f, &msg)))
        }
    }
}

fn describe(f: &RpcFrame, msg: &RpcMessage) -> String {
    format!(
        "{:?} {}:{} level {:?} result {:?}",
        f.kind(),
        f.shv_path(),
        f.method().unwrap_or(""),
        f.access_level(),
        msg.result()
    )
}

pub fn cpon(text: &str) -> RpcValue {
    libshv::value::from_cpon(text).unwrap_or_else(|e| panic!("bad Cpon {text}: {e}"))
}

/// One row: see the module's doc.
pub struct Case {
    /// YAML appended to the standard config.
    pub config: &'static str,
    pub setup: &'static [(&'static str, Send)],
    pub from: &'static str,
    pub send: Send,
    /// The decision's kind ([`kind`]), or `tunnel` for a frame the tunnel part takes
    /// before the router sees it.
    pub decision: &'static str,
    pub expect: &'static [(&'static str, Out)],
}

impl Case {
    /// A row on the standard config.
    pub const fn new(
        setup: &'static [(&'static str, Send)],
        from: &'static str,
        send: Send,
        decision: &'static str,
        expect: &'static [(&'static str, Out)],
    ) -> Case {
        Case {
            config: "",
            setup,
            from,
            send,
            decision,
            expect,
        }
    }
}

/// A decision's kind, as the tables name it.
pub fn kind(d: &Decision) -> String {
    match d {
        Decision::Forward { effect, .. } => match effect {
            Effect::Expect { .. } => "forward/expect",
            Effect::Answer(_) => "forward/answer",
            Effect::TunnelData(_) => "forward/tunnel",
        }
        .to_string(),
        Decision::Local { .. } => "local".into(),
        Decision::Refuse { .. } => "refuse".into(),
        Decision::Publish(_) => "publish".into(),
        Decision::OwnAnswer { .. } => "own".into(),
        Decision::Drop(why) => format!("drop/{}", why.name()),
    }
}

pub fn run(case: Case) {
    let mut w = World::new(case.config);
    for (alias, send) in case.setup {
        if let Send::Gone = send {
            w.gone(alias);
            w.drain_all();
            continue;
        }
        let f = w.build(send);
        w.frame_from(alias, f);
        w.drain_all();
    }
    let frame = w.build(&case.send);
    if case.decision != "tunnel" {
        let mut seen = frame.clone();
        if seen.has_rev_caller_ids() {
            meta::push_id(&mut seen.meta, tag::REV_CALLER_IDS, w.id(case.from));
        }
        let d = w.broker.decide(w.id(case.from), seen);
        assert_eq!(kind(&d), case.decision, "decision: {d:?}");
    }
    w.frame_from(case.from, frame);
    let aliases: Vec<&'static str> = w.ids.keys().copied().collect();
    for alias in aliases {
        let got = w.drain(alias);
        let want: Vec<&Out> = case
            .expect
            .iter()
            .filter(|(a, _)| *a == alias)
            .map(|(_, o)| o)
            .collect();
        assert_eq!(
            got.len(),
            want.len(),
            "{alias} received {:?}, expected {want:?}",
            got.iter()
                .map(|f| describe(f, &RpcMessage::from_frame(f).unwrap()))
                .collect::<Vec<_>>()
        );
        for (f, o) in got.iter().zip(want) {
            if let Err(e) = o.check(f) {
                panic!("{alias}: {e}");
            }
        }
    }
}

/// One `#[test]` per row of a table.
macro_rules! table {
    ($($name:ident: $case:expr;)*) => {
        $(
            #[test]
            fn $name() {
                $crate::broker::tests::run($case);
            }
        )*
    };
}
pub(crate) use table;

/// Access levels by name, for the tables.
pub const BWS: i64 = level::BROWSE;
pub const RD: i64 = level::READ;
pub const WR: i64 = level::WRITE;
pub const CMD: i64 = level::COMMAND;
pub const SU: i64 = level::ADMIN;

/// `oneshot::Receiver::try_recv` under a name that says why it cannot wait: the broker
/// answers a registration before `handle` returns.
trait NowExt<T> {
    fn blocking_recv_now(self) -> T;
}

impl<T> NowExt<Result<(), T>> for oneshot::Receiver<Result<(), T>> {
    fn blocking_recv_now(mut self) -> Result<(), T> {
        self.try_recv()
            .expect("the broker answered the registration")
    }
}
