//! The command-line contracts of tools.md: shvbroker's --print-config, config errors,
//! --listen unix:, SIGTERM, no secrets in logs; shvcall's password sources and
//! --subscribe.

use std::time::Duration;

use libshv::login::sha1_hex;
use libshv::RpcValue;
use tests::*;

#[tokio::test]
async fn print_config_round_trips() {
    let out = run_bin("shvbroker", &["--print-config"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    for word in [
        "listen", "users", "admin", "device", "viewer", "roles", "limits",
    ] {
        assert!(
            out.stdout.contains(word),
            "--print-config lacks {word}:\n{}",
            out.stdout
        );
    }
    assert!(
        out.stdout.contains("tcp://127.0.0.1:3755"),
        "{}",
        out.stdout
    );
    // An example of each transport, and each example parses.
    let examples: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("#   "))
        .flat_map(|l| l.split_whitespace().take(2))
        .filter(|w| w.contains(':') && !w.ends_with(':'))
        .collect();
    for scheme in [
        "tcp", "ssl", "tcps", "ssls", "ws", "wss", "unix", "unixs", "serial",
    ] {
        assert!(
            examples
                .iter()
                .any(|e| e.starts_with(&format!("{scheme}:"))),
            "no {scheme} example in {examples:?}"
        );
    }
    for e in &examples {
        libshv::url::RpcUrl::parse(e).unwrap_or_else(|err| panic!("example {e}: {err}"));
    }
    // Secrets are masked; with them filled in again, the printed config is a valid
    // config (listen is overridden by the harness).
    assert!(
        !out.stdout.contains(&libshv::login::sha1_hex(b"viewer")),
        "{}",
        out.stdout
    );
    let filled = out
        .stdout
        .replace("sha1pass: REDACTED", "password: PASSWORD")
        .replace(
            "admin:\n    password: PASSWORD",
            "admin:\n    password: admin",
        )
        .replace(
            "device:\n    password: PASSWORD",
            "device:\n    password: device",
        )
        .replace(
            "viewer:\n    password: PASSWORD",
            "viewer:\n    password: viewer",
        );
    let broker = Broker::start(Some(&filled));
    let (c, _) = broker.connect("viewer", "viewer").await;
    assert_served(&c).await;
}

#[tokio::test]
async fn unknown_config_key_is_an_error_with_its_line() {
    let dir = TempDir::new("cfg");
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "name: x\nlisten: []\nbogus_key: 1\n").unwrap();
    let out = run_bin(
        "shvbroker",
        &[
            "-c",
            path.to_str().unwrap(),
            "--listen",
            "tcp://127.0.0.1:0",
        ],
    )
    .await;
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("bogus_key"), "{out:?}");
    assert!(out.stderr.contains("line 3"), "{out:?}");
    assert!(!out.stderr.contains("listening on"), "{out:?}");
}

#[tokio::test]
async fn listen_on_unix_socket() {
    let dir = TempDir::new("unix");
    let sock = dir.path().join("b.sock");
    let listen = format!("unix:{}", sock.display());
    let broker = Broker::start_with_args(None, &["--listen", &listen]);
    wait_for("the unix listen log line", || async {
        broker
            .stderr()
            .contains(&format!("listening on {listen}"))
            .then_some(())
    })
    .await;
    let url = format!("{listen}?user=admin&password=admin");
    let out = shvcall(&url, ".app", "shvVersionMajor", None).await;
    assert_eq!((out.code, out.stdout.trim()), (0, "3"), "{out:?}");
}

#[tokio::test]
async fn sigterm_exits_zero_and_closes_peers() {
    let mut broker = Broker::start(None);
    let (c, _) = broker.connect("admin", "admin").await;
    assert_served(&c).await;
    let status = broker.terminate();
    assert!(
        status.success(),
        "exit status after SIGTERM: {status}\n{}",
        broker.stderr()
    );
    tokio::time::timeout(TIMEOUT, c.closed())
        .await
        .expect("the client connection must be closed");
}

#[tokio::test]
async fn passwords_never_reach_the_log() {
    let password = "Zq9-very-secret-Pw";
    let wrong = "Wr0ng-secret-Guess";
    let yaml = config_yaml(&[], "")
        .replace("  viewer: {password: viewer, roles: [viewer]}\n", &format!(
            "  viewer: {{password: viewer, roles: [viewer]}}\n  secretuser: {{password: '{password}', roles: [viewer]}}\n"
        ));
    assert!(yaml.contains(password));
    let broker = Broker::start_with_args(Some(&yaml), &["--log", "trace"]);
    for sha1 in [false, true] {
        let mut cfg = broker.config("secretuser", password);
        cfg.login.use_sha1 = sha1;
        let (c, _) = broker.try_connect(&cfg, None).await.expect("login");
        assert_served(&c).await;
        let mut cfg = broker.config("secretuser", wrong);
        cfg.login.use_sha1 = sha1;
        assert!(broker.try_connect(&cfg, None).await.is_err());
    }
    let log = broker.stderr();
    assert!(
        log.contains("secretuser"),
        "the log should mention the logins at trace level:\n{log}"
    );
    for secret in [
        password.to_string(),
        wrong.to_string(),
        sha1_hex(password.as_bytes()),
    ] {
        assert!(
            !log.contains(&secret),
            "the broker log contains a secret ({secret}):\n{log}"
        );
    }
}

#[tokio::test]
async fn shvcall_password_from_env_file_and_plain() {
    let broker = Broker::start(None);
    let url = format!("tcp://admin@127.0.0.1:{}", broker.port);
    let out = run_bin_env(
        "shvcall",
        &[&url, ".app", "shvVersionMajor"],
        &[("SHV_PASSWORD", "admin")],
    )
    .await;
    assert_eq!(
        (out.code, out.stdout.trim()),
        (0, "3"),
        "SHV_PASSWORD: {out:?}"
    );

    let dir = TempDir::new("pw");
    let pwfile = dir.path().join("pw");
    std::fs::write(&pwfile, "admin\n").unwrap();
    let out = run_bin(
        "shvcall",
        &[
            "--password-file",
            pwfile.to_str().unwrap(),
            &url,
            ".app",
            "shvVersionMajor",
        ],
    )
    .await;
    assert_eq!(
        (out.code, out.stdout.trim()),
        (0, "3"),
        "--password-file: {out:?}"
    );

    let out = run_bin(
        "shvcall",
        &[
            "--plain",
            &broker.url("admin", "admin"),
            ".app",
            "shvVersionMajor",
        ],
    )
    .await;
    assert_eq!((out.code, out.stdout.trim()), (0, "3"), "--plain: {out:?}");

    let shapass = format!(
        "tcp://admin@127.0.0.1:{}?shapass={}",
        broker.port,
        sha1_hex(b"admin")
    );
    let out = run_bin("shvcall", &[&shapass, ".app", "shvVersionMajor"]).await;
    assert_eq!((out.code, out.stdout.trim()), (0, "3"), "shapass: {out:?}");

    let out = run_bin_env(
        "shvcall",
        &[&url, ".app", "ping"],
        &[("SHV_PASSWORD", "wrong")],
    )
    .await;
    assert_eq!(out.code, 69, "a login failure is exit status 69: {out:?}");
}

#[tokio::test]
async fn shvcall_subscribe_prints_signals() {
    let broker = Broker::start(None);
    let dev = broker
        .mount_device("device", "device", "test/dev1", TestDevice::new())
        .await;
    let args: Vec<std::ffi::OsString> = vec![
        broker.url("viewer", "viewer").into(),
        "--subscribe".into(),
        "test/dev1/**:*:chng".into(),
    ];
    let mut sub = PyProc::spawn_program(&bin("shvcall"), &args);
    // shvcall says nothing when subscribed: emit until the first signal shows up.
    let client = dev.client.clone();
    let emitter = tokio::spawn(async move {
        for i in 0.. {
            if client
                .emit("number", "chng", "get", Some(RpcValue::from(i)))
                .await
                .is_err()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let line = sub.line().await;
    emitter.abort();
    let (head, param) = line.split_once(' ').unwrap_or((&line, ""));
    assert_eq!(head, "test/dev1/number:get:chng", "{line}");
    assert!(param.parse::<i64>().is_ok(), "{line}");
}
