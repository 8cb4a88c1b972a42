use clap::Parser;

/// shvcp: copy files to and from an SHV device running shvagent, like scp.
///
/// A remote file is AGENT_PATH:/path (e.g. test/agent:/etc/hosts); anything else is a
/// local path (write a local path with a colon as ./a:b). Either every SRC is remote
/// and DST local (download), or every SRC is local and DST remote (upload). DST may be
/// an existing directory (sources go into it) or, for one source, the new name.
/// Files are written under a temporary name and renamed when complete. Exit status 0
/// on success, 1 with a one-line reason otherwise.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Copy directories with everything in them
    #[arg(short = 'r')]
    recursive: bool,
    /// Keep modes and modification times
    #[arg(short = 'p')]
    preserve: bool,
    /// Broker URL, e.g. 'tcp://admin@127.0.0.1:3755?password=admin'. The password may
    /// instead come from SHV_PASSWORD or --password-file.
    url: String,
    /// Sources, then the destination
    #[arg(required = true, num_args = 2..)]
    paths: Vec<String>,
    #[command(flatten)]
    login: shvrsh::cli::LoginArgs,
    /// No progress bar (there is none when stderr is not a terminal anyway)
    #[arg(short = 'q')]
    quiet: bool,
}

fn main() {
    let a = Args::parse();
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    let result = a
        .login
        .config(&a.url)
        .and_then(|config| {
            shvcp::Request::new(
                config,
                &a.paths,
                a.recursive,
                a.preserve,
                a.login.open_timeout(),
                a.quiet,
            )
        })
        .and_then(|req| {
            tokio::runtime::Runtime::new()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(shvcp::run(req)))
        });
    if let Err(e) = result {
        eprintln!("shvcp: {e:#}");
        std::process::exit(1);
    }
}
