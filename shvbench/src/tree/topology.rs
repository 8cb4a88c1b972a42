//! The brokers of `shvbench tree`: one central broker, optionally a regional level,
//! and the site brokers, each our `shvbroker` with a generated config, on its own
//! loopback port for the whole run (so that a killed broker comes back where its
//! children look for it), linked up with a `connections` entry.
//!
//! Paths as the central broker sees them: a site `test/siteI` (two levels) or
//! `test/regionR/test/siteI` (three levels), a device `SITE/test/devJ`.

use std::path::{Path, PathBuf};

use futures::StreamExt;

use crate::brokers::{self, RunningBroker};
use crate::BenchError;

/// Brokers started in parallel.
const START_PARALLELISM: usize = 16;

/// How many brokers of each kind, and devices per site.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// 2 (central, sites) or 3 (central, regions, sites).
    pub levels: u8,
    /// Central brokers (1 or 2); the level below links to each.
    pub centrals: usize,
    pub sites: usize,
    /// Regional brokers (three levels only); sites are spread over them evenly.
    pub regions: usize,
    pub per_site: usize,
}

impl Layout {
    pub fn devices(&self) -> usize {
        self.sites * self.per_site
    }
}

/// One broker of the tree.
pub struct Node {
    pub port: u16,
    /// Its path from the central broker ("" for central itself).
    pub path: String,
    config: PathBuf,
    log: PathBuf,
    running: Option<RunningBroker>,
}

impl Node {
    pub fn pid(&self) -> Option<u32> {
        self.running.as_ref().map(|r| r.pid)
    }
    pub fn admin_url(&self) -> libshv::RpcUrl {
        libshv::RpcUrl::parse(&format!(
            "tcp://admin@127.0.0.1:{}?password=admin",
            self.port
        ))
        .expect("a generated URL parses")
    }
}

/// The running tree. Index 0 is central (the one measured), 1 the second central if
/// there is one; then the regions; then the sites.
pub struct Tree {
    pub layout: Layout,
    pub nodes: Vec<Node>,
    bin: PathBuf,
}

/// A broker's config: admin/admin (full access; what the parent links log in with)
/// and device/device (may mount under `test/`), no session limit per user, and room
/// for every child to log in at once from the one loopback address (the defaults
/// admit 128 logins in progress per address, fewer than 1000 sites coming back).
fn config(name: &str, parents: &[(u16, String)]) -> String {
    let mut y = format!(
        "name: {name}
users:
  admin: {{password: admin, roles: [admin], max_sessions: 0}}
  device: {{password: device, roles: [device], max_sessions: 0}}
roles:
  admin: {{access: [{{ri: '**:*', grant: su}}], mount_points: ['**']}}
  device: {{access: [{{ri: '**:*', grant: rd}}], mount_points: ['test/**']}}
limits:
  max_unauthenticated: 100000
  max_unauthenticated_per_address: 100000
"
    );
    if !parents.is_empty() {
        y.push_str("connections:\n");
    }
    for (port, mount) in parents {
        y.push_str(&format!(
            "  - url: 'tcp://admin@127.0.0.1:{port}?password=admin'
    mount_point: '{mount}'
"
        ));
    }
    y
}

impl Tree {
    /// Writes every config (ports chosen now, kept for the run); starts nothing.
    pub fn plan(layout: Layout, bin: &Path, workdir: &Path) -> Result<Tree, BenchError> {
        let io = |e: std::io::Error| BenchError::Io(format!("{}: {e}", workdir.display()));
        std::fs::create_dir_all(workdir).map_err(io)?;
        let mut nodes = Vec::new();
        // A port picked and released may be picked again: each broker gets its own.
        let mut taken = std::collections::HashSet::new();
        let mut add = |name: String, path: String, parents: Vec<(u16, String)>| {
            let port = loop {
                let p = brokers::free_port()?;
                if taken.insert(p) {
                    break p;
                }
            };
            let config_path = workdir.join(format!("{name}.yaml"));
            let text = config(&name, &parents);
            std::fs::write(&config_path, text).map_err(io)?;
            nodes.push(Node {
                log: workdir.join(format!("{name}.log")),
                port,
                path,
                config: config_path,
                running: None,
            });
            Ok::<u16, BenchError>(port)
        };
        let centrals = layout.centrals.clamp(1, 2);
        let mut central_ports = vec![add("central".into(), String::new(), Vec::new())?];
        if centrals == 2 {
            central_ports.push(add("central-b".into(), String::new(), Vec::new())?);
        }
        let to_centrals = |mount: &str| -> Vec<(u16, String)> {
            central_ports
                .iter()
                .map(|p| (*p, mount.to_string()))
                .collect()
        };
        let regions = if layout.levels >= 3 {
            layout.regions.clamp(1, layout.sites.max(1))
        } else {
            0
        };
        let mut region_ports = Vec::with_capacity(regions);
        for r in 0..regions {
            let mount = format!("test/region{r}");
            let parents = to_centrals(&mount);
            region_ports.push(add(format!("region{r}"), mount, parents)?);
        }
        for i in 0..layout.sites {
            let mount = format!("test/site{i}");
            let (parents, path) = if regions == 0 {
                (to_centrals(&mount), mount.clone())
            } else {
                let r = i % regions;
                let path = format!("test/region{r}/{mount}");
                (vec![(region_ports[r], mount)], path)
            };
            add(format!("site{i}"), path, parents)?;
        }
        let layout = Layout {
            regions,
            centrals,
            ..layout
        };
        Ok(Tree {
            layout,
            nodes,
            bin: bin.to_path_buf(),
        })
    }

    pub fn central(&self) -> &Node {
        &self.nodes[0]
    }

    /// Node indices of the centrals.
    pub fn centrals(&self) -> std::ops::Range<usize> {
        0..self.layout.centrals
    }

    /// Node indices of the regions.
    pub fn regions(&self) -> std::ops::Range<usize> {
        let c = self.layout.centrals;
        c..c + self.layout.regions
    }

    /// Node indices of the sites.
    pub fn sites(&self) -> std::ops::Range<usize> {
        self.layout.centrals + self.layout.regions..self.nodes.len()
    }

    /// Every device's path from central, site by site.
    pub fn device_paths(&self) -> Vec<String> {
        self.sites()
            .flat_map(|s| self.site_device_paths(s))
            .collect()
    }

    /// The devices of the site at node index `site`, as paths from central.
    pub fn site_device_paths(&self, site: usize) -> Vec<String> {
        let base = self.nodes[site].path.clone();
        (0..self.layout.per_site)
            .map(|j| format!("{base}/test/dev{j}"))
            .collect()
    }

    pub fn site_ports(&self) -> Vec<u16> {
        self.sites().map(|s| self.nodes[s].port).collect()
    }

    /// Starts every broker that is not running, top down (a level's parents listen
    /// before its children start, so first logins do not wait for a back-off).
    pub async fn start_all(&mut self) -> Result<(), BenchError> {
        let levels = [self.centrals(), self.regions(), self.sites()];
        for range in levels {
            let bin = self.bin.clone();
            let todo: Vec<(usize, PathBuf, u16, PathBuf)> = range
                .filter(|&i| self.nodes[i].running.is_none())
                .map(|i| {
                    let n = &self.nodes[i];
                    (i, n.config.clone(), n.port, n.log.clone())
                })
                .collect();
            let started: Vec<(usize, Result<RunningBroker, BenchError>)> = futures::stream::iter(
                todo,
            )
            .map(|(i, config, port, log)| {
                let bin = bin.clone();
                async move { (i, brokers::start_ours_with(&bin, &config, port, &log).await) }
            })
            .buffer_unordered(START_PARALLELISM)
            .collect()
            .await;
            for (i, r) in started {
                self.nodes[i].running = Some(r?);
            }
        }
        Ok(())
    }

    /// SIGKILL the broker at node index `i`.
    pub async fn kill(&mut self, i: usize) {
        if let Some(r) = self.nodes[i].running.take() {
            r.kill().await;
        }
    }

    /// Starts the broker at node index `i` again, on its port.
    pub async fn restart(&mut self, i: usize) -> Result<(), BenchError> {
        let n = &self.nodes[i];
        let r = brokers::start_ours_with(&self.bin, &n.config, n.port, &n.log).await?;
        self.nodes[i].running = Some(r);
        Ok(())
    }

    /// RSS in KiB of each running broker of the node range.
    pub fn rss_kib(&self, range: std::ops::Range<usize>) -> Vec<u64> {
        range
            .filter_map(|i| self.nodes[i].pid())
            .filter_map(crate::scenarios::rss_kib)
            .collect()
    }

    /// Stops every broker (SIGTERM, then SIGKILL), leaves first.
    pub async fn stop_all(&mut self) {
        let running: Vec<RunningBroker> = self
            .nodes
            .iter_mut()
            .rev()
            .filter_map(|n| n.running.take())
            .collect();
        futures::stream::iter(running)
            .for_each_concurrent(START_PARALLELISM * 4, |r| r.stop())
            .await;
    }
}
