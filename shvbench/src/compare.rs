//! `shvbench compare`: every scenario against every broker (and the raw relay), over a
//! few rounds with the order rotated each round, then a Markdown table of medians.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use libshv::url::Transport;

use crate::brokers::{self, BrokerBins, BrokerKind};
use crate::scenarios::{self, Target};
use crate::stats::median;
use crate::tunnel::{self, TunnelBins, TunnelSizes};
use crate::BenchError;

/// What the peers' cells of the tunnel rows say.
pub const TUNNEL_NA: &str = "n/a — no TunnelCtl tunnels";

/// A column of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Column {
    Broker(BrokerKind),
    /// The raw relay baseline (rpc, and the tunnel's bulk bytes).
    Relay,
}

impl Column {
    pub fn label(self) -> &'static str {
        match self {
            Column::Broker(k) => k.label(),
            Column::Relay => "raw relay",
        }
    }
}

#[derive(Debug, Clone)]
pub struct CompareOpts {
    pub rounds: usize,
    pub duration: Duration,
    pub rpc_clients: Vec<usize>,
    pub subscribers: Vec<usize>,
    pub idle_clients: Vec<usize>,
    pub window: u64,
    pub brokers: Vec<BrokerKind>,
    pub relay: bool,
    pub bins: BrokerBins,
    pub mount: String,
    pub workdir: PathBuf,
    /// The tunnel scenario (our broker and the relay only); `None` leaves it out.
    pub tunnel: Option<TunnelOpts>,
}

#[derive(Debug, Clone)]
pub struct TunnelOpts {
    pub bins: TunnelBins,
    pub sizes: TunnelSizes,
    /// Where the agent mounts itself (the `device` user must be allowed to).
    pub agent_mount: String,
}

/// One row of the table: a scenario variant and one of its metrics.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RowKey {
    /// Sort key so rows keep the scenario order (rpc, fanout, idle, tunnel) and sizes ascending.
    order: (u8, usize, u8),
    pub scenario: String,
    pub metric: &'static str,
    /// Only our broker can run it: the other brokers' cells say [`TUNNEL_NA`].
    pub ours_only: bool,
}

#[derive(Debug, Default)]
pub struct Report {
    pub values: BTreeMap<RowKey, BTreeMap<Column, Vec<f64>>>,
    pub columns: Vec<Column>,
    pub versions: Vec<(Column, String)>,
    pub notes: Vec<String>,
}

impl Report {
    fn record(
        &mut self,
        col: Column,
        order: (u8, usize, u8),
        scenario: String,
        metric: &'static str,
        v: f64,
    ) {
        let ours_only = order.0 == TUNNEL_ORDER;
        self.values
            .entry(RowKey {
                order,
                scenario,
                metric,
                ours_only,
            })
            .or_default()
            .entry(col)
            .or_default()
            .push(v);
    }

    fn record_rpc(&mut self, col: Column, r: &scenarios::RpcResult) {
        let s = format!("rpc, {} client{}", r.clients, plural(r.clients));
        self.record(col, (0, r.clients, 0), s.clone(), "calls/s", r.calls_per_s);
        self.record(
            col,
            (0, r.clients, 1),
            s.clone(),
            "p50 latency µs",
            r.p50_us,
        );
        self.record(col, (0, r.clients, 2), s, "p99 latency µs", r.p99_us);
        if r.errors > 0 {
            self.notes.push(format!(
                "{}: rpc with {} clients had {} failed calls",
                col.label(),
                r.clients,
                r.errors
            ));
        }
    }

    fn record_fanout(&mut self, col: Column, r: &scenarios::FanoutResult) {
        let s = format!(
            "fanout, {} subscriber{}",
            r.subscribers,
            plural(r.subscribers)
        );
        self.record(
            col,
            (1, r.subscribers, 0),
            s.clone(),
            "delivered signals/s",
            r.delivered_per_s,
        );
        self.record(
            col,
            (1, r.subscribers, 1),
            s.clone(),
            "p50 delivery µs",
            r.p50_us,
        );
        self.record(col, (1, r.subscribers, 2), s, "p99 delivery µs", r.p99_us);
        if r.delivered < r.expected {
            self.notes.push(format!(
                "{}: fanout to {} subscribers delivered {} of {} signals",
                col.label(),
                r.subscribers,
                r.delivered,
                r.expected
            ));
        }
    }

    fn record_idle(&mut self, col: Column, r: &scenarios::IdleResult) {
        let s = format!("idle, {} clients", r.clients);
        if let Some(k) = r.kib_per_client {
            self.record(
                col,
                (2, r.clients, 0),
                s.clone(),
                "broker RSS KiB/client",
                k,
            );
        }
        if let Some(a) = r.rss_after_kib {
            self.record(
                col,
                (2, r.clients, 1),
                s.clone(),
                "broker RSS MiB total",
                a as f64 / 1024.0,
            );
        }
        self.record(
            col,
            (2, r.clients, 2),
            s,
            "logins/s",
            r.connected as f64 / r.login_secs.max(1e-9),
        );
        if r.connected < r.clients {
            self.notes.push(format!(
                "{}: idle: only {} of {} clients logged in",
                col.label(),
                r.connected,
                r.clients
            ));
        }
    }

    fn record_tunnel(&mut self, col: Column, r: &tunnel::TunnelRound, mib: u64) {
        let cat = format!("tunnel, {mib} MiB through `cat`");
        self.record(
            col,
            (TUNNEL_ORDER, 0, 0),
            cat.clone(),
            "MB/s each way",
            r.cat.mb_per_s,
        );
        self.record(
            col,
            (TUNNEL_ORDER, 0, 1),
            cat,
            "tunnel open ms",
            r.cat.setup.as_secs_f64() * 1e3,
        );
        if let Some(d) = &r.download {
            self.record(
                col,
                (TUNNEL_ORDER, 1, 0),
                format!("tunnel, {mib} MiB download (`head -c`)"),
                "MB/s",
                d.mb_per_s,
            );
        }
        let e = format!("tunnel, PTY echo ×{}", r.echo.keystrokes);
        self.record(
            col,
            (TUNNEL_ORDER, 2, 0),
            e.clone(),
            "p50 round trip µs",
            r.echo.p50_us,
        );
        self.record(
            col,
            (TUNNEL_ORDER, 2, 1),
            e,
            "p99 round trip µs",
            r.echo.p99_us,
        );
    }

    /// The relay baseline for the tunnel's bulk rows (one way, so it stands for both).
    fn record_relay_bulk(&mut self, r: &tunnel::BulkResult, mib: u64, download: bool) {
        self.record(
            Column::Relay,
            (TUNNEL_ORDER, 0, 0),
            format!("tunnel, {mib} MiB through `cat`"),
            "MB/s each way",
            r.mb_per_s,
        );
        if download {
            self.record(
                Column::Relay,
                (TUNNEL_ORDER, 1, 0),
                format!("tunnel, {mib} MiB download (`head -c`)"),
                "MB/s",
                r.mb_per_s,
            );
        }
    }

    /// Medians of ours and of the relay for the tunnel's bulk rows, as a sentence per
    /// row with the tunnel/relay ratio (the requirement is at least 0.5).
    pub fn tunnel_summary(&self) -> String {
        let mut out = String::new();
        for (row, cols) in &self.values {
            if row.order.0 != TUNNEL_ORDER || !row.metric.starts_with("MB/s") {
                continue;
            }
            let med = |c: &Column| cols.get(c).map(|v| median(v)).unwrap_or(f64::NAN);
            let t = med(&Column::Broker(BrokerKind::Ours));
            let r = med(&Column::Relay);
            if t.is_finite() && r.is_finite() {
                out.push_str(&format!(
                    "- {}: {t:.0} MB/s through the tunnel, {r:.0} MB/s through the raw relay: tunnel / relay = {:.2} (required: at least 0.50)\n",
                    row.scenario,
                    t / r
                ));
            }
        }
        out
    }

    /// The Markdown table: medians per column and ours/peer ratios.
    pub fn to_markdown(&self) -> String {
        let peers: Vec<Column> = self
            .columns
            .iter()
            .copied()
            .filter(|c| *c != Column::Broker(BrokerKind::Ours))
            .collect();
        let has_ours = self.columns.contains(&Column::Broker(BrokerKind::Ours));
        let mut out = String::new();
        out.push_str("| scenario | metric |");
        for c in &self.columns {
            out.push_str(&format!(" {} |", c.label()));
        }
        if has_ours {
            for p in &peers {
                out.push_str(&format!(" ours / {} |", p.label()));
            }
        }
        out.push('\n');
        let ncols = 2 + self.columns.len() + if has_ours { peers.len() } else { 0 };
        out.push_str(&"|---".repeat(ncols));
        out.push_str("|\n");
        for (row, cols) in &self.values {
            let med = |c: &Column| cols.get(c).map(|v| median(v)).unwrap_or(f64::NAN);
            out.push_str(&format!("| {} | {} |", row.scenario, row.metric));
            let na = |c: &Column| {
                row.ours_only && matches!(c, Column::Broker(k) if *k != BrokerKind::Ours)
            };
            for c in &self.columns {
                if na(c) {
                    out.push_str(&format!(" {TUNNEL_NA} |"));
                } else {
                    out.push_str(&format!(" {} |", fmt_value(med(c))));
                }
            }
            if has_ours {
                let ours = med(&Column::Broker(BrokerKind::Ours));
                for p in &peers {
                    if na(p) {
                        out.push_str(" n/a |");
                        continue;
                    }
                    let r = ours / med(p);
                    out.push_str(&if r.is_finite() {
                        format!(" {r:.2} |")
                    } else {
                        " – |".to_string()
                    });
                }
            }
            out.push('\n');
        }
        out
    }
}

/// `RowKey::order.0` of the tunnel rows.
const TUNNEL_ORDER: u8 = 3;

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn fmt_value(v: f64) -> String {
    if !v.is_finite() {
        "–".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Runs the comparison. Brokers whose binary is missing are skipped with a note.
pub async fn compare(opts: &CompareOpts) -> Result<Report, BenchError> {
    let mut report = Report::default();
    for kind in &opts.brokers {
        let bin = opts.bins.path(*kind);
        if bin.is_file() {
            report.columns.push(Column::Broker(*kind));
            report
                .versions
                .push((Column::Broker(*kind), brokers::version(*kind, bin).await));
        } else {
            let note = format!("{} skipped: no binary at {}", kind.label(), bin.display());
            tracing::warn!("{note}");
            report.notes.push(note);
        }
    }
    if opts.relay {
        report.columns.push(Column::Relay);
        report
            .versions
            .push((Column::Relay, "shvbench built-in frame relay".into()));
    }
    if let Some(t) = &opts.tunnel {
        t.bins.check()?;
        let peers: Vec<&str> = report
            .columns
            .iter()
            .filter_map(|c| match c {
                Column::Broker(k) if *k != BrokerKind::Ours => Some(k.label()),
                _ => None,
            })
            .collect();
        if !peers.is_empty() {
            report.notes.push(format!(
                "tunnel: {}: {TUNNEL_NA} (only our broker implements `.broker/tunnels`), so the tunnel rows compare ours with the raw relay",
                peers.join(", ")
            ));
        }
    }
    let cols = report.columns.clone();
    for round in 0..opts.rounds {
        // Rotating the order spreads slow drifts (thermal, page cache) over all columns.
        let mut order = cols.clone();
        order.rotate_left(round % cols.len().max(1));
        for col in order {
            eprintln!("round {}/{}: {}", round + 1, opts.rounds, col.label());
            let res = match col {
                Column::Broker(kind) => run_broker(opts, kind, &mut report).await,
                Column::Relay => run_relay(opts, &mut report).await,
            };
            if let Err(e) = res {
                let note = format!("{} round {}: {e}", col.label(), round + 1);
                tracing::warn!("{note}");
                report.notes.push(note);
            }
        }
    }
    Ok(report)
}

async fn run_broker(
    opts: &CompareOpts,
    kind: BrokerKind,
    report: &mut Report,
) -> Result<(), BenchError> {
    let bin = opts.bins.path(kind);
    let col = Column::Broker(kind);
    let workdir = opts.workdir.join(kind.label());
    // A fresh broker per idle size: memory freed by earlier scenarios would otherwise
    // be reused by the allocator and hide the per-client cost.
    for &k in &opts.idle_clients {
        let b = brokers::start(kind, bin, &workdir).await?;
        let r = scenarios::idle(&b.admin_url(), k, Some(b.pid)).await;
        b.stop().await;
        let r = r?;
        eprintln!("  idle {k}: {:?} KiB/client", r.kib_per_client);
        report.record_idle(col, &r);
    }
    let b = brokers::start(kind, bin, &workdir).await?;
    let target = Target::broker(b.admin_url(), b.device_url(), &opts.mount);
    for &n in &opts.rpc_clients {
        match scenarios::rpc(&target, n, opts.duration).await {
            Ok(r) => {
                eprintln!("  rpc {n}: {:.0} calls/s", r.calls_per_s);
                report.record_rpc(col, &r);
            }
            Err(e) => report.notes.push(format!("{} rpc {n}: {e}", kind.label())),
        }
    }
    b.stop().await;
    let b = brokers::start(kind, bin, &workdir).await?;
    for &m in &opts.subscribers {
        match scenarios::fanout(
            &b.admin_url(),
            &b.device_url(),
            &opts.mount,
            m,
            opts.duration,
            opts.window,
        )
        .await
        {
            Ok(r) => {
                eprintln!("  fanout {m}: {:.0} signals/s", r.delivered_per_s);
                report.record_fanout(col, &r);
            }
            Err(e) => report
                .notes
                .push(format!("{} fanout {m}: {e}", kind.label())),
        }
    }
    b.stop().await;
    if let (BrokerKind::Ours, Some(t)) = (kind, &opts.tunnel) {
        let b = brokers::start(kind, bin, &workdir).await?;
        let res = run_tunnel(t, &b, &workdir).await;
        b.stop().await;
        match res {
            Ok(r) => {
                eprintln!(
                    "  tunnel: cat {:.0} MB/s, download {}, echo p50 {:.0} µs p99 {:.0} µs",
                    r.cat.mb_per_s,
                    r.download
                        .as_ref()
                        .map(|d| format!("{:.0} MB/s", d.mb_per_s))
                        .unwrap_or_else(|| "–".into()),
                    r.echo.p50_us,
                    r.echo.p99_us
                );
                report.record_tunnel(col, &r, t.sizes.bytes >> 20);
            }
            Err(e) => report.notes.push(format!("{} tunnel: {e}", kind.label())),
        }
    }
    Ok(())
}

/// Mounts shvagent on a running broker and runs one tunnel round through it.
async fn run_tunnel(
    t: &TunnelOpts,
    b: &brokers::RunningBroker,
    workdir: &std::path::Path,
) -> Result<tunnel::TunnelRound, BenchError> {
    static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let log = workdir.join(format!("shvagent-{n:03}.log"));
    let agent = tunnel::Agent::start(
        &t.bins,
        &b.device_url(),
        &b.admin_url(),
        &t.agent_mount,
        &log,
    )
    .await?;
    let r = tunnel::round(&t.bins, &b.admin_url(), &t.agent_mount, &t.sizes).await;
    agent.stop().await;
    r
}

async fn run_relay(opts: &CompareOpts, report: &mut Report) -> Result<(), BenchError> {
    for &n in &opts.rpc_clients {
        let relay = crate::relay::start().await?;
        let target = Target::Relay {
            client: tcp(relay.client_addr),
            device: tcp(relay.device_addr),
        };
        let r = scenarios::rpc(&target, n, opts.duration).await?;
        eprintln!("  relay rpc {n}: {:.0} calls/s", r.calls_per_s);
        report.record_rpc(Column::Relay, &r);
    }
    if let Some(t) = &opts.tunnel {
        let r = tunnel::relay_bulk(t.sizes.bytes).await?;
        eprintln!("  relay bulk: {:.0} MB/s", r.mb_per_s);
        report.record_relay_bulk(&r, t.sizes.bytes >> 20, t.sizes.download);
    }
    Ok(())
}

pub fn tcp(addr: std::net::SocketAddr) -> Box<Transport> {
    Box::new(Transport::tcp(addr.ip().to_string(), addr.port()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn bulk(mb_per_s: f64) -> tunnel::BulkResult {
        tunnel::BulkResult {
            bytes: 1 << 20,
            setup: Duration::from_millis(5),
            elapsed: Duration::from_millis(10),
            mb_per_s,
        }
    }

    #[test]
    fn tunnel_rows_are_ours_only_and_summarised() {
        let mut r = Report {
            columns: vec![
                Column::Broker(BrokerKind::Ours),
                Column::Broker(BrokerKind::Upstream),
                Column::Relay,
            ],
            ..Default::default()
        };
        let round = tunnel::TunnelRound {
            cat: bulk(100.0),
            download: Some(bulk(300.0)),
            echo: tunnel::EchoResult {
                keystrokes: 500,
                setup: Duration::from_millis(5),
                p50_us: 300.0,
                p99_us: 900.0,
            },
        };
        r.record_tunnel(Column::Broker(BrokerKind::Ours), &round, 1);
        r.record_relay_bulk(&bulk(400.0), 1, true);
        let md = r.to_markdown();
        let cat = md
            .lines()
            .find(|l| l.contains("through `cat`") && l.contains("MB/s each way"))
            .unwrap();
        assert_eq!(
            cat,
            format!("| tunnel, 1 MiB through `cat` | MB/s each way | 100 | {TUNNEL_NA} | 400 | n/a | 0.25 |")
        );
        assert!(
            md.contains("| tunnel, PTY echo ×500 | p50 round trip µs | 300 |"),
            "{md}"
        );
        let s = r.tunnel_summary();
        assert!(s.contains("tunnel / relay = 0.25"), "{s}");
        assert!(s.contains("tunnel / relay = 0.75"), "{s}");
    }
}
