//! `smoke`: each scenario for about a second against one broker, to keep the tool
//! working in CI.

use std::time::Duration;

use libshv::RpcUrl;

use crate::{compare, relay, scenarios, tunnel, BenchError};
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
