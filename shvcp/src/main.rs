use clap::Parser;

/// shvcp: copy files to and from an SHV device running shvagent, like scp.
///
/// A remote file is AGENT_PATH:/path (e.g. test/agent:/etc/hosts); anything else is a
/// local path (write a local path with a colon as ./a:b). Either every SRC is remote
/// and DST local (download), or every SRC is local and DST remote (upload). DST may be
/// an existing directory (sources go into it) or, for one source, the new name.
/// Files are written under a temporary name and renamed when complete; an interrupted
/// or failed copy leaves no temporary file. Remote relative paths start in the home
/// directory of the user the agent runs as; `~` and `~user` are expanded there. Sparse
/// files stay sparse; an entry that cannot be copied (a FIFO, a device) fails the copy.
/// Exit status 0 on success, 130 when interrupted, 1 with a one-line reason otherwise.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Copy directories with everything in them
    #[arg(short = 'r')]
    recursive: bool,
    /// Keep modes and modification times
    #[arg(short = 'p')]
    preserve: bool,
    /// Broker URL, e.g. 'tcp://admin@127.0.0.1:3755?password=admin', or the name of a
    /// host in the client config file (~/.config/shv/hosts.yaml or $SHV_CONFIG). The
    /// password may instead come from SHV_PASSWORD or --password-file.
    url: String,
    /// Sources, then the destination
    #[arg(required = true, num_args = 2..)]
    paths: Vec<String>,
    #[command(flatten)]
    login: shvtool::LoginArgs,
    /// Logging; -q also hides the progress bar, as scp's (there is none when stderr
    /// is not a terminal anyway)
    #[command(flatten)]
    log: shvtool::LogArgs,
}

fn main() {
    let a = Args::parse();
    let result = a
        .log
        .init("warn")
        .and_then(|()| {
            a.login.config(&a.url).and_then(|config| {
                shvcp::Request::new(
                    config,
                    &a.paths,
                    a.recursive,
                    a.preserve,
                    a.login.open_timeout(),
                    a.log.quiet > 0,
                )
            })
        })
        .and_then(|req| {
            tokio::runtime::Runtime::new()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(shvcp::run(req)))
        });
    if let Err(e) = result {
        eprintln!("shvcp: {}", shvtool::report(&e));
        let code = if e.downcast_ref::<shvcp::Interrupted>().is_some() {
            130
        } else {
            1
        };
        std::process::exit(code);
    }
}
