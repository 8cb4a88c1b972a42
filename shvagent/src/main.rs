use std::path::PathBuf;

use clap::Parser;

/// shvagent: an SHV device that offers remote shells (for shvrsh) and one-shot commands.
///
/// Connects out to the broker, logs in as a device and serves `ls`, `dir`, `.app`,
/// `launchRexec` (opens a tunnel and starts shvrexec for it) and `runCmd` (runs a
/// command, returns `[exitCode, stdout, stderr]`). Reconnects with exponential back-off
/// (1 s up to 60 s) when the link drops. Logs go to stderr (-v, -q, --log).
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Broker URL, e.g. 'tcp://device@127.0.0.1:3755?password=device', or the name of a
    /// host in the client config file (~/.config/shv/hosts.yaml or $SHV_CONFIG). The
    /// password may instead come from SHV_PASSWORD or --password-file. URL options
    /// `devmount` and `devid` work like --mount and --device-id.
    url: String,
    /// Mount point to request from the broker (e.g. test/agent); the user's role must
    /// allow it
    #[arg(long, conflicts_with = "device_id")]
    mount: Option<String>,
    /// Device id; the broker mounts the agent where its config maps this id
    #[arg(long)]
    device_id: Option<String>,
    /// The shvrexec binary to start for each remote shell (default: the one next to
    /// shvagent, then `shvrexec` on $PATH)
    #[arg(long)]
    rexec: Option<PathBuf>,
    /// Read the password from this file (first line) instead of the URL
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// Log in with PLAIN (password sent as is) instead of SHA1
    #[arg(long)]
    plain: bool,
    /// Allow port forwarding (shvrsh -L/-R): operators with command access may then
    /// reach any address this device can reach, and open listeners on it. Off by
    /// default; each forward is logged.
    #[arg(long)]
    allow_forward: bool,
    #[command(flatten)]
    log: shvtool::LogArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // One line for the operator (never anyhow's `Caused by:` list and backtrace).
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => shvtool::fail("shvagent", &e),
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    args.log.init("info")?;
    let mut config = shvtool::client_config(&args.url, args.password_file.as_deref(), args.plain)?;
    if let Some(m) = args.mount {
        config.login.mount_point = Some(m);
        config.login.device_id = None;
    }
    if let Some(d) = args.device_id {
        config.login.device_id = Some(d);
        config.login.mount_point = None;
    }
    if config.login.mount_point.is_none() && config.login.device_id.is_none() {
        anyhow::bail!("give --mount PATH or --device-id ID (or devmount/devid in the URL)");
    }
    let rexec = args.rexec.unwrap_or_else(shvagent::default_rexec_path);
    tokio::select! {
        r = shvagent::run(config, rexec, args.allow_forward) => r?,
        _ = shutdown() => tracing::info!("terminated"),
    }
    Ok(())
}

async fn shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
