//! The checks a loaded config must pass before the broker uses it: references that
//! resolve, levels that parse, and bounds that keep time and memory arithmetic in range.
//! Each failure names its key.

use std::time::Duration;

use libshv::access::parse_level;

use super::Invalid;
use crate::config::{check_mount_path, expand, public_tunnel_address, Config, REDACTED};

/// Upper bound of the config's durations: keeps time arithmetic in range.
const DAY: Duration = Duration::from_secs(86_400);

fn bad(key: impl Into<String>, message: impl Into<String>) -> Result<(), Invalid> {
    Err(Invalid::new(key, message))
}

pub(super) fn check(c: &Config) -> Result<(), Invalid> {
    users(c)?;
    for (name, r) in &c.roles {
        for (i, a) in r.access.iter().enumerate() {
            if parse_level(&a.grant).is_none() {
                return bad(
                    format!("roles.{name}.access[{i}].grant"),
                    format!("unknown access level '{}' for '{}'", a.grant, a.ri),
                );
            }
        }
    }
    for (i, a) in c.autosetup.iter().enumerate() {
        if a.roles.is_empty() {
            return bad(
                format!("autosetup[{i}].roles"),
                "a rule needs at least one role",
            );
        }
        for r in &a.roles {
            if !c.roles.contains_key(r) {
                return bad(
                    format!("autosetup[{i}].roles"),
                    format!("unknown role '{r}'"),
                );
            }
        }
        // The template with placeholders filled must be a valid mount point.
        let sample = expand(&a.mount_point, "dev", "role", "user", 1);
        if let Err(e) = check_mount_path(&sample) {
            return bad(format!("autosetup[{i}].mount_point"), e);
        }
    }
    for (i, conn) in c.connections.iter().enumerate() {
        let key = |k: &str| format!("connections[{i}].{k}");
        let url = match libshv::RpcUrl::parse(&conn.url) {
            Ok(u) => u,
            Err(e) => return bad(key("url"), e.to_string()),
        };
        if url.password.as_deref() == Some("***") || url.shapass.as_deref() == Some("***") {
            return bad(
                key("url"),
                "its password is *** (as --print-config shows secrets): put the real one back",
            );
        }
        for (k, t) in [
            ("heartbeat", conn.heartbeat),
            ("reconnect_max", conn.reconnect_max),
        ] {
            if t > DAY {
                return bad(key(k), "at most 86400 (seconds)");
            }
        }
    }
    tunnel(c)?;
    limits(c)
}

fn users(c: &Config) -> Result<(), Invalid> {
    for (name, u) in &c.users {
        let key = |k: &str| format!("users.{name}{k}");
        if u.password.is_none() && u.sha1pass.is_none() {
            return bad(key(""), "neither password nor sha1pass is set");
        }
        if let Some(h) = &u.sha1pass {
            if h == REDACTED {
                return bad(
                    key(".sha1pass"),
                    format!(
                        "{REDACTED} (as --print-config shows secrets): set `password: …` or \
                         the real `sha1pass: <40 hex digits>`"
                    ),
                );
            }
            if h.len() != 40 || hex::decode(h).is_err() {
                return bad(key(".sha1pass"), "must be 40 hex digits");
            }
        }
        for r in &u.roles {
            if !c.roles.contains_key(r) {
                return bad(key(".roles"), format!("unknown role '{r}'"));
            }
        }
        if let Some(a) = &u.own_request_access {
            if parse_level(a).is_none() {
                return bad(
                    key(".own_request_access"),
                    format!("unknown access level '{a}'"),
                );
            }
        }
    }
    Ok(())
}

fn tunnel(c: &Config) -> Result<(), Invalid> {
    let t = &c.tunnel;
    if t.secret_ttl.is_zero() || t.secret_ttl > Duration::from_secs(3600) {
        return bad("tunnel.secret_ttl", "must be 1..3600 (seconds)");
    }
    for (name, v) in [
        ("record_max_bytes", t.record_max_bytes),
        ("record_dir_max_bytes", t.record_dir_max_bytes),
    ] {
        // Room for a header and the marker that ends a capped recording.
        if v != 0 && v < 4096 {
            return bad(format!("tunnel.{name}"), "0 (no cap) or at least 4096");
        }
    }
    if let Some(a) = &t.public_address {
        if let Err(e) = public_tunnel_address(a) {
            return bad("tunnel.public_address", e.to_string());
        }
    }
    Ok(())
}

fn limits(c: &Config) -> Result<(), Invalid> {
    let l = &c.limits;
    let key = |k: &str| format!("limits.{k}");
    for (name, t) in [
        ("login_timeout", l.login_timeout),
        ("idle_timeout", l.idle_timeout),
        ("max_idle_timeout", l.max_idle_timeout),
        ("write_stall_timeout", l.write_stall_timeout),
        ("frame_timeout", l.frame_timeout),
    ] {
        if t > DAY {
            return bad(key(name), "at most 86400 (seconds)");
        }
    }
    for (name, t) in [
        ("max_idle_timeout", l.max_idle_timeout),
        ("frame_timeout", l.frame_timeout),
    ] {
        if t.is_zero() {
            return bad(key(name), "must be at least 1 (second)");
        }
    }
    if l.max_frame_size < 1024 {
        return bad(key("max_frame_size"), "must be at least 1024");
    }
    for (name, v) in [
        ("client_queue", l.client_queue),
        ("client_queue_bytes", l.client_queue_bytes),
        ("inflight_bytes", l.inflight_bytes),
        ("outgoing_bytes", l.outgoing_bytes),
        ("max_subscriptions", l.max_subscriptions),
        (
            "max_subscription_bytes_per_user",
            l.max_subscription_bytes_per_user,
        ),
        ("max_ri_len", l.max_ri_len),
        ("max_pending", l.max_pending),
        ("max_pending_per_user", l.max_pending_per_user),
        ("local_param_size", l.local_param_size),
    ] {
        if v == 0 {
            return bad(key(name), "must be at least 1");
        }
    }
    if l.inflight_bytes > tokio::sync::Semaphore::MAX_PERMITS {
        return bad(key("inflight_bytes"), "too large");
    }
    for (name, v) in [
        ("read_bytes", l.read_bytes),
        ("read_bytes_per_user", l.read_bytes_per_user),
    ] {
        if v > u32::MAX as usize {
            return bad(key(name), "too large (at most 4 GiB)");
        }
    }
    // One largest frame must fit a user's budget, and the broker's.
    if l.read_bytes_per_user < l.max_frame_size {
        return bad(
            key("read_bytes_per_user"),
            format!(
                "{} is less than max_frame_size ({}): one largest frame must fit",
                l.read_bytes_per_user, l.max_frame_size
            ),
        );
    }
    if l.read_bytes < l.read_bytes_per_user {
        return bad(
            key("read_bytes"),
            format!(
                "{} is less than read_bytes_per_user ({})",
                l.read_bytes, l.read_bytes_per_user
            ),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each bad value is refused with its key named, as the operator reads it.
    #[test]
    fn every_refusal_names_its_key() {
        for (yaml, expected) in [
            (
                "users:\n  a: {password: x, roles: [nope]}\n",
                "users.a.roles: unknown role 'nope'",
            ),
            ("users:\n  a: {roles: []}\n", "users.a: neither password"),
            (
                "users:\n  a: {sha1pass: abc, roles: []}\n",
                "users.a.sha1pass: must be 40 hex digits",
            ),
            (
                "roles:\n  r: {access: [{ri: '**', grant: max}]}\n",
                "roles.r.access[0].grant: unknown access level 'max'",
            ),
            (
                "autosetup: [{device_id: x, roles: [], mount_point: a}]\n",
                "autosetup[0].roles: a rule needs at least one role",
            ),
            (
                "roles: {r: {}}\nautosetup: [{device_id: x, roles: [r], mount_point: .app/%d}]\n",
                "autosetup[0].mount_point: mount point '.app/dev' would shadow",
            ),
            (
                "connections: [{url: 'bogus://x'}]\n",
                "connections[0].url: unsupported URL scheme",
            ),
            (
                "connections: [{url: 'tcp://h:1', heartbeat: 86401}]\n",
                "connections[0].heartbeat: at most 86400",
            ),
            (
                "tunnel: {secret_ttl: 0}\n",
                "tunnel.secret_ttl: must be 1..3600",
            ),
            (
                "tunnel: {record_max_bytes: 10}\n",
                "tunnel.record_max_bytes: 0 (no cap) or at least 4096",
            ),
            (
                "tunnel: {public_address: nohost}\n",
                "tunnel.public_address: ",
            ),
            (
                "limits: {login_timeout: 100000}\n",
                "limits.login_timeout: at most 86400",
            ),
            (
                "limits: {frame_timeout: 0}\n",
                "limits.frame_timeout: must be at least 1",
            ),
            (
                "limits: {max_frame_size: 10}\n",
                "limits.max_frame_size: must be at least 1024",
            ),
            (
                "limits: {max_pending: 0}\n",
                "limits.max_pending: must be at least 1",
            ),
            (
                "limits: {read_bytes: 5000000000}\n",
                "limits.read_bytes: too large",
            ),
            (
                "limits: {read_bytes_per_user: 2000}\n",
                "limits.read_bytes_per_user: 2000 is less than max_frame_size",
            ),
            (
                "limits: {read_bytes: 2000, read_bytes_per_user: 2000, max_frame_size: 1024}\n",
                "",
            ),
            (
                "limits: {read_bytes: 1500, read_bytes_per_user: 2000, max_frame_size: 1024}\n",
                "limits.read_bytes: 1500 is less than read_bytes_per_user",
            ),
        ] {
            let got = super::super::Settings::new(&Config::parse(yaml, "c.yaml").unwrap());
            if expected.is_empty() {
                assert!(got.is_ok(), "{yaml}: {:?}", got.err());
                continue;
            }
            let e = got.unwrap_err().to_string();
            assert!(
                e.contains(expected),
                "{yaml}: expected '{expected}' in: {e}"
            );
        }
    }
}
