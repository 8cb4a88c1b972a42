//! `shvbench ssh`: our remote shell side by side with OpenSSH on this machine's
//! loopback, in one run. An sshd of the benchmark's own (own directory, key auth) and
//! our broker with shvagent serve the same user's shell; per round, in rotated order,
//! each side runs the same measurements ([`measure`], [`crate::tunnel::echo_on`],
//! [`crate::files::forward_via`], [`crate::files::timed_copy`]):
//!
//! - a session that runs `true`, spawn to exit;
//! - `cat FILE` down and `cat > FILE` up (random bytes, checked);
//! - CPU per MiB downloaded: the CPU of every process of both ends over the download
//!   session, less that of the `true` session, per MiB ([`cpu`]);
//! - PTY keystroke echo p50/p99 (`ssh -tt` / `shvrsh -t`, `cat` in canonical mode);
//! - scp / shvcp up and down (whole runs);
//! - a `-L` forward, fresh and on its connection after `--warm` short ones.
//!
//! Sides: `ssh` (its default cipher), `ssh-aes` (aes128-gcm), `tcp` (ours, plain TCP)
//! and `tls` (ours, TLS on every leg: shvrsh, agent, shvrexec and the tunnel). Without
//! an sshd the ssh sides are left out with a note.

pub(crate) mod cpu;
mod measure;
mod remote;
mod sshd;

use std::path::PathBuf;
use std::time::Instant;

use cpu::Cpu;
use remote::Remote;
use sshd::Sshd;

use crate::brokers;
use crate::files::{forward_via, timed_copy};
use crate::table::Table;
use crate::transports;
use crate::tunnel::{self, echo_on, Piped, TunnelBins};
use crate::BenchError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Ssh,
    SshAes,
    Tcp,
    Tls,
}

impl Side {
    pub const ALL: [Side; 4] = [Side::Ssh, Side::SshAes, Side::Tcp, Side::Tls];

    /// The name on the command line and in file names.
    pub fn tag(self) -> &'static str {
        match self {
            Side::Ssh => "ssh",
            Side::SshAes => "ssh-aes",
            Side::Tcp => "tcp",
            Side::Tls => "tls",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Side::Ssh => "ssh",
            Side::SshAes => "ssh aes-gcm",
            Side::Tcp => "ours tcp",
            Side::Tls => "ours TLS",
        }
    }
    fn is_ssh(self) -> bool {
        matches!(self, Side::Ssh | Side::SshAes)
    }
}

impl std::str::FromStr for Side {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Side::ALL
            .into_iter()
            .find(|side| side.tag() == s)
            .ok_or_else(|| format!("unknown side '{s}' (ssh, ssh-aes, tcp, tls)"))
    }
}

#[derive(Debug, Clone)]
pub struct SshOpts {
    pub ours: PathBuf,
    pub bins: TunnelBins,
    pub shvcp: PathBuf,
    pub sshd: PathBuf,
    pub ssh: PathBuf,
    pub scp: PathBuf,
    pub ssh_keygen: PathBuf,
    pub workdir: PathBuf,
    pub rounds: usize,
    pub bytes: u64,
    pub keystrokes: usize,
    pub warm: usize,
    pub sides: Vec<Side>,
}

/// The rows, in table order; `true` where lower is better.
const OPEN: &str = "open a session and run `true`: ms";
const DOWN: &str = "`cat` download: MB/s";
const UP: &str = "`cat` upload: MB/s";
const CPU: &str = "CPU per MiB downloaded, net of setup: ms";
const ECHO50: &str = "PTY keystroke echo p50: µs";
const ECHO99: &str = "PTY keystroke echo p99: µs";
const COPY_UP: &str = "scp / shvcp upload: MB/s";
const COPY_DOWN: &str = "scp / shvcp download: MB/s";
const FWD: &str = "`-L` forward, fresh: MB/s";

fn fwd_late(warm: usize) -> String {
    format!("`-L` forward after {warm} connections: MB/s")
}

pub struct SshReport {
    table: Table,
    sides: Vec<Side>,
    pub notes: Vec<String>,
    mib: u64,
}

impl SshReport {
    /// The table: one column per side, then ours/ssh ratios (for ms and µs rows a ratio
    /// below 1 is better, for MB/s above 1).
    pub fn markdown(&self) -> String {
        let ratios: Vec<(Side, Side)> = [
            (Side::Tcp, Side::Ssh),
            (Side::Tls, Side::Ssh),
            (Side::Tls, Side::SshAes),
        ]
        .into_iter()
        .filter(|(a, b)| self.sides.contains(a) && self.sides.contains(b))
        .collect();
        let mut out = format!(
            "{} MiB per transfer, medians over rounds; ratios ours/ssh (times: below 1 is faster; rates: above 1 is faster)\n\n| metric |",
            self.mib
        );
        for s in &self.sides {
            out.push_str(&format!(" {} |", s.label()));
        }
        for (a, b) in &ratios {
            out.push_str(&format!(" {} / {} |", a.label(), b.label()));
        }
        out.push_str("\n|---|");
        for _ in 0..self.sides.len() + ratios.len() {
            out.push_str("---:|");
        }
        out.push('\n');
        for row in self.table.rows() {
            out.push_str(&format!("| {row} |"));
            for s in &self.sides {
                match self.table.median(row, s.label()) {
                    Some(v) => out.push_str(&format!(" {v:.1} |")),
                    None => out.push_str(" – |"),
                }
            }
            for (a, b) in &ratios {
                match (
                    self.table.median(row, a.label()),
                    self.table.median(row, b.label()),
                ) {
                    (Some(x), Some(y)) if y > 0.0 => out.push_str(&format!(" {:.2} |", x / y)),
                    _ => out.push_str(" – |"),
                }
            }
            out.push('\n');
        }
        for n in &self.notes {
            out.push_str(&format!("\n{n}\n"));
        }
        out
    }
}

fn io(what: &str) -> impl Fn(std::io::Error) -> BenchError + '_ {
    move |e| BenchError::Io(format!("{what}: {e}"))
}

/// Random bytes (xorshift64*: incompressible, so no side gains from compression).
fn payload(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    v.truncate(len);
    v
}

pub async fn run(opts: &SshOpts) -> Result<SshReport, BenchError> {
    opts.bins.check()?;
    std::fs::create_dir_all(&opts.workdir).map_err(io("workdir"))?;
    let workdir = opts.workdir.canonicalize().map_err(io("workdir"))?;
    let mut report = SshReport {
        table: Table::default(),
        sides: opts.sides.clone(),
        notes: Vec::new(),
        mib: opts.bytes >> 20,
    };
    let sshd = if opts.sides.iter().any(|s| s.is_ssh()) {
        match Sshd::start(&opts.sshd, &opts.ssh_keygen, &workdir.join("sshd")).await {
            Ok(s) => Some(s),
            Err(e) => {
                report.notes.push(format!("ssh left out: {e}"));
                report.sides.retain(|s| !s.is_ssh());
                None
            }
        }
    } else {
        None
    };
    let data = payload(opts.bytes as usize);
    let file = workdir.join("payload.bin");
    std::fs::write(&file, &data).map_err(io("payload"))?;
    let pki = transports::make_pki(&workdir.join("pki"))?;
    let sides = report.sides.clone();
    let result = async {
        for round in 0..opts.rounds.max(1) {
            // Rotated, so that no side always runs first (or last) in a round.
            let mut order = sides.clone();
            let n = order.len().max(1);
            order.rotate_left(round % n);
            for side in order {
                eprintln!(
                    "round {}/{}: {}",
                    round + 1,
                    opts.rounds.max(1),
                    side.label()
                );
                match side {
                    Side::Ssh | Side::SshAes => {
                        let sshd = sshd.as_ref().expect("ssh sides need the sshd");
                        let remote = Remote::Ssh {
                            ssh: opts.ssh.clone(),
                            scp: opts.scp.clone(),
                            config: sshd.client_config.clone(),
                            cipher: (side == Side::SshAes)
                                .then(|| "aes128-gcm@openssh.com".to_string()),
                        };
                        let cpu = Cpu::new(vec![sshd.pid]);
                        measure_side(opts, side, &remote, &cpu, &workdir, &data, &mut report)
                            .await?;
                    }
                    Side::Tcp | Side::Tls => {
                        ours(opts, side, &pki, &workdir, &data, &mut report).await?;
                    }
                }
            }
        }
        Ok::<(), BenchError>(())
    }
    .await;
    if let Some(s) = sshd {
        s.stop().await;
    }
    let _ = std::fs::remove_file(&file);
    result?;
    Ok(report)
}

/// Our side: a broker on tcp or TLS only, shvagent on it, then the measurements.
async fn ours(
    opts: &SshOpts,
    side: Side,
    pki: &(PathBuf, PathBuf, PathBuf),
    workdir: &std::path::Path,
    data: &[u8],
    report: &mut SshReport,
) -> Result<(), BenchError> {
    let transport = if side == Side::Tls { "ssl" } else { "tcp" };
    let port = brokers::free_port()?;
    let (listen, client) = transports::urls(transport, port, pki)?;
    let broker =
        brokers::start_ours_on(&opts.ours, &workdir.join("brokers"), &listen, port).await?;
    let admin = transports::with_user(&client, "admin")?;
    let device = transports::with_user(&client, "device")?;
    let log = workdir.join(format!("shvagent-{transport}.log"));
    let result = async {
        let agent = tunnel::Agent::start_with(
            &opts.bins,
            &device,
            &admin,
            "test/agent",
            &log,
            &["--allow-forward"],
        )
        .await?;
        let remote = Remote::Shv {
            bins: opts.bins.clone(),
            shvcp: opts.shvcp.clone(),
            url: admin.clone(),
            agent: "test/agent".into(),
        };
        let cpu = Cpu::new(vec![broker.pid, agent.pid()]);
        let r = measure_side(opts, side, &remote, &cpu, workdir, data, report).await;
        agent.stop().await;
        r
    }
    .await;
    broker.stop().await;
    result
}

async fn measure_side(
    opts: &SshOpts,
    side: Side,
    remote: &Remote,
    cpu: &Cpu,
    workdir: &std::path::Path,
    data: &[u8],
    report: &mut SshReport,
) -> Result<(), BenchError> {
    let col = side.label();
    let t = &mut report.table;
    // A first session warms caches (binaries, keys) on both sides alike.
    measure::open_true(remote, cpu).await?;
    let (open, open_cpu) = measure::open_true(remote, cpu).await?;
    t.record(OPEN, col, open.as_secs_f64() * 1e3);
    let file = workdir.join("payload.bin");
    let (down, down_cpu) = measure::download(remote, &file, data, cpu).await?;
    t.record(DOWN, col, down);
    let up = measure::upload(
        remote,
        &workdir.join(format!("up-{}.bin", side.tag())),
        data,
    )
    .await?;
    t.record(UP, col, up);
    let mib = data.len() as f64 / (1 << 20) as f64;
    t.record(
        CPU,
        col,
        down_cpu.saturating_sub(open_cpu).as_secs_f64() * 1e3 / mib,
    );
    let spawned = Instant::now();
    let p = Piped::start(remote.session(true, "cat"), "pty session")?;
    let echo = echo_on(p, spawned, opts.keystrokes).await?;
    t.record(ECHO50, col, echo.p50_us);
    t.record(ECHO99, col, echo.p99_us);
    let remote_file = workdir.join(format!("copy-remote-{}.bin", side.tag()));
    let local_file = workdir.join(format!("copy-local-{}.bin", side.tag()));
    let bytes = data.len() as u64;
    let up = timed_copy(remote.copy(true, &file, &remote_file), "copy up", bytes).await?;
    t.record(COPY_UP, col, up);
    let down = timed_copy(
        remote.copy(false, &local_file, &remote_file),
        "copy down",
        bytes,
    )
    .await?;
    t.record(COPY_DOWN, col, down);
    for f in [&remote_file, &local_file] {
        let got = std::fs::read(f).map_err(io("copied file"))?;
        let _ = std::fs::remove_file(f);
        if got != data {
            return Err(BenchError::Io(format!(
                "{} differs from the payload",
                f.display()
            )));
        }
    }
    let fwd = forward_via(|l, s| remote.forward(l, s), bytes, 0).await?;
    t.record(FWD, col, fwd);
    let late = forward_via(|l, s| remote.forward(l, s), bytes, opts.warm).await?;
    t.record(&fwd_late(opts.warm), col, late);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_deterministic_and_not_repetitive() {
        let a = payload(4096);
        assert_eq!(a, payload(4096));
        assert_eq!(a.len(), 4096);
        assert_ne!(a[..2048], a[2048..]);
    }

    #[test]
    fn the_table_has_ratios_only_for_measured_pairs() {
        let mut r = SshReport {
            table: Table::default(),
            sides: vec![Side::Ssh, Side::Tcp],
            notes: vec!["note".into()],
            mib: 1,
        };
        r.table.record(DOWN, "ssh", 100.0);
        r.table.record(DOWN, "ours tcp", 150.0);
        let md = r.markdown();
        assert!(md.contains("| ours tcp / ssh |"), "{md}");
        assert!(!md.contains("ours TLS / ssh"), "{md}");
        assert!(md.contains("| 100.0 | 150.0 | 1.50 |"), "{md}");
        assert!(md.ends_with("note\n"), "{md}");
    }
}
