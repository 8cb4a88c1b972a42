//! The broker's own API on its virtual tree: `ls`/`dir` everywhere, `.app`, `.broker`,
//! `.broker/currentClient`, `.broker/client`, `.broker/tunnels`.

use std::time::{Duration, Instant};

use libshv::access::level::{self, BROWSE, SUPER_SERVICE};
use libshv::message::RpcError;
use libshv::node::{self, flag, MethodDesc, Node, Resolved};
use libshv::ri::Ri;
use libshv::value::{as_i64, as_u64};
use libshv::RpcValue;
use shvproto::{Map, Value};

use super::Broker;
use crate::peers::PeerId;

/// A getter `dir` shows at Read that anyone who may browse can call: a client must learn
/// the SHV version whatever its roles.
const fn app_getter(name: &'static str, result: &'static str) -> MethodDesc {
    MethodDesc::getter(name, result, level::READ).callable_from(BROWSE)
}

const COMMON: &[MethodDesc] = &[node::DIR, node::LS];
const APP: &[MethodDesc] = &[
    app_getter("shvVersionMajor", "i"),
    app_getter("shvVersionMinor", "i"),
    app_getter("name", "s"),
    app_getter("version", "s"),
    app_getter("date", "t"),
    MethodDesc::new("ping", 0, "n", "n", BROWSE),
];
const BROKER: &[MethodDesc] = &[
    MethodDesc::getter("name", "s", BROWSE),
    MethodDesc::new("clientInfo", 0, "i", "!clientInfo|n", SUPER_SERVICE),
    MethodDesc::new("mountedClientInfo", 0, "s", "!clientInfo|n", SUPER_SERVICE),
    MethodDesc::getter("clients", "[i]", SUPER_SERVICE),
    MethodDesc::getter("mounts", "[s]", SUPER_SERVICE),
    MethodDesc::new("disconnectClient", 0, "i", "n", SUPER_SERVICE),
];
/// Our extension of `.broker`, listed by `dir` only on a broker with parent links (peers
/// compare the list of a plain broker exactly), callable on any.
const PARENTS: MethodDesc = MethodDesc::getter("parents", "[{}]", SUPER_SERVICE);
const CURRENT_CLIENT: &[MethodDesc] = &[
    MethodDesc::getter("info", "!clientInfo", BROWSE),
    MethodDesc::new("subscribe", 0, "s|[s:RPCRI,i:TTL]", "b", BROWSE),
    MethodDesc::new("unsubscribe", 0, "s", "b", BROWSE),
    MethodDesc::new("subscriptions", flag::GETTER, "!get", "{i|n}", BROWSE),
];
/// The SHV 2 API of the C++ broker, for its clients (their `shvcall --subscribe`, their
/// heartbeat): answered, not listed (peers compare `.broker`'s list exactly).
const BROKER_APP: &[MethodDesc] = &[
    MethodDesc::new("ping", 0, "n", "n", BROWSE),
    MethodDesc::new("subscribe", 0, "{method:s,path:s}", "b", BROWSE),
    MethodDesc::new("unsubscribe", 0, "{method:s,path:s}", "b", BROWSE),
];
const TUNNELS: &[MethodDesc] = &[
    MethodDesc::new("list", 0, "n", "[{}]", SUPER_SERVICE),
    MethodDesc::new("close", flag::NOT_IDEMPOTENT, "i", "b", level::ADMIN),
];

/// A broker node for one request: its methods in `dir` order (`.broker:parents`, our
/// extension, listed only on a broker with parent links: peers compare the list of a
/// plain broker exactly) and its children as `level` may see them.
fn node_of(path: &str, with_parents: bool, children: Vec<String>) -> Node<'static> {
    let own: &'static [MethodDesc] = match path {
        ".app" => APP,
        ".broker" => BROKER,
        ".broker/currentClient" => CURRENT_CLIENT,
        ".broker/app" => BROKER_APP,
        ".broker/tunnels" => TUNNELS,
        _ => &[],
    };
    let ours: &'static [MethodDesc] = match path {
        ".broker" => std::slice::from_ref(&PARENTS),
        _ => &[],
    };
    let listed = COMMON.iter().chain(own);
    if with_parents {
        Node::new(listed.chain(ours), children)
    } else {
        Node::new(listed, children).with_unlisted(ours)
    }
}

/// Answers a request for a path no mount serves.
pub fn call(
    broker: &mut Broker,
    from: PeerId,
    path: &str,
    method: &str,
    level: i64,
    param: Option<RpcValue>,
) -> Result<RpcValue, RpcError> {
    let Some(children) = broker.virtual_children(path, level) else {
        return Err(node::no_such_path(path));
    };
    let node = node_of(path, !broker.settings.parents.is_empty(), children);
    match node.resolve(path, method, level, param.as_ref())? {
        Resolved::Answer(v) => return Ok(v),
        Resolved::Call(_) => {}
    }
    let param = param.unwrap_or_else(RpcValue::null);
    match (path, method) {
        (".app", "shvVersionMajor") => Ok(RpcValue::from(3)),
        (".app", "shvVersionMinor") => Ok(RpcValue::from(0)),
        (".app", "name") => Ok(RpcValue::from("shvbroker")),
        (".app", "version") => Ok(RpcValue::from(env!("CARGO_PKG_VERSION"))),
        (".app", "ping") => Ok(RpcValue::null()),
        (".app", "date") => Ok(RpcValue::from(shvproto::DateTime::now())),
        (".broker", "name") => Ok(RpcValue::from(broker.settings.name.as_str())),
        (".broker", "clientInfo") => {
            let id = int_param(&param)?;
            Ok(client_info(broker, id).unwrap_or_else(RpcValue::null))
        }
        (".broker", "mountedClientInfo") => {
            let p = str_param(&param)?;
            let id = broker.route(p).map(|(id, _)| id);
            Ok(id
                .and_then(|id| client_info(broker, id))
                .unwrap_or_else(RpcValue::null))
        }
        (".broker", "clients") => {
            let mut ids: Vec<i64> = broker.peers.keys().copied().collect();
            ids.sort();
            Ok(RpcValue::from(
                ids.into_iter().map(RpcValue::from).collect::<Vec<_>>(),
            ))
        }
        (".broker", "mounts") => {
            let ms = broker.mounts.paths();
            Ok(RpcValue::from(
                ms.into_iter().map(RpcValue::from).collect::<Vec<_>>(),
            ))
        }
        (".broker", "disconnectClient") => {
            let id = int_param(&param)?;
            if !broker.peers.contains_key(&id) {
                return Err(RpcError::invalid_param(format!("no client {id}")));
            }
            broker.disconnect(id, "disconnectClient");
            Ok(RpcValue::null())
        }
        (".broker", "parents") => Ok(broker.links.value()),
        (".broker/currentClient", "info") => {
            Ok(client_info(broker, from).unwrap_or_else(RpcValue::null))
        }
        (".broker/currentClient", "subscribe") => {
            let r = subscribe(broker, from, &param);
            broker.sync_forwarded_subscriptions();
            r
        }
        (".broker/currentClient", "unsubscribe") => {
            let ri = Ri::parse(str_param(&param)?).to_string();
            Ok(RpcValue::from(broker.subscriptions.remove(from, &ri)))
        }
        (".broker/currentClient", "subscriptions") => Ok(subscriptions_value(broker, from)),
        (".broker/app", "ping") => Ok(RpcValue::null()),
        (".broker/app", "subscribe") => {
            let ri = Ri::from_shv2(&param)
                .map_err(|e| RpcError::invalid_param(format!("subscribe: {e}")))?;
            let r = subscribe(broker, from, &RpcValue::from(ri.to_string()));
            broker.sync_forwarded_subscriptions();
            r
        }
        (".broker/app", "unsubscribe") => {
            let ri = Ri::from_shv2(&param)
                .map_err(|e| RpcError::invalid_param(format!("unsubscribe: {e}")))?;
            Ok(RpcValue::from(
                broker.subscriptions.remove(from, &ri.to_string()),
            ))
        }
        (".broker/tunnels", "list") => Ok(broker.tunnel_list()),
        (".broker/tunnels", "close") => {
            let id = u64::try_from(int_param(&param)?).unwrap_or(0);
            Ok(RpcValue::from(broker.close_tunnel(id)))
        }
        _ => Err(RpcError::method_not_found(format!(
            "no method '{method}' on '{path}'"
        ))),
    }
}

/// Longest subscription TTL honoured; a larger one is taken as this (an `Instant` far
/// in the future overflows).
const MAX_TTL: u64 = 10 * 365 * 24 * 3600;

fn subscribe(broker: &mut Broker, from: PeerId, param: &RpcValue) -> Result<RpcValue, RpcError> {
    let (ri, ttl) = match &param.value {
        Value::String(s) => (s.to_string(), None),
        Value::List(l) if !l.is_empty() => {
            let ri = match &l[0].value {
                Value::String(s) => s.to_string(),
                _ => return Err(RpcError::invalid_param("subscribe: RI must be a String")),
            };
            let ttl = match l.get(1) {
                None => None,
                Some(v) if v.is_null() => None,
                Some(v) if as_u64(v).is_some() => as_u64(v),
                _ => {
                    return Err(RpcError::invalid_param(
                        "subscribe: TTL must be a non-negative Int",
                    ))
                }
            };
            (ri, ttl)
        }
        _ => {
            return Err(RpcError::invalid_param(
                "subscribe: expected RI or [RI, TTL]",
            ))
        }
    };
    let limits = &broker.settings.limits;
    if ri.len() > limits.max_ri_len {
        return Err(RpcError::invalid_param(format!(
            "subscribe: RI longer than {} bytes",
            limits.max_ri_len
        )));
    }
    let ri = Ri::parse(&ri);
    let expiry = ttl.map(|t| Instant::now() + Duration::from_secs(t.min(MAX_TTL)));
    let Some(owner) = broker
        .peers
        .get(&from)
        .map(|p| broker.subscription_owner(p))
    else {
        return Err(RpcError::method_not_found("not logged in"));
    };
    let new = broker
        .subscriptions
        .add(from, &owner, ri.clone(), expiry)
        .map_err(|e| {
            RpcError::new(
                libshv::message::code::METHOD_CALL_EXCEPTION,
                format!("subscribe: {e}"),
            )
        })?;
    if new {
        broker.probe_mounts_reached(from, &ri);
    }
    Ok(RpcValue::from(new))
}

fn subscriptions_value(broker: &Broker, id: PeerId) -> RpcValue {
    let now = Instant::now();
    let mut m = Map::new();
    for (k, exp) in broker.subscriptions.of(id) {
        let v = match exp {
            Some(e) => RpcValue::from(e.saturating_duration_since(now).as_secs() as i64),
            None => RpcValue::null(),
        };
        m.insert(k.to_string(), v);
    }
    RpcValue::from(m)
}

/// `clientInfo`: exactly the keys current peers report (pySHV's tests compare the map).
fn client_info(broker: &Broker, id: PeerId) -> Option<RpcValue> {
    let p = broker.peers.get(&id)?;
    let opt = |s: Option<&str>| s.map(RpcValue::from).unwrap_or_else(RpcValue::null);
    let ms = |d: Duration| RpcValue::from(i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let mut m = Map::new();
    m.insert("clientId".into(), RpcValue::from(id));
    m.insert("userName".into(), RpcValue::from(&*p.user));
    m.insert("deviceId".into(), opt(p.device_id.as_deref()));
    m.insert("mountPoint".into(), opt(p.mount.as_deref()));
    m.insert("subscriptions".into(), subscriptions_value(broker, id));
    m.insert("idleTime".into(), ms(p.last_rx.elapsed()));
    m.insert(
        "idleTimeMax".into(),
        ms(p.idle_max.unwrap_or(Duration::ZERO)),
    );
    m.insert("role".into(), RpcValue::from(p.grants.roles().join("-")));
    m.insert("client".into(), RpcValue::from(p.addr.as_str()));
    Some(RpcValue::from(m))
}

fn int_param(p: &RpcValue) -> Result<i64, RpcError> {
    as_i64(p).ok_or_else(|| RpcError::invalid_param("expected an Int parameter"))
}

fn str_param(p: &RpcValue) -> Result<&str, RpcError> {
    match &p.value {
        Value::String(s) => Ok(s.as_str()),
        _ => Err(RpcError::invalid_param("expected a String parameter")),
    }
}
