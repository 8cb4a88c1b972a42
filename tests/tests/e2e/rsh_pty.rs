//! The interactive remote shell: `shvrsh URL test/agent` (no command) started in a PTY
//! that this test allocates, as a user's terminal would be. Checks the remote size
//! (start and after a resize), the exit status and that the terminal mode is restored.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::shell_rig::Agent;
use nix::pty::{openpty, Winsize};
use nix::sys::termios::{tcgetattr, LocalFlags, Termios};
use tests::{bin, Broker, TIMEOUT};

nix::ioctl_write_ptr_bad!(tiocswinsz, libc::TIOCSWINSZ, libc::winsize);

const AGENT: &str = "test/agent";

/// shvrsh on the slave side of a fresh PTY, as session leader with the PTY as its
/// controlling terminal (so that it gets SIGWINCH and owns the terminal like a shell).
struct PtyRsh {
    child: Child,
    master: OwnedFd,
    /// Our own slave fd: the terminal's termios is read through it after shvrsh exits.
    slave: OwnedFd,
    output: Arc<Mutex<Vec<u8>>>,
    /// How much of `output` earlier expectations consumed.
    seen: usize,
}

impl PtyRsh {
    fn spawn(url: &str, rows: u16, cols: u16) -> PtyRsh {
        let ws = Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = openpty(Some(&ws), None).expect("openpty");
        let mut cmd = Command::new(bin("shvrsh"));
        cmd.arg(url)
            .arg(AGENT)
            .env("TERM", "xterm")
            .env_remove("SHV_PASSWORD")
            .env_remove("RUST_LOG")
            .stdin(Stdio::from(pty.slave.try_clone().unwrap()))
            .stdout(Stdio::from(pty.slave.try_clone().unwrap()))
            .stderr(Stdio::from(pty.slave.try_clone().unwrap()));
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn shvrsh");
        drop(cmd);
        let output = Arc::new(Mutex::new(Vec::new()));
        let buf = output.clone();
        let mut reader = std::fs::File::from(pty.master.try_clone().unwrap());
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            // Ends with EIO once every slave fd (ours included) is closed.
            while let Ok(n) = reader.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                buf.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        PtyRsh {
            child,
            master: pty.master,
            slave: pty.slave,
            output,
            seen: 0,
        }
    }

    fn termios(&self) -> Termios {
        tcgetattr(&self.slave).expect("tcgetattr on the PTY")
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    fn type_keys(&self, keys: &str) {
        let mut w = std::fs::File::from(self.master.try_clone().unwrap());
        w.write_all(keys.as_bytes())
            .expect("write to the PTY master");
    }

    /// Waits at most `within` for `want` in the output after what was already matched.
    fn expect_within(&mut self, want: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            {
                let out = self.output.lock().unwrap();
                let tail = String::from_utf8_lossy(&out[self.seen.min(out.len())..]).into_owned();
                if let Some(i) = tail.find(want) {
                    self.seen += tail[..i + want.len()].len();
                    return true;
                }
            }
            if Instant::now() >= deadline {
                return false;
            }
            self.assert_running();
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn assert_running(&mut self) {
        if let Some(st) = self.child.try_wait().expect("try_wait") {
            panic!(
                "shvrsh exited early ({st}); terminal output:\n{}",
                self.text()
            );
        }
    }

    /// Asks the remote shell for its size until it reports `rows cols` (a resize and
    /// the next keystrokes may pass each other, so the question is repeated).
    fn expect_size(&mut self, rows: u16, cols: u16) {
        // The typed line holds `$(stty size)`, so only the answer can match.
        let want = format!("SIZE:{rows} {cols}:END");
        let deadline = Instant::now() + TIMEOUT;
        loop {
            self.type_keys("echo \"SIZE:$(stty size):END\"\r");
            if self.expect_within(&want, Duration::from_secs(3)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "remote stty size never said {rows} {cols}; terminal output:\n{}",
                self.text()
            );
        }
    }

    /// Waits until shvrsh put the terminal in raw mode (it does once the tunnel is open).
    fn wait_raw(&mut self) {
        let deadline = Instant::now() + TIMEOUT;
        while self.termios().local_flags.contains(LocalFlags::ICANON) {
            self.assert_running();
            assert!(
                Instant::now() < deadline,
                "shvrsh never put the terminal in raw mode; output:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_exit(&mut self) -> i32 {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return st.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "shvrsh did not exit; terminal output:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PtyRsh {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The parts of termios a raw-mode switch changes.
fn mode(t: &Termios) -> String {
    format!(
        "iflag={:?} oflag={:?} cflag={:?} lflag={:?} cc={:?}",
        t.input_flags, t.output_flags, t.control_flags, t.local_flags, t.control_chars
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_shell_size_resize_exit_and_terminal_restored() {
    let broker = Broker::start(None);
    let _agent = Agent::start(&broker, AGENT).await;
    let url = broker.url("admin", "admin");
    // The PTY conversation is blocking I/O with sleeps: off the async workers.
    tokio::task::spawn_blocking(move || {
        let mut rsh = PtyRsh::spawn(&url, 31, 97);
        let before = rsh.termios();
        assert!(
            before
                .local_flags
                .contains(LocalFlags::ICANON | LocalFlags::ECHO),
            "a fresh PTY is in cooked mode: {}",
            mode(&before)
        );

        // shvrsh switches the terminal to raw mode once the tunnel is open; typing
        // before that would be echoed twice (locally and by the remote PTY).
        rsh.wait_raw();
        let raw = rsh.termios();
        assert!(
            !raw.local_flags.contains(LocalFlags::ECHO),
            "raw mode keeps local echo: {}",
            mode(&raw)
        );

        rsh.expect_size(31, 97);

        let ws = libc::winsize {
            ws_row: 40,
            ws_col: 120,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: a valid master fd and a live winsize.
        unsafe { tiocswinsz(rsh.master.as_raw_fd(), &ws) }.expect("TIOCSWINSZ");
        // The kernel signals the foreground group too; this makes it explicit.
        // SAFETY: kill(2) on our own child.
        assert_eq!(
            unsafe { libc::kill(rsh.child.id() as i32, libc::SIGWINCH) },
            0
        );
        rsh.expect_size(40, 120);

        rsh.type_keys("exit 3\r");
        let code = rsh.wait_exit();
        assert_eq!(code, 3, "exit status; terminal output:\n{}", rsh.text());
        let after = rsh.termios();
        assert!(
            after
                .local_flags
                .contains(LocalFlags::ICANON | LocalFlags::ECHO),
            "terminal left in raw mode: {}",
            mode(&after)
        );
        assert_eq!(mode(&after), mode(&before), "terminal mode not restored");
    })
    .await
    .unwrap();
}

/// Runs `f` on a shvrsh session in a 24x80 PTY, off the async workers.
async fn with_pty_session(f: impl FnOnce(PtyRsh, &Broker) + Send + 'static) {
    let broker = Arc::new(Broker::start(None));
    let _agent = Agent::start(&broker, AGENT).await;
    let b = broker.clone();
    tokio::task::spawn_blocking(move || {
        let rsh = PtyRsh::spawn(&b.url("admin", "admin"), 24, 80);
        f(rsh, &b)
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_restores_the_terminal() {
    with_pty_session(|mut rsh, _| {
        let before = rsh.termios();
        rsh.wait_raw();
        rsh.expect_size(24, 80);
        // SAFETY: kill(2) on our own child.
        assert_eq!(
            unsafe { libc::kill(rsh.child.id() as i32, libc::SIGTERM) },
            0
        );
        assert_eq!(rsh.wait_exit(), 255, "output:\n{}", rsh.text());
        assert_eq!(
            mode(&rsh.termios()),
            mode(&before),
            "terminal mode not restored after SIGTERM"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tilde_dot_detaches_and_restores_the_terminal() {
    with_pty_session(|mut rsh, _| {
        let before = rsh.termios();
        rsh.wait_raw();
        rsh.expect_size(24, 80);
        // After the Enter of the last line, as ssh wants it.
        rsh.type_keys("~.");
        assert_eq!(rsh.wait_exit(), 255, "output:\n{}", rsh.text());
        // What shvrsh wrote last may still be on its way from the PTY to our reader.
        let deadline = Instant::now() + TIMEOUT;
        while !rsh.text().contains("detached") {
            assert!(
                Instant::now() < deadline,
                "no word about detaching:\n{}",
                rsh.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            mode(&rsh.termios()),
            mode(&before),
            "terminal mode not restored after ~."
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_typed_before_the_tunnel_opens_are_not_lost() {
    with_pty_session(|mut rsh, _| {
        // Typed at once, while shvrsh still connects (the terminal is still cooked and
        // echoes locally; the arithmetic makes only the remote answer match).
        rsh.type_keys("echo EARLY$((6*7))\r");
        rsh.wait_raw();
        assert!(
            rsh.expect_within("EARLY42", TIMEOUT),
            "the early keystrokes were lost; output:\n{}",
            rsh.text()
        );
        rsh.type_keys("exit 0\r");
        assert_eq!(rsh.wait_exit(), 0, "output:\n{}", rsh.text());
    })
    .await;
}
