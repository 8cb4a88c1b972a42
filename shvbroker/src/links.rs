//! The state of our links to parent brokers, for `.broker:parents`.

use std::time::SystemTime;

use libshv::RpcValue;

use crate::events::LinkStatus;
use crate::peers::PeerId;
use crate::settings::Parent;

#[derive(Default, Clone)]
struct LinkState {
    url: String,
    peer: Option<PeerId>,
    since: Option<SystemTime>,
    reconnects: u64,
    last_error: Option<String>,
}

pub struct Links(Vec<LinkState>);

impl Links {
    pub fn new(parents: &[Parent]) -> Links {
        Links(
            parents
                .iter()
                .map(|c| LinkState {
                    // Shown without secrets.
                    url: c.url.to_string(),
                    ..Default::default()
                })
                .collect(),
        )
    }

    pub fn update(&mut self, index: usize, status: LinkStatus) {
        let Some(l) = self.0.get_mut(index) else {
            return;
        };
        match status {
            LinkStatus::Connected { peer } => {
                l.peer = Some(peer);
                l.since = Some(SystemTime::now());
                l.last_error = None;
            }
            LinkStatus::Disconnected { error } => {
                if l.peer.take().is_some() || l.since.is_some() {
                    l.reconnects += 1;
                }
                l.since = None;
                l.last_error = Some(error);
            }
        }
    }

    /// `.broker:parents`
    pub fn value(&self) -> RpcValue {
        let list: Vec<RpcValue> = self
            .0
            .iter()
            .map(|l| {
                let mut m = shvproto::Map::new();
                m.insert("url".into(), RpcValue::from(l.url.as_str()));
                m.insert("connected".into(), RpcValue::from(l.peer.is_some()));
                let since = l
                    .since
                    .and_then(|s| s.duration_since(SystemTime::UNIX_EPOCH).ok())
                    .map(|d| RpcValue::from(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
                    .unwrap_or_else(RpcValue::null);
                m.insert("since".into(), since);
                m.insert(
                    "reconnects".into(),
                    RpcValue::from(i64::try_from(l.reconnects).unwrap_or(i64::MAX)),
                );
                if let Some(e) = &l.last_error {
                    m.insert("lastError".into(), RpcValue::from(e.as_str()));
                }
                RpcValue::from(m)
            })
            .collect();
        list.into()
    }
}
