//! shvrsh: a remote shell over SHV tunnels, used like ssh (tunnel.md, tools.md).

pub mod forward;
mod stdin;
pub mod term;

use std::io::Write;
use std::time::Duration;

use libshv::tunnel::{
    CloseStatus, Control, Dialect, LaunchParams, TunnelEnd, TunnelError, TunnelEvent, TunnelSender,
};
use libshv::{Client, ClientConfig, ClientError};
use tokio::sync::mpsc;

/// Exit status for connection and tunnel failures, like ssh.
pub const EXIT_FAILURE: i32 = 255;

/// A failure before or outside the remote command: one line for stderr, exit 255.
#[derive(Debug, thiserror::Error)]
pub enum RshError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
    #[error("login failed: {0}")]
    Login(String),
    #[error(transparent)]
    Launch(#[from] shvtool::LaunchError),
    #[error("tunnel failed: {0}")]
    Tunnel(String),
    #[error("connection to the broker lost")]
    Disconnected,
    #[error("{0}")]
    Forward(String),
}

pub struct Options {
    pub config: ClientConfig,
    pub agent_path: String,
    pub launch: LaunchParams,
    /// Put the local terminal in raw mode (interactive PTY session on a tty).
    pub raw: bool,
    /// Recognise `~.` after a newline as "detach".
    pub escape: bool,
    /// How long launchRexec may take until the tunnel is open.
    pub open_timeout: Duration,
    /// Port forwards (`-L`, `-R`), opened before the command.
    pub forwards: Vec<forward::ForwardSpec>,
    /// `-N`: forwards only, no command.
    pub no_command: bool,
    /// `-W HOST:PORT`: stdin and stdout to HOST:PORT on the device's side.
    pub stdio: Option<(String, u16)>,
    /// How the agent speaks tunnels; None: ask it ([`agent_dialect`]).
    pub dialect: Option<Dialect>,
}

/// How the agent at `path` speaks tunnels, from its `dir`: ours describes the Map form
/// of `launchRexec`, the C++ shvagent does not. Anything unclear (no answer, no
/// `launchRexec` there) is taken as ours: the launch then reports what is wrong.
pub async fn agent_dialect(client: &Client, path: &str) -> Dialect {
    let dir = client
        .call_timeout(path, "dir", None, Duration::from_secs(10))
        .await;
    let d = dir
        .ok()
        .and_then(|d| Dialect::of_agent_dir(&d))
        .unwrap_or(Dialect::Shv);
    tracing::debug!("agent {path} speaks the {d:?} dialect");
    d
}

/// The launch of `opts` in the agent's dialect.
async fn launch(client: &Client, opts: &Options) -> Result<TunnelEnd, TunnelError> {
    let dialect = match opts.dialect {
        Some(d) => d,
        None => agent_dialect(client, &opts.agent_path).await,
    };
    TunnelEnd::launch_in(
        client,
        &opts.agent_path,
        &opts.launch,
        dialect,
        opts.open_timeout,
    )
    .await
}

fn connect_error(url: &ClientConfig, e: ClientError) -> RshError {
    match e {
        ClientError::Connect(t, e) => RshError::Connect(t, e.to_string()),
        ClientError::Login(m) => RshError::Login(m),
        other => RshError::Connect(url.url.transport().to_string(), other.to_string()),
    }
}

/// Tells "no such path" from "no access" after a MethodNotFound: the broker answers
/// both the same way, but `dir` on the path (Browse level) tells them apart.
/// Connects to the broker.
pub async fn connect(opts: &Options) -> Result<Client, RshError> {
    let (client, _signals) = Client::connect(&opts.config, None)
        .await
        .map_err(|e| connect_error(&opts.config, e))?;
    Ok(client)
}

/// Connects and opens the tunnel.
pub async fn open(opts: &Options) -> Result<(Client, TunnelEnd), RshError> {
    let client = connect(opts).await?;
    match launch(&client, opts).await {
        Ok(end) => Ok((client, end)),
        Err(e) => Err(launch_error(&client, &opts.agent_path, e).await),
    }
}

/// The one-line reason a launch failed.
pub async fn launch_error(client: &Client, agent_path: &str, e: TunnelError) -> RshError {
    shvtool::launch_error(client, agent_path, e).await.into()
}

/// `~.` after a newline detaches (ssh's escape); `~~` sends one `~`.
#[derive(Debug)]
pub struct EscapeFilter {
    at_line_start: bool,
    pending_tilde: bool,
}

impl Default for EscapeFilter {
    fn default() -> Self {
        // The start of the session counts as after a newline, as in ssh.
        EscapeFilter {
            at_line_start: true,
            pending_tilde: false,
        }
    }
}

impl EscapeFilter {
    /// Returns the bytes to send and whether the user asked to detach.
    pub fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len() + 1);
        for &b in input {
            if self.pending_tilde {
                self.pending_tilde = false;
                match b {
                    b'.' => return (out, true),
                    b'~' => {
                        out.push(b'~');
                        self.at_line_start = false;
                        continue;
                    }
                    _ => out.push(b'~'),
                }
            } else if self.at_line_start && b == b'~' {
                self.pending_tilde = true;
                continue;
            }
            out.push(b);
            self.at_line_start = b == b'\r' || b == b'\n';
        }
        (out, false)
    }
}

/// Sends CloseTunnel (the user detached) and makes sure it left before we exit.
async fn detach(client: &Client, sender: &TunnelSender) {
    let _ = sender.close(&CloseStatus::Detached).await;
    // The ping's answer comes after the broker read our CloseTunnel.
    let _ = client
        .call_timeout(".app", "ping", None, Duration::from_secs(2))
        .await;
}

/// Writes straight to a file descriptor: std's stdout is line-buffered and scans every
/// chunk for newlines, which cost a third of shvrsh's CPU on bulk output.
struct RawOut<F: std::os::fd::AsFd>(F);

impl<F: std::os::fd::AsFd> Write for RawOut<F> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        loop {
            match nix::unistd::write(self.0.as_fd(), buf) {
                Err(nix::errno::Errno::EINTR) => continue,
                r => return r.map_err(std::io::Error::from),
            }
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// How forwarding local input into the tunnel ended.
enum InputEnd {
    /// Local stdin hit EOF (and `{"eof": true}` was sent).
    Eof,
    /// The user typed `~.`.
    Detach,
    /// The tunnel cannot take more (closed or connection lost).
    Failed,
}

/// Forwards local input into the tunnel. It runs apart from the receive loop: a send
/// may wait for the far side's flow-control acks, and those come only while we keep
/// receiving (and acknowledging) its output.
async fn forward_input(
    mut stdin: mpsc::Receiver<Option<Vec<u8>>>,
    sender: TunnelSender,
    escape: bool,
) -> InputEnd {
    let mut filter = EscapeFilter::default();
    loop {
        match stdin.recv().await {
            Some(Some(data)) => {
                let (data, detach_now) = if escape {
                    filter.feed(&data)
                } else {
                    (data, false)
                };
                if !data.is_empty()
                    && sender
                        .send_data(libshv::tunnel::channel::STDIN, &data)
                        .await
                        .is_err()
                {
                    return InputEnd::Failed;
                }
                if detach_now {
                    return InputEnd::Detach;
                }
            }
            Some(None) | None => {
                let _ = sender.send_control(Control::Eof).await;
                return InputEnd::Eof;
            }
        }
    }
}

/// Relays an open tunnel until it closes; returns the process exit status. Writes the
/// one-line reason to stderr itself for failures (after restoring the terminal).
pub async fn relay(
    client: Client,
    end: TunnelEnd,
    stdin: mpsc::Receiver<Option<Vec<u8>>>,
    escape: bool,
    pty: bool,
) -> i32 {
    use tokio::signal::unix::{signal, SignalKind};
    // The C++ shvrexec reports no exit status: it closes the tunnel when its process
    // ends, so for it a close is the normal end (status 0), not a lost connection.
    let close_is_exit = end.dialect() == libshv::tunnel::Dialect::Journal;
    let (sender, mut receiver) = end.split();
    let mut winch = signal(SignalKind::window_change()).ok();
    let mut sigint = signal(SignalKind::interrupt()).ok();
    let mut sigterm = signal(SignalKind::terminate()).ok();
    let mut sighup = signal(SignalKind::hangup()).ok();
    let input = tokio::spawn(forward_input(stdin, sender.clone(), escape));
    tokio::pin!(input);
    let mut stdin_open = true;
    let mut out = RawOut(std::io::stdout());
    let mut err = RawOut(std::io::stderr());
    async fn recv_sig(s: &mut Option<tokio::signal::unix::Signal>) {
        match s {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    }
    loop {
        tokio::select! {
            ev = receiver.recv() => match ev {
                Some(TunnelEvent::Data { channel, data }) => {
                    // Output is written synchronously: a slow terminal back-pressures
                    // the tunnel instead of growing a buffer.
                    let w: &mut dyn Write = if channel == libshv::tunnel::channel::STDERR {
                        &mut err
                    } else {
                        &mut out
                    };
                    let _ = w.write_all(&data).and_then(|_| w.flush());
                }
                Some(TunnelEvent::Control(Control::Notice(text))) => {
                    // A broker's word, shown escaped: it may not steer the terminal.
                    let line = format!("\r\nshvrsh: {}\r\n", libshv::logsafe::shown(&text));
                    let _ = err.write_all(line.as_bytes()).and_then(|_| err.flush());
                }
                Some(TunnelEvent::Control(_)) => {}
                None => break,
                Some(TunnelEvent::Closed(st)) => {
                    let _ = out.flush();
                    return match st {
                        CloseStatus::Error(msg) => {
                            term::restore();
                            eprintln!("shvrsh: {}", RshError::Tunnel(msg));
                            EXIT_FAILURE
                        }
                        CloseStatus::Detached if close_is_exit => {
                            tracing::debug!("the C++ agent closed the tunnel: its process ended");
                            0
                        }
                        CloseStatus::Detached => {
                            term::restore();
                            eprintln!("shvrsh: the remote side closed the tunnel");
                            EXIT_FAILURE
                        }
                        st => st.exit_code(),
                    };
                }
            },
            end = &mut input, if stdin_open => {
                stdin_open = false;
                match end.unwrap_or(InputEnd::Failed) {
                    InputEnd::Eof => {}
                    InputEnd::Failed => break,
                    InputEnd::Detach => {
                        detach(&client, &sender).await;
                        term::restore();
                        eprintln!("shvrsh: detached");
                        return EXIT_FAILURE;
                    }
                }
            }
            _ = recv_sig(&mut winch), if pty => {
                if let Some((c, r)) = term::window_size() {
                    let _ = sender.send_control(Control::Resize { cols: c, rows: r }).await;
                }
            }
            // Without a remote PTY, ^C reaches us as SIGINT: pass it on, like a shell
            // would to its foreground job.
            _ = recv_sig(&mut sigint) => {
                let _ = sender.send_control(Control::Signal(2)).await;
            }
            _ = recv_sig(&mut sigterm) => {
                detach(&client, &sender).await;
                term::restore();
                eprintln!("shvrsh: terminated");
                return EXIT_FAILURE;
            }
            _ = recv_sig(&mut sighup) => {
                detach(&client, &sender).await;
                term::restore();
                return EXIT_FAILURE;
            }
        }
    }
    term::restore();
    eprintln!("shvrsh: {}", RshError::Disconnected);
    EXIT_FAILURE
}

/// The whole session: connect, open the forwards and the command's tunnel, relay.
/// Returns the exit status.
pub async fn run(opts: Options) -> i32 {
    // -W reads stdin itself, as a byte stream.
    let stdin = (!opts.no_command && opts.stdio.is_none()).then(stdin::spawn_stdin_reader);
    let client = match connect(&opts).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shvrsh: {e}");
            return EXIT_FAILURE;
        }
    };
    let mut forwards = Vec::new();
    for spec in &opts.forwards {
        match forward::start(&client, &opts, spec).await {
            Ok((closer, task)) => forwards.push((spec.to_string(), closer, task)),
            Err(e) => {
                eprintln!("shvrsh: {e}");
                return EXIT_FAILURE;
            }
        }
    }
    if let Some((host, port)) = &opts.stdio {
        return forward::stdio(&client, &opts, host, *port).await;
    }
    let Some(stdin) = stdin else {
        return wait_forwards(&client, forwards).await;
    };
    // Forwards that end early (say, the device could not listen) are reported; the
    // command goes on.
    for (label, _, task) in forwards {
        tokio::spawn(async move {
            if let Ok(CloseStatus::Error(e)) = task.await {
                eprintln!("shvrsh: {label}: {e}");
            }
        });
    }
    let end = match launch(&client, &opts).await {
        Ok(end) => end,
        Err(e) => {
            eprintln!(
                "shvrsh: {}",
                launch_error(&client, &opts.agent_path, e).await
            );
            return EXIT_FAILURE;
        }
    };
    if opts.raw {
        if let Err(e) = term::set_raw() {
            eprintln!("shvrsh: cannot set the terminal to raw mode: {e}");
        }
    }
    let code = relay(client, end, stdin, opts.escape, opts.launch.pty).await;
    term::restore();
    code
}

/// A forward: its label (`-L 8080:h:80`), its tunnel's sending half, its task.
type ForwardTask = (String, TunnelSender, tokio::task::JoinHandle<CloseStatus>);

/// `-N`: runs until every forward has ended (the broker went, or the device could not
/// listen); 0 if they ended cleanly, 255 with the reasons otherwise. SIGINT, SIGTERM or
/// SIGHUP close every forward's tunnel first (the device sees the operator leave, not a
/// lost connection) and end with 255, as ssh does.
async fn wait_forwards(client: &Client, forwards: Vec<ForwardTask>) -> i32 {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).ok();
    let mut term = signal(SignalKind::terminate()).ok();
    let mut hup = signal(SignalKind::hangup()).ok();
    async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
        match s {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    }
    let stopped = async {
        tokio::select! {
            _ = recv(&mut int) => {}
            _ = recv(&mut term) => {}
            _ = recv(&mut hup) => {}
        }
    };
    let closers: Vec<TunnelSender> = forwards.iter().map(|(_, c, _)| c.clone()).collect();
    tokio::select! {
        code = wait_all(forwards) => code,
        _ = stopped => {
            for c in &closers {
                let _ = c.close(&CloseStatus::Detached).await;
            }
            // The ping's answer comes after the broker read our CloseTunnels.
            let _ = client
                .call_timeout(".app", "ping", None, Duration::from_secs(2))
                .await;
            eprintln!("shvrsh: terminated");
            EXIT_FAILURE
        }
    }
}

async fn wait_all(forwards: Vec<ForwardTask>) -> i32 {
    let mut code = 0;
    for (label, _, task) in forwards {
        match task.await {
            Ok(CloseStatus::Error(e)) => {
                eprintln!("shvrsh: {label}: {e}");
                code = EXIT_FAILURE;
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("shvrsh: {label}: {e}");
                code = EXIT_FAILURE;
            }
        }
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_detach_after_newline() {
        let mut f = EscapeFilter::default();
        assert_eq!(f.feed(b"ls\r"), (b"ls\r".to_vec(), false));
        assert_eq!(f.feed(b"~"), (vec![], false));
        assert_eq!(f.feed(b"."), (vec![], true));
        let mut f = EscapeFilter::default();
        assert_eq!(f.feed(b"~."), (vec![], true));
    }

    #[test]
    fn escape_passthrough() {
        let mut f = EscapeFilter::default();
        // Not after a newline: plain bytes.
        assert_eq!(f.feed(b"a~."), (b"a~.".to_vec(), false));
        assert_eq!(f.feed(b"\n~~"), (b"\n~".to_vec(), false));
        assert_eq!(f.feed(b"."), (b".".to_vec(), false));
        assert_eq!(f.feed(b"\r~x"), (b"\r~x".to_vec(), false));
        // The tilde after ~~ is not at line start any more.
        assert_eq!(f.feed(b"\n~~~."), (b"\n~~.".to_vec(), false));
    }
}
