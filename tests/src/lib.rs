//! Helpers for the end-to-end tests: the real binaries (built by
//! `cargo build --workspace`) driven over 127.0.0.1.
//!
//! - [`Broker::start`] spawns `shvbroker` on an ephemeral port and keeps its stderr;
//!   [`Broker::in_process`] runs the same broker as a library in the test's runtime.
//! - [`Broker::connect`] and friends log our libshv [`Client`] in.
//! - [`DeviceHandle`] is a device client a test can cut off (`Client::close`).
//! - [`TestDevice`] is a small device tree served through a [`RequestHandler`].
//! - [`RawConn`] speaks raw bytes / frames for the bad-input tests.
//! - [`python`] and [`PyProc`] run the pyshv interop scripts in `tests/py/`.

mod broker;
mod device;
pub mod pki;

pub use broker::{port_of, Broker};
pub use device::{DeviceHandle, TestDevice};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use libshv::access::level;
use libshv::client::SignalReceiver;
use libshv::codec::{BlockCodec, Incoming};
use libshv::login::Credentials;
use libshv::message::code;

use libshv::shvproto::Value;
use libshv::{
    Client, ClientConfig, RequestHandler, RpcError, RpcFrame, RpcMessage, RpcUrl, RpcValue,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;

/// Generous upper bound for anything that should happen "soon"; only there to turn a
/// hang into a failure.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// The repository root (parent of this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The directory Cargo put this test's profile in (`target/debug`, `target/release`,
/// or wherever `CARGO_TARGET_DIR` and `--profile` say): the running test binary lives
/// in its `deps/`, and the workspace's binaries sit beside that.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binaries run from <profile>/deps")
        .to_path_buf()
}

/// The crate a workspace binary is built from.
fn crate_of(name: &str) -> &str {
    match name {
        "shvbroker" | "shvagent" | "shvrexec" | "shvrsh" | "shvcall" | "shvcp" | "shvbench" => name,
        other => panic!("unknown workspace binary {other}"),
    }
}

/// Newest modification time of the Rust sources and manifests under `dir`, but for
/// unit-test modules in files of their own (`tests.rs`): changing only those relinks no
/// binary, so a binary older than them is not stale.
fn newest_source(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).ok()?.flatten() {
            let p = e.path();
            if p.is_dir() {
                if !p.ends_with("target") {
                    stack.push(p);
                }
            } else if p.extension().is_some_and(|x| x == "rs" || x == "toml")
                && !p.ends_with("tests.rs")
                && !p.parent().is_some_and(|d| d.ends_with("tests"))
            {
                let t = e.metadata().ok()?.modified().ok()?;
                newest = newest.max(Some(t));
            }
        }
    }
    newest
}

/// Path of a workspace binary of this build; panics when it is missing or older than
/// its sources (after `cargo test -p tests`, which does not build the other crates'
/// binaries), never running a stale one.
pub fn bin(name: &str) -> PathBuf {
    let p = profile_dir().join(name);
    let built = std::fs::metadata(&p)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "{} not found: run `cargo build --workspace` before the tests",
                p.display()
            )
        });
    let root = repo_root();
    // What goes into the binary: its crate's and libshv's sources (not their tests).
    let sources = [
        root.join(crate_of(name)).join("src"),
        root.join("libshv").join("src"),
        root.join("shvtool").join("src"),
    ];
    if let Some(src) = sources.iter().filter_map(|d| newest_source(d)).max() {
        assert!(
            built >= src,
            "{} is older than its sources: run `cargo build --workspace` before the tests",
            p.display()
        );
    }
    p
}

/// The venv python with pyshv; panics (never skips) when it is missing.
pub fn python() -> PathBuf {
    let p = repo_root().join(".venv/bin/python");
    assert!(
        p.is_file(),
        "{} is missing: the pyshv interop tests need it. Run `.ci/run`, or \
         `python3 -m venv .venv && .venv/bin/pip install pyshv==0.13.0` in the repo root",
        p.display()
    );
    p
}

/// A python script of `tests/py/`.
pub fn py_script(name: &str) -> PathBuf {
    repo_root().join("tests/py").join(name)
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh private temp dir (removed by [`TempDir`]'s Drop).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!(
            "shv-tests-{tag}-{}-{n}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `.app:ping` and `ls` on the root must both work: the client is being served.
pub async fn assert_served(client: &Client) {
    client
        .call(".app", "ping", None)
        .await
        .expect("ping of a healthy client must succeed");
    let ls = client.call("", "ls", None).await.expect("ls of root");
    let names = string_list(&ls);
    assert!(
        names.iter().any(|n| n == ".app"),
        "ls of root lacks .app: {}",
        ls.to_cpon()
    );
}

/// A List of Strings as a Vec (panics with the Cpon otherwise).
pub fn string_list(v: &RpcValue) -> Vec<String> {
    match &v.value {
        Value::List(l) => l
            .iter()
            .map(|x| match &x.value {
                Value::String(s) => s.to_string(),
                _ => panic!("not a list of strings: {}", v.to_cpon()),
            })
            .collect(),
        _ => panic!("not a list: {}", v.to_cpon()),
    }
}

/// The method names of a `dir` result (list of IMap `{1: name, …}`).
pub fn dir_names(v: &RpcValue) -> Vec<String> {
    match &v.value {
        Value::List(l) => l
            .iter()
            .map(|x| match &x.value {
                Value::IMap(m) => m
                    .get(&1)
                    .map(|n| n.as_str().to_string())
                    .unwrap_or_else(|| panic!("dir entry without name: {}", x.to_cpon())),
                _ => panic!("dir entry is not an IMap: {}", x.to_cpon()),
            })
            .collect(),
        _ => panic!("dir result is not a list: {}", v.to_cpon()),
    }
}

/// The error code of a failed call, or a panic describing what came instead.
pub fn rpc_error_code(r: Result<RpcValue, libshv::ClientError>) -> i64 {
    match r {
        Err(libshv::ClientError::Rpc(e)) => e.code,
        Err(e) => panic!("expected an RPC error, got {e}"),
        Ok(v) => panic!("expected an RPC error, got result {}", v.to_cpon()),
    }
}

/// Waits for the next signal (panics on timeout or closed channel).
pub async fn next_signal(rx: &mut SignalReceiver) -> RpcMessage {
    match tokio::time::timeout(TIMEOUT, rx.recv()).await {
        Ok(Some(m)) => m,
        Ok(None) => panic!("signal channel closed"),
        Err(_) => panic!("no signal within {TIMEOUT:?}"),
    }
}

/// Path, signal name, source and param of a signal.
pub fn signal_parts(m: &RpcMessage) -> (String, String, String, RpcValue) {
    let f = m.to_frame();
    (
        f.shv_path().to_string(),
        f.method().unwrap_or("").to_string(),
        f.source().to_string(),
        m.param().cloned().unwrap_or_else(RpcValue::null),
    )
}

/// What a raw connection saw next.
#[derive(Debug)]
pub enum RawEvent {
    Frame(RpcFrame),
    /// Something the codec reported that is not a good frame.
    Other(String),
    Closed,
    Timeout,
}

/// A raw TCP client speaking Block frames (or any bytes) to the broker.
/// A TCP connection to the broker from the loopback address `from`.
pub async fn connect_tcp_from(from: std::net::Ipv4Addr, port: u16) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(std::net::SocketAddr::from((from, 0)))
        .expect("bind a loopback address");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    tokio::time::timeout(TIMEOUT, socket.connect(addr))
        .await
        .expect("connect timeout")
        .expect("connect to the broker")
}

pub struct RawConn {
    stream: TcpStream,
    buf: BytesMut,
    codec: BlockCodec,
    next_id: i64,
}

impl RawConn {
    pub async fn connect(port: u16) -> RawConn {
        let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(("127.0.0.1", port)))
            .await
            .expect("connect timeout")
            .expect("connect to the broker");
        Self::over(stream)
    }

    /// A connection from the loopback address `from` (any of 127.0.0.0/8), as if
    /// from another host.
    pub async fn connect_from(from: std::net::Ipv4Addr, port: u16) -> RawConn {
        Self::over(connect_tcp_from(from, port).await)
    }

    /// A connection whose receive buffer is 16 KiB however the host tunes TCP: a
    /// client that stops reading fills it (and the broker's send buffer) quickly.
    pub async fn connect_small_window(port: u16) -> RawConn {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(16 * 1024).unwrap();
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let stream = tokio::time::timeout(TIMEOUT, socket.connect(addr))
            .await
            .expect("connect timeout")
            .expect("connect to the broker");
        Self::over(stream)
    }

    /// The connection a listener of the test's own accepted (a peer that is not a
    /// broker, talking to one of ours that connected out to it).
    pub fn accepted(stream: TcpStream) -> RawConn {
        Self::over(stream)
    }

    fn over(stream: TcpStream) -> RawConn {
        stream.set_nodelay(true).unwrap();
        RawConn {
            stream,
            buf: BytesMut::new(),
            codec: BlockCodec::new(usize::MAX),
            next_id: 100,
        }
    }

    pub fn next_id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }

    /// Writes bytes as they are.
    pub async fn send_bytes(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(data).await?;
        self.stream.flush().await
    }

    pub async fn send(&mut self, msg: &RpcMessage) -> std::io::Result<()> {
        let bytes = libshv::codec::encode_frame(&msg.to_frame());
        self.send_bytes(&bytes).await
    }

    /// Closes our write side (the broker sees EOF).
    pub async fn shutdown_write(&mut self) {
        let _ = self.stream.shutdown().await;
    }

    /// The next event within `timeout`.
    pub async fn recv_within(&mut self, timeout: Duration) -> RawEvent {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(Incoming::Frame(f))) => return RawEvent::Frame(f),
                Ok(Some(other)) => return RawEvent::Other(format!("{other:?}")),
                Ok(None) => {}
                Err(e) => return RawEvent::Other(format!("undecodable stream: {e}")),
            }
            let mut chunk = vec![0u8; 64 * 1024];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return RawEvent::Timeout,
                Ok(Ok(0)) | Ok(Err(_)) => return RawEvent::Closed,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    pub async fn recv(&mut self) -> RawEvent {
        self.recv_within(TIMEOUT).await
    }

    /// Waits for the response with `id`, skipping signals and other responses.
    /// Panics on disconnect or timeout.
    pub async fn response(&mut self, id: i64) -> RpcMessage {
        loop {
            match self.recv().await {
                RawEvent::Frame(f) if f.is_response() && f.request_id() == Some(id) => {
                    return RpcMessage::from_frame(&f).expect("decodable response")
                }
                RawEvent::Frame(_) => continue,
                other => panic!("waiting for the response to request {id}: got {other:?}"),
            }
        }
    }

    /// Sends a request and waits for its response.
    pub async fn call(&mut self, path: &str, method: &str, param: Option<RpcValue>) -> RpcMessage {
        let id = self.next_id();
        self.send(&RpcMessage::new_request(id, path, method, param))
            .await
            .expect("send request");
        self.response(id).await
    }

    /// hello + login; returns the login result.
    pub async fn login(
        &mut self,
        user: &str,
        password: &str,
        sha1: bool,
    ) -> Result<RpcValue, RpcError> {
        let params = libshv::login::LoginParams {
            user: user.to_string(),
            credentials: Credentials::Plain(password.to_string()),
            use_sha1: sha1,
            ..Default::default()
        };
        self.login_params(&params).await
    }

    /// hello + login with full login parameters (device id, mount point, …).
    pub async fn login_params(
        &mut self,
        params: &libshv::login::LoginParams,
    ) -> Result<RpcValue, RpcError> {
        let hello = self.call("", "hello", None).await.result()?;
        let nonce = hello
            .get("nonce")
            .map(|n| n.as_str().to_string())
            .unwrap_or_default();
        self.call("", "login", Some(params.to_value(&nonce)))
            .await
            .result()
    }

    /// A raw client logged in as `user` and subscribed to `ri`.
    pub async fn subscriber(port: u16, user: &str, password: &str, ri: &str) -> RawConn {
        let mut c = RawConn::connect(port).await;
        c.login(user, password, true)
            .await
            .expect("subscriber login");
        c.subscribe(ri).await;
        c
    }

    /// Subscribes to `ri` (panics if refused).
    pub async fn subscribe(&mut self, ri: &str) {
        let sub = self
            .call(
                ".broker/currentClient",
                "subscribe",
                Some(RpcValue::from(ri)),
            )
            .await;
        assert!(sub.result().is_ok(), "subscribe {ri}: {sub:?}");
    }

    /// A raw device logged in as `user` and mounted at `mount_point`.
    pub async fn device(port: u16, user: &str, password: &str, mount_point: &str) -> RawConn {
        let mut d = RawConn::connect(port).await;
        let p = libshv::login::LoginParams {
            user: user.into(),
            credentials: Credentials::Plain(password.into()),
            mount_point: Some(mount_point.into()),
            ..Default::default()
        };
        d.login_params(&p).await.expect("device login");
        d
    }

    /// Reads (and discards frames) until the broker closes the connection. Returns
    /// the frames seen before the close, or panics if it stays open for `TIMEOUT`.
    pub async fn expect_closed(&mut self) -> Vec<RpcFrame> {
        let mut frames = Vec::new();
        loop {
            match self.recv().await {
                RawEvent::Closed => return frames,
                RawEvent::Frame(f) => frames.push(f),
                // The stream may be garbage from our side's point of view too; keep
                // reading raw bytes until EOF.
                RawEvent::Other(_) => {
                    self.buf.clear();
                    self.codec = BlockCodec::new(usize::MAX);
                }
                RawEvent::Timeout => panic!("the broker kept the connection open for {TIMEOUT:?}"),
            }
        }
    }
}

/// A ChainPack RPC request frame (header included) whose param is `depth` nested lists.
pub fn deep_param_request(id: i64, path: &str, method: &str, depth: usize) -> Vec<u8> {
    let head = RpcMessage::new_request(id, path, method, None).to_frame();
    // The payload of a param-less request is MetaMap + empty IMap (0x8a 0xff).
    let mut payload = head.payload();
    assert_eq!(payload.split_off(payload.len() - 2), [0x8a, 0xff]);
    payload.extend_from_slice(&[0x8a, 0x01]); // IMap, key 1 (param)
    payload.extend(std::iter::repeat_n(0x88u8, depth));
    payload.extend(std::iter::repeat_n(0xffu8, depth));
    payload.push(0xff); // end of IMap
    frame_bytes(1, &payload)
}

/// Block framing around a raw payload with the given format byte.
pub fn frame_bytes(format: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    libshv::codec::write_header(&mut out, payload.len(), format);
    out.extend_from_slice(payload);
    out.to_vec()
}

/// A running python script (kill on drop) whose stdout is read line by line.
pub struct PyProc {
    child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    stderr: Arc<Mutex<String>>,
    pub seen: Vec<String>,
}

impl PyProc {
    /// Runs `tests/py/<script> args…` with the venv python.
    pub fn spawn(script: &str, args: &[&str]) -> PyProc {
        let mut all = vec![py_script(script).into_os_string()];
        all.extend(args.iter().map(std::ffi::OsString::from));
        Self::spawn_program(&python(), &all)
    }

    /// Runs any program with stdout read line by line (e.g. `shvcall --subscribe`).
    pub fn spawn_program(program: &Path, args: &[std::ffi::OsString]) -> PyProc {
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
        let stdout = child.stdout.take().unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let stderr = Arc::new(Mutex::new(String::new()));
        let buf = stderr.clone();
        tokio::spawn(async move {
            let mut line = String::new();
            while let Ok(n) = err.read_line(&mut line).await {
                if n == 0 {
                    break;
                }
                buf.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        PyProc {
            child,
            lines: BufReader::new(stdout).lines(),
            stderr,
            seen: Vec::new(),
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The next stdout line; panics (with the script's stderr) on EOF or timeout.
    pub async fn line(&mut self) -> String {
        match tokio::time::timeout(TIMEOUT, self.lines.next_line()).await {
            Ok(Ok(Some(l))) => {
                self.seen.push(l.clone());
                l
            }
            Ok(_) => {
                // Give the stderr reader a moment to collect the traceback.
                let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                panic!(
                    "process ended early; stdout so far: {:?}\nstderr:\n{}",
                    self.seen,
                    self.stderr()
                )
            }
            Err(_) => panic!(
                "process printed nothing for {TIMEOUT:?}; stdout so far: {:?}\nstderr:\n{}",
                self.seen,
                self.stderr()
            ),
        }
    }

    /// Reads lines until one equals `want` (panics otherwise).
    pub async fn expect_line(&mut self, want: &str) {
        loop {
            if self.line().await == want {
                return;
            }
        }
    }

    /// Waits for the script to exit and returns its exit code.
    pub async fn wait(&mut self) -> i32 {
        match tokio::time::timeout(TIMEOUT, self.child.wait()).await {
            Ok(Ok(s)) => s.code().unwrap_or(-1),
            Ok(Err(e)) => panic!("waiting for the process: {e}"),
            Err(_) => panic!("process did not exit within {TIMEOUT:?}"),
        }
    }
}

/// Output of a finished `shvcall` run.
#[derive(Debug)]
pub struct CmdOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a workspace binary to completion (with a timeout).
pub async fn run_bin(name: &str, args: &[&str]) -> CmdOutput {
    run_bin_env(name, args, &[]).await
}

/// [`run_bin`] with extra environment variables.
pub async fn run_bin_env(name: &str, args: &[&str], env: &[(&str, &str)]) -> CmdOutput {
    let child = tokio::process::Command::new(bin(name))
        .args(args)
        .env_remove("SHV_PASSWORD")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
    let out = tokio::time::timeout(TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{name} {args:?} did not finish within {TIMEOUT:?}"))
        .expect("wait for child");
    CmdOutput {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `shvcall URL PATH METHOD [PARAM]`
pub async fn shvcall(url: &str, path: &str, method: &str, param: Option<&str>) -> CmdOutput {
    let mut args = vec![url, path, method];
    if let Some(p) = param {
        args.push(p);
    }
    run_bin("shvcall", &args).await
}

/// Polls `f` until it returns `Some`, at most [`TIMEOUT`]; `what` names the wait.
pub async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what} after {TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The error of a response message (panics on a result).
pub fn expect_error(msg: &RpcMessage) -> RpcError {
    match msg.result() {
        Err(e) => e,
        Ok(v) => panic!("expected an error response, got {}", v.to_cpon()),
    }
}

/// Error code constants re-exported for the tests.
pub use code::{LOGIN_REQUIRED, METHOD_NOT_FOUND};

/// The broker's resident set size in KiB, from /proc/PID/status.
pub fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("VmRSS line")
}

/// A YAML config with the three default users plus device-id mounts (autosetup rules
/// for the `device` role) and limits.
/// `extra` is appended verbatim (top-level keys).
pub fn config_yaml(mounts: &[(&str, &str)], extra: &str) -> String {
    let mut y = String::from(
        "name: testbroker\n\
         users:\n\
         \x20 admin: {password: admin, roles: [admin]}\n\
         \x20 device: {password: device, roles: [device]}\n\
         \x20 viewer: {password: viewer, roles: [viewer]}\n\
         roles:\n\
         \x20 admin:\n\
         \x20   access: [{ri: '**:*', grant: su}]\n\
         \x20   mount_points: ['**']\n\
         \x20 device:\n\
         \x20   access: [{ri: '**:*', grant: rd}]\n\
         \x20   mount_points: ['test/**']\n\
         \x20 viewer:\n\
         \x20   access: [{ri: '**:*', grant: rd}]\n\
         \x20   mount_points: []\n",
    );
    if !mounts.is_empty() {
        // Each deviceId may be claimed by the device role only.
        y.push_str("autosetup:\n");
        for (id, path) in mounts {
            y.push_str(&format!(
                "  - {{device_id: '{id}', roles: [device], mount_point: '{path}'}}\n"
            ));
        }
    }
    y.push_str(extra);
    y
}

/// The config of a broker in a tree: users admin/admin and device/device (may mount
/// under test/**), linked up to the broker at `parent_port` as `mount` (heartbeat and
/// reconnect back-off of 1 s, so tests see links come back quickly); `extra` is
/// appended as is (e.g. a `tunnel:` section).
pub fn child_broker_config(name: &str, parent_port: u16, mount: &str, extra: &str) -> String {
    format!(
        r#"name: {name}
users:
  admin: {{password: admin, roles: [admin]}}
  device: {{password: device, roles: [device]}}
roles:
  admin: {{access: [{{ri: "**:*", grant: su}}], mount_points: ["**"]}}
  device: {{access: [{{ri: "**:*", grant: rd}}], mount_points: ["test/**"]}}
connections:
  - url: "tcp://admin@127.0.0.1:{parent_port}?password=admin"
    mount_point: "{mount}"
    heartbeat: 1
    reconnect_max: 1
{extra}"#
    )
}

/// pySHV's broker (`pyshvbroker` from the venv) running a TOML config; killed on Drop.
pub struct PyBroker {
    child: Child,
    /// The port its (first) listener uses.
    pub port: u16,
    _dir: TempDir,
}

impl PyBroker {
    /// Starts it with `toml` and waits until `port` (the one `toml` listens on)
    /// accepts connections.
    pub fn start(toml: &str, port: u16) -> PyBroker {
        let dir = TempDir::new("pybroker");
        let cfg = dir.path().join("pybroker.toml");
        std::fs::write(&cfg, toml).expect("write pyshvbroker config");
        let exe = python().parent().expect("venv bin").join("pyshvbroker");
        let child = Command::new(exe)
            .arg("-c")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn pyshvbroker");
        let b = PyBroker {
            child,
            port,
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + TIMEOUT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "pyshvbroker did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        b
    }

    /// `tcp://USER@127.0.0.1:PORT?password=PASSWORD`
    pub fn url(&self, user: &str, password: &str) -> String {
        format!("tcp://{user}@127.0.0.1:{}?password={password}", self.port)
    }
}

impl Drop for PyBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A pySHV broker config with one user `admin`/`admin` allowed everything, listening
/// on `listen`.
pub fn pyshv_admin_config(name: &str, listen: &str) -> String {
    format!(
        "name = \"{name}\"\nlisten = [\"{listen}\"]\n\n[user.admin]\npassword = \"admin\"\n\
         role = \"admin\"\n\n[role.admin]\nmountPoints = \"**\"\naccess.su = \"**:*\"\n"
    )
}

/// Plain SHV (a `hello` in a Block frame) to a port that expects a handshake first
/// (TLS, WebSocket): the broker closes the connection.
pub async fn assert_plain_hello_closed(port: u16) {
    let mut raw = RawConn::connect(port).await;
    raw.send(&RpcMessage::new_request(1, "", "hello", None))
        .await
        .unwrap();
    raw.expect_closed().await;
}

/// A TCP port that was free a moment ago (for brokers that must come back on the same
/// port after a restart).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Polls `ls` of `path` until `child` shows up (e.g. a mount arriving through a tree).
pub async fn wait_for_child(client: &Client, path: &str, child: &str) {
    wait_for(&format!("{path}/{child}"), || async {
        let v = client.call(path, "ls", None).await.ok()?;
        string_list(&v).iter().any(|c| c == child).then_some(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_from_the_ready_file() {
        let a: Vec<String> = [
            "tcp://127.0.0.1:41234",
            "ws://127.0.0.1:5/shv",
            "unix:/tmp/x",
            "tcp://[::1]:7",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(port_of(&a, "tcp"), Some(41234));
        assert_eq!(port_of(&a, "ws"), Some(5));
        assert_eq!(port_of(&a, "wss"), None);
        assert_eq!(port_of(&a[3..], "tcp"), Some(7));
    }

    #[test]
    fn deep_request_is_well_framed() {
        let b = deep_param_request(1, "", "ls", 10);
        let mut codec = BlockCodec::default();
        let mut buf = BytesMut::from(&b[..]);
        match codec.decode(&mut buf).unwrap() {
            Some(Incoming::Frame(f)) => assert_eq!(f.request_id(), Some(1)),
            other => panic!("{other:?}"),
        }
        assert!(buf.is_empty());
    }
}
