//! The checks a loaded config must pass before the broker uses it: references that
//! resolve, levels that parse, and bounds that keep time and memory arithmetic in range.

use libshv::access::parse_level;

use super::{public_tunnel_address, Config, DAY, REDACTED};

impl Config {
    pub(super) fn validate(&self) -> Result<(), String> {
        for (name, u) in &self.users {
            if u.password.is_none() && u.sha1pass.is_none() {
                return Err(format!("user '{name}' has neither password nor sha1pass"));
            }
            if let Some(h) = &u.sha1pass {
                if h == REDACTED {
                    return Err(format!(
                        "users.{name}.sha1pass is {REDACTED} (as --print-config shows secrets): \
                         set `password: …` or the real `sha1pass: <40 hex digits>`"
                    ));
                }
                if h.len() != 40 || hex::decode(h).is_err() {
                    return Err(format!("user '{name}': sha1pass must be 40 hex digits"));
                }
            }
            for r in &u.roles {
                if !self.roles.contains_key(r) {
                    return Err(format!("user '{name}' has unknown role '{r}'"));
                }
            }
            if let Some(a) = &u.own_request_access {
                if parse_level(a).is_none() {
                    return Err(format!(
                        "user '{name}': unknown own_request_access level '{a}'"
                    ));
                }
            }
        }
        for (name, r) in &self.roles {
            for a in &r.access {
                if parse_level(&a.grant).is_none() {
                    return Err(format!(
                        "role '{name}': unknown access level '{}' for '{}'",
                        a.grant, a.ri
                    ));
                }
            }
        }
        for (i, a) in self.autosetup.iter().enumerate() {
            for r in &a.roles {
                if !self.roles.contains_key(r) {
                    return Err(format!("autosetup[{i}]: unknown role '{r}'"));
                }
            }
            if a.roles.is_empty() {
                return Err(format!("autosetup[{i}]: a rule needs at least one role"));
            }
            // The template with placeholders filled must be a valid mount point.
            let sample = super::expand(&a.mount_point, "dev", "role", "user", 1);
            check_mount_path(&sample).map_err(|e| format!("autosetup[{i}]: {e}"))?;
        }
        for (i, c) in self.connections.iter().enumerate() {
            let url = libshv::RpcUrl::parse(&c.url).map_err(|e| format!("connections: {e}"))?;
            if url.password.as_deref() == Some("***") || url.shapass.as_deref() == Some("***") {
                return Err(format!(
                    "connections[{i}].url: its password is *** (as --print-config shows \
                     secrets): put the real one back"
                ));
            }
            if c.heartbeat > DAY || c.reconnect_max > DAY {
                return Err("connections: heartbeat and reconnect_max are at most 86400".into());
            }
        }
        if self.tunnel.secret_ttl == 0 || self.tunnel.secret_ttl > 3600 {
            return Err("tunnel.secret_ttl must be 1..3600 seconds".into());
        }
        for (name, t) in [
            ("login_timeout", self.limits.login_timeout),
            ("idle_timeout", self.limits.idle_timeout),
            ("max_idle_timeout", self.limits.max_idle_timeout),
            ("write_stall_timeout", self.limits.write_stall_timeout),
            ("frame_timeout", self.limits.frame_timeout),
        ] {
            if t > DAY {
                return Err(format!("limits.{name} is at most 86400 (seconds)"));
            }
        }
        if self.limits.max_idle_timeout == 0 || self.limits.frame_timeout == 0 {
            return Err(
                "limits.max_idle_timeout and frame_timeout must be at least 1 (second)".into(),
            );
        }
        for (name, v) in [
            ("record_max_bytes", self.tunnel.record_max_bytes),
            ("record_dir_max_bytes", self.tunnel.record_dir_max_bytes),
        ] {
            // Room for a header and the marker that ends a capped recording.
            if v != 0 && v < 4096 {
                return Err(format!("tunnel.{name} is 0 (no cap) or at least 4096"));
            }
        }
        if let Some(a) = &self.tunnel.public_address {
            public_tunnel_address(a).map_err(|e| e.to_string())?;
        }
        if self.limits.max_frame_size < 1024 {
            return Err("limits.max_frame_size must be at least 1024".into());
        }
        let l = &self.limits;
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
                return Err(format!("limits.{name} must be at least 1"));
            }
        }
        if l.inflight_bytes > tokio::sync::Semaphore::MAX_PERMITS {
            return Err("limits.inflight_bytes is too large".into());
        }
        for (name, v) in [
            ("read_bytes", l.read_bytes),
            ("read_bytes_per_user", l.read_bytes_per_user),
        ] {
            if v > u32::MAX as usize {
                return Err(format!("limits.{name} is too large (at most 4 GiB)"));
            }
        }
        // One largest frame must fit a user's budget, and the broker's.
        if l.read_bytes_per_user < l.max_frame_size || l.read_bytes < l.read_bytes_per_user {
            return Err(format!(
                "limits.read_bytes_per_user ({}) must be at least max_frame_size ({}), and \
                 limits.read_bytes ({}) at least read_bytes_per_user",
                l.read_bytes_per_user, l.max_frame_size, l.read_bytes
            ));
        }
        Ok(())
    }
}

/// A mount point must be a canonical, non-empty path that does not shadow the broker's
/// own nodes (`.app`, `.broker`) or a device's `.device`.
pub fn check_mount_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("empty mount point".into());
    }
    libshv::path::check(path).map_err(|e| format!("invalid mount point '{path}': {e}"))?;
    let first = path.split('/').next().unwrap_or("");
    if matches!(first, ".app" | ".broker" | ".device") {
        return Err(format!(
            "mount point '{path}' would shadow the broker's '{first}'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_references() {
        let e = Config::parse("users:\n  a: {password: x, roles: [nope]}\n", "c")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown role 'nope'"), "{e}");
        let e = Config::parse("roles:\n  r: {access: [{ri: '**', grant: max}]}\n", "c")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown access level"), "{e}");
        assert!(check_mount_path(".broker/x").is_err());
        assert!(check_mount_path("a//b").is_err());
        assert!(check_mount_path(".history").is_ok());
    }

    #[test]
    fn check_mount_path_rejects_dot_segments() {
        for bad in ["test/..", "test/.", "test/../x", "./x", "test/", "/test"] {
            assert!(check_mount_path(bad).is_err(), "{bad}");
        }
    }
}
