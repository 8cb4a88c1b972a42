//! An sshd of the benchmark's own (Debian's openssh-server binary): its own directory,
//! fresh host and user keys, a loopback port, public-key authentication only; and the
//! client config that reaches it as host `bench`, with the host key pinned.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::brokers::free_port;
use crate::BenchError;

/// The ssh host name the client config defines.
pub const HOST: &str = "bench";

/// A running sshd; killed on drop.
pub struct Sshd {
    child: Child,
    pub pid: u32,
    /// The client config file (`ssh -F`), defining [`HOST`].
    pub client_config: PathBuf,
    pub log: PathBuf,
}

fn io(what: &str) -> impl Fn(std::io::Error) -> BenchError + '_ {
    move |e| BenchError::Io(format!("sshd setup, {what}: {e}"))
}

/// `ssh-keygen -t ed25519` into `path` (an old key there is replaced).
fn keygen(keygen: &Path, path: &Path) -> Result<(), BenchError> {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(path.with_extension("pub"));
    let out = std::process::Command::new(keygen)
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "shvbench", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| BenchError::Config(format!("cannot run {}: {e}", keygen.display())))?;
    if !out.status.success() {
        return Err(BenchError::Config(format!(
            "{} failed: {}",
            keygen.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// The name of the user this process runs as (the one the sshd lets in).
fn user_name() -> Result<String, BenchError> {
    let out = std::process::Command::new("id")
        .arg("-un")
        .output()
        .map_err(io("id -un"))?;
    let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if name.is_empty() {
        return Err(BenchError::Config(
            "cannot tell this process's user name".into(),
        ));
    }
    Ok(name)
}

impl Sshd {
    /// Writes keys and configs into `dir`, starts `sshd -D -e` (it needs an absolute
    /// path: it re-executes itself per connection) and waits until it accepts.
    pub async fn start(sshd: &Path, ssh_keygen: &Path, dir: &Path) -> Result<Sshd, BenchError> {
        if !sshd.is_absolute() || !sshd.is_file() {
            return Err(BenchError::Config(format!(
                "no sshd at {} (install Debian's openssh-server or pass --sshd with an absolute path)",
                sshd.display()
            )));
        }
        std::fs::create_dir_all(dir).map_err(io("directory"))?;
        let dir = dir.canonicalize().map_err(io("directory"))?;
        let (host_key, user_key) = (dir.join("host_key"), dir.join("user_key"));
        keygen(ssh_keygen, &host_key)?;
        keygen(ssh_keygen, &user_key)?;
        let authorized = dir.join("authorized_keys");
        std::fs::copy(user_key.with_extension("pub"), &authorized)
            .map_err(io("authorized_keys"))?;
        // sshd refuses to start as root without its privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let port = free_port()?;
        let user = user_name()?;
        let server_config = dir.join("sshd_config");
        std::fs::write(
            &server_config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nAuthorizedKeysFile {ak}\n\
                 PidFile {pid}\nUsePAM no\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nStrictModes no\n\
                 PermitRootLogin prohibit-password\nAllowUsers {user}\nAllowTcpForwarding yes\n\
                 PermitTTY yes\nX11Forwarding no\nUseDNS no\nPrintMotd no\nPrintLastLog no\n\
                 Subsystem sftp internal-sftp\nLogLevel ERROR\n",
                hk = host_key.display(),
                ak = authorized.display(),
                pid = dir.join("sshd.pid").display(),
            ),
        )
        .map_err(io("sshd_config"))?;
        let host_pub =
            std::fs::read_to_string(host_key.with_extension("pub")).map_err(io("host key"))?;
        let known = dir.join("known_hosts");
        std::fs::write(&known, format!("[127.0.0.1]:{port} {}", host_pub.trim()))
            .map_err(io("known_hosts"))?;
        let client_config = dir.join("ssh_config");
        std::fs::write(
            &client_config,
            format!(
                "Host {HOST}\n  HostName 127.0.0.1\n  Port {port}\n  User {user}\n  \
                 IdentityFile {uk}\n  IdentitiesOnly yes\n  UserKnownHostsFile {kh}\n  \
                 StrictHostKeyChecking yes\n  BatchMode yes\n  LogLevel ERROR\n  \
                 EscapeChar none\n  ControlMaster no\n  ControlPath none\n  Compression no\n",
                uk = user_key.display(),
                kh = known.display(),
            ),
        )
        .map_err(io("ssh_config"))?;
        let log = dir.join("sshd.log");
        let logfile = std::fs::File::create(&log).map_err(io("log"))?;
        let child = Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(&server_config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(logfile))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| BenchError::Io(format!("cannot start {}: {e}", sshd.display())))?;
        let pid = child.id().ok_or(BenchError::Closed)?;
        let mut s = Sshd {
            child,
            pid,
            client_config,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(s);
            }
            if let Ok(Some(status)) = s.child.try_wait() {
                let said = std::fs::read_to_string(&s.log).unwrap_or_default();
                return Err(BenchError::Io(format!(
                    "sshd exited at start ({status}): {}",
                    said.trim()
                )));
            }
            if Instant::now() > deadline {
                return Err(BenchError::Timeout(
                    "sshd did not listen within 10 s".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
