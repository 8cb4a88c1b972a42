//! Running a parsed command line: each subcommand, and the one line it prints per
//! measurement.

use std::path::PathBuf;
use std::time::Duration;

use libshv::RpcUrl;

use crate::cli::{urls, Cli, Command};
use crate::{brokers, compare, files, raise_nofile_limit, relay, scenarios, smoke, ssh, stats};
use crate::{transports, tree, tunnel};
fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.05))
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
        Command::Ssh {
            rounds,
            mib,
            keystrokes,
            warm,
            sides,
            sshd,
            ssh,
            scp,
            ssh_keygen,
            ours,
            bin_dir,
            workdir,
            output,
        } => {
            let bins = match &bin_dir {
                Some(d) => tunnel::TunnelBins::in_dir(d),
                None => tunnel::TunnelBins::next_to_exe(),
            };
            let opts = ssh::SshOpts {
                ours: ours.unwrap_or_else(ours_next_to_exe),
                shvcp: bins.rsh.with_file_name("shvcp"),
                bins,
                sshd,
                ssh,
                scp,
                ssh_keygen,
                workdir,
                rounds,
                bytes: mib.max(1) << 20,
                keystrokes: keystrokes.max(1),
                warm,
                sides,
            };
            let md = ssh::run(&opts).await?.markdown();
            println!("{md}");
            if let Some(p) = output {
                std::fs::write(&p, &md)?;
            }
        }
        Command::Tree(a) => {
            let procs = a.device_procs.max(a.devices.div_ceil(15_000));
            let opts = tree::TreeOpts {
                ours: a.ours.unwrap_or_else(ours_next_to_exe),
                workdir: a.workdir,
                sites: a.sites.max(1),
                devices: a.devices.max(1),
                levels: a.levels,
                regions: a.regions.max(1),
                centrals: a.centrals as usize,
                device_procs: procs,
                calls: a.calls.max(1),
                rates: a.rates,
                signal_secs: a.signal_secs.max(0.1),
                outage: a.outage.max(0.0),
                faults: !a.no_faults,
                within: secs(a.within),
            };
            let md = tree::run(&opts).await?.markdown();
            println!("{md}");
            if let Some(p) = a.output {
                std::fs::write(&p, &md)?;
            }
        }
        Command::TreeDevices { ports, per_site } => {
            tree::serve_devices(tree::DeviceSet { ports, per_site }).await?;
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
