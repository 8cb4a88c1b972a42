//! Port forwarding over tunnels (`shvrsh -L` / `-R` / `-N`, two forwards at once): two
//! concurrent HTTP GETs of a 5 MiB file from a real web server on the far side, and two
//! concurrent 5 MiB uploads through an echo service, byte-exact;
//! the forward ends with its shvrsh; an agent that does not allow forwarding says so;
//! `-W` carries stdin and stdout (ssh and rsync through it as ProxyCommand, to an sshd
//! of the test's own).

use std::time::Duration;

use crate::shell_rig::Agent;
use rand::RngCore;
use sha2::{Digest, Sha256};
use tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB5: usize = 5 << 20;

/// An echo server (stands for a device's web UI or a PLC port): every connection gets
/// back what it sent, and is closed after the client's EOF.
async fn echo_server() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    port
}

/// A real HTTP server (Python's `http.server` from the venv) serving a 5 MiB file;
/// killed on drop.
struct HttpServer {
    child: std::process::Child,
    port: u16,
    /// SHA-256 of the file.
    sha: Vec<u8>,
    _dir: TempDir,
}

impl HttpServer {
    fn start() -> HttpServer {
        let dir = TempDir::new("www");
        let mut data = vec![0u8; MIB5];
        rand::thread_rng().fill_bytes(&mut data);
        std::fs::write(dir.path().join("blob.bin"), &data).unwrap();
        let port = free_port_now();
        let child = std::process::Command::new(python())
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
            ])
            .arg("--directory")
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python -m http.server");
        let deadline = std::time::Instant::now() + TIMEOUT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "http.server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        HttpServer {
            child,
            port,
            sha: Sha256::digest(&data).to_vec(),
            _dir: dir,
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET /blob.bin` through `port`; the body must be the server's file, byte-exact.
async fn http_get(port: u16, want: &[u8]) -> Result<(), String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    s.write_all(b"GET /blob.bin HTTP/1.0\r\nHost: device\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut resp = Vec::new();
    tokio::time::timeout(Duration::from_secs(120), s.read_to_end(&mut resp))
        .await
        .map_err(|_| "no end of response".to_string())?
        .map_err(|e| e.to_string())?;
    let head_end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no HTTP head")?;
    let head = String::from_utf8_lossy(&resp[..head_end]);
    if !head.starts_with("HTTP/1.0 200") {
        return Err(format!("answered {head}"));
    }
    let body = &resp[head_end + 4..];
    if body.len() != MIB5 || Sha256::digest(body).as_slice() != want {
        return Err(format!("{} bytes of body, not the file", body.len()));
    }
    Ok(())
}

fn free_port_now() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends 5 MiB of random bytes through `port`, half-closes, reads everything back.
async fn round_trip(port: u16) -> Result<(), String> {
    let mut data = vec![0u8; MIB5];
    rand::thread_rng().fill_bytes(&mut data);
    let want = Sha256::digest(&data);
    let s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        w.write_all(&data).await.map_err(|e| e.to_string())?;
        w.shutdown().await.map_err(|e| e.to_string())
    });
    let mut back = Vec::with_capacity(MIB5);
    tokio::time::timeout(Duration::from_secs(120), r.read_to_end(&mut back))
        .await
        .map_err(|_| format!("no EOF after {} bytes", back.len()))?
        .map_err(|e| e.to_string())?;
    writer.await.unwrap()?;
    if back.len() != MIB5 || Sha256::digest(&back) != want {
        return Err(format!(
            "{} bytes came back, not the same 5 MiB",
            back.len()
        ));
    }
    Ok(())
}

/// Waits until something listens on `port` (shvrsh's or the device's listener).
async fn wait_listening(port: u16, rsh: &mut tokio::process::Child) {
    let deadline = std::time::Instant::now() + TIMEOUT;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if let Ok(Some(st)) = rsh.try_wait() {
            let mut err = String::new();
            let _ = rsh.stderr.take().unwrap().read_to_string(&mut err).await;
            panic!("shvrsh exited ({st}): {err}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing listens on {port}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn spawn_rsh(broker: &Broker, args: &[String]) -> tokio::process::Child {
    tokio::process::Command::new(bin("shvrsh"))
        .arg(broker.url("admin", "admin"))
        .arg("test/agent")
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn shvrsh")
}

async fn start(allow: bool) -> (Broker, Agent) {
    let broker = Broker::start(None);
    let args: &[&str] = if allow { &["--allow-forward"] } else { &[] };
    let url = broker.url("device", "device");
    let agent = Agent::start_with_args(&broker, &url, "test/agent", args).await;
    (broker, agent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_forward_carries_two_concurrent_connections_and_ends_with_shvrsh() {
    let (broker, _agent) = start(true).await;
    // On the device's side: a web server, and an echo service for the other direction.
    let http = HttpServer::start();
    let target = echo_server().await;
    let (lport, lport2) = (free_port_now(), free_port_now());
    let mut rsh = spawn_rsh(
        &broker,
        &[
            "-N".into(),
            "-L".into(),
            format!("{lport}:127.0.0.1:{}", http.port),
            "-L".into(),
            format!("127.0.0.1:{lport2}:127.0.0.1:{target}"),
        ],
    );
    wait_listening(lport, &mut rsh).await;
    wait_listening(lport2, &mut rsh).await;
    let (a, b) = tokio::join!(http_get(lport, &http.sha), http_get(lport, &http.sha));
    a.expect("first HTTP GET");
    b.expect("second HTTP GET");
    let (a, b) = tokio::join!(round_trip(lport2), round_trip(lport2));
    a.expect("first upload and echo");
    b.expect("second upload and echo");
    // The forward is listed as a live session.
    let (admin, _) = broker.connect("admin", "admin").await;
    let list = admin.call(".broker/tunnels", "list", None).await.unwrap();
    assert!(
        list.to_cpon().contains("forwardTcp: 127.0.0.1"),
        "{}",
        list.to_cpon()
    );
    rsh.kill().await.unwrap();
    let _ = rsh.wait().await;
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", lport))
            .await
            .is_err(),
        "the forward outlived shvrsh"
    );
    // And the broker forgets it.
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let list = admin.call(".broker/tunnels", "list", None).await.unwrap();
        if list.as_list().is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", list.to_cpon());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// 80 connections open at once through one forward, each with its own bytes: those
/// past the 48th have channel numbers beyond a one-byte Int (16 + N), and every one
/// gets back exactly what it sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eighty_connections_at_once_each_get_their_own_bytes() {
    let (broker, _agent) = start(true).await;
    let target = echo_server().await;
    let lport = free_port_now();
    let mut rsh = spawn_rsh(
        &broker,
        &[
            "-N".into(),
            "-L".into(),
            format!("{lport}:127.0.0.1:{target}"),
        ],
    );
    wait_listening(lport, &mut rsh).await;
    let mut conns = Vec::new();
    for i in 0..80u8 {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", lport))
            .await
            .unwrap();
        s.write_all(&[i; 1000]).await.unwrap();
        conns.push(s);
    }
    for (i, mut s) in conns.into_iter().enumerate() {
        let mut back = [0u8; 1000];
        tokio::time::timeout(TIMEOUT, s.read_exact(&mut back))
            .await
            .unwrap_or_else(|_| panic!("connection {i}: nothing came back"))
            .unwrap();
        assert!(
            back.iter().all(|&b| usize::from(b) == i),
            "connection {i} got another's bytes"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_forward_listens_on_the_device_until_shvrsh_goes() {
    let (broker, _agent) = start(true).await;
    // On the operator's side: a web server and an echo service.
    let http = HttpServer::start();
    let target = echo_server().await;
    let (rport, rport2) = (free_port_now(), free_port_now());
    let mut rsh = spawn_rsh(
        &broker,
        &[
            "-N".into(),
            "-R".into(),
            format!("127.0.0.1:{rport}:127.0.0.1:{}", http.port),
            "-R".into(),
            format!("{rport2}:127.0.0.1:{target}"),
        ],
    );
    wait_listening(rport, &mut rsh).await;
    wait_listening(rport2, &mut rsh).await;
    let (a, b) = tokio::join!(http_get(rport, &http.sha), http_get(rport, &http.sha));
    a.expect("first HTTP GET");
    b.expect("second HTTP GET");
    let (a, b) = tokio::join!(round_trip(rport2), round_trip(rport2));
    a.expect("first upload and echo");
    b.expect("second upload and echo");
    rsh.kill().await.unwrap();
    let _ = rsh.wait().await;
    // The device's listener closes when the tunnel does.
    let deadline = std::time::Instant::now() + TIMEOUT;
    while tokio::net::TcpStream::connect(("127.0.0.1", rport))
        .await
        .is_ok()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the device still listens"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_agent_without_allow_forward_refuses_clearly() {
    let (broker, _agent) = start(false).await;
    let lport = free_port_now();
    let rsh = spawn_rsh(
        &broker,
        &["-N".into(), "-L".into(), format!("{lport}:127.0.0.1:9")],
    );
    let out = tokio::time::timeout(TIMEOUT, rsh.wait_with_output())
        .await
        .expect("shvrsh hung")
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{err}");
    assert!(err.contains("port forwarding is not allowed"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// Runs shvrsh with `stdin`, returning (exit status, stdout, stderr).
async fn shvrsh_with_input(args: &[&str], stdin: Vec<u8>) -> (i32, Vec<u8>, String) {
    let mut child = tokio::process::Command::new(bin("shvrsh"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    tokio::spawn(async move {
        let _ = input.write_all(&stdin).await;
        // Dropping it is stdin's EOF.
    });
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("shvrsh -W hung")
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `-W HOST:PORT` (ssh's): stdin and stdout become one connection to HOST:PORT as the
/// device sees it, byte-exact, with the half-close passed on; a port nobody listens on
/// is exit status 255 with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_forward_carries_stdin_and_stdout() {
    let (broker, _agent) = start(true).await;
    let echo = echo_server().await;
    let url = broker.url("admin", "admin");
    let mut data = vec![0u8; MIB5];
    rand::thread_rng().fill_bytes(&mut data);
    let target = format!("127.0.0.1:{echo}");
    let (code, out, err) =
        shvrsh_with_input(&[&url, "test/agent", "-W", &target], data.clone()).await;
    assert_eq!(code, 0, "{err}");
    assert!(out == data, "{} bytes back of {}", out.len(), data.len());
    let closed = format!("127.0.0.1:{}", free_port_now());
    let (code, _, err) = shvrsh_with_input(&[&url, "test/agent", "-W", &closed], vec![]).await;
    assert_eq!(code, 255, "{err}");
    assert!(err.contains(&format!("-W {closed}")), "{err}");
    // -W with a command is a usage error.
    let (code, _, err) =
        shvrsh_with_input(&[&url, "test/agent", "-W", &target, "--", "true"], vec![]).await;
    assert_ne!(code, 0, "{err}");
}

/// An sshd of the test's own on loopback (key auth only, in its own directory), for
/// ssh's ProxyCommand through `shvrsh -W`. Needs Debian's openssh-server (.ci/run
/// installs it).
struct Sshd {
    child: std::process::Child,
    port: u16,
    dir: TempDir,
}

impl Sshd {
    fn start() -> Sshd {
        let sshd = std::path::Path::new("/usr/sbin/sshd");
        assert!(
            sshd.exists(),
            "/usr/sbin/sshd is missing: install openssh-server (.ci/run does)"
        );
        // sshd insists on its privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let dir = TempDir::new("sshd");
        let d = dir.path();
        for key in ["host", "client"] {
            let st = std::process::Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(d.join(key))
                .status()
                .unwrap();
            assert!(st.success(), "ssh-keygen");
        }
        std::fs::copy(d.join("client.pub"), d.join("authorized_keys")).unwrap();
        let port = free_port_now();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nAuthorizedKeysFile {auth}\n\
             PidFile {pid}\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
             Subsystem sftp internal-sftp\n",
            host = d.join("host").display(),
            auth = d.join("authorized_keys").display(),
            pid = d.join("sshd.pid").display(),
        );
        std::fs::write(d.join("sshd_config"), config).unwrap();
        let child = std::process::Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        Sshd { child, port, dir }
    }

    /// ssh's options for this server through `proxy` (the ProxyCommand).
    fn ssh_options(&self, proxy: &str) -> Vec<String> {
        let d = self.dir.path();
        [
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-i",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([
            d.join("client").display().to_string(),
            "-o".into(),
            format!("ProxyCommand={proxy}"),
            "-p".into(),
            self.port.to_string(),
        ])
        .collect()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// ssh's ProxyCommand through `shvrsh -W`: a command on an sshd the device can reach,
/// and rsync of a tree over it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_and_rsync_through_shvrsh_as_proxy_command() {
    let (broker, _agent) = start(true).await;
    let sshd = Sshd::start();
    let proxy = format!(
        "{} '{}' test/agent -W 127.0.0.1:%p",
        bin("shvrsh").display(),
        broker.url("admin", "admin")
    );
    let user = nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .unwrap()
        .name;
    let target = format!("{user}@sshd-behind-the-device");
    let opts = sshd.ssh_options(&proxy);
    // sshd may take a moment to listen.
    let mut last = String::new();
    for _ in 0..50 {
        let out = tokio::process::Command::new("ssh")
            .args(&opts)
            .arg(&target)
            .arg("echo through-$((6*7))")
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .unwrap();
        if out.status.success() {
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "through-42");
            last.clear();
            break;
        }
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(last.is_empty(), "ssh through shvrsh -W failed: {last}");

    // rsync -e of a small tree.
    let src = TempDir::new("rsync-src");
    std::fs::create_dir_all(src.path().join("a/b")).unwrap();
    let mut blob = vec![0u8; 1 << 20];
    rand::thread_rng().fill_bytes(&mut blob);
    std::fs::write(src.path().join("a/b/blob.bin"), &blob).unwrap();
    std::fs::write(src.path().join("a/note.txt"), b"note").unwrap();
    let dst = TempDir::new("rsync-dst");
    // rsync splits -e itself; a wrapper script keeps ssh's options (and the URL in the
    // ProxyCommand) out of that.
    let wrapper = sshd.dir.path().join("ssh-wrap.sh");
    let quoted: Vec<String> = opts
        .iter()
        .map(|o| format!("'{}'", o.replace('\'', r"'\''")))
        .collect();
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nexec ssh {} \"$@\"\n", quoted.join(" ")),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
    )
    .unwrap();
    let out = tokio::process::Command::new("rsync")
        .args(["-a", "-e"])
        .arg(&wrapper)
        .arg(format!("{}/", src.path().display()))
        .arg(format!("{target}:{}/", dst.path().display()))
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "rsync: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(dst.path().join("a/b/blob.bin")).unwrap(),
        blob
    );
    assert_eq!(
        std::fs::read(dst.path().join("a/note.txt")).unwrap(),
        b"note"
    );
}

/// `-D PORT` (ssh's): a SOCKS5 proxy whose connections each go where they ask, as the
/// device sees it; `localhost` is resolved on the device's side
/// (`--socks5-hostname`). 20 curl downloads at once, each byte-exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks_proxy_carries_twenty_concurrent_downloads() {
    let (broker, _agent) = start(true).await;
    let www = HttpServer::start();
    let socks = free_port_now();
    let mut rsh = spawn_rsh(&broker, &["-N".into(), "-D".into(), socks.to_string()]);
    wait_listening(socks, &mut rsh).await;
    let dir = TempDir::new("socks");
    let mut curls = tokio::task::JoinSet::new();
    for i in 0..20 {
        let out = dir.path().join(format!("blob{i}"));
        let url = format!("http://localhost:{}/blob.bin", www.port);
        let proxy = format!("127.0.0.1:{socks}");
        curls.spawn(async move {
            let st = tokio::process::Command::new("curl")
                .args([
                    "-sS",
                    "--fail",
                    "-m",
                    "60",
                    "--socks5-hostname",
                    &proxy,
                    "-o",
                ])
                .arg(&out)
                .arg(&url)
                .output()
                .await
                .expect("curl (.ci/run installs it)");
            (out, st)
        });
    }
    while let Some(r) = curls.join_next().await {
        let (out, st) = r.unwrap();
        assert!(
            st.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&st.stderr)
        );
        let body = std::fs::read(&out).unwrap();
        assert_eq!(body.len(), MIB5, "{}", out.display());
        assert_eq!(Sha256::digest(&body).as_slice(), &www.sha[..]);
    }
    // A destination nobody listens on: that connection fails, the proxy goes on.
    let refused = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "-m",
            "20",
            "--socks5-hostname",
            &format!("127.0.0.1:{socks}"),
        ])
        .arg(format!("http://localhost:{}/", free_port_now()))
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    assert!(rsh.try_wait().unwrap().is_none(), "shvrsh -D ended");
}

/// `shvrsh -N` stopped by SIGTERM (how a service manager stops it) closes its forwards'
/// tunnels before it goes: the device sees the operator leave, not a lost connection,
/// and shvrsh ends with 255 and one line, as ssh does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_shvrsh_n_with_its_tunnels_closed() {
    let (broker, agent) = start(true).await;
    let target = echo_server().await;
    let lport = free_port_now();
    let mut rsh = spawn_rsh(
        &broker,
        &[
            "-N".into(),
            "-L".into(),
            format!("{lport}:127.0.0.1:{target}"),
        ],
    );
    wait_listening(lport, &mut rsh).await;
    round_trip(lport).await.expect("the forward carries bytes");
    let pid = rsh.id().expect("shvrsh runs") as libc::pid_t;
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = tokio::time::timeout(TIMEOUT, rsh.wait())
        .await
        .expect("shvrsh exits")
        .unwrap();
    let mut err = String::new();
    let _ = rsh.stderr.take().unwrap().read_to_string(&mut err).await;
    assert_eq!(status.code(), Some(255), "{err}");
    assert_eq!(err.trim(), "shvrsh: terminated");
    // shvrexec saw the tunnel closed by the operator, not its end vanishing.
    wait_for("shvrexec to log the close", || async {
        agent
            .stderr()
            .contains("command ended: closed without a status")
            .then_some(())
    })
    .await;
    assert!(
        !agent.stderr().contains("disconnected"),
        "{}",
        agent.stderr()
    );
}
