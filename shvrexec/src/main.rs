use std::io::{BufRead, Write};

/// stderr that never fails: it is the agent's pipe, and when the agent dies we must
/// still finish the session (hang up, send CloseTunnel) rather than panic on EPIPE.
struct QuietStderr;

impl Write for QuietStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

use clap::Parser;

/// shvrexec: the device-side end of an SHV remote shell (tunnel.md).
///
/// Started by shvagent for each `launchRexec` request, not meant to be run by hand. It
/// reads ONE line of CPON on stdin:
/// `{"findTunnelResponse": <1:3>i{1:2, 2:host, 3:port, 4:secret, 5:R, 6:cids},
///   "onConnectedCall": {"method": "runPtyCmd"|"runCmd", "params": {...}}}`,
/// connects to host:port, logs in with the one-time tunnel secret, opens the tunnel to
/// shvrsh and runs the command in a PTY or with pipes until it ends (or rsh detaches).
/// The secret travels only on stdin, never on the command line or in logs.
/// Logs go to stderr (into the agent's log): -v, -q, --log or RUST_LOG (default `info`).
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    log: shvtool::LogArgs,
}

fn main() {
    let args = Args::parse();
    let filter = args.log.filter("info");
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_writer(|| QuietStderr)
        // No colour codes in log files (shvrexec logs into the agent's stderr).
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .with_env_filter(filter)
        .init();
    let code = match run() {
        Ok(()) => 0,
        Err(e) => {
            // One last line that shvagent passes on to shvrsh as the reason.
            let _ = writeln!(std::io::stderr(), "shvrexec: {e:#}");
            1
        }
    };
    std::process::exit(code)
}

fn run() -> anyhow::Result<()> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let launch = shvrexec::Launch::parse(&line)?;
    // The line held the secret; do not keep it around longer than needed.
    drop(line);
    // One thread: a session's bytes (and each keystroke) cross this process without a
    // hand-off between threads, each of which is a wake-up, often on another CPU.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let status = rt.block_on(shvrexec::run(launch))?;
    tracing::debug!("exiting after {status}");
    Ok(())
}
