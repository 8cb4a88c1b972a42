//! The command line: the subcommands and the options they share.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use libshv::RpcUrl;

use crate::{brokers, tunnel};
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
    /// Our remote shell side by side with OpenSSH, in one run: starts its own sshd
    /// (Debian's openssh-server binary; own directory, fresh keys, key auth only,
    /// 127.0.0.1) and our broker with shvagent (plain TCP, then TLS on every leg), and
    /// per round, in rotated order, measures on each: a session running `true`, `cat`
    /// down and up (random bytes, checked), CPU per MiB downloaded (every process of
    /// both ends, net of the `true` session), PTY keystroke echo p50/p99, scp/shvcp up
    /// and down, and a `-L` forward fresh and after --warm connections. Prints a
    /// Markdown table of medians and ours/ssh ratios. Without sshd the ssh columns are
    /// left out with a note.
    Ssh {
        /// Rounds; the table shows medians
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// MiB per transfer
        #[arg(long, default_value_t = 64)]
        mib: u64,
        /// Single-byte PTY echoes per round and side
        #[arg(long, default_value_t = 300)]
        keystrokes: usize,
        /// Short connections through the forward before its measured one
        #[arg(long, default_value_t = 100)]
        warm: usize,
        /// Sides, in this order: ssh (default cipher), ssh-aes (aes128-gcm), tcp (ours),
        /// tls (ours, TLS on every leg)
        #[arg(long, value_delimiter = ',', default_value = "ssh,ssh-aes,tcp,tls")]
        sides: Vec<crate::ssh::Side>,
        /// The sshd binary, an absolute path (sshd re-executes itself)
        #[arg(long, env = "SHVBENCH_SSHD", default_value = "/usr/sbin/sshd")]
        sshd: PathBuf,
        /// The ssh client
        #[arg(long, env = "SHVBENCH_SSH", default_value = "ssh")]
        ssh: PathBuf,
        /// The scp client
        #[arg(long, env = "SHVBENCH_SCP", default_value = "scp")]
        scp: PathBuf,
        /// ssh-keygen, for the throwaway host and user keys
        #[arg(long, default_value = "ssh-keygen")]
        ssh_keygen: PathBuf,
        /// Our shvbroker binary (default: shvbroker next to this executable)
        #[arg(long)]
        ours: Option<PathBuf>,
        /// Directory with shvagent, shvrexec, shvrsh and shvcp (default: next to shvbench)
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// Directory for keys, configs, the payload, copies and logs
        #[arg(long, default_value_os_t = std::env::temp_dir().join("shvbench-ssh"))]
        workdir: PathBuf,
        /// Also write the Markdown report to this file
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// An SHV tree of our brokers on loopback, built here: a central broker, for 3
    /// levels also --regions regional brokers, and --sites site brokers with --devices
    /// light simulated devices spread over them (in --device-procs processes of
    /// this executable). Measures bring-up (until every device answers a call on
    /// central), call latency per depth, calls/s through central, `ls` of the wide
    /// nodes, signals from all devices to one subscriber on central at each of
    /// --rates, RSS per broker, and the fault cases: central killed and restarted at
    /// once and after --outage seconds, with --centrals 2 one of two centrals killed
    /// while callers go through the other, a site broker killed and restarted. One
    /// column per --levels value; a Markdown table.
    Tree(Box<TreeArgs>),
    /// Internal to `tree`: one process of simulated devices (reads commands on stdin)
    #[command(hide = true)]
    TreeDevices {
        /// Site broker ports on 127.0.0.1
        #[arg(long, value_delimiter = ',')]
        ports: Vec<u16>,
        /// Devices per site broker
        #[arg(long)]
        per_site: usize,
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
    pub(crate) fn urls(&self) -> anyhow::Result<(RpcUrl, RpcUrl)> {
        urls(&self.url, self.device_url.as_deref())
    }
}

/// The callers' URL and the device's (default: same transport, device/device).
pub(crate) fn urls(url: &str, device_url: Option<&str>) -> anyhow::Result<(RpcUrl, RpcUrl)> {
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
    pub(crate) fn bins(&self) -> tunnel::TunnelBins {
        match &self.bin_dir {
            Some(d) => tunnel::TunnelBins::in_dir(d),
            None => tunnel::TunnelBins::next_to_exe(),
        }
    }
    pub(crate) fn sizes(&self) -> tunnel::TunnelSizes {
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

#[derive(Args, Debug)]
pub struct TreeArgs {
    /// Site brokers
    #[arg(long, default_value_t = 100)]
    pub sites: usize,
    /// Simulated devices in all, spread evenly over the sites
    #[arg(long, default_value_t = 10_000)]
    pub devices: usize,
    /// Tree depths to build, one after another: 2 (central and sites) or 3 (central,
    /// regions, sites)
    #[arg(long, value_delimiter = ',', default_value = "2,3")]
    pub levels: Vec<u8>,
    /// Regional brokers in a 3-level tree
    #[arg(long, default_value_t = 10)]
    pub regions: usize,
    /// Central brokers: 2 links the level below central to a second central as well
    /// (what is measured is measured on the first), and adds the fault case "one of two
    /// centrals killed" (calls made through the other meanwhile, and how many failed)
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub centrals: u8,
    /// Processes that hold the simulated devices (each stays below the open-files
    /// limit: about 15 000 devices a process at most)
    #[arg(long, default_value_t = 4)]
    pub device_procs: usize,
    /// Sequential calls per latency row
    #[arg(long, default_value_t = 1000)]
    pub calls: usize,
    /// Signal rates (signals a second, all devices together) to one subscriber on
    /// central
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "10000,25000,50000,100000"
    )]
    pub rates: Vec<f64>,
    /// Seconds of emission per rate
    #[arg(long, default_value_t = 3.0)]
    pub signal_secs: f64,
    /// Seconds central stays down in the outage fault case
    #[arg(long, default_value_t = 20.0)]
    pub outage: f64,
    /// Leave out the fault cases
    #[arg(long)]
    pub no_faults: bool,
    /// Longest wait for every device to answer (at bring-up and after a fault)
    #[arg(long, default_value_t = 300.0)]
    pub within: f64,
    /// Our shvbroker binary (default: shvbroker next to this executable)
    #[arg(long)]
    pub ours: Option<PathBuf>,
    /// Directory for the generated configs and logs
    #[arg(long, default_value_os_t = std::env::temp_dir().join("shvbench-tree"))]
    pub workdir: PathBuf,
    /// Also write the Markdown report to this file
    #[arg(long)]
    pub output: Option<PathBuf>,
}
