use clap::Parser;
use libshv::tunnel::{Dialect, LaunchParams};
use shvrsh::forward::{Direction, ForwardSpec};
use shvrsh::{term, Options, EXIT_FAILURE};
use shvtool::LoginArgs;

/// shvrsh: a remote shell on an SHV device running shvagent, used like ssh.
///
/// Without CMD: an interactive login shell in a remote PTY, the local terminal in raw
/// mode (restored on exit); no PTY when stdin is not a terminal (unless -t). With CMD: runs it with stdin/stdout/stderr kept apart (a
/// PTY only with -t); local stdin EOF is passed on.
/// Exit status: the remote command's, 128+N if it died of signal N, 255 for a
/// connection or tunnel failure (reason on stderr); 0 when a C++ agent's process ends
/// (its shvrexec reports no status).
/// Typing `~.` at the start of a line detaches (`~~` sends a `~`).
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Force a remote PTY, also when CMD is given (for full-screen programs)
    #[arg(short = 't', conflicts_with = "no_pty")]
    pty: bool,
    /// Never allocate a remote PTY, also for an interactive shell
    #[arg(short = 'T')]
    no_pty: bool,
    /// Broker URL, e.g. 'tcp://admin@127.0.0.1:3755?password=admin', or the name of a
    /// host in the client config file (~/.config/shv/hosts.yaml or $SHV_CONFIG). The
    /// password may instead come from SHV_PASSWORD or --password-file.
    url: String,
    /// SHV path of the shvagent, e.g. test/agent
    agent_path: String,
    /// Command and arguments to run (best after `--`, so that its options are not taken
    /// for shvrsh's); none = interactive login shell
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    cmd: Vec<String>,
    #[command(flatten)]
    login: LoginArgs,
    /// Disable the `~.` escape
    #[arg(long)]
    no_escape: bool,
    /// Forward a local port to HOST:HOSTPORT as the device sees it, like ssh:
    /// [BIND:]PORT:HOST:HOSTPORT (BIND defaults to 127.0.0.1; repeatable). The agent
    /// must allow forwarding (shvagent --allow-forward).
    #[arg(short = 'L', value_name = "[BIND:]PORT:HOST:HOSTPORT")]
    local: Vec<String>,
    /// Listen on the device at [BIND:]PORT and forward each connection to HOST:HOSTPORT
    /// as this machine sees it (BIND defaults to 127.0.0.1 on the device; repeatable)
    #[arg(short = 'R', value_name = "[BIND:]PORT:HOST:HOSTPORT")]
    remote: Vec<String>,
    /// A SOCKS5 proxy at [BIND:]PORT (BIND defaults to 127.0.0.1; repeatable), like
    /// ssh -D: each connection goes to the destination it asks for, as the device sees
    /// it, names resolved there (curl --socks5-hostname). The agent must allow
    /// forwarding (shvagent --allow-forward)
    #[arg(short = 'D', value_name = "[BIND:]PORT")]
    dynamic: Vec<String>,
    /// No command: only forward ports, until interrupted or the broker goes
    #[arg(short = 'N')]
    no_command: bool,
    /// Connect stdin and stdout to HOST:PORT as the device sees it, like ssh -W: for
    /// ssh's ProxyCommand (`ssh -o ProxyCommand="shvrsh URL test/agent -W %h:%p" host`).
    /// The agent must allow forwarding (shvagent --allow-forward)
    #[arg(short = 'W', value_name = "HOST:PORT", conflicts_with_all = ["cmd", "no_command", "pty", "local", "remote", "dynamic"])]
    stdio: Option<String>,
    /// How the agent speaks tunnels: `shv` (our shvagent: Blobs, flow control, resize,
    /// EOF and signals), `cpp` (the C++ shvapp shvagent: the original launch form and
    /// Strings; no window resize, no stdin EOF), or `auto`: ask the agent (`dir`)
    #[arg(long, value_enum, default_value_t = DialectArg::Auto)]
    dialect: DialectArg,
    /// Logging (errors only by default: stderr belongs to the remote command)
    #[command(flatten)]
    log: shvtool::LogArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DialectArg {
    Auto,
    Shv,
    Cpp,
}

fn options(args: Args) -> anyhow::Result<Options> {
    let config = args.login.config(&args.url)?;
    let tty = term::stdin_is_tty();
    // As ssh: a PTY for an interactive shell on a terminal, or when forced with -t.
    let pty = args.pty || (args.cmd.is_empty() && tty && !args.no_pty);
    let (cols, rows) = term::window_size().unwrap_or((80, 24));
    let mut env = Vec::new();
    if pty {
        let t = std::env::var("TERM")
            .ok()
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "xterm-256color".into());
        env.push(("TERM".to_string(), t));
    }
    let mut forwards = Vec::new();
    for (dir, specs) in [
        (Direction::Local, &args.local),
        (Direction::Remote, &args.remote),
        (Direction::Dynamic, &args.dynamic),
    ] {
        for s in specs {
            forwards.push(ForwardSpec::parse(dir, s).map_err(anyhow::Error::msg)?);
        }
    }
    let stdio = match &args.stdio {
        Some(s) => Some(shvrsh::forward::parse_host_port(s).map_err(anyhow::Error::msg)?),
        None => None,
    };
    if args.no_command && forwards.is_empty() {
        anyhow::bail!("-N needs at least one -L, -R or -D");
    }
    if args.no_command && !args.cmd.is_empty() {
        anyhow::bail!("-N and a command exclude each other");
    }
    Ok(Options {
        forwards,
        no_command: args.no_command,
        stdio,
        config,
        agent_path: args.agent_path.trim_matches('/').to_string(),
        launch: LaunchParams {
            pty,
            cmd: args.cmd,
            cols,
            rows,
            env,
            cwd: None,
            forward: None,
            copy: None,
        },
        raw: pty && tty,
        escape: tty && !args.no_escape,
        open_timeout: args.login.open_timeout(),
        dialect: match args.dialect {
            DialectArg::Auto => None,
            DialectArg::Shv => Some(Dialect::Shv),
            DialectArg::Cpp => Some(Dialect::Journal),
        },
    })
}

fn main() {
    let args = Args::parse();
    if let Err(e) = args.log.init("error") {
        eprintln!("shvrsh: {}", shvtool::report(&e));
        std::process::exit(EXIT_FAILURE);
    }
    let code = match options(args) {
        // One thread, as ssh: a keystroke and its echo cross shvrsh without a hand-off
        // between threads (each a wake-up, often on the other CPU).
        Ok(opts) => match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(shvrsh::run(opts)),
            Err(e) => {
                eprintln!("shvrsh: {e}");
                EXIT_FAILURE
            }
        },
        Err(e) => {
            eprintln!("shvrsh: {}", shvtool::report(&e));
            EXIT_FAILURE
        }
    };
    term::restore();
    // The stdin reader thread may sit in read(); exit without waiting for it.
    std::process::exit(code)
}
