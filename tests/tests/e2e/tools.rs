//! The command-line tools as a person uses them: strict URLs with a hint, one-line
//! errors, documented exit codes, one logging convention, named hosts.

use std::os::unix::fs::PermissionsExt;

use tests::*;

/// `tcp:/HOST:PORT` once meant localhost:3755 to every tool (and to the broker's
/// `--listen`); now each refuses it and says what was meant.
#[tokio::test]
async fn a_near_miss_url_is_refused_with_a_hint() {
    for (tool, args) in [
        ("shvcall", vec!["tcp:/127.0.0.1:41755", ".app", "ping"]),
        ("shvcall", vec!["127.0.0.1:41755", ".app", "ping"]),
        ("shvbroker", vec!["--listen", "tcp:/127.0.0.1:41762"]),
        (
            "shvagent",
            vec!["tcp:/127.0.0.1:41755", "--mount", "test/a"],
        ),
        (
            "shvrsh",
            vec!["tcp:/127.0.0.1:41755", "test/a", "--", "true"],
        ),
        (
            "shvcp",
            vec!["tcp:/127.0.0.1:41755", "test/a:/etc/hosts", "/tmp/x"],
        ),
    ] {
        let out = run_bin(tool, &args).await;
        assert_ne!(out.code, 0, "{tool} {args:?}: {out:?}");
        assert!(
            out.stderr.contains("did you mean tcp://127.0.0.1:417"),
            "{tool} {args:?}: {out:?}"
        );
        assert_eq!(out.stderr.trim().lines().count(), 1, "{tool}: {out:?}");
    }
}

/// A wrong password: one line naming the cause once, a hint, no backtrace even when
/// RUST_BACKTRACE asks for one; exit 69 (the broker refused us).
#[tokio::test]
async fn a_login_failure_is_one_line_with_a_hint() {
    let broker = Broker::start(None);
    for (tool, extra) in [
        ("shvagent", vec!["--mount", "test/a"]),
        ("shvcall", vec![".app", "ping"]),
    ] {
        let url = broker.url("device", "wrong");
        let mut args = vec![url.as_str()];
        args.extend(extra);
        let out = run_bin_env(tool, &args, &[("RUST_BACKTRACE", "1")]).await;
        assert_eq!(out.code, 69, "{tool}: {out:?}");
        let err = out.stderr.trim();
        assert_eq!(err.lines().count(), 1, "{tool}: {err}");
        assert!(err.starts_with(&format!("{tool}: ")), "{err}");
        assert_eq!(
            err.matches("wrong user name or password").count(),
            1,
            "{err}"
        );
        assert!(err.contains("--password-file"), "{err}");
        assert!(
            !err.contains("Caused by") && !err.contains("backtrace"),
            "{err}"
        );
    }
}

/// shvcall's exit codes: 1 an RPC error (named, not `RPC error 2`), 64 a bad value on
/// the command line (with a hint for an unquoted Cpon string), 0 success; a bad
/// subscription RI is refused at once instead of waiting forever.
#[tokio::test]
async fn shvcall_exit_codes_and_hints() {
    let broker = Broker::start(None);
    let url = broker.url("admin", "admin");
    let out = run_bin("shvcall", &[&url, "no/such", "get"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("(MethodNotFound)"), "{out:?}");
    assert!(!out.stderr.contains("RPC error 2"), "{out:?}");

    let out = run_bin("shvcall", &[&url, ".app", "ping", "hello"]).await;
    assert_eq!(out.code, 64, "{out:?}");
    assert!(out.stderr.contains(r#"'"text"'"#), "{out:?}");

    let out = run_bin("shvcall", &[&url, "--subscribe", "bad ri"]).await;
    assert_eq!(out.code, 64, "{out:?}");
    assert!(out.stderr.contains("PATH:METHOD:SIGNAL"), "{out:?}");

    let out = run_bin("shvcall", &[&url]).await;
    assert_eq!(out.code, 64, "{out:?}");

    let out = run_bin("shvcall", &["--no-such-flag", &url]).await;
    assert_eq!(out.code, 2, "clap's usage error: {out:?}");

    // Not a terminal: one line of Cpon, as scripts read it.
    let out = run_bin("shvcall", &[&url, ".app", "dir"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout.trim().lines().count(), 1, "{out:?}");
    let out = run_bin("shvcall", &[&url, ".app", "name", "--json"]).await;
    let name = out.stdout.trim();
    assert!(name.starts_with('"') && name.ends_with('"'), "{out:?}");
}

/// One logging convention: -v/-vv step up from the default, -q down, --log gives a
/// filter, RUST_LOG is read by every tool; no colour codes when stderr is a pipe.
#[tokio::test]
async fn logging_flags_are_the_same_everywhere() {
    let broker = Broker::start(None);
    let url = broker.url("admin", "admin");
    // shvcall is quiet by default (warnings only); -vv shows libshv's debug lines.
    let quiet = run_bin("shvcall", &[&url, ".app", "ping"]).await;
    assert_eq!((quiet.code, quiet.stderr.as_str()), (0, ""), "{quiet:?}");
    let loud = run_bin("shvcall", &["-vv", &url, ".app", "ping"]).await;
    assert_eq!(loud.code, 0, "{loud:?}");
    assert!(loud.stderr.contains("DEBUG"), "{loud:?}");
    assert!(
        !loud.stderr.contains('\x1b'),
        "colour codes into a pipe: {loud:?}"
    );
    let env = run_bin_env("shvcall", &[&url, ".app", "ping"], &[("RUST_LOG", "debug")]).await;
    assert!(env.stderr.contains("DEBUG"), "RUST_LOG ignored: {env:?}");
    let filt = run_bin("shvcall", &["--log", "libshv=debug", &url, ".app", "ping"]).await;
    assert!(filt.stderr.contains("DEBUG"), "{filt:?}");
    // The broker: -vv is trace, not the filter "v" that silenced everything.
    let out = run_bin("shvbroker", &["-vv", "--print-config"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let out = run_bin("shvbroker", &["--log", "no such filter=="]).await;
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("invalid log filter"), "{out:?}");
}

/// `shvcall site1 …`: the URL and the password come from the client config file,
/// which is refused (with the chmod to run) while others may read the password.
#[tokio::test]
async fn a_named_host_from_the_config_file() {
    let broker = Broker::start(None);
    let dir = TempDir::new("hosts");
    let cfg = dir.0.join("hosts.yaml");
    std::fs::write(
        &cfg,
        format!(
            "hosts:\n  site1:\n    url: tcp://admin@127.0.0.1:{}\n    password: admin\n",
            broker.port
        ),
    )
    .unwrap();
    let env = [("SHV_CONFIG", cfg.to_str().unwrap())];
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run_bin_env("shvcall", &["site1", ".app", "ping"], &env).await;
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("chmod 600"), "{out:?}");
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = run_bin_env("shvcall", &["site1", ".app", "ping"], &env).await;
    assert_eq!((out.code, out.stdout.trim()), (0, "null"), "{out:?}");
    let out = run_bin_env("shvcall", &["site2", ".app", "ping"], &env).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("it has: site1"), "{out:?}");
    // A password file named by the host.
    let pw = dir.0.join("pw");
    std::fs::write(&pw, "admin\n").unwrap();
    std::fs::write(
        &cfg,
        format!(
            "hosts:\n  site1:\n    url: tcp://admin@127.0.0.1:{}\n    password_file: {}\n",
            broker.port,
            pw.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run_bin_env("shvcall", &["site1", ".app", "ping"], &env).await;
    assert_eq!((out.code, out.stdout.trim()), (0, "null"), "{out:?}");
}
