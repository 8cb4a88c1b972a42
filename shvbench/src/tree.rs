//! `shvbench tree`: an SHV tree of our brokers on loopback, built by the benchmark
//! itself ([`topology`]: a central broker, for three levels a regional level, and the
//! site brokers), with light simulated devices in a few processes ([`devices`]), and
//! what an operator of such a tree sees ([`measure`]):
//!
//! - bring-up: brokers listening, devices logged in, every device answering a call
//!   made on central;
//! - call latency per depth (a device called on its site broker, through a region,
//!   through central) and calls a second through central to random devices;
//! - `ls` of the wide nodes (central's `test`, a site's device directory);
//! - signals from every device to one subscriber on central, at several rates:
//!   delivered a second, p50/p99 of delivery;
//! - RSS per broker;
//! - faults: central killed (SIGKILL) and started again at once, and after
//!   `--outage` seconds down (time until every device answers again, central's CPU
//!   peak during the reconnect storm); with two centrals (the level below links to
//!   both), the first killed while 16 callers go through the second (calls that
//!   failed); a site broker killed and started again.

mod devices;
mod measure;
mod topology;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use devices::DeviceProcs;
pub use devices::{serve as serve_devices, DeviceSet};
use topology::{Layout, Tree};

use crate::stats::Samples;
use crate::BenchError;

/// Probing connections used to check that every device answers.
const PROBERS: usize = 32;

#[derive(Debug, Clone)]
pub struct TreeOpts {
    pub ours: PathBuf,
    pub workdir: PathBuf,
    pub sites: usize,
    pub devices: usize,
    pub levels: Vec<u8>,
    pub regions: usize,
    /// 1, or 2: the level below central links to a second central too.
    pub centrals: usize,
    pub device_procs: usize,
    pub calls: usize,
    pub rates: Vec<f64>,
    pub signal_secs: f64,
    pub outage: f64,
    pub faults: bool,
    /// Longest wait for all devices to answer, at bring-up and after a fault.
    pub within: Duration,
}

/// Rows (label, value per column), columns one per level count.
pub struct TreeReport {
    columns: Vec<String>,
    rows: Vec<(String, Vec<Option<f64>>)>,
    /// The row set last (where a new row goes).
    last: Option<usize>,
    notes: Vec<String>,
    header: String,
}

impl TreeReport {
    /// Sets a cell; a row first seen in a later column goes after the row that column
    /// set last, so rows of one kind stay together whichever column has them.
    fn set(&mut self, col: usize, row: &str, v: f64) {
        let n = self.columns.len();
        let i = match self.rows.iter().position(|(r, _)| r == row) {
            Some(i) => i,
            None => {
                let at = self
                    .last
                    .map_or(self.rows.len(), |l| (l + 1).min(self.rows.len()));
                self.rows.insert(at, (row.to_string(), vec![None; n]));
                at
            }
        };
        self.rows[i].1[col] = Some(v);
        self.last = Some(i);
    }

    pub fn markdown(&self) -> String {
        let mut out = format!("{}\n\n| metric |", self.header);
        for c in &self.columns {
            out.push_str(&format!(" {c} |"));
        }
        out.push_str("\n|---|");
        for _ in &self.columns {
            out.push_str("---:|");
        }
        out.push('\n');
        for (row, vals) in &self.rows {
            out.push_str(&format!("| {row} |"));
            for v in vals {
                match v {
                    Some(v) if v.abs() >= 100.0 || v.fract() == 0.0 => {
                        out.push_str(&format!(" {v:.0} |"))
                    }
                    Some(v) => out.push_str(&format!(" {v:.2} |")),
                    None => out.push_str(" – |"),
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

fn ms(s: &mut Samples, p: f64) -> f64 {
    s.percentile(p) / 1000.0
}

/// Runs the tree once per level count and reports them side by side.
pub async fn run(opts: &TreeOpts) -> Result<TreeReport, BenchError> {
    crate::raise_nofile_limit();
    let per_site = opts.devices.div_ceil(opts.sites.max(1)).max(1);
    let mut report = TreeReport {
        columns: opts.levels.iter().map(|l| format!("{l} levels")).collect(),
        rows: Vec::new(),
        last: None,
        notes: Vec::new(),
        header: format!(
            "{} sites × {per_site} devices ({} devices), {} regions for 3 levels, {} central{} (measured on the first), {} device processes; release builds, loopback, one run",
            opts.sites,
            opts.sites * per_site,
            opts.regions,
            opts.centrals,
            if opts.centrals > 1 { "s" } else { "" },
            opts.device_procs
        ),
    };
    for (col, &levels) in opts.levels.iter().enumerate() {
        let layout = Layout {
            levels,
            centrals: opts.centrals,
            sites: opts.sites.max(1),
            regions: opts.regions,
            per_site,
        };
        let workdir = opts.workdir.join(format!("levels-{levels}"));
        let mut tree = Tree::plan(layout, &opts.ours, &workdir)?;
        report.last = None;
        let result = run_one(opts, &mut tree, &mut report, col, &workdir).await;
        tree.stop_all().await;
        if let Err(e) = result {
            report
                .notes
                .push(format!("{levels} levels stopped early: {e}"));
        }
    }
    Ok(report)
}

async fn run_one(
    opts: &TreeOpts,
    tree: &mut Tree,
    report: &mut TreeReport,
    col: usize,
    workdir: &std::path::Path,
) -> Result<(), BenchError> {
    let t0 = Instant::now();
    tree.start_all().await?;
    report.set(col, "brokers listening: s", t0.elapsed().as_secs_f64());
    let mut devs = DeviceProcs::start(
        &tree.site_ports(),
        tree.layout.per_site,
        opts.device_procs,
        &workdir.join("devices"),
        opts.within,
    )
    .await?;
    report.set(col, "devices logged in: s", t0.elapsed().as_secs_f64());
    let central = tree.central().admin_url();
    let all = tree.device_paths();
    measure::until_all_answer(&central, all.clone(), PROBERS, opts.within).await?;
    report.set(
        col,
        "bring-up: every device answers on central: s",
        t0.elapsed().as_secs_f64(),
    );
    let result = measure_up(opts, tree, &mut devs, report, col).await;
    devs.stop().await;
    result
}

/// Everything measured on a tree that is up: latency, ls, signals, memory, faults.
async fn measure_up(
    opts: &TreeOpts,
    tree: &mut Tree,
    devs: &mut DeviceProcs,
    report: &mut TreeReport,
    col: usize,
) -> Result<(), BenchError> {
    let central = tree.central().admin_url();
    let all = tree.device_paths();
    // Latency per depth: the same first site's devices, called on the site itself,
    // on its region (three levels), and on central.
    let site = tree.sites().start;
    let local: Vec<String> = (0..tree.layout.per_site)
        .map(|j| format!("test/dev{j}"))
        .collect();
    let mut s = measure::latency(&tree.nodes[site].admin_url(), &local, opts.calls).await?;
    report.set(col, "call on the site broker p50: ms", ms(&mut s, 50.0));
    report.set(col, "call on the site broker p99: ms", ms(&mut s, 99.0));
    if tree.layout.regions > 0 {
        let region = tree.regions().start;
        let mount = format!("test/site{}", site - tree.sites().start);
        let via: Vec<String> = local.iter().map(|p| format!("{mount}/{p}")).collect();
        let mut s = measure::latency(&tree.nodes[region].admin_url(), &via, opts.calls).await?;
        report.set(col, "call through a region p50: ms", ms(&mut s, 50.0));
        report.set(col, "call through a region p99: ms", ms(&mut s, 99.0));
    }
    let mut s = measure::latency(&central, &tree.site_device_paths(site), opts.calls).await?;
    report.set(col, "call on central p50: ms", ms(&mut s, 50.0));
    report.set(col, "call on central p99: ms", ms(&mut s, 99.0));
    let c = measure::calls(&central, &all, 16, Duration::from_secs(3)).await?;
    report.set(
        col,
        "calls/s on central, 16 callers, random devices",
        c.per_s(),
    );
    // ls of the wide nodes.
    let (mut s, names) = measure::ls(&central, "test", 20).await?;
    report.set(col, "central `ls test` p50: ms", ms(&mut s, 50.0));
    report.set(col, "central `ls test`: names", names as f64);
    let site_dir = format!("{}/test", tree.nodes[site].path);
    let (mut s, names) = measure::ls(&central, &site_dir, 20).await?;
    report.set(col, "central `ls SITE/test` p50: ms", ms(&mut s, 50.0));
    report.set(col, "central `ls SITE/test`: names", names as f64);
    signals(opts, tree, devs, report, col).await?;
    memory(tree, devs, report, col);
    if opts.faults {
        faults(opts, tree, report, col).await?;
    }
    Ok(())
}

/// Signals from all devices to one subscriber on central, per rate.
async fn signals(
    opts: &TreeOpts,
    tree: &Tree,
    devs: &mut DeviceProcs,
    report: &mut TreeReport,
    col: usize,
) -> Result<(), BenchError> {
    let ri = format!("test/**:*:{}", devices::SIGNAL);
    let t = Instant::now();
    let sub = measure::Subscriber::start(&tree.central().admin_url(), &ri).await?;
    // Warm-up until a round arrives whole: the subscription has reached every site
    // (central forwards it to each child broker, and each site probes its devices)
    // before anything is timed, and nothing of the warm-up is still on its way.
    let deadline = Instant::now() + opts.within;
    loop {
        sub.reset();
        let (emitted, _) = devs.emit(1000.0, 1.0).await?;
        sub.drain(emitted, Duration::from_secs(2)).await;
        if sub.delivered() * 100 >= emitted * 99 {
            break;
        }
        if Instant::now() > deadline {
            return Err(BenchError::Timeout(format!(
                "signals never reached the subscriber whole ({} of {emitted})",
                sub.delivered()
            )));
        }
    }
    report.set(
        col,
        "a subscription on central reaches every device (in 1 s rounds): s",
        t.elapsed().as_secs_f64(),
    );
    sub.drain(u64::MAX, Duration::from_millis(500)).await;
    for &rate in &opts.rates {
        sub.reset();
        let start = devices::mono_nanos();
        let (emitted, dropped) = devs.emit(rate, opts.signal_secs).await?;
        sub.drain(emitted, Duration::from_secs(3)).await;
        let delivered = sub.delivered();
        let secs = ((sub.last_delivery() - start) as f64 / 1e9).max(opts.signal_secs);
        let mut s = sub.take_samples();
        let label = format!("{rate:.0}/s");
        report.set(
            col,
            &format!("signals {label}: delivered/s"),
            delivered as f64 / secs,
        );
        report.set(col, &format!("signals {label}: p50 ms"), ms(&mut s, 50.0));
        report.set(col, &format!("signals {label}: p99 ms"), ms(&mut s, 99.0));
        let lost = emitted.saturating_sub(delivered) + dropped;
        report.set(col, &format!("signals {label}: not delivered"), lost as f64);
    }
    Ok(())
}

fn median_mib(v: &[u64]) -> f64 {
    let f: Vec<f64> = v.iter().map(|k| *k as f64 / 1024.0).collect();
    crate::stats::median(&f)
}

fn memory(tree: &Tree, devs: &DeviceProcs, report: &mut TreeReport, col: usize) {
    report.set(col, "central RSS: MiB", median_mib(&tree.rss_kib(0..1)));
    if tree.layout.regions > 0 {
        report.set(
            col,
            "region RSS, median: MiB",
            median_mib(&tree.rss_kib(tree.regions())),
        );
    }
    let sites = tree.rss_kib(tree.sites());
    report.set(col, "site RSS, median: MiB", median_mib(&sites));
    report.set(
        col,
        "site RSS, max: MiB",
        sites.iter().max().copied().unwrap_or(0) as f64 / 1024.0,
    );
    let dev_kib: u64 = devs
        .pids()
        .into_iter()
        .filter_map(crate::scenarios::rss_kib)
        .sum();
    report.set(
        col,
        "simulated device RSS: KiB per device",
        dev_kib as f64 / tree.layout.devices().max(1) as f64,
    );
}

/// The fault cases: central restarted at once, central down for `--outage` s, a site
/// broker killed and restarted.
async fn faults(
    opts: &TreeOpts,
    tree: &mut Tree,
    report: &mut TreeReport,
    col: usize,
) -> Result<(), BenchError> {
    let central = tree.central().admin_url();
    let all = tree.device_paths();
    for (what, down) in [("restart at once", 0.0), ("down", opts.outage)] {
        let label = if down > 0.0 {
            format!("central {what} {down:.0} s")
        } else {
            format!("central {what}")
        };
        tree.kill(0).await;
        tokio::time::sleep(Duration::from_secs_f64(down)).await;
        let t = Instant::now();
        tree.restart(0).await?;
        let pid = tree.central().pid().ok_or(BenchError::Closed)?;
        let watch = measure::CpuWatch::start(pid);
        measure::until_all_answer(&central, all.clone(), PROBERS, opts.within).await?;
        let took = t.elapsed().as_secs_f64();
        let (peak, cpu) = watch.finish().await;
        report.set(
            col,
            &format!("{label}: every device answers after: s"),
            took,
        );
        report.set(col, &format!("{label}: central CPU peak (100 ms): %"), peak);
        report.set(col, &format!("{label}: central CPU until then: s"), cpu);
    }
    if tree.layout.centrals > 1 {
        one_of_two_centrals(tree, report, col).await?;
    }
    let site = tree.sites().start;
    tree.kill(site).await;
    let t = Instant::now();
    tree.restart(site).await?;
    let paths = tree.site_device_paths(site);
    measure::until_all_answer(&central, paths, 8, opts.within).await?;
    report.set(
        col,
        "site killed, restarted at once: its devices answer after: s",
        t.elapsed().as_secs_f64(),
    );
    Ok(())
}

/// The first central killed while 16 callers call random devices through the second
/// one; then started again, until every device answers on it.
async fn one_of_two_centrals(
    tree: &mut Tree,
    report: &mut TreeReport,
    col: usize,
) -> Result<(), BenchError> {
    let all = tree.device_paths();
    let other = tree.nodes[1].admin_url();
    let callers = {
        let all = all.clone();
        tokio::spawn(async move { measure::calls(&other, &all, 16, Duration::from_secs(5)).await })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    tree.kill(0).await;
    let c = callers
        .await
        .map_err(|e| BenchError::Io(format!("callers: {e}")))??;
    report.set(
        col,
        "one of two centrals killed: calls through the other",
        c.ok as f64,
    );
    report.set(
        col,
        "one of two centrals killed: of them failed",
        c.failed as f64,
    );
    let t = Instant::now();
    tree.restart(0).await?;
    measure::until_all_answer(
        &tree.central().admin_url(),
        all,
        PROBERS,
        Duration::from_secs(300),
    )
    .await?;
    report.set(
        col,
        "one of two centrals killed, restarted: every device answers on it after: s",
        t.elapsed().as_secs_f64(),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_first_seen_in_a_later_column_stays_with_its_kind() {
        let mut r = TreeReport {
            columns: vec!["2 levels".into(), "3 levels".into()],
            rows: Vec::new(),
            last: None,
            notes: Vec::new(),
            header: String::new(),
        };
        r.set(0, "site", 1.0);
        r.set(0, "central", 2.0);
        r.last = None;
        r.set(1, "site", 1.5);
        r.set(1, "region", 3.0);
        r.set(1, "central", 2.5);
        let names: Vec<&str> = r.rows.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["site", "region", "central"]);
        let md = r.markdown();
        assert!(md.contains("| region | – | 3 |"), "{md}");
        assert!(md.contains("| site | 1 | 1.50 |"), "{md}");
    }
}
