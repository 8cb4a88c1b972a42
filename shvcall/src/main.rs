//! `shvcall URL PATH METHOD [PARAM]` — call one SHV method and print the result.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use libshv::{value, Client, RpcValue};
use shvtool::{LogArgs, UsageError};

/// Call a method on an SHV broker (or a device behind it) and print the result.
///
/// On a terminal the result is indented Cpon, and `ls`/`dir` are tables; otherwise (a
/// pipe, a file) it is one line of Cpon, as with --raw.
///
/// Exit status: 0 success; 1 the method answered with an RPC error (its message and
/// error name on stderr); 2 a wrong command line; 64 a bad value on it (Cpon
/// parameter, RI, URL); 69 the broker could not be reached, refused the login or did
/// not answer within --timeout.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Broker URL (tcp://admin@127.0.0.1:3755?password=admin, unix:/path?user=admin, …)
    /// or the name of a host in the client config file (~/.config/shv/hosts.yaml or
    /// $SHV_CONFIG)
    url: String,
    /// SHV path of the node to call ('' for the root)
    path: Option<String>,
    /// Method name
    method: Option<String>,
    /// Parameter as Cpon: a string needs its quotes ('"text"'), numbers, true, null,
    /// [1,2] and {"a":1} do not
    param: Option<String>,
    /// Instead of calling, subscribe to this RI (PATH:METHOD:SIGNAL, globs allowed,
    /// e.g. 'test/**:*:chng') and print each signal as `path:method:signal param`
    /// until interrupted
    #[arg(long, value_name = "RI", conflicts_with_all = ["path", "method", "param"])]
    subscribe: Option<String>,
    /// Read the password from this file (first line) instead of the URL
    #[arg(long)]
    password_file: Option<std::path::PathBuf>,
    /// Log in with PLAIN (password sent as is) instead of SHA1
    #[arg(long)]
    plain: bool,
    /// Seconds to wait for the connection, the login and the response
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Print the result as one line of Cpon, also on a terminal
    #[arg(long, conflicts_with = "json")]
    raw: bool,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    log: LogArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if let Err(e) = args.log.init("warn") {
        return shvtool::fail("shvcall", &e);
    }
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => shvtool::fail("shvcall", &e),
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    // Everything the command line says is checked before connecting.
    let ri = match &args.subscribe {
        Some(ri) => Some(libshv::ri::Ri::parse_subscription(ri).map_err(UsageError)?),
        None => None,
    };
    let param = match &args.param {
        Some(p) => Some(
            value::from_cpon(p)
                .map_err(|e| UsageError(format!("invalid Cpon parameter '{p}': {e}")))?,
        ),
        None => None,
    };
    if ri.is_none() && (args.path.is_none() || args.method.is_none()) {
        return Err(UsageError(
            "PATH and METHOD are required (or --subscribe RI); see --help".into(),
        )
        .into());
    }
    if !(args.timeout > 0.0 && args.timeout.is_finite()) {
        return Err(UsageError("--timeout must be a positive number of seconds".into()).into());
    }
    let mut config = shvtool::client_config(&args.url, args.password_file.as_deref(), args.plain)?;
    config.timeout = Duration::from_secs_f64(args.timeout);
    let (client, mut signals) = Client::connect(&config, None).await?;
    if let (Some(ri), Some(text)) = (ri, &args.subscribe) {
        client.subscribe(text, None).await?;
        tracing::info!("subscribed to {ri}");
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
                    None => anyhow::bail!("the broker closed the connection"),
                },
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
        }
    }
    let (Some(path), Some(method)) = (&args.path, &args.method) else {
        unreachable!("checked above");
    };
    let result = client
        .call(path, method, param)
        .await
        .with_context(|| format!("{path}:{method}"))?;
    let text = if args.json {
        result.to_json()
    } else if args.raw || !std::io::stdout().is_terminal() {
        result.to_cpon()
    } else {
        match method.as_str() {
            "ls" => ls_table(&result),
            "dir" => dir_table(&result),
            _ => None,
        }
        .unwrap_or_else(|| result.to_cpon_indented("  "))
    };
    let _ = print_line(&text);
    Ok(())
}

/// `ls`'s names, one per line (None: not a List of Strings).
fn ls_table(v: &RpcValue) -> Option<String> {
    let libshv::shvproto::Value::List(items) = &v.value else {
        return None;
    };
    let names: Option<Vec<&str>> = items
        .iter()
        .map(|i| match &i.value {
            libshv::shvproto::Value::String(s) => Some(s.as_str()),
            _ => None,
        })
        .collect();
    Some(names?.join("\n"))
}

/// `dir`'s methods as a table: name, access, flags, param → result, signals.
fn dir_table(v: &RpcValue) -> Option<String> {
    let libshv::shvproto::Value::List(items) = &v.value else {
        return None;
    };
    let mut rows = vec![[
        "METHOD".to_string(),
        "ACCESS".into(),
        "FLAGS".into(),
        "PARAM -> RESULT".into(),
        "SIGNALS".into(),
    ]];
    for item in items.iter() {
        let libshv::shvproto::Value::IMap(m) = &item.value else {
            return None;
        };
        let s = |k: i32| {
            m.get(&k)
                .map(|v| v.as_str().to_string())
                .unwrap_or_default()
        };
        let flags = m.get(&2).map(|f| f.as_int()).unwrap_or(0);
        let flag_names: Vec<&str> = [
            (2, "getter"),
            (4, "setter"),
            (8, "large"),
            (16, "not-idempotent"),
            (32, "user-id"),
        ]
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, n)| *n)
        .collect();
        let access = m
            .get(&5)
            .map(|a| libshv::access::level_name(a.as_int()))
            .unwrap_or_default();
        let signals = match m.get(&6).map(|v| &v.value) {
            Some(libshv::shvproto::Value::Map(sigs)) => {
                sigs.keys().cloned().collect::<Vec<_>>().join(",")
            }
            _ => String::new(),
        };
        let (p, r) = (s(3), s(4));
        let sig = if p.is_empty() && r.is_empty() {
            String::new()
        } else {
            format!(
                "{} -> {}",
                if p.is_empty() { "-" } else { &p },
                if r.is_empty() { "-" } else { &r }
            )
        };
        rows.push([s(1), access, flag_names.join(","), sig, signals]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let lines: Vec<String> = rows
        .iter()
        .map(|r| {
            let mut line = String::new();
            for (c, cell) in r.iter().enumerate() {
                line.push_str(cell);
                if c + 1 < r.len() {
                    line.push_str(&" ".repeat(widths[c] - cell.chars().count() + 2));
                }
            }
            line.trim_end().to_string()
        })
        .collect();
    Some(lines.join("\n"))
}

fn print_line(line: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}
