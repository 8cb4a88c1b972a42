//! Running the command in a PTY or with pipes and relaying it over the tunnel.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use libshv::tunnel::{
    channel, CloseStatus, Control, DeferredAcker, LaunchParams, TunnelEvent, TunnelReceiver,
    TunnelSender, DATA_HEADROOM, FLOW_WINDOW,
};
use nix::pty::{openpty, Winsize};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

nix::ioctl_write_ptr_bad!(tiocswinsz, libc::TIOCSWINSZ, libc::winsize);

/// After the command exits, output still buffered in the PTY/pipes is forwarded; a
/// background job holding them open must not keep the tunnel alive forever, so stop
/// once they stay silent this long.
const DRAIN_IDLE: Duration = Duration::from_millis(500);

/// After the command exits, how long output may wait for the operator's acks without
/// any progress before the session ends with an error (instead of a clean exit status
/// over output that never arrived).
const ACK_STALL: Duration = Duration::from_secs(60);

/// Size of one data frame's payload.
const CHUNK: usize = 256 * 1024;

/// The Ctrl-D byte: "EOF" for a terminal in canonical mode, what ssh sends too.
const VEOF_BYTE: u8 = 4;

/// Where bytes from rsh's channel 0 go.
enum Input {
    /// The PTY master's writer task (the child may not read for a while).
    Pty(mpsc::UnboundedSender<Chunk>),
    /// The child's stdin pipe, written by a task; `None` after EOF.
    Pipe(Option<mpsc::UnboundedSender<Chunk>>),
}

/// Input for the child, and how many of its bytes came from the tunnel (to acknowledge
/// once written; 0 for what we inject, such as the PTY's EOF character).
struct Chunk {
    data: bytes::Bytes,
    tunnel_bytes: usize,
}

/// More input queued for the child than this means the operator's end ignores the
/// tunnel window (an honest one never has more than [`FLOW_WINDOW`] unacknowledged).
const INPUT_QUEUE_MAX: usize = 2 * FLOW_WINDOW;

/// The operator's end sent more than the window allows while the child was not reading.
#[derive(Debug)]
struct InputOverflow;

/// Writes input to the child as it reads it, and only then acknowledges it to the
/// operator's end: a child that does not read holds the operator back through the
/// window, instead of growing this queue. After a write fails (the child closed its
/// input) the rest is dropped, and still acknowledged.
fn spawn_input_writer(
    mut w: InputSink,
    mut rx: mpsc::UnboundedReceiver<Chunk>,
    queued: Arc<AtomicUsize>,
    mut acker: Option<DeferredAcker>,
) {
    tokio::spawn(async move {
        let mut open = true;
        while let Some(chunk) = rx.recv().await {
            if open && w.write_all(&chunk.data).await.is_err() {
                open = false;
            }
            queued.fetch_sub(chunk.data.len(), Ordering::Relaxed);
            if let Some(a) = acker.as_mut() {
                a.consumed(chunk.tunnel_bytes).await;
            }
        }
        // Sender dropped = EOF from rsh: dropping the writer closes the child's input.
    });
}

struct Running {
    child: Child,
    pgid: Pid,
    master: Option<OwnedFd>,
    input: Input,
    /// Bytes queued for the child's input and not yet written.
    input_queued: Arc<AtomicUsize>,
    /// (channel, bytes after DATA_HEADROOM free bytes) from the output readers; closed when all readers hit EOF.
    output: mpsc::Receiver<(i64, Vec<u8>)>,
}

fn login_shell() -> (String, String) {
    let shell = std::env::var("SHELL")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.shell.to_string_lossy().into_owned())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "/bin/sh".into());
    let base = shell.rsplit('/').next().unwrap_or("sh").to_string();
    // A leading '-' in argv[0] makes shells behave as login shells.
    (shell, format!("-{base}"))
}

fn build_command(call: &LaunchParams) -> Command {
    let mut cmd = if call.cmd.is_empty() {
        let (shell, argv0) = login_shell();
        let mut c = Command::new(shell);
        c.arg0(argv0);
        if call.cwd.is_none() {
            if let Ok(home) = std::env::var("HOME") {
                c.current_dir(home);
            }
        }
        c
    } else {
        let mut c = Command::new(&call.cmd[0]);
        c.args(&call.cmd[1..]);
        c
    };
    if let Some(cwd) = &call.cwd {
        cmd.current_dir(cwd);
    }
    if call.pty && !call.env.iter().any(|(k, _)| k == "TERM") {
        cmd.env("TERM", "xterm");
    }
    for (k, v) in &call.env {
        cmd.env(k, v);
    }
    cmd.kill_on_drop(false);
    cmd
}

/// Where the child's input goes.
enum InputSink {
    Pty(Arc<PtyMaster>),
    Pipe(tokio::process::ChildStdin),
    /// The child has no input pipe: input is dropped.
    Nowhere,
}

impl InputSink {
    async fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        match self {
            InputSink::Pty(p) => p.write_all(data).await,
            InputSink::Pipe(p) => p.write_all(data).await,
            InputSink::Nowhere => Err(std::io::ErrorKind::BrokenPipe.into()),
        }
    }
}

/// A PTY master in non-blocking mode, read and written through the runtime's reactor.
struct PtyMaster(AsyncFd<OwnedFd>);

impl PtyMaster {
    fn new(fd: OwnedFd) -> std::io::Result<PtyMaster> {
        let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = nix::fcntl::OFlag::from_bits_retain(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(flags))?;
        // SAFETY: an OwnedFd is a valid descriptor that stays open, and the same, for
        // as long as the AsyncFd owns it.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)?;
        Ok(PtyMaster(fd))
    }

    async fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let mut ready = self.0.readable().await?;
            match ready.try_io(|fd| Ok(nix::unistd::read(fd.get_ref(), buf)?)) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    async fn write_all(&self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let mut ready = self.0.writable().await?;
            match ready.try_io(|fd| Ok(nix::unistd::write(fd.get_ref(), data)?)) {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }
}

fn spawn_pty(call: &LaunchParams, acker: Option<DeferredAcker>) -> std::io::Result<Running> {
    let ws = Winsize {
        ws_row: call.rows,
        ws_col: call.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = openpty(Some(&ws), None).map_err(std::io::Error::from)?;
    let mut cmd = build_command(call);
    cmd.stdin(Stdio::from(pty.slave.try_clone()?))
        .stdout(Stdio::from(pty.slave.try_clone()?))
        .stderr(Stdio::from(pty.slave.try_clone()?));
    // SAFETY: between fork and exec only async-signal-safe calls (setsid, ioctl).
    unsafe {
        cmd.pre_exec(|| {
            // A new session whose controlling terminal is the PTY, so that job control,
            // ^C and SIGHUP on close work as on a real login.
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            default_signals();
            if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    // Our copies of the slave must go, or reading the master never sees EOF (EIO).
    drop(cmd);
    drop(pty.slave);
    let pgid = Pid::from_raw(child.id().unwrap_or(0) as i32);
    let master = pty.master;

    // The master is ours alone, so it can be non-blocking and driven by the runtime's
    // epoll: a keystroke crosses this process in the runtime's one thread, with no hand-off
    // to reader or writer threads (each a wake-up, often on the other CPU).
    let pty = Arc::new(PtyMaster::new(master.try_clone()?)?);
    let (out_tx, out_rx) = mpsc::channel(64);
    let reader = pty.clone();
    tokio::spawn(async move {
        loop {
            // Each read gets a fresh buffer that is sent as is (no copy), with room in
            // front for the frame body's header.
            let mut buf = vec![0u8; DATA_HEADROOM + CHUNK];
            match reader.read(&mut buf[DATA_HEADROOM..]).await {
                // EIO: every slave fd is closed (the session ended).
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buf.truncate(DATA_HEADROOM + n);
                    if out_tx.send((channel::STDOUT, buf)).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    let input_queued = Arc::new(AtomicUsize::new(0));
    spawn_input_writer(InputSink::Pty(pty), in_rx, input_queued.clone(), acker);
    Ok(Running {
        child,
        pgid,
        master: Some(master),
        input: Input::Pty(in_tx),
        input_queued,
        output: out_rx,
    })
}

/// In the child between fork and exec: every signal the operator can send, and the
/// final SIGHUP, takes its default action, and none is blocked, whatever the agent
/// inherited (an agent started under `nohup` ignores SIGHUP, and an ignored signal
/// stays ignored across exec: the remote shell would outlive its operator), as sshd
/// does for a session.
///
/// # Safety
/// Only async-signal-safe calls (signal, sigemptyset, sigprocmask).
unsafe fn default_signals() {
    // SAFETY: the caller runs this between fork and exec; these calls are
    // async-signal-safe and touch only this process's signal state.
    unsafe {
        for s in [
            libc::SIGHUP,
            libc::SIGINT,
            libc::SIGQUIT,
            libc::SIGTERM,
            libc::SIGPIPE,
            libc::SIGTSTP,
            libc::SIGTTIN,
            libc::SIGTTOU,
            libc::SIGUSR1,
            libc::SIGUSR2,
        ] {
            libc::signal(s, libc::SIG_DFL);
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
}

fn spawn_pipes(call: &LaunchParams, acker: Option<DeferredAcker>) -> std::io::Result<Running> {
    let mut cmd = build_command(call);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            // Own session and process group: signals and the final SIGHUP reach the
            // whole job, and it never reads the agent's terminal.
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            default_signals();
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let pgid = Pid::from_raw(child.id().unwrap_or(0) as i32);
    // A bigger pipe lets one read take a whole data frame's worth of bulk output
    // (fewer syscalls and wake-ups per byte); best effort.
    #[cfg(target_os = "linux")]
    if let Some(out) = &child.stdout {
        let _ = nix::fcntl::fcntl(out, nix::fcntl::FcntlArg::F_SETPIPE_SZ(CHUNK as i32));
    }
    let (out_tx, out_rx) = mpsc::channel(64);
    for (ch, stream) in [
        (
            channel::STDOUT,
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        ),
        (
            channel::STDERR,
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        ),
    ] {
        let Some(mut stream) = stream else { continue };
        let tx = out_tx.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            loop {
                let mut buf = vec![0u8; DATA_HEADROOM + CHUNK];
                match stream.read(&mut buf[DATA_HEADROOM..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        buf.truncate(DATA_HEADROOM + n);
                        if tx.send((ch, buf)).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
    }
    drop(out_tx);
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    let input_queued = Arc::new(AtomicUsize::new(0));
    match child.stdin.take() {
        Some(stdin) => {
            spawn_input_writer(InputSink::Pipe(stdin), in_rx, input_queued.clone(), acker)
        }
        None => spawn_input_writer(InputSink::Nowhere, in_rx, input_queued.clone(), acker),
    }
    Ok(Running {
        child,
        pgid,
        master: None,
        input: Input::Pipe(Some(in_tx)),
        input_queued,
        output: out_rx,
    })
}

fn status_of(st: ExitStatus) -> CloseStatus {
    match (st.code(), st.signal()) {
        (Some(c), _) => CloseStatus::ExitCode(c),
        (None, Some(s)) => CloseStatus::Signal(s),
        _ => CloseStatus::Error("unknown exit status".into()),
    }
}

impl Running {
    fn hangup(&self) {
        if self.pgid.as_raw() > 0 {
            let _ = killpg(self.pgid, Signal::SIGHUP);
        }
    }

    fn control(&mut self, c: Control) {
        match c {
            Control::Resize { cols, rows } => {
                if let Some(m) = &self.master {
                    let ws = libc::winsize {
                        ws_col: cols,
                        ws_row: rows,
                        ws_xpixel: 0,
                        ws_ypixel: 0,
                    };
                    // SAFETY: valid fd and a pointer to a live winsize.
                    if let Err(e) = unsafe { tiocswinsz(m.as_raw_fd(), &ws) } {
                        tracing::debug!("resize failed: {e}");
                    }
                }
            }
            Control::Eof => match &mut self.input {
                Input::Pty(tx) => {
                    let _ = tx.send(Chunk {
                        data: bytes::Bytes::from_static(&[VEOF_BYTE]),
                        tunnel_bytes: 0,
                    });
                }
                Input::Pipe(tx) => *tx = None,
            },
            Control::Signal(s) => self.signal(s),
            // Flow control is the tunnel end's business; connections belong to forwards;
            // notices are for the operator's end.
            Control::Ack(_)
            | Control::ConnOpen(_)
            | Control::ConnEof(_)
            | Control::ConnClose(_)
            | Control::Total(_)
            | Control::Notice(_)
            | Control::ConnOpenTo { .. } => {}
        }
    }

    fn signal(&mut self, s: i32) {
        {
            match Signal::try_from(s) {
                Ok(sig) => {
                    // In a PTY the job in the foreground is the one the user means.
                    let pg = self
                        .master
                        .as_ref()
                        .and_then(|m| nix::unistd::tcgetpgrp(m).ok())
                        .unwrap_or(self.pgid);
                    let _ = killpg(pg, sig);
                }
                Err(_) => tracing::debug!("ignoring unknown signal {s}"),
            }
        }
    }

    /// Queues tunnel data for the child. Returns how many of its bytes were dropped
    /// instead (input after EOF), for the caller to acknowledge.
    fn input(&mut self, data: bytes::Bytes) -> Result<usize, InputOverflow> {
        let tx = match &self.input {
            Input::Pty(tx) | Input::Pipe(Some(tx)) => tx,
            Input::Pipe(None) => return Ok(data.len()),
        };
        let len = data.len();
        if self.input_queued.fetch_add(len, Ordering::Relaxed) + len > INPUT_QUEUE_MAX {
            self.input_queued.fetch_sub(len, Ordering::Relaxed);
            return Err(InputOverflow);
        }
        let chunk = Chunk {
            data,
            tunnel_bytes: len,
        };
        match tx.send(chunk) {
            Ok(()) => Ok(0),
            Err(lost) => {
                self.input_queued.fetch_sub(len, Ordering::Relaxed);
                Ok(lost.0.data.len())
            }
        }
    }
}

/// Runs the command and relays it. Returns the status to send in CloseTunnel, or
/// `None` when rsh closed the tunnel (or the link dropped): then the command got
/// SIGHUP and nobody is left to tell.
pub async fn run(
    call: &LaunchParams,
    sender: TunnelSender,
    mut receiver: TunnelReceiver,
) -> Option<CloseStatus> {
    // Input is acknowledged once written to the child, not when it arrives.
    let mut acker = receiver.deferred_acks();
    let spawned = if call.pty {
        spawn_pty(call, Some(acker.clone()))
    } else {
        spawn_pipes(call, Some(acker.clone()))
    };
    let mut r = match spawned {
        Ok(r) => r,
        Err(e) => {
            let what = if call.cmd.is_empty() {
                "the login shell".to_string()
            } else {
                call.cmd[0].clone()
            };
            // As a shell (and so ssh) reports them: 127 for a command that is not
            // there, 126 for one that cannot be executed, with the reason on stderr.
            let code = match e.kind() {
                std::io::ErrorKind::NotFound => Some((127, "command not found")),
                std::io::ErrorKind::PermissionDenied => Some((126, "permission denied")),
                _ => None,
            };
            return Some(match code {
                Some((code, why)) => {
                    let line = format!("{what}: {why}\r\n");
                    let line = if call.pty {
                        line
                    } else {
                        line.replace('\r', "")
                    };
                    let _ = sender
                        .send_data(libshv::tunnel::channel::STDERR, line.as_bytes())
                        .await;
                    CloseStatus::ExitCode(code)
                }
                None => CloseStatus::Error(format!("cannot run '{what}': {e}")),
            });
        }
    };
    let mut exited: Option<ExitStatus> = None;
    let mut outputs_open = true;
    // Output goes out from its own task: a send may wait for rsh's flow-control acks,
    // which arrive only while this loop keeps receiving (and acknowledging) stdin.
    let (progress_tx, mut progress_rx) = mpsc::channel::<()>(1);
    let mut output = std::mem::replace(&mut r.output, mpsc::channel(1).1);
    // Set while output waits for the far side's acks (not for more output): then the
    // command's end must not cut it off.
    let sending = Arc::new(AtomicBool::new(false));
    let in_send = sending.clone();
    let forward = tokio::spawn(async move {
        while let Some((ch, data)) = output.recv().await {
            in_send.store(true, Ordering::Relaxed);
            let sent = sender.send_data_buf(ch, data).await;
            in_send.store(false, Ordering::Relaxed);
            if sent.is_err() {
                return false;
            }
            let _ = progress_tx.try_send(());
        }
        true
    });
    let mut last_progress = tokio::time::Instant::now();
    tokio::pin!(forward);
    // SIGHUP: the agent that started us died (PR_SET_PDEATHSIG) or someone hung us up.
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let hangup = async move {
        match hup.as_mut() {
            Some(h) => {
                h.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::pin!(hangup);
    let drain = tokio::time::sleep(Duration::from_secs(3600 * 24 * 365));
    tokio::pin!(drain);
    loop {
        if exited.is_some() && !outputs_open {
            break;
        }
        tokio::select! {
            ev = receiver.recv() => match ev {
                Some(TunnelEvent::Data { channel: channel::STDIN, data }) => match r.input(data) {
                    Ok(dropped) => acker.consumed(dropped).await,
                    Err(InputOverflow) => {
                        tracing::warn!(
                            "the operator's end sent more than the tunnel window allows; closing"
                        );
                        r.hangup();
                        return Some(CloseStatus::Error(
                            "input beyond the tunnel's flow-control window".into(),
                        ));
                    }
                },
                Some(TunnelEvent::Data { channel, data }) => {
                    tracing::debug!("ignoring data on channel {channel} from rsh");
                    acker.consumed(data.len()).await;
                }
                Some(TunnelEvent::Control(c)) => r.control(c),
                Some(TunnelEvent::Closed(_)) | None => {
                    let st = match ev {
                        Some(TunnelEvent::Closed(st)) => st,
                        _ => CloseStatus::Detached,
                    };
                    tracing::info!("tunnel closed by the far side ({st}), hanging up");
                    r.hangup();
                    if exited.is_none() {
                        // Give the job a moment to die so it is reaped, not orphaned.
                        let _ = tokio::time::timeout(Duration::from_secs(2), r.child.wait()).await;
                    }
                    return None;
                }
            },
            done = &mut forward, if outputs_open => {
                outputs_open = false;
                if !done.unwrap_or(false) {
                    r.hangup();
                    return None;
                }
            }
            Some(()) = progress_rx.recv(), if outputs_open && exited.is_some() => {
                last_progress = tokio::time::Instant::now();
                drain.as_mut().reset(last_progress + DRAIN_IDLE);
            }
            st = r.child.wait(), if exited.is_none() => {
                let st = match st {
                    Ok(st) => st,
                    Err(e) => return Some(CloseStatus::Error(format!("wait failed: {e}"))),
                };
                exited = Some(st);
                drain.as_mut().reset(tokio::time::Instant::now() + DRAIN_IDLE);
            },
            _ = &mut hangup => {
                tracing::warn!("SIGHUP (the agent went away): hanging up the command");
                r.hangup();
                if exited.is_none() {
                    let _ = tokio::time::timeout(Duration::from_secs(2), r.child.wait()).await;
                }
                return Some(CloseStatus::Error("the agent on the device stopped".into()));
            }
            _ = &mut drain, if exited.is_some() && outputs_open => {
                let now = tokio::time::Instant::now();
                if sending.load(Ordering::Relaxed) {
                    // Output is there, waiting for the operator to read it.
                    if now.duration_since(last_progress) < ACK_STALL {
                        drain.as_mut().reset(now + DRAIN_IDLE);
                        continue;
                    }
                    forward.abort();
                    r.hangup();
                    return Some(CloseStatus::Error(format!(
                        "output not acknowledged for {ACK_STALL:?} after the command ended; \
                         the rest was dropped"
                    )));
                }
                tracing::debug!("output still open {DRAIN_IDLE:?} after exit; closing");
                outputs_open = false;
                forward.abort();
            }
        }
    }
    let status = status_of(exited.expect("loop ends only after exit"));
    // Whatever was left behind (background jobs holding the PTY) is hung up, like sshd.
    r.hangup();
    Some(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pty: bool, cmd: &[&str]) -> LaunchParams {
        LaunchParams {
            pty,
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            cols: 90,
            rows: 33,
            env: vec![("TERM".into(), "vt100".into())],
            cwd: None,
            forward: None,
            copy: None,
        }
    }

    /// Collects (stdout, stderr) until every output is closed, then the exit status.
    async fn finish(mut r: Running) -> (String, String, CloseStatus) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        while let Some((ch, data)) = tokio::time::timeout(Duration::from_secs(10), r.output.recv())
            .await
            .expect("output timed out")
        {
            let data = &data[DATA_HEADROOM..];
            if ch == channel::STDERR {
                err.extend_from_slice(data)
            } else {
                out.extend_from_slice(data)
            }
        }
        let st = r.child.wait().await.unwrap();
        (
            String::from_utf8_lossy(&out).into_owned(),
            String::from_utf8_lossy(&err).into_owned(),
            status_of(st),
        )
    }

    #[tokio::test]
    async fn pty_is_a_controlling_terminal_with_size_and_term() {
        let r = spawn_pty(
            &params(
                true,
                &[
                    "sh",
                    "-c",
                    "tty; stty size; echo $TERM; ps -o tty= -p $$ >/dev/null; exit 4",
                ],
            ),
            None,
        )
        .unwrap();
        let (out, _, st) = finish(r).await;
        assert!(out.contains("/dev/pts/"), "{out}");
        assert!(out.contains("33 90"), "{out}");
        assert!(out.contains("vt100"), "{out}");
        assert_eq!(st, CloseStatus::ExitCode(4));
    }

    #[tokio::test]
    async fn pty_resize_and_eof() {
        let mut r = spawn_pty(
            &params(true, &["sh", "-c", "read x; stty size; cat; echo done"]),
            None,
        )
        .unwrap();
        r.control(Control::Resize {
            cols: 120,
            rows: 40,
        });
        r.input(bytes::Bytes::from_static(b"go\n")).unwrap();
        r.control(Control::Eof);
        let (out, _, st) = finish(r).await;
        assert!(out.contains("40 120"), "{out}");
        assert!(out.contains("done"), "{out}");
        assert_eq!(st, CloseStatus::ExitCode(0));
    }

    #[tokio::test]
    async fn pipes_keep_streams_apart_and_forward_eof() {
        let mut r = spawn_pipes(
            &params(false, &["sh", "-c", "cat; echo e >&2; exit 5"]),
            None,
        )
        .unwrap();
        r.input(bytes::Bytes::from_static(b"abc")).unwrap();
        r.control(Control::Eof);
        let (out, err, st) = finish(r).await;
        assert_eq!((out.as_str(), err.as_str()), ("abc", "e\n"));
        assert_eq!(st, CloseStatus::ExitCode(5));
    }

    #[tokio::test]
    async fn signal_reaches_the_process_group() {
        let mut r = spawn_pipes(&params(false, &["sleep", "100"]), None).unwrap();
        r.control(Control::Signal(15));
        let (_, _, st) = finish(r).await;
        assert_eq!(st, CloseStatus::Signal(15));
        let r = spawn_pipes(&params(false, &["sleep", "100"]), None).unwrap();
        r.hangup();
        let (_, _, st) = finish(r).await;
        assert_eq!(st, CloseStatus::Signal(1));
    }

    #[tokio::test]
    async fn a_hangup_ends_the_command_even_if_the_agent_ignores_sighup() {
        // As under `nohup`: SIGHUP ignored while the command is spawned (only around the
        // spawn, so that no other test of this binary runs with it ignored for long).
        // SAFETY: signal(2) swaps the disposition; the old one is put back at once.
        let old = unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
        let spawned = spawn_pipes(&params(false, &["sleep", "100"]), None);
        // SAFETY: as above.
        unsafe { libc::signal(libc::SIGHUP, old) };
        let r = spawned.unwrap();
        r.hangup();
        let (_, _, st) = finish(r).await;
        assert_eq!(st, CloseStatus::Signal(1));
    }

    #[tokio::test]
    async fn input_the_child_does_not_read_is_bounded() {
        // The child never reads stdin: what the pipe does not take stays queued, and past
        // twice the window (more than an honest operator's end can send) input is refused.
        let mut r = spawn_pipes(&params(false, &["sleep", "100"]), None).unwrap();
        let chunk = bytes::Bytes::from(vec![b'x'; 64 * 1024]);
        let mut accepted = 0usize;
        let refused = loop {
            match r.input(chunk.clone()) {
                Ok(dropped) => {
                    assert_eq!(dropped, 0);
                    accepted += chunk.len();
                }
                Err(InputOverflow) => break accepted,
            }
            assert!(accepted <= INPUT_QUEUE_MAX + 1024 * 1024, "never refused");
        };
        assert!(
            refused >= INPUT_QUEUE_MAX - chunk.len(),
            "refused early: {refused}"
        );
        r.hangup();
        let _ = r.child.wait().await;
    }

    #[test]
    fn missing_program_is_an_error() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let _g = rt.enter();
        assert!(spawn_pipes(&params(false, &["/no/such/program"]), None).is_err());
    }
}
