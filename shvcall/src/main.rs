//! `shvcall URL PATH METHOD [PARAM]` — call one SHV method and print the result as Cpon.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use libshv::{value, Client, ClientConfig};

/// Call a method on an SHV broker (or a device behind it) and print the result as Cpon.
///
/// Errors go to stderr with a non-zero exit status (2 for an RPC error, 1 otherwise).
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Broker URL, e.g. tcp://admin@127.0.0.1:3755?password=admin or unix:/path?user=admin
    url: String,
    /// SHV path of the node to call (empty string for the root)
    path: Option<String>,
    /// Method name
    method: Option<String>,
    /// Parameter as Cpon, e.g. '"x"', '[1,2]', '{"a":1}'
    param: Option<String>,
    /// Instead of calling, subscribe to this RI (PATH:METHOD:SIGNAL, globs allowed) and
    /// print each signal as `path:signal param` until interrupted
    #[arg(long, conflicts_with_all = ["path", "method", "param"])]
    subscribe: Option<String>,
    /// Read the password from this file (first line) instead of the URL
    #[arg(long)]
    password_file: Option<std::path::PathBuf>,
    /// Log in with PLAIN (password sent as is) instead of SHA1
    #[arg(long)]
    plain: bool,
    /// Seconds to wait for the response
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shvcall: {e:#}");
            if e.downcast_ref::<libshv::ClientError>()
                .is_some_and(|e| matches!(e, libshv::ClientError::Rpc(_)))
            {
                std::process::ExitCode::from(2)
            } else {
                std::process::ExitCode::FAILURE
            }
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut config =
        ClientConfig::from_command_line(&args.url, args.password_file.as_deref(), args.plain)?;
    config.timeout = Duration::from_secs_f64(args.timeout);
    let (client, mut signals) = Client::connect(&config, None).await?;
    if let Some(ri) = &args.subscribe {
        client.subscribe(ri, None).await?;
        loop {
            tokio::select! {
                s = signals.recv() => match s {
                    Some(msg) => {
                        let f = msg.to_frame();
                        let param = msg.param().map(|p| p.to_cpon()).unwrap_or_else(|| "null".into());
                        let line = format!("{}:{}:{} {}", f.shv_path(), f.source(), f.method().unwrap_or(""), param);
                        // A closed pipe (e.g. `| head`) ends the subscription quietly.
                        if print_line(&line).is_err() {
                            return Ok(());
                        }
                    }
                    None => anyhow::bail!("connection closed"),
                },
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
        }
    }
    let (Some(path), Some(method)) = (&args.path, &args.method) else {
        anyhow::bail!("PATH and METHOD are required (or --subscribe RI); see --help");
    };
    let param = match &args.param {
        Some(p) => {
            Some(value::from_cpon(p).with_context(|| format!("invalid Cpon parameter '{p}'"))?)
        }
        None => None,
    };
    let result = client.call(path, method, param).await?;
    let _ = print_line(&result.to_cpon());
    Ok(())
}

fn print_line(line: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}
