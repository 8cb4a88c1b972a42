//! The broker's own API on its virtual tree: `ls`/`dir` everywhere, `.app`, `.broker`,
//! `.broker/currentClient`, `.broker/client`, `.broker/tunnels`.

use std::time::{Duration, Instant};

use libshv::access::level::{self, BROWSE, SUPER_SERVICE};
use libshv::access::level_name;
use libshv::message::RpcError;
use libshv::node::{self, flag, MethodDesc};
use libshv::ri::Ri;
use libshv::value::{as_i64, as_u64};
use libshv::RpcValue;
use shvproto::{Map, Value};

use super::Broker;
use crate::peers::PeerId;

/// A method of a broker node: how `dir` describes it, and the level a call needs (lower
/// than shown for `.app`'s getters: a client must learn the SHV version whatever its
/// roles).
struct Method {
    desc: MethodDesc,
    required: i64,
}

const fn m(desc: MethodDesc) -> Method {
    Method {
        desc,
        required: desc.access,
    }
}

/// A getter `dir` shows at Read that anyone who may browse can call.
const fn app_getter(name: &'static str, result: &'static str) -> Method {
    Method {
        desc: MethodDesc::getter(name, result, level::READ),
        required: BROWSE,
    }
}

const COMMON: &[Method] = &[m(node::DIR), m(node::LS)];
const APP: &[Method] = &[
    app_getter("shvVersionMajor", "i"),
    app_getter("shvVersionMinor", "i"),
    app_getter("name", "s"),
    app_getter("version", "s"),
    app_getter("date", "t"),
    m(MethodDesc::new("ping", 0, "n", "n", BROWSE)),
];
const BROKER: &[Method] = &[
    m(MethodDesc::getter("name", "s", BROWSE)),
    m(MethodDesc::new(
        "clientInfo",
        0,
        "i",
        "!clientInfo|n",
        SUPER_SERVICE,
    )),
    m(MethodDesc::new(
        "mountedClientInfo",
        0,
        "s",
        "!clientInfo|n",
        SUPER_SERVICE,
    )),
    m(MethodDesc::getter("clients", "[i]", SUPER_SERVICE)),
    m(MethodDesc::getter("mounts", "[s]", SUPER_SERVICE)),
    m(MethodDesc::new(
        "disconnectClient",
        0,
        "i",
        "n",
        SUPER_SERVICE,
    )),
];
/// Our extension of `.broker`, listed by `dir` only on a broker with parent links (peers
/// compare the list of a plain broker exactly), callable on any.
const PARENTS: Method = m(MethodDesc::getter("parents", "[{}]", SUPER_SERVICE));
const CURRENT_CLIENT: &[Method] = &[
    m(MethodDesc::getter("info", "!clientInfo", BROWSE)),
    m(MethodDesc::new(
        "subscribe",
        0,
        "s|[s:RPCRI,i:TTL]",
        "b",
        BROWSE,
    )),
    m(MethodDesc::new("unsubscribe", 0, "s", "b", BROWSE)),
    m(MethodDesc::new(
        "subscriptions",
        flag::GETTER,
        "!get",
        "{i|n}",
        BROWSE,
    )),
];
/// The SHV 2 API of the C++ broker, for its clients (their `shvcall --subscribe`, their
/// heartbeat): answered, not listed (peers compare `.broker`'s list exactly).
const BROKER_APP: &[Method] = &[
    m(MethodDesc::new("ping", 0, "n", "n", BROWSE)),
    m(MethodDesc::new(
        "subscribe",
        0,
        "{method:s,path:s}",
        "b",
        BROWSE,
    )),
    m(MethodDesc::new(
        "unsubscribe",
        0,
        "{method:s,path:s}",
        "b",
        BROWSE,
    )),
];
const TUNNELS: &[Method] = &[
    m(MethodDesc::new("list", 0, "n", "[{}]", SUPER_SERVICE)),
    m(MethodDesc::new(
        "close",
        flag::NOT_IDEMPOTENT,
        "i",
        "b",
        level::ADMIN,
    )),
];

/// The methods of a broker node, in `dir` order: what `dir` lists, and what is callable.
fn methods_of(path: &str, with_parents: bool) -> (Vec<&'static Method>, Vec<&'static Method>) {
    let own: &'static [Method] = match path {
        ".app" => APP,
        ".broker" => BROKER,
        ".broker/currentClient" => CURRENT_CLIENT,
        ".broker/app" => BROKER_APP,
        ".broker/tunnels" => TUNNELS,
        _ => &[],
    };
    let listed: Vec<&Method> = COMMON.iter().chain(own).collect();
    let mut callable = listed.clone();
    if path == ".broker" {
        callable.push(&PARENTS);
    }
    let listed = if path == ".broker" && with_parents {
        callable.clone()
    } else {
        listed
    };
    (listed, callable)
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
        return Err(RpcError::method_not_found(format!(
            "no such path: '{path}'"
        )));
    };
    let (listed, callable) = methods_of(path, !broker.settings.parents.is_empty());
    let Some(desc) = callable.iter().find(|m| m.desc.name == method) else {
        return Err(RpcError::method_not_found(format!(
            "no method '{method}' on '{path}'"
        )));
    };
    if level < desc.required {
        return Err(RpcError::method_not_found(format!(
            "access denied: {path}:{method} needs '{}', you have '{}'",
            level_name(desc.required),
            level_name(level)
        )));
    }
    let param = param.unwrap_or_else(RpcValue::null);
    match (path, method) {
        (_, "ls") => Ok(node::ls(&children, Some(&param))),
        (_, "dir") => Ok(match &param.value {
            // Whether a method exists: the unlisted extensions exist too.
            Value::String(_) => node::dir(callable.iter().map(|m| &m.desc), Some(&param)),
            _ => node::dir(listed.iter().map(|m| &m.desc), None),
        }),
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
