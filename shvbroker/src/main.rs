use std::path::PathBuf;

use clap::Parser;
use shvbroker::config::Config;
use shvbroker::settings::Settings;
use tokio_util::sync::CancellationToken;

/// SHV 3 RPC broker: clients and devices connect to it, it routes calls, responses and
/// signals between them, and hosts remote-shell tunnels.
///
/// Without -c it runs a built-in config that is safe to try on a laptop: loopback only,
/// users admin/admin, device/device (may mount under test/**) and viewer/viewer.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// YAML config file (see --print-config for the format and the defaults)
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// Listen on this URL instead of the config's (repeatable): tcp://HOST:PORT,
    /// ssl://HOST:PORT?cert=C.pem&key=K.pem[&ca=CA.pem&verify=true], tcps://, ssls://,
    /// ws://HOST:PORT, wss://…, unix:PATH, unixs:PATH, serial:/dev/ttyX?baudrate=N.
    /// Port 0 picks a free port; the chosen one is logged as "listening on …".
    #[arg(long)]
    listen: Vec<String>,
    /// Serve the static files of DIR (the web terminal: `web/dist`, built by
    /// `cd web && npm ci && npm run build`) to plain HTTP GETs on every ws:// and wss://
    /// listener (overrides the config's `web_root`)
    #[arg(long, value_name = "DIR")]
    web_root: Option<PathBuf>,
    /// Broker name (shown by .broker:name and appended to UserId)
    #[arg(long)]
    name: Option<String>,
    /// Print the effective config as YAML and exit (password hashes and URL passwords
    /// are shown as REDACTED)
    #[arg(long)]
    print_config: bool,
    /// Once every listener is bound, write their addresses to FILE, one URL per line
    /// (with the ports port 0 picked): scripts and tests wait for the file instead of
    /// reading the log. Written beside and renamed, so it is never seen half-written.
    #[arg(long, value_name = "FILE")]
    ready_file: Option<PathBuf>,
    #[command(flatten)]
    log: shvtool::LogArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // One line for the operator, never a backtrace for a config mistake.
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shvbroker: {}", shvtool::report(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    args.log.init("info")?;
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if !args.listen.is_empty() {
        config.listen = args.listen.clone();
    }
    if let Some(dir) = &args.web_root {
        config.web_root = Some(dir.clone());
    }
    if let Some(n) = &args.name {
        config.name = n.clone();
    }
    // Checked before it is printed too: --print-config is how a config is tried out.
    let file = args
        .config
        .as_ref()
        .map_or("the built-in config".into(), |p| p.display().to_string());
    let settings = Settings::new(&config).map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
    if args.print_config {
        print!("{}", config.to_yaml_redacted());
        return Ok(());
    }
    let shutdown = CancellationToken::new();
    let s = shutdown.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        s.cancel();
    });
    let server = shvbroker::server::Server::bind(settings).await?;
    if let Some(path) = &args.ready_file {
        shvbroker::ready::write(path, server.addresses())
            .map_err(|e| anyhow::anyhow!("cannot write --ready-file {}: {e}", path.display()))?;
    }
    server.serve(shutdown).await
}
