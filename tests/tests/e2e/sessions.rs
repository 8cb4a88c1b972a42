//! Session recording and the audit trail (`tunnel.record_dir`, `tunnel.audit_log`): a
//! PTY session is recorded as asciicast v2 that asciinema itself reads, and every
//! session has an open and a close entry naming the user the broker authenticated,
//! whatever UserId the client sent.

use std::path::Path;
use std::time::Duration;

use crate::shell_rig::Agent;
use libshv::meta::tag;
use libshv::tunnel::{CloseStatus, Control, LaunchParams, TunnelEnd, TunnelEvent};
use libshv::{RpcMessage, RpcValue};
use tests::*;

fn broker_with_records(dir: &Path, record_input: bool) -> Broker {
    let extra = format!(
        "tunnel: {{record_dir: '{}', audit_log: '{}', record_input: {record_input}}}\n",
        dir.join("rec").display(),
        dir.join("audit.jsonl").display()
    );
    Broker::start(Some(&config_yaml(&[], &extra)))
}

/// The audit entries (JSON objects), waiting until `pred` holds for them.
async fn audit_entries(
    dir: &Path,
    pred: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let text = std::fs::read_to_string(dir.join("audit.jsonl")).unwrap_or_default();
        let entries: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect();
        if pred(&entries) {
            return entries;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "audit log never got there:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pty_session_is_recorded_as_asciicast_and_audited() {
    let dir = TempDir::new("sessions");
    let broker = broker_with_records(dir.path(), false);
    let _agent = Agent::start(&broker, "test/agent").await;
    let (client, _) = broker.connect("admin", "admin").await;
    let params = LaunchParams {
        pty: true,
        cmd: vec![
            "sh".into(),
            "-c".into(),
            // Like a password prompt: what is typed is not echoed.
            "stty -echo; printf 'password: '; read line; stty echo; stty size; \
             printf 'hello \\342\\202\\254 recorded\\n'; exit 3"
                .into(),
        ],
        cols: 100,
        rows: 30,
        ..Default::default()
    };
    let end = TunnelEnd::launch(&client, "test/agent", &params, TIMEOUT)
        .await
        .expect("tunnel");
    let (sender, mut receiver) = end.split();
    let mut shown = Vec::new();
    // Typed at the prompt, once echo is off.
    while !String::from_utf8_lossy(&shown).contains("password: ") {
        match tokio::time::timeout(TIMEOUT, receiver.recv()).await {
            Ok(Some(TunnelEvent::Data { data, .. })) => shown.extend(data),
            other => panic!("no prompt: {other:?}"),
        }
    }
    sender
        .send_control(Control::Resize {
            cols: 120,
            rows: 40,
        })
        .await
        .unwrap();
    sender.send_data(0, b"typed-secret\n").await.unwrap();
    let status = loop {
        match tokio::time::timeout(TIMEOUT, receiver.recv()).await {
            Ok(Some(TunnelEvent::Data { data, .. })) => shown.extend(data),
            Ok(Some(TunnelEvent::Closed(st))) => break st,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => {
                panic!("session did not end: {:?}", String::from_utf8_lossy(&shown))
            }
        }
    };
    assert_eq!(status, CloseStatus::ExitCode(3));
    let shown = String::from_utf8_lossy(&shown).into_owned();
    assert!(
        shown.contains("40 120") && shown.contains("hello € recorded"),
        "{shown}"
    );

    let entries = audit_entries(dir.path(), |e| e.iter().any(|x| x["event"] == "close")).await;
    let open = entries
        .iter()
        .find(|e| e["event"] == "open")
        .expect("open entry");
    let close = entries
        .iter()
        .find(|e| e["event"] == "close")
        .expect("close entry");
    assert_eq!(open["session"], close["session"]);
    for e in [open, close] {
        assert_eq!(e["user"], "admin", "{e}");
        assert_eq!(e["agent"], "test/agent", "{e}");
        assert_eq!(e["kind"], "command", "{e}");
        assert!(
            e["client"].as_str().unwrap().starts_with("tcp:127.0.0.1:"),
            "{e}"
        );
        assert!(e["time"].as_str().unwrap().ends_with('Z'), "{e}");
    }
    assert_eq!(close["exit_code"], 3, "{close}");
    assert!(close["bytes_to_operator"].as_u64().unwrap() > 0, "{close}");
    assert!(close["bytes_to_device"].as_u64().unwrap() > 0, "{close}");
    let name = close["recording"].as_str().expect("recording named");
    assert_eq!(open["recording"], close["recording"]);

    // The recording: asciicast v2, as asciinema reads it.
    let cast = dir.path().join("rec").join(name);
    let text = std::fs::read_to_string(&cast).expect("the recording");
    let mut lines = text.lines();
    let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(
        (&header["version"], &header["width"], &header["height"]),
        (&2.into(), &100.into(), &30.into()),
        "{header}"
    );
    let events: Vec<serde_json::Value> = lines.map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut last = 0.0;
    for e in &events {
        let t = e[0].as_f64().expect("time");
        assert!(t >= last, "times go forward: {text}");
        last = t;
    }
    assert!(
        events.iter().any(|e| e[1] == "r" && e[2] == "120x40"),
        "no resize event: {text}"
    );
    // Without record_input, what was typed (and not echoed) is nowhere in the file.
    assert!(
        !events.iter().any(|e| e[1] == "i") && !text.contains("typed-secret"),
        "input recorded without record_input: {text}"
    );
    let out = std::process::Command::new(python().parent().unwrap().join("asciinema"))
        .arg("cat")
        .arg(&cast)
        .output()
        .expect("run asciinema (pinned in the venv)");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "asciinema cat: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        printed.contains("hello € recorded") && printed.contains("40 120"),
        "{printed}"
    );
}

/// The audit user is the broker's own login, even when the client sends a forged
/// UserId; the close entry comes when the operator's connection goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_user_is_the_login_not_a_forged_user_id() {
    let dir = TempDir::new("forged");
    let broker = broker_with_records(dir.path(), true);
    let _agent = Agent::start(&broker, "test/agent").await;
    let mut raw = RawConn::connect(broker.port).await;
    raw.login("admin", "admin", true).await.expect("login");
    let params = LaunchParams {
        cmd: vec!["sleep".into(), "30".into()],
        ..Default::default()
    };
    let mut req = RpcMessage::new_request(
        raw.next_id(),
        "test/agent",
        "launchRexec",
        Some(params.to_value()),
    );
    req.meta
        .insert(tag::USER_ID, RpcValue::from("root:elsewhere"));
    raw.send(&req).await.unwrap();
    let entries = audit_entries(dir.path(), |e| e.iter().any(|x| x["event"] == "open")).await;
    let open = entries.iter().find(|e| e["event"] == "open").unwrap();
    assert_eq!(open["user"], "admin", "{open}");
    assert_eq!(
        open["user_chain"], "root:elsewhere;admin:testbroker",
        "{open}"
    );
    drop(raw);
    let entries = audit_entries(dir.path(), |e| e.iter().any(|x| x["event"] == "close")).await;
    let close = entries.iter().find(|e| e["event"] == "close").unwrap();
    assert_eq!(close["user"], "admin", "{close}");
    assert_eq!(close["error"], "the operator's end disconnected", "{close}");
}

/// A copy and a forward get their open and close entries too, with their kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_and_forwards_are_audited() {
    let dir = TempDir::new("audit-kinds");
    let broker = broker_with_records(dir.path(), false);
    let url = broker.url("device", "device");
    let _agent = Agent::start_with_args(&broker, &url, "test/agent", &["--allow-forward"]).await;
    std::fs::write(dir.path().join("f.txt"), "x").unwrap();
    let remote = format!("test/agent:{}", dir.path().join("g.txt").display());
    let out = tokio::process::Command::new(bin("shvcp"))
        .args(["-q", &broker.url("admin", "admin")])
        .arg(dir.path().join("f.txt"))
        .arg(&remote)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut rsh = tokio::process::Command::new(bin("shvrsh"))
        .args([&broker.url("admin", "admin"), "test/agent", "-N", "-L"])
        .arg(format!("{port}:127.0.0.1:9"))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    audit_entries(dir.path(), |e| e.iter().any(|x| x["kind"] == "forward")).await;
    rsh.kill().await.unwrap();
    let entries = audit_entries(dir.path(), |e| {
        e.iter().filter(|x| x["event"] == "close").count() >= 2
    })
    .await;
    for kind in ["copy", "forward"] {
        for event in ["open", "close"] {
            let n = entries
                .iter()
                .filter(|x| x["kind"] == kind && x["event"] == event)
                .count();
            assert_eq!(n, 1, "{kind} {event}: {entries:?}");
        }
    }
    let copy_close = entries
        .iter()
        .find(|x| x["kind"] == "copy" && x["event"] == "close")
        .unwrap();
    assert_eq!(copy_close["exit_code"], 0, "{copy_close}");
    assert!(
        copy_close["command"]
            .as_str()
            .unwrap()
            .starts_with("copyIn: "),
        "{copy_close}"
    );
}

/// The report's disk flood: a session pours 64 MiB of NUL bytes (6 bytes each as
/// JSON) at the broker. Its recording stops at `tunnel.record_max_bytes` and ends
/// with a marker saying so; the session itself runs to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_output_stops_the_recording_at_its_cap() {
    let dir = TempDir::new("sessions-cap");
    let cap: u64 = 1024 * 1024;
    let extra = format!(
        "tunnel: {{record_dir: '{}', audit_log: '{}', record_max_bytes: {cap}}}\n",
        dir.path().join("rec").display(),
        dir.path().join("audit.jsonl").display()
    );
    let broker = Broker::start(Some(&config_yaml(&[], &extra)));
    let _agent = Agent::start(&broker, "test/agent").await;
    let (client, _) = broker.connect("admin", "admin").await;
    let params = LaunchParams {
        pty: false,
        cmd: vec![
            "head".into(),
            "-c".into(),
            "67108864".into(),
            "/dev/zero".into(),
        ],
        ..Default::default()
    };
    let end = TunnelEnd::launch(&client, "test/agent", &params, TIMEOUT)
        .await
        .expect("tunnel");
    let (_sender, mut receiver) = end.split();
    let mut got = 0usize;
    let status = loop {
        match tokio::time::timeout(TIMEOUT, receiver.recv()).await {
            Ok(Some(TunnelEvent::Data { data, .. })) => got += data.len(),
            Ok(Some(TunnelEvent::Closed(st))) => break st,
            Ok(Some(_)) => {}
            other => panic!("session did not end after {got} bytes: {other:?}"),
        }
    };
    assert_eq!((status, got), (CloseStatus::ExitCode(0), 64 << 20));
    let entries = audit_entries(dir.path(), |e| e.iter().any(|x| x["event"] == "close")).await;
    let close = entries.iter().find(|e| e["event"] == "close").unwrap();
    let name = close["recording"].as_str().expect("recording named");
    let cast = std::fs::read_to_string(dir.path().join("rec").join(name)).unwrap();
    assert!(cast.len() as u64 <= cap, "{} bytes", cast.len());
    let last = cast.lines().last().unwrap();
    assert!(
        last.contains("recording truncated: the recording reached its cap of 1048576 bytes"),
        "{last}"
    );
}

/// The report's crafted launch: a `dest` beside `cmd` made the old audit name
/// `/var/empty/harmless` while `touch M1` ran. The trail (audit, agent log) now reads
/// the launch as the agent does and names what ran; `runCmd` is audited too, under
/// the login the broker authenticated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_names_what_runs_and_runcmd_is_audited() {
    let dir = TempDir::new("sessions-crafted");
    let broker = broker_with_records(dir.path(), false);
    let agent = Agent::start(&broker, "test/agent").await;
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let crafted = RpcValue::from_cpon(format!(
        r#"{{"method":"runCmd","params":{{"cmd":["sh","-c","touch M1"],"dest":"/var/empty/harmless","cwd":"{}"}}}}"#,
        work.display()
    ))
    .unwrap();
    let mut rsh = RawConn::connect(broker.port).await;
    rsh.login("admin", "admin", true).await.expect("login");
    rsh.send(&RpcMessage::new_request(
        50,
        "test/agent",
        "launchRexec",
        Some(crafted),
    ))
    .await
    .unwrap();
    let entries = audit_entries(dir.path(), |e| e.iter().any(|x| x["event"] == "open")).await;
    let open = entries.iter().find(|e| e["event"] == "open").unwrap();
    let command = open["command"].as_str().unwrap();
    assert!(
        command.contains("sh -c 'touch M1'") && !command.contains("harmless"),
        "{open}"
    );
    // (The raw operator never answers CreateTunnelRequest, so nothing runs: what
    // counts is what the trail says would.)

    let (client, _) = broker.connect("admin", "admin").await;
    let r = client
        .call(
            "test/agent",
            "runCmd",
            Some(RpcValue::from_cpon(r#"["sh","-c","echo ran"]"#).unwrap()),
        )
        .await
        .expect("runCmd");
    assert_eq!(r.as_list()[1].as_str(), "ran\n");
    let entries = audit_entries(dir.path(), |e| e.iter().any(|x| x["event"] == "run")).await;
    let run = entries.iter().find(|e| e["event"] == "run").unwrap();
    assert_eq!(run["command"], "runCmd: sh -c 'echo ran'", "{run}");
    assert_eq!(run["user"], "admin", "{run}");
    assert_eq!(run["agent"], "test/agent", "{run}");
    // The agent logs it with the user its broker vouched for.
    let deadline = std::time::Instant::now() + TIMEOUT;
    while !agent.stderr().contains("runCmd for admin") {
        assert!(std::time::Instant::now() < deadline, "{}", agent.stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        agent.stderr().contains("sh -c 'touch M1'"),
        "{}",
        agent.stderr()
    );
}
