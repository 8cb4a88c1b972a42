//! shvbench: load generator and side-by-side benchmarks for SHV 3 brokers.
//!
//! - [`scenarios`]: `rpc` (N callers → a mounted device), `fanout` (1 device → M
//!   subscribers), `idle` (K logged-in clients, broker RSS per client);
//! - [`tunnel`]: bulk bytes and keystroke echo through shvrsh → tunnel → shvrexec
//!   (our broker only), with the raw relay as the bulk baseline;
//! - [`relay`]: the raw frame relay used as the "physical limit" baseline;
//! - [`brokers`]: starting ours, the crates.io Rust shvbroker and pyshv with
//!   equivalent generated configs;
//! - [`compare`]: rounds over all of them and the Markdown table;
//! - [`smoke`]: each scenario for about a second, to keep the tool working in CI.

pub mod brokers;
pub mod compare;
pub mod files;
pub mod proto;
pub mod relay;
pub mod scenarios;
pub mod stats;
pub mod transports;
pub mod tunnel;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use libshv::RpcUrl;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("login to {0} failed: {1}")]
    Login(String, String),
    #[error("I/O: {0}")]
    Io(String),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("RPC: {0}")]
    Rpc(String),
    #[error("timeout: {0}")]
    Timeout(String),
    #[error("connection closed")]
    Closed,
    #[error("config: {0}")]
    Config(String),
}

/// Load generator and side-by-side benchmarks for SHV 3 brokers.
///
/// Scenarios: `rpc` (N clients calling a method on a device that shvbench mounts on the
/// broker), `fanout` (one device emitting signals to M subscribers), `idle` (K idle
/// logged-in clients, broker RSS per client), `relay` (the rpc load through a raw
/// frame relay: the physical limit of this machine), `tunnel` (bytes and keystrokes
/// through shvrsh and a broker tunnel; our broker only). `compare` starts each broker
/// itself and prints a Markdown table; `smoke` runs everything for ~1 s.
///
/// Callers log in with the URL's user (e.g. tcp://admin@127.0.0.1:3755?password=admin);
/// the device logs in with --device-url (default: same host, device/device) and
/// mounts itself at --mount.
#[derive(Parser, Debug)]
#[command(version)]
pub struct Cli {
    /// Log filter for shvbench's own logs (tracing), e.g. info, debug (default: warn, or RUST_LOG)
    #[arg(short, long, global = true)]
    pub verbose: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// N clients each calling `MOUNT:get` on the benchmark device, one call in flight
    /// per client; reports calls/s and p50/p99 latency per N.
    Rpc {
        #[command(flatten)]
        target: TargetArgs,
        /// Client counts to run, one after another
        #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
        clients: Vec<usize>,
        /// Seconds of measurement per client count
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
    },
    /// One device emitting `chng` signals (param: emit timestamp) to M subscribers of
    /// `MOUNT/**:*:chng`; reports delivered signals/s and p50/p99 delivery latency.
    Fanout {
        #[command(flatten)]
        target: TargetArgs,
        /// Subscriber counts to run, one after another
        #[arg(long, value_delimiter = ',', default_value = "1,100,1000")]
        subscribers: Vec<usize>,
        /// Seconds of emission per subscriber count
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        /// Flow control: signals in flight per subscriber (on average) before the
        /// emitter waits; keeps brokers from being measured by their buffering
        #[arg(long, default_value_t = 32)]
        window: u64,
    },
    /// K clients log in and stay idle; reports login rate and, with --broker-pid, the
    /// broker's RSS growth per client (VmRSS from /proc/PID/status).
    Idle {
        /// Broker URL with credentials, e.g. tcp://admin@127.0.0.1:3755?password=admin
        url: String,
        /// Client counts to run, one after another (the open-files soft limit is raised
        /// to the hard limit; counts above it fail)
        #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
        clients: Vec<usize>,
        /// PID of the broker process, to read its RSS
        #[arg(long)]
        broker_pid: Option<u32>,
    },
    /// The rpc load through shvbench's built-in raw frame relay (no broker): the
    /// physical limit of one extra loopback hop on this machine.
    Relay {
        /// Client counts to run, one after another
        #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
        clients: Vec<usize>,
        /// Seconds of measurement per client count
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
    },
    /// Bytes and keystrokes through a remote shell: starts shvagent (mounted at
    /// --agent-mount, logged in with --device-url), then per round `shvrsh URL AGENT -- cat`
    /// with --mib MiB piped through (MB/s each way), `-- head -c` of the same size (MB/s),
    /// and `shvrsh -t ... -- cat` with --keystrokes single-byte PTY echoes (p50/p99); and
    /// the same bytes through the raw relay as 64 KiB Block frames, with the ratio.
    /// Needs a broker with tunnels (ours) and the release shvagent, shvrexec and shvrsh.
    Tunnel {
        /// Broker URL for shvrsh, with credentials, e.g. tcp://admin@127.0.0.1:3755?password=admin
        url: String,
        /// URL the agent logs in with (default: the same host and port, device/device)
        #[arg(long)]
        device_url: Option<String>,
        #[command(flatten)]
        tunnel: TunnelArgs,
        /// Rounds; medians are printed at the end
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Every scenario for about a second against one broker (rpc with 2 clients, fanout
    /// with 2 subscribers, idle with 10 clients, relay with 2 clients; with --tunnel also
    /// 1 MiB through `shvrsh -- cat` and 3 PTY echoes); exits non-zero unless calls,
    /// signals and tunnel bytes went through. Meant for CI: no timing is judged.
    Smoke {
        #[command(flatten)]
        target: TargetArgs,
        /// PID of the broker process, to also exercise the RSS reading
        #[arg(long)]
        broker_pid: Option<u32>,
        /// Also the tunnel round trip (the broker must implement tunnels, as ours does)
        #[arg(long)]
        tunnel: bool,
        /// Directory with shvagent, shvrexec and shvrsh (default: next to shvbench)
        #[arg(long)]
        bin_dir: Option<PathBuf>,
    },
    /// Starts each broker itself on 127.0.0.1 (fresh port, generated config), runs every
    /// scenario against each over several rounds (order rotated per round) and prints a
    /// Markdown table of medians and ours/peer ratios. Missing brokers are skipped
    /// with a note.
    Compare(Box<CompareArgs>),
    /// Port forwarding and file copy: MiB through `shvrsh -N -L` to a sink, `shvcp`
    /// up and down, and `shvrsh -- cat`, against our broker (started here), next to the
    /// raw relay; a Markdown table of medians and ratios to the relay.
    Files {
        /// Rounds; the table shows medians
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// MiB per transfer
        #[arg(long, default_value_t = 64)]
        mib: u64,
        /// Our shvbroker binary (default: shvbroker next to this executable)
        #[arg(long)]
        ours: Option<PathBuf>,
        /// Directory with shvagent, shvrexec, shvrsh and shvcp (default: next to shvbench)
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// Directory for the payload, copies and logs
        #[arg(long, default_value_os_t = std::env::temp_dir().join("shvbench-files"))]
        workdir: PathBuf,
        /// Also write the Markdown report to this file
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// What a transport costs: our broker on tcp, ssl, ws, wss and tcps in turn (one
    /// listener each, a throwaway CA for TLS), the rpc load and a `shvrsh -- cat` tunnel
    /// with every end on that transport; a Markdown table of medians and each
    /// transport's ratio to tcp.
    Transports {
        /// Rounds over all transports; the table shows medians over rounds
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Seconds of measurement per rpc client count
        #[arg(long, default_value_t = 3.0)]
        duration: f64,
        /// rpc client counts
        #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
        rpc_clients: Vec<usize>,
        /// MiB through the tunnel per round (0 leaves the tunnel rows out)
        #[arg(long, default_value_t = 64)]
        mib: u64,
        /// Transports, tcp first (the base of the ratios)
        #[arg(long, value_delimiter = ',', default_value = "tcp,ssl,ws,wss,tcps")]
        transports: Vec<String>,
        /// Our shvbroker binary (default: shvbroker next to this executable)
        #[arg(long)]
        ours: Option<PathBuf>,
        /// Directory with shvagent, shvrexec and shvrsh (default: next to shvbench)
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// Directory for the certificates and broker logs
        #[arg(long, default_value_os_t = std::env::temp_dir().join("shvbench-transports"))]
        workdir: PathBuf,
        /// Also write the Markdown report to this file
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

#[derive(Args, Debug)]
pub struct TargetArgs {
    /// Broker URL for the callers/subscribers, with credentials,
    /// e.g. tcp://admin@127.0.0.1:3755?password=admin
    pub url: String,
    /// URL the benchmark device logs in with (default: the same host and port with
    /// user device, password device)
    #[arg(long)]
    pub device_url: Option<String>,
    /// Mount point of the benchmark device (the device user must be allowed to mount there)
    #[arg(long, default_value = "test/bench")]
    pub mount: String,
}

impl TargetArgs {
    fn urls(&self) -> anyhow::Result<(RpcUrl, RpcUrl)> {
        urls(&self.url, self.device_url.as_deref())
    }
}

/// The callers' URL and the device's (default: same transport, device/device).
fn urls(url: &str, device_url: Option<&str>) -> anyhow::Result<(RpcUrl, RpcUrl)> {
    let url = RpcUrl::parse(url)?;
    let device = match device_url {
        Some(d) => RpcUrl::parse(d)?,
        None => RpcUrl {
            transport: url.transport.clone(),
            user: "device".into(),
            password: Some("device".into()),
            ..Default::default()
        },
    };
    Ok((url, device))
}

#[derive(Args, Debug)]
pub struct TunnelArgs {
    /// MiB piped through `cat` (and downloaded) per round
    #[arg(long, default_value_t = 64)]
    pub mib: u64,
    /// Single-byte PTY echoes per round
    #[arg(long, default_value_t = 500)]
    pub keystrokes: usize,
    /// Leave out the `head -c N /dev/zero` download
    #[arg(long)]
    pub no_download: bool,
    /// Where shvagent mounts itself (the device user must be allowed to mount there)
    #[arg(long, default_value = "test/agent")]
    pub agent_mount: String,
    /// Directory with shvagent, shvrexec and shvrsh (default: next to shvbench, i.e.
    /// target/release for a release shvbench)
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
}

impl TunnelArgs {
    fn bins(&self) -> tunnel::TunnelBins {
        match &self.bin_dir {
            Some(d) => tunnel::TunnelBins::in_dir(d),
            None => tunnel::TunnelBins::next_to_exe(),
        }
    }
    fn sizes(&self) -> tunnel::TunnelSizes {
        tunnel::TunnelSizes {
            bytes: self.mib.max(1) << 20,
            keystrokes: self.keystrokes.max(1),
            download: !self.no_download,
        }
    }
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Rounds over all brokers; the table shows medians over rounds
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Seconds of measurement per scenario variant
    #[arg(long, default_value_t = 3.0)]
    pub duration: f64,
    /// Tiny run (1 round, 1 s, small sizes) to check that everything works
    #[arg(long)]
    pub quick: bool,
    /// Brokers to compare, in this order: ours, upstream (crates.io Rust shvbroker), pyshv
    #[arg(long, value_delimiter = ',', default_value = "ours,upstream,pyshv")]
    pub brokers: Vec<brokers::BrokerKind>,
    /// Leave out the raw relay baseline
    #[arg(long)]
    pub no_relay: bool,
    /// Leave out the tunnel scenario (which runs against our broker only)
    #[arg(long)]
    pub no_tunnel: bool,
    #[command(flatten)]
    pub tunnel: TunnelArgs,
    /// Our shvbroker binary (default: shvbroker next to this executable)
    #[arg(long)]
    pub ours: Option<PathBuf>,
    /// The crates.io Rust shvbroker binary (built as shared/tools/README.md says); left
    /// out with a note when missing
    #[arg(
        long,
        env = "SHV_UPSTREAM_BROKER",
        default_value = "shvbroker-upstream"
    )]
    pub upstream: PathBuf,
    /// pyshv's broker (pyshvbroker from PyPI pyshv, e.g. in the repository's .venv)
    #[arg(
        long,
        env = "SHV_PYSHV_BROKER",
        default_value = ".venv/bin/pyshvbroker"
    )]
    pub pyshv: PathBuf,
    /// rpc client counts
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub rpc_clients: Vec<usize>,
    /// fanout subscriber counts
    #[arg(long, value_delimiter = ',', default_value = "1,100,1000")]
    pub subscribers: Vec<usize>,
    /// idle client counts
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    pub idle_clients: Vec<usize>,
    /// fanout flow-control window (signals in flight per subscriber)
    #[arg(long, default_value_t = 32)]
    pub window: u64,
    /// Mount point of the benchmark device
    #[arg(long, default_value = "test/bench")]
    pub mount: String,
    /// Directory for generated broker configs and broker logs
    #[arg(long, default_value_os_t = std::env::temp_dir().join("shvbench"))]
    pub workdir: PathBuf,
    /// Also write the Markdown report to this file
    #[arg(long)]
    pub output: Option<PathBuf>,
}

/// Raises the open-files soft limit to the hard limit (children inherit it, so the
/// brokers `compare` starts can hold as many sockets as the idle scenario opens).
pub fn raise_nofile_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!("cannot raise the open-files limit: {e}");
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .map(|(soft, _)| soft)
                .unwrap_or(1024)
        }
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.05))
}

#[derive(Debug, Clone)]
pub struct SmokeReport {
    pub rpc: scenarios::RpcResult,
    pub relay: scenarios::RpcResult,
    pub fanout: scenarios::FanoutResult,
    pub idle: scenarios::IdleResult,
    /// 1 MiB through `shvrsh -- cat` and 3 PTY echoes, when asked for.
    pub tunnel: Option<tunnel::TunnelRound>,
    pub relay_bulk: Option<tunnel::BulkResult>,
}

/// Each scenario for ~1 s against one broker (and the relay); with `tunnel`, also a
/// 1 MiB tunnel round trip (shvagent mounted at `test/agent`, logging in as `device`).
pub async fn smoke(
    url: &RpcUrl,
    device: &RpcUrl,
    mount: &str,
    broker_pid: Option<u32>,
    tunnel: Option<&tunnel::TunnelBins>,
) -> Result<SmokeReport, BenchError> {
    let second = Duration::from_secs(1);
    let target = scenarios::Target::broker(url.clone(), device.clone(), mount);
    let rpc = scenarios::rpc(&target, 2, second).await?;
    let fanout = scenarios::fanout(url, device, mount, 2, second, 8).await?;
    let idle = scenarios::idle(url, 10, broker_pid).await?;
    let r = relay::start().await?;
    let relay_target = scenarios::Target::Relay {
        client: compare::tcp(r.client_addr),
        device: compare::tcp(r.device_addr),
    };
    let relay = scenarios::rpc(&relay_target, 2, second).await?;
    drop(r);
    let (tunnel, relay_bulk) = match tunnel {
        Some(bins) => {
            let sizes = tunnel::TunnelSizes {
                bytes: 1 << 20,
                keystrokes: 3,
                download: false,
            };
            let log = std::env::temp_dir()
                .join(format!("shvbench-smoke-agent-{}.log", std::process::id()));
            let agent = tunnel::Agent::start(bins, device, url, "test/agent", &log).await?;
            let t = tunnel::round(bins, url, "test/agent", &sizes).await;
            agent.stop().await;
            (Some(t?), Some(tunnel::relay_bulk(sizes.bytes).await?))
        }
        None => (None, None),
    };
    Ok(SmokeReport {
        rpc,
        relay,
        fanout,
        idle,
        tunnel,
        relay_bulk,
    })
}

/// `shvbroker` next to this executable (a release shvbench runs the release broker).
fn ours_next_to_exe() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("shvbroker")))
        .unwrap_or_else(|| PathBuf::from("shvbroker"))
}

fn print_rpc(r: &scenarios::RpcResult) {
    println!(
        "rpc clients={:<4} calls={:<8} errors={:<4} calls/s={:>10.0} p50={:>7.0}µs p99={:>7.0}µs",
        r.clients, r.calls, r.errors, r.calls_per_s, r.p50_us, r.p99_us
    );
}

fn print_fanout(r: &scenarios::FanoutResult) {
    println!(
        "fanout subscribers={:<5} emitted={:<7} delivered={}/{} signals/s={:>10.0} p50={:>7.0}µs p99={:>7.0}µs",
        r.subscribers, r.emitted, r.delivered, r.expected, r.delivered_per_s, r.p50_us, r.p99_us
    );
}

fn print_idle(r: &scenarios::IdleResult) {
    println!(
        "idle clients={:<6} connected={:<6} logins/s={:>8.0} rss_before={:?}KiB rss_after={:?}KiB per_client={}",
        r.clients,
        r.connected,
        r.connected as f64 / r.login_secs.max(1e-9),
        r.rss_before_kib,
        r.rss_after_kib,
        r.kib_per_client
            .map(|k| format!("{k:.1}KiB"))
            .unwrap_or_else(|| "n/a".into())
    );
}

fn print_bulk(what: &str, r: &tunnel::BulkResult) {
    println!(
        "{what:<16} bytes={:<10} open={:>6.1}ms transfer={:>8.1}ms MB/s={:>8.1}",
        r.bytes,
        r.setup.as_secs_f64() * 1e3,
        r.elapsed.as_secs_f64() * 1e3,
        r.mb_per_s
    );
}

fn print_echo(r: &tunnel::EchoResult) {
    println!(
        "tunnel pty echo  keystrokes={:<5} open={:>6.1}ms p50={:>7.0}µs p99={:>7.0}µs",
        r.keystrokes,
        r.setup.as_secs_f64() * 1e3,
        r.p50_us,
        r.p99_us
    );
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let nofile = raise_nofile_limit();
    tracing::debug!("open-files limit: {nofile}");
    match cli.command {
        Command::Rpc {
            target,
            clients,
            duration,
        } => {
            let (url, device) = target.urls()?;
            let t = scenarios::Target::broker(url, device, &target.mount);
            for n in clients {
                print_rpc(&scenarios::rpc(&t, n, secs(duration)).await?);
            }
        }
        Command::Fanout {
            target,
            subscribers,
            duration,
            window,
        } => {
            let (url, device) = target.urls()?;
            for m in subscribers {
                print_fanout(
                    &scenarios::fanout(&url, &device, &target.mount, m, secs(duration), window)
                        .await?,
                );
            }
        }
        Command::Idle {
            url,
            clients,
            broker_pid,
        } => {
            let url = RpcUrl::parse(&url)?;
            for k in clients {
                if k as u64 + 64 > nofile {
                    anyhow::bail!("{k} clients need more open files than the limit {nofile}");
                }
                print_idle(&scenarios::idle(&url, k, broker_pid).await?);
            }
        }
        Command::Relay { clients, duration } => {
            for n in clients {
                let r = relay::start().await?;
                let t = scenarios::Target::Relay {
                    client: compare::tcp(r.client_addr),
                    device: compare::tcp(r.device_addr),
                };
                print_rpc(&scenarios::rpc(&t, n, secs(duration)).await?);
            }
        }
        Command::Tunnel {
            url,
            device_url,
            tunnel: t,
            rounds,
        } => {
            let (url, device) = urls(&url, device_url.as_deref())?;
            let bins = t.bins();
            bins.check()?;
            let sizes = t.sizes();
            let log = std::env::temp_dir().join("shvbench").join("shvagent.log");
            let agent = tunnel::Agent::start(&bins, &device, &url, &t.agent_mount, &log).await?;
            let mut cat = Vec::new();
            let mut down = Vec::new();
            let mut relay = Vec::new();
            let mut p50 = Vec::new();
            let mut p99 = Vec::new();
            let mut res = Ok(());
            for i in 0..rounds.max(1) {
                println!("round {}/{}", i + 1, rounds.max(1));
                let r = match tunnel::round(&bins, &url, &t.agent_mount, &sizes).await {
                    Ok(r) => r,
                    Err(e) => {
                        res = Err(e);
                        break;
                    }
                };
                print_bulk("tunnel cat", &r.cat);
                cat.push(r.cat.mb_per_s);
                if let Some(d) = &r.download {
                    print_bulk("tunnel download", d);
                    down.push(d.mb_per_s);
                }
                print_echo(&r.echo);
                p50.push(r.echo.p50_us);
                p99.push(r.echo.p99_us);
                let b = tunnel::relay_bulk(sizes.bytes).await?;
                print_bulk("raw relay", &b);
                relay.push(b.mb_per_s);
            }
            agent.stop().await;
            res?;
            let (c, d, r) = (
                stats::median(&cat),
                stats::median(&down),
                stats::median(&relay),
            );
            println!(
                "median: cat {c:.1} MB/s each way, download {d:.1} MB/s, relay {r:.1} MB/s, echo p50 {:.0}µs p99 {:.0}µs",
                stats::median(&p50),
                stats::median(&p99)
            );
            println!(
                "tunnel / relay: cat {:.2}, download {:.2} (required: at least 0.50)",
                c / r,
                d / r
            );
        }
        Command::Smoke {
            target,
            broker_pid,
            tunnel: with_tunnel,
            bin_dir,
        } => {
            let (url, device) = target.urls()?;
            let bins = with_tunnel.then(|| match &bin_dir {
                Some(d) => tunnel::TunnelBins::in_dir(d),
                None => tunnel::TunnelBins::next_to_exe(),
            });
            let r = smoke(&url, &device, &target.mount, broker_pid, bins.as_ref()).await?;
            print_rpc(&r.rpc);
            print_fanout(&r.fanout);
            print_idle(&r.idle);
            print!("relay: ");
            print_rpc(&r.relay);
            if let Some(t) = &r.tunnel {
                print_bulk("tunnel cat", &t.cat);
                print_echo(&t.echo);
            }
            if let Some(b) = &r.relay_bulk {
                print_bulk("raw relay", b);
            }
            if r.rpc.calls == 0 || r.relay.calls == 0 || r.fanout.delivered == 0 {
                anyhow::bail!("smoke: no calls or no signals went through");
            }
        }
        Command::Files {
            rounds,
            mib,
            ours,
            bin_dir,
            workdir,
            output,
        } => {
            let bins = match &bin_dir {
                Some(d) => tunnel::TunnelBins::in_dir(d),
                None => tunnel::TunnelBins::next_to_exe(),
            };
            let shvcp = bins.rsh.with_file_name("shvcp");
            let opts = files::FilesOpts {
                ours: ours.unwrap_or_else(ours_next_to_exe),
                bins,
                shvcp,
                workdir,
                rounds,
                bytes: mib.max(1) << 20,
            };
            let report = files::run(&opts).await?;
            let md = report.markdown(mib.max(1));
            println!("{md}");
            if let Some(p) = output {
                std::fs::write(&p, &md)?;
            }
        }
        Command::Transports {
            rounds,
            duration,
            rpc_clients,
            mib,
            transports,
            ours,
            bin_dir,
            workdir,
            output,
        } => {
            if transports.first().map(String::as_str) != Some("tcp") {
                anyhow::bail!("--transports must start with tcp (the base of the ratios)");
            }
            let opts = transports::TransportsOpts {
                ours: ours.unwrap_or_else(ours_next_to_exe),
                bins: match &bin_dir {
                    Some(d) => tunnel::TunnelBins::in_dir(d),
                    None => tunnel::TunnelBins::next_to_exe(),
                },
                workdir,
                rounds,
                duration: secs(duration),
                rpc_clients,
                tunnel_bytes: mib << 20,
                transports: transports.clone(),
            };
            let report = transports::run(&opts).await?;
            let md = report.markdown(&transports);
            println!("{md}");
            if let Some(p) = output {
                std::fs::write(&p, &md)?;
            }
        }
        Command::Compare(a) => {
            let ours = a.ours.unwrap_or_else(ours_next_to_exe);
            let with_tunnel = !a.no_tunnel && a.brokers.contains(&brokers::BrokerKind::Ours);
            let mut opts = compare::CompareOpts {
                rounds: a.rounds.max(1),
                duration: secs(a.duration),
                rpc_clients: a.rpc_clients,
                subscribers: a.subscribers,
                idle_clients: a.idle_clients,
                window: a.window,
                brokers: a.brokers,
                relay: !a.no_relay,
                bins: brokers::BrokerBins {
                    ours,
                    upstream: a.upstream,
                    pyshv: a.pyshv,
                },
                mount: a.mount,
                workdir: a.workdir,
                tunnel: with_tunnel.then(|| compare::TunnelOpts {
                    bins: a.tunnel.bins(),
                    sizes: a.tunnel.sizes(),
                    agent_mount: a.tunnel.agent_mount.clone(),
                }),
            };
            if a.quick {
                opts.rounds = 1;
                opts.duration = Duration::from_secs(1);
                opts.rpc_clients = vec![1, 4];
                opts.subscribers = vec![1, 10];
                opts.idle_clients = vec![100];
                if let Some(t) = &mut opts.tunnel {
                    t.sizes.bytes = 8 << 20;
                    t.sizes.keystrokes = 50;
                }
            }
            let too_many: Vec<usize> = opts
                .idle_clients
                .iter()
                .copied()
                .filter(|k| *k as u64 + 256 > nofile)
                .collect();
            if !too_many.is_empty() {
                anyhow::bail!("idle counts {too_many:?} exceed the open-files limit {nofile}");
            }
            let report = compare::compare(&opts).await?;
            let mut md = String::new();
            md.push_str("Versions:\n\n");
            for (c, v) in &report.versions {
                md.push_str(&format!("- {}: {v}\n", c.label()));
            }
            md.push('\n');
            md.push_str(&format!(
                "{} round(s), {:?} per scenario variant, medians over rounds; ratios are ours / peer (above 1 is better for rates, below 1 for latency and memory).\n\n",
                opts.rounds, opts.duration
            ));
            md.push_str(&report.to_markdown());
            let summary = report.tunnel_summary();
            if !summary.is_empty() {
                md.push_str("\nTunnel vs raw relay (medians):\n\n");
                md.push_str(&summary);
            }
            if !report.notes.is_empty() {
                md.push_str("\nNotes:\n\n");
                for n in &report.notes {
                    md.push_str(&format!("- {n}\n"));
                }
            }
            println!("{md}");
            if let Some(path) = a.output {
                std::fs::write(&path, &md)?;
            }
        }
    }
    Ok(())
}
