//! `shvbench transports`: what a transport costs. Our broker is started once per
//! transport and round, listening on that transport only; the rpc callers, the
//! benchmark device, shvrsh, the agent and shvrexec (the tunnel host is the broker's
//! only listener) all use it. The table gives medians and each transport's ratio to
//! plain TCP. TLS uses a throwaway CA and certificate made here with rcgen.

use std::path::{Path, PathBuf};
use std::time::Duration;

use libshv::url::RpcUrl;

use crate::brokers::{self, BrokerKind};
use crate::scenarios::{self, Target};
use crate::table::Table;
use crate::tunnel::{self, TunnelBins};
use crate::BenchError;

/// The transports measured, plain TCP first (the ratios' base).
pub const TRANSPORTS: [&str; 5] = ["tcp", "ssl", "ws", "wss", "tcps"];

#[derive(Debug, Clone)]
pub struct TransportsOpts {
    pub ours: PathBuf,
    pub bins: TunnelBins,
    pub workdir: PathBuf,
    pub rounds: usize,
    pub duration: Duration,
    pub rpc_clients: Vec<usize>,
    /// Bytes through `shvrsh -- cat` per round (0: no tunnel rows).
    pub tunnel_bytes: u64,
    pub transports: Vec<String>,
}

/// Medians per (row, transport).
#[derive(Debug, Default)]
pub struct TransportsReport {
    table: Table,
    pub version: String,
}

impl TransportsReport {
    fn record(&mut self, row: String, transport: &str, v: f64) {
        self.table.record(&row, transport, v);
    }

    /// A Markdown table: one column per transport, then each one's ratio to TCP
    /// (for latencies a ratio above 1 is slower; for rates, below 1 is slower).
    pub fn markdown(&self, transports: &[String]) -> String {
        let mut out = format!("Broker: {}\n\n| metric |", self.version);
        for t in transports {
            out.push_str(&format!(" {t} |"));
        }
        for t in transports.iter().skip(1) {
            out.push_str(&format!(" {t} / tcp |"));
        }
        out.push_str("\n|---|");
        for _ in 0..transports.len() * 2 - 1 {
            out.push_str("---:|");
        }
        out.push('\n');
        for row in self.table.rows() {
            let value = |t: &str| self.table.median(row, t);
            out.push_str(&format!("| {row} |"));
            for t in transports {
                match value(t) {
                    Some(v) => out.push_str(&format!(" {v:.1} |")),
                    None => out.push_str(" – |"),
                }
            }
            let base = value("tcp");
            for t in transports.iter().skip(1) {
                match (value(t), base) {
                    (Some(v), Some(b)) if b > 0.0 => out.push_str(&format!(" {:.2} |", v / b)),
                    _ => out.push_str(" – |"),
                }
            }
            out.push('\n');
        }
        out
    }
}

/// A CA and a certificate for 127.0.0.1, as PEM files in `dir`: (ca, cert, key).
pub(crate) fn make_pki(dir: &Path) -> Result<(PathBuf, PathBuf, PathBuf), BenchError> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let io = |e: &dyn std::fmt::Display| BenchError::Io(format!("test certificate: {e}"));
    std::fs::create_dir_all(dir).map_err(|e| io(&e))?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(|e| io(&e))?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().map_err(|e| io(&e))?)
        .map_err(|e| io(&e))?;
    let key = KeyPair::generate().map_err(|e| io(&e))?;
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .map_err(|e| io(&e))?
        .signed_by(&key, &ca)
        .map_err(|e| io(&e))?;
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    for (p, text) in [
        (&paths.0, ca.pem()),
        (&paths.1, cert.pem()),
        (&paths.2, key.serialize_pem()),
    ] {
        std::fs::write(p, text).map_err(|e| io(&e))?;
    }
    Ok(paths)
}

/// The listen URL for `transport` on `port`, and the URL clients use (without user).
pub(crate) fn urls(
    transport: &str,
    port: u16,
    pki: &(PathBuf, PathBuf, PathBuf),
) -> Result<(String, String), BenchError> {
    let (ca, cert, key) = (pki.0.display(), pki.1.display(), pki.2.display());
    let tls = matches!(transport, "ssl" | "wss" | "ssls");
    let listen = if tls {
        format!("{transport}://127.0.0.1:{port}?cert={cert}&key={key}")
    } else {
        format!("{transport}://127.0.0.1:{port}")
    };
    let client = if tls {
        format!("{transport}://127.0.0.1:{port}?ca={ca}")
    } else {
        format!("{transport}://127.0.0.1:{port}")
    };
    if !TRANSPORTS.contains(&transport) && transport != "ssls" {
        return Err(BenchError::Io(format!("unknown transport '{transport}'")));
    }
    Ok((listen, client))
}

pub(crate) fn with_user(base: &str, user: &str) -> Result<RpcUrl, BenchError> {
    let (scheme, rest) = base.split_once("://").expect("a network URL");
    let sep = if rest.contains('?') { '&' } else { '?' };
    RpcUrl::parse(&format!("{scheme}://{user}@{rest}{sep}password={user}"))
        .map_err(|e| BenchError::Io(e.to_string()))
}

pub async fn run(opts: &TransportsOpts) -> Result<TransportsReport, BenchError> {
    let pki = make_pki(&opts.workdir.join("pki"))?;
    let mut report = TransportsReport {
        version: brokers::version(BrokerKind::Ours, &opts.ours).await,
        ..Default::default()
    };
    for round in 0..opts.rounds.max(1) {
        for transport in &opts.transports {
            eprintln!("round {}/{}: {transport}", round + 1, opts.rounds.max(1));
            let port = brokers::free_port()?;
            let (listen, client) = urls(transport, port, &pki)?;
            let broker = brokers::start_ours_on(&opts.ours, &opts.workdir, &listen, port).await?;
            let result = measure(opts, transport, &client, &mut report).await;
            broker.stop().await;
            result?;
        }
    }
    Ok(report)
}

async fn measure(
    opts: &TransportsOpts,
    transport: &str,
    client: &str,
    report: &mut TransportsReport,
) -> Result<(), BenchError> {
    let admin = with_user(client, "admin")?;
    let device = with_user(client, "device")?;
    for &n in &opts.rpc_clients {
        let target = Target::broker(admin.clone(), device.clone(), "test/bench");
        let r = scenarios::rpc(&target, n, opts.duration).await?;
        eprintln!("  {transport} rpc {n}: {:.0} calls/s", r.calls_per_s);
        let s = if n == 1 { "" } else { "s" };
        report.record(
            format!("rpc, {n} client{s}: calls/s"),
            transport,
            r.calls_per_s,
        );
        report.record(format!("rpc, {n} client{s}: p50 µs"), transport, r.p50_us);
    }
    if opts.tunnel_bytes > 0 {
        let log = opts.workdir.join(format!("shvagent-{transport}.log"));
        let agent = tunnel::Agent::start(&opts.bins, &device, &admin, "test/agent", &log).await?;
        let r = tunnel::bulk_cat(&opts.bins, &admin, "test/agent", opts.tunnel_bytes).await;
        agent.stop().await;
        let r = r?;
        eprintln!("  {transport} tunnel cat: {:.1} MB/s", r.mb_per_s);
        report.record(
            format!("tunnel cat {} MiB: MB/s each way", opts.tunnel_bytes >> 20),
            transport,
            r.mb_per_s,
        );
        report.record(
            "tunnel open: ms".to_string(),
            transport,
            r.setup.as_secs_f64() * 1e3,
        );
    }
    Ok(())
}
