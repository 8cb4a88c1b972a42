//! `shvbench compare`: every scenario against every broker (and the raw relay), over a
//! few rounds with the order rotated each round, then a Markdown table of medians.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use libshv::url::Transport;

use crate::brokers::{self, BrokerBins, BrokerKind};
use crate::scenarios::{self, Target};
use crate::stats::median;
use crate::BenchError;

/// A column of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Column {
    Broker(BrokerKind),
    /// The raw relay baseline (rpc only).
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
}

/// One row of the table: a scenario variant and one of its metrics.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RowKey {
    /// Sort key so rows keep the scenario order (rpc, fanout, idle) and sizes ascending.
    order: (u8, usize, u8),
    pub scenario: String,
    pub metric: &'static str,
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
        self.values
            .entry(RowKey {
                order,
                scenario,
                metric,
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
            for c in &self.columns {
                out.push_str(&format!(" {} |", fmt_value(med(c))));
            }
            if has_ours {
                let ours = med(&Column::Broker(BrokerKind::Ours));
                for p in &peers {
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
    Ok(())
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
    Ok(())
}

pub fn tcp(addr: std::net::SocketAddr) -> Transport {
    Transport::Tcp {
        host: addr.ip().to_string(),
        port: addr.port(),
    }
}
