//! The remote shell end to end: the real `shvbroker`, `shvagent --mount test/agent`
//! (which spawns the real `shvrexec`) and `shvrsh`, all on 127.0.0.1.
//!
//! Pipes (no PTY) here; the interactive PTY session is in rsh_pty.rs. The tunnel-secret
//! and injection tests play the agent / an attacker with libshv and raw frames, so that
//! they can see what a real agent never shows (the secret, guessed ids).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::shell_rig::{
    sigkill, spawn_rsh, through_remote_cat, tunnels, wait_connected_tunnel, Agent, TWO_SECONDS,
};
use libshv::login::{Credentials, LoginParams};
use libshv::meta::tag;
use libshv::tunnel::{self, LaunchParams, TunnelCtl, TunnelEnd, TunnelState};
use libshv::{Client, RequestHandler, RpcError, RpcMessage, RpcValue};
use rand::RngCore;
use sha2::{Digest, Sha256};
use tests::{config_yaml, run_bin, Broker, CmdOutput, RawConn, RawEvent, TempDir, TIMEOUT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const AGENT: &str = "test/agent";

/// Collects a child's pipe in the background; the buffer can be looked at any time.
fn collect<R: tokio::io::AsyncRead + Unpin + Send + 'static>(mut r: R) -> Arc<Mutex<Vec<u8>>> {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let b = buf.clone();
    tokio::spawn(async move {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match r.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => b.lock().unwrap().extend_from_slice(&chunk[..n]),
            }
        }
    });
    buf
}

fn text(buf: &Arc<Mutex<Vec<u8>>>) -> String {
    String::from_utf8_lossy(&buf.lock().unwrap()).into_owned()
}

/// `shvrsh` (as admin) running `sh -c script` on the agent, to its end.
async fn remote_sh(broker: &Broker, script: &str) -> CmdOutput {
    let url = broker.url("admin", "admin");
    run_bin("shvrsh", &[&url, AGENT, "--", "sh", "-c", script]).await
}

/// Waits (at most TIMEOUT) for the child's exit code.
async fn wait_exit(child: &mut tokio::process::Child, what: &str) -> i32 {
    match tokio::time::timeout(TIMEOUT, child.wait()).await {
        Ok(Ok(st)) => st.code().unwrap_or(-1),
        Ok(Err(e)) => panic!("waiting for {what}: {e}"),
        Err(_) => panic!("{what} did not exit within {TIMEOUT:?}"),
    }
}

/// Waits (at most TIMEOUT) until `buf` contains `want`.
async fn wait_output(buf: &Arc<Mutex<Vec<u8>>>, want: &str, what: &str) {
    let deadline = Instant::now() + TIMEOUT;
    while !text(buf).contains(want) {
        assert!(
            Instant::now() < deadline,
            "{what}: never saw {want:?}; got {:?}",
            text(buf)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---- 1. streams and exit code ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_streams_apart_and_exit_code() {
    let broker = Broker::start(None);
    let _agent = Agent::start(&broker, AGENT).await;
    let out = remote_sh(&broker, "echo out; echo err >&2; exit 7").await;
    assert_eq!(out.stdout, "out\n", "stdout; stderr was {:?}", out.stderr);
    assert_eq!(out.stderr, "err\n", "stderr");
    assert_eq!(out.code, 7, "exit code");
}

/// The agent logs what an operator launches; a newline or an escape sequence in the
/// command is escaped there, so an operator cannot forge agent log lines or drive the
/// terminal of whoever reads the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launched_commands_are_logged_escaped() {
    let broker = Broker::start(None);
    let agent = Agent::start(&broker, AGENT).await;
    let script = "true\nFORGED agent log line\n\x1b[2J";
    let out = remote_sh(&broker, script).await;
    // (`FORGED` is not a command: the shell says so, and exits 127.)
    assert_eq!(out.code, 127, "{out:?}");
    let log = agent.stderr();
    assert!(log.contains(r"true\nFORGED agent log line"), "{log}");
    assert!(
        !log.lines().any(|l| l.starts_with("FORGED")),
        "a forged line in the agent's log:\n{log}"
    );
    assert!(!log.contains('\x1b'), "a raw escape in the agent's log");
}

// ---- 2. binary data, stdin EOF ---------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_mib_of_binary_through_cat_is_byte_identical() {
    let broker = Broker::start(None);
    let _agent = Agent::start(&broker, AGENT).await;
    let mut data = vec![0u8; 10 << 20];
    rand::thread_rng().fill_bytes(&mut data);
    let want = Sha256::digest(&data);

    let run = through_remote_cat(&broker.url("admin", "admin"), AGENT, data).await;
    assert_eq!(run.code, 0, "exit code; stderr {:?}", run.stderr);
    assert_eq!(run.out.len(), 10 << 20, "length of what came back");
    assert_eq!(Sha256::digest(&run.out), want, "sha256 of what came back");
    assert_eq!(run.stderr, "", "stderr");
}

// ---- 4. a dying end --------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_shvrexec_ends_shvrsh_with_255_within_2s() {
    let broker = Broker::start(None);
    let agent = Agent::start(&broker, AGENT).await;
    let (admin, _) = broker.connect("admin", "admin").await;
    // stdin stays open: only the tunnel's death may end this session.
    let mut rsh = spawn_rsh(&broker.url("admin", "admin"), AGENT, &["cat"]);
    let _stdin = rsh.stdin.take().unwrap();
    let stdout = collect(rsh.stdout.take().unwrap());
    let stderr = collect(rsh.stderr.take().unwrap());
    wait_connected_tunnel(&admin, AGENT).await;
    let deadline = Instant::now() + TIMEOUT;
    let rexec = loop {
        match agent.rexec_pids()[..] {
            [pid] => break pid,
            ref other => assert!(
                Instant::now() < deadline,
                "expected one shvrexec child of the agent, found {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    sigkill(rexec);
    let t0 = Instant::now();
    let code = loop {
        if let Some(st) = rsh.try_wait().expect("try_wait") {
            break st.code().unwrap_or(-1);
        }
        assert!(
            t0.elapsed() < TIMEOUT,
            "shvrsh still running {TIMEOUT:?} after its shvrexec was killed; stderr {:?}",
            text(&stderr)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let took = t0.elapsed();
    // Let the pipe readers catch up with the last bytes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let err = text(&stderr);
    assert_eq!(code, 255, "exit code; stderr {err:?}");
    assert!(
        took <= TWO_SECONDS,
        "shvrsh took {took:?} to notice (limit {TWO_SECONDS:?})"
    );
    assert!(
        err.starts_with("shvrsh: ") && err.trim().len() > "shvrsh:".len(),
        "a one-line reason on stderr expected, got {err:?}"
    );
    assert_eq!(text(&stdout), "", "no output expected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_shvrsh_hangs_up_the_command_and_drops_the_tunnel_within_2s() {
    let broker = Broker::start(None);
    let _agent = Agent::start(&broker, AGENT).await;
    let (admin, _) = broker.connect("admin", "admin").await;
    let dir = TempDir::new("rsh-hup");
    let file = dir.path().join("hup");
    // "ready" once the trap is set: a SIGHUP before that would kill sh silently.
    let script = format!(
        "trap \"echo hup > '{}'\" HUP; echo ready; sleep 100 & wait",
        file.display()
    );
    let mut rsh = spawn_rsh(&broker.url("admin", "admin"), AGENT, &["sh", "-c", &script]);
    let _stdin = rsh.stdin.take().unwrap();
    let stdout = collect(rsh.stdout.take().unwrap());
    let _stderr = collect(rsh.stderr.take().unwrap());
    wait_output(&stdout, "ready\n", "remote sh").await;
    let tunnel = wait_connected_tunnel(&admin, AGENT).await;

    sigkill(rsh.id().expect("shvrsh pid") as i32);
    let t0 = Instant::now();
    loop {
        if !tunnels(&admin).await.iter().any(|t| t.id == tunnel.id) {
            break;
        }
        assert!(
            t0.elapsed() < TIMEOUT,
            "tunnel {} still listed {TIMEOUT:?} after shvrsh was killed",
            tunnel.id
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = t0.elapsed();
    assert!(
        took <= TWO_SECONDS,
        "tunnel left .broker/tunnels only after {took:?} (limit {TWO_SECONDS:?})"
    );
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if std::fs::read_to_string(&file).is_ok_and(|s| s == "hup\n") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the remote command never got SIGHUP ({} not written)",
            file.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = rsh.wait().await;
}

// ---- 5. secrets and injection ----------------------------------------------------------

/// Plays the agent's part up to step 3: answers `launchRexec` with the FindTunnelRequest
/// response and hands the broker's FindTunnelResponse (with the secret) to the test.
struct FakeAgent {
    found: mpsc::UnboundedSender<TunnelCtl>,
}

#[async_trait::async_trait]
impl RequestHandler for FakeAgent {
    async fn handle(
        &self,
        client: &Client,
        request: RpcMessage,
    ) -> Option<Result<RpcValue, RpcError>> {
        let method = request
            .meta
            .get(tag::METHOD)
            .map(|m| m.as_str().to_string())
            .unwrap_or_default();
        if method != "launchRexec" {
            return Some(Err(RpcError::method_not_found(format!("no {method}"))));
        }
        let rid = request
            .meta
            .get(tag::REQUEST_ID)
            .map(|v| v.as_int())
            .unwrap_or_default();
        // Registered before we answer, as the real agent does, so that the response
        // cannot slip by.
        let mut stream = client.register_stream(rid, 4);
        client
            .send_frame(tunnel::find_tunnel_request(&request.meta, None))
            .await
            .expect("send FindTunnelRequest");
        let found = self.found.clone();
        tokio::spawn(async move {
            while let Some(f) = stream.recv().await {
                if let Some(Ok(ctl)) = TunnelCtl::from_frame(&f) {
                    if ctl.state == TunnelState::FindTunnelResponse {
                        let _ = found.send(ctl);
                    }
                }
            }
        });
        None
    }
}

/// A FindTunnelResponse for a launchRexec by admin on `test/fake`. Returns it with the
/// (still waiting) operator side, to keep alive while the secret is tried.
async fn capture_find_tunnel_response(
    broker: &Broker,
) -> (
    TunnelCtl,
    tests::DeviceHandle,
    Client,
    tokio::task::JoinHandle<()>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let device = broker
        .mount_device(
            "device",
            "device",
            "test/fake",
            Arc::new(FakeAgent { found: tx }),
        )
        .await;
    let (rsh, _) = broker.connect("admin", "admin").await;
    let c = rsh.clone();
    let launch = tokio::spawn(async move {
        let p = LaunchParams {
            cmd: vec!["true".into()],
            ..Default::default()
        };
        // Never completes with success: nobody sends CreateTunnelRequest.
        let _ = TunnelEnd::launch(&c, "test/fake", &p, TIMEOUT).await;
    });
    let ctl = tokio::time::timeout(TIMEOUT, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no FindTunnelResponse; broker stderr:\n{}", broker.stderr()))
        .expect("fake agent gone");
    assert!(
        ctl.secret.as_ref().is_some_and(|s| s.len() >= 32),
        "FindTunnelResponse without a (128-bit hex) secret: {ctl:?}"
    );
    assert_eq!(
        (ctl.host.as_deref(), ctl.port),
        (Some("127.0.0.1"), Some(broker.port)),
        "the tunnel host is this broker"
    );
    (ctl, device, rsh, launch)
}

/// One request on a raw connection; a closed connection is an error, not a panic.
async fn raw_call(
    conn: &mut RawConn,
    method: &str,
    param: Option<RpcValue>,
) -> Result<RpcValue, String> {
    let id = conn.next_id();
    conn.send(&RpcMessage::new_request(id, "", method, param))
        .await
        .map_err(|e| format!("send {method}: {e}"))?;
    loop {
        match conn.recv().await {
            RawEvent::Frame(f) if f.is_response() && f.request_id() == Some(id) => {
                let m = RpcMessage::from_frame(&f).map_err(|e| e.to_string())?;
                return m.result().map_err(|e| e.message);
            }
            RawEvent::Frame(_) => continue,
            other => return Err(format!("{method}: {other:?}")),
        }
    }
}

/// hello + login with a tunnel secret on a fresh connection; the connection is returned
/// on success (kept open by the caller), the error otherwise.
async fn secret_login(port: u16, secret: &str) -> Result<RawConn, String> {
    let mut conn = RawConn::connect(port).await;
    let hello = raw_call(&mut conn, "hello", None).await?;
    let nonce = hello
        .get("nonce")
        .map(|n| n.as_str().to_string())
        .unwrap_or_default();
    let params = LoginParams {
        credentials: Credentials::TunnelSecret(secret.to_string()),
        idle_timeout: Some(0),
        ..Default::default()
    };
    raw_call(&mut conn, "login", Some(params.to_value(&nonce))).await?;
    Ok(conn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_secret_works_once_only() {
    let broker = Broker::start(None);
    let (ctl, _device, _rsh, launch) = capture_find_tunnel_response(&broker).await;
    let secret = ctl.secret.clone().unwrap();
    // The secret with its last digit changed (to one it does not end with).
    let last = if secret.ends_with('0') { '1' } else { '0' };
    let wrong = format!("{}{last}", &secret[..secret.len() - 1]);
    assert!(
        secret_login(broker.port, &wrong).await.is_err(),
        "a wrong secret was accepted"
    );
    let first = secret_login(broker.port, &secret).await;
    assert!(
        first.is_ok(),
        "the fresh secret was refused: {:?}\nbroker stderr:\n{}",
        first.err(),
        broker.stderr()
    );
    // The first tunnel login is still connected: the second must fail anyway.
    let second = secret_login(broker.port, &secret).await;
    // Refused for the secret (not, say, for too many login attempts).
    match second {
        Ok(_) => panic!("the secret was accepted a second time"),
        Err(e) => assert!(e.contains("secret"), "second use refused, but why? {e}"),
    }
    assert!(
        !broker.stderr().contains(&secret),
        "the secret appears in the broker's log"
    );
    launch.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_secret_expires_after_its_ttl() {
    let broker = Broker::start(Some(&config_yaml(&[], "tunnel:\n  secret_ttl: 1\n")));
    let (ctl, _device, _rsh, launch) = capture_find_tunnel_response(&broker).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let late = secret_login(broker.port, ctl.secret.as_deref().unwrap()).await;
    match late {
        Ok(_) => panic!("a secret with secret_ttl 1 s was accepted after 2 s"),
        Err(e) => assert!(e.contains("secret"), "late secret refused, but why? {e}"),
    }
    launch.abort();
}

/// `<1:1, 8:id, 11:cid>i{2:[channel, b"INJECTED"]}`
fn injected(id: i64, cid: i64, channel: i64) -> Vec<u8> {
    let frame = tunnel::tunnel_frame(
        id,
        &[cid],
        false,
        None,
        Some(RpcValue::from(vec![
            RpcValue::from(channel),
            RpcValue::from(&b"INJECTED"[..]),
        ])),
    );
    libshv::codec::encode_frame(&frame).to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crafted_responses_cannot_get_into_an_open_tunnel() {
    // Debug logs on, whatever SHV_TEST_LOG says: the drops are counted from them.
    let broker = Broker::start_with_args(None, &["--log", "debug"]);
    let _agent = Agent::start(&broker, AGENT).await;
    let (admin, _) = broker.connect("admin", "admin").await;
    let mut rsh = spawn_rsh(&broker.url("admin", "admin"), AGENT, &["cat"]);
    let mut stdin = rsh.stdin.take().unwrap();
    let stdout = collect(rsh.stdout.take().unwrap());
    let stderr = collect(rsh.stderr.take().unwrap());
    stdin.write_all(b"hello\n").await.unwrap();
    wait_output(&stdout, "hello\n", "cat through the tunnel").await;
    let before = wait_connected_tunnel(&admin, AGENT).await;

    // The guessed ranges must cover the real tunnel, or this test proves nothing: the
    // ends' connection ids (rsh is the admin before rexec's tunnel login) and request
    // ids (libshv counts from 10) are small numbers.
    let rexec_peer: i64 = broker
        .stderr()
        .lines()
        .find_map(|l| {
            let l = l.split_once("logged in peer=")?.1;
            let (id, rest) = l.split_once(' ')?;
            rest.starts_with("user=tunnel#").then(|| id.parse().ok())?
        })
        .expect("the broker logged shvrexec's tunnel login");
    assert!(
        (1..=20).contains(&rexec_peer),
        "shvrexec's connection id {rexec_peer} is outside the guessed range"
    );

    let mut attacker = broker.raw().await;
    attacker
        .login("admin", "admin", true)
        .await
        .expect("attacker login");
    let me = attacker
        .call(".broker/currentClient", "info", None)
        .await
        .result()
        .expect("currentClient:info")
        .get("clientId")
        .expect("clientId")
        .as_int();
    // Both directions: channel 0 towards rexec (cat would echo it), 1 towards rsh.
    let mut sent = 0;
    for id in 1..=50 {
        for cid in 1..=20 {
            for channel in [0, 1] {
                attacker
                    .send_bytes(&injected(id, cid, channel))
                    .await
                    .expect("send crafted response");
                sent += 1;
            }
        }
    }
    // The broker handles a connection's frames in order: once the ping is answered,
    // every crafted frame has been judged.
    let pong = attacker.call(".app", "ping", None).await;
    assert!(
        pong.result().is_ok(),
        "ping after the crafted frames failed"
    );
    let after = tunnels(&admin)
        .await
        .into_iter()
        .find(|t| t.id == before.id)
        .expect("the tunnel is still open");
    assert_eq!(
        (after.bytes_to_rexec, after.bytes_to_rsh),
        (before.bytes_to_rexec, before.bytes_to_rsh),
        "crafted responses were counted as tunnel traffic"
    );

    stdin.write_all(b"bye\n").await.unwrap();
    drop(stdin);
    let code = wait_exit(&mut rsh, "shvrsh -- cat").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let out = text(&stdout);
    assert!(
        !out.contains("INJECTED"),
        "injected bytes reached shvrsh: {out:?}"
    );
    assert_eq!(out, "hello\nbye\n", "stdout; stderr {:?}", text(&stderr));
    assert_eq!(code, 0, "exit code; stderr {:?}", text(&stderr));

    // Every crafted frame was dropped, and logged as such.
    let mine = format!("peer={me} ");
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let dropped = broker
            .stderr()
            .lines()
            .filter(|l| l.contains("unsolicited response dropped") && l.contains(&mine))
            .count();
        if dropped >= sent {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the broker logged {dropped} of {sent} crafted responses as dropped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---- 6. refusals -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_is_refused_with_a_clear_message() {
    let broker = Broker::start(None);
    let agent = Agent::start(&broker, AGENT).await;
    // See path_without_agent_fails_clearly for the --timeout.
    let out = run_bin(
        "shvrsh",
        &[
            "--timeout",
            "60",
            &broker.url("viewer", "viewer"),
            AGENT,
            "--",
            "true",
        ],
    )
    .await;
    assert_eq!(out.code, 255, "exit code; stderr {:?}", out.stderr);
    let err = out.stderr.to_lowercase();
    assert!(
        err.contains("access") || err.contains("permission"),
        "stderr should say access was denied: {:?}",
        out.stderr
    );
    assert_eq!(
        out.stderr.trim().lines().count(),
        1,
        "one line: {:?}",
        out.stderr
    );
    assert!(agent.rexec_pids().is_empty(), "a shvrexec was started");
    let (admin, _) = broker.connect("admin", "admin").await;
    assert_eq!(tunnels(&admin).await, vec![], "a tunnel was opened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_without_agent_fails_clearly() {
    let broker = Broker::start(None);
    let _agent = Agent::start(&broker, AGENT).await;
    // An open timeout longer than run_bin's TIMEOUT: waiting for it instead of failing
    // on the error makes run_bin panic (a hang, not a timed assertion).
    let out = run_bin(
        "shvrsh",
        &[
            "--timeout",
            "60",
            &broker.url("admin", "admin"),
            "test/nothing",
            "--",
            "true",
        ],
    )
    .await;
    assert_eq!(out.code, 255, "exit code; stderr {:?}", out.stderr);
    assert!(
        out.stderr.contains("test/nothing"),
        "stderr should name the path: {:?}",
        out.stderr
    );
    let err = out.stderr.to_lowercase();
    assert!(
        err.contains("not found") || err.contains("no such"),
        "stderr should say the path does not exist: {:?}",
        out.stderr
    );
    assert_eq!(
        out.stderr.trim().lines().count(),
        1,
        "one line: {:?}",
        out.stderr
    );
}

// ---- beyond the list: more exit paths ----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_death_by_signal_is_128_plus_n() {
    let broker = Broker::start(None);
    let _agent = Agent::start(&broker, AGENT).await;
    let out = remote_sh(&broker, "kill -TERM $$").await;
    assert_eq!(out.code, 128 + 15, "exit code; stderr {:?}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_remote_program_fails_with_its_name() {
    let broker = Broker::start(None);
    let _agent = Agent::start(&broker, AGENT).await;
    let out = run_bin(
        "shvrsh",
        &[
            &broker.url("admin", "admin"),
            AGENT,
            "--",
            "/no/such/program",
        ],
    )
    .await;
    // As ssh (the remote shell's status): 127 for a missing command.
    assert_eq!(out.code, 127, "exit code; stderr {:?}", out.stderr);
    assert!(
        out.stderr.contains("/no/such/program: command not found"),
        "stderr should name the program: {:?}",
        out.stderr
    );
    // 126 for one that is there but cannot be executed.
    let out = run_bin(
        "shvrsh",
        &[&broker.url("admin", "admin"), AGENT, "--", "/tmp"],
    )
    .await;
    assert_eq!(out.code, 126, "exit code; stderr {:?}", out.stderr);
    assert!(out.stderr.contains("permission denied"), "{:?}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_on_shvrsh_interrupts_the_remote_command() {
    let broker = Broker::start(None);
    let _agent = Agent::start(&broker, AGENT).await;
    let mut rsh = spawn_rsh(
        &broker.url("admin", "admin"),
        AGENT,
        &["sh", "-c", "echo ready; exec sleep 100"],
    );
    let _stdin = rsh.stdin.take().unwrap();
    let stdout = collect(rsh.stdout.take().unwrap());
    let stderr = collect(rsh.stderr.take().unwrap());
    wait_output(&stdout, "ready\n", "remote sh").await;
    // SAFETY: kill(2) on our own child.
    assert_eq!(
        unsafe { libc::kill(rsh.id().unwrap() as i32, libc::SIGINT) },
        0
    );
    let code = wait_exit(&mut rsh, "shvrsh after SIGINT").await;
    assert_eq!(code, 128 + 2, "exit code; stderr {:?}", text(&stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_closing_the_tunnel_ends_both_sides() {
    let broker = Broker::start(None);
    let agent = Agent::start(&broker, AGENT).await;
    let (admin, _) = broker.connect("admin", "admin").await;
    let mut rsh = spawn_rsh(&broker.url("admin", "admin"), AGENT, &["cat"]);
    let _stdin = rsh.stdin.take().unwrap();
    let _stdout = collect(rsh.stdout.take().unwrap());
    let stderr = collect(rsh.stderr.take().unwrap());
    let t = wait_connected_tunnel(&admin, AGENT).await;
    assert_eq!(
        t.user.split(':').next(),
        Some("admin"),
        "tunnel user: {t:?}"
    );
    let closed = admin
        .call(".broker/tunnels", "close", Some(RpcValue::from(t.id)))
        .await
        .expect(".broker/tunnels:close");
    assert!(
        closed.as_bool(),
        "close({}) answered {}",
        t.id,
        closed.to_cpon()
    );
    let code = wait_exit(&mut rsh, "shvrsh after tunnels:close").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(code, 255, "exit code; stderr {:?}", text(&stderr));
    assert!(
        text(&stderr).contains("administrator"),
        "the reason should reach the operator: {:?}",
        text(&stderr)
    );
    let deadline = Instant::now() + TIMEOUT;
    while !agent.rexec_pids().is_empty() {
        assert!(
            Instant::now() < deadline,
            "shvrexec still running after its tunnel was closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(tunnels(&admin).await, vec![], "tunnel still listed");
}
