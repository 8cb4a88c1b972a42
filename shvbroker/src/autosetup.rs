//! Device autosetup: where a device that logs in with a deviceId is mounted, and whether
//! its user may claim that deviceId at all. Rules come from the config's `autosetup`
//! list; the first rule whose deviceId glob and role filter match decides.

use libshv::message::{code, RpcError};
use libshv::ri::glob;

use crate::access::Grants;
use crate::config::{check_mount_path, Autosetup, Config};

/// Longest deviceId accepted (it ends up in mount points and logs).
pub const MAX_DEVICE_ID: usize = 256;
/// How many `%i` variants are tried before giving up on a free mount point.
const MAX_INDEX: usize = 1000;

/// Fills a mount point template: `%d` deviceId, `%r` role, `%u` user, `%i` nothing for
/// `index` 0 and `-index` otherwise, `%%` a percent sign.
pub fn expand(
    template: &str,
    device_id: &str,
    role: &str,
    user: &str,
    index: usize,
) -> Result<String, String> {
    let mut out = String::with_capacity(template.len() + device_id.len());
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(device_id),
            Some('r') => out.push_str(role),
            Some('u') => out.push_str(user),
            Some('i') if index > 0 => out.push_str(&format!("-{index}")),
            Some('i') => {}
            Some('%') => out.push('%'),
            Some(other) => return Err(format!("unknown placeholder '%{other}' in '{template}'")),
            None => return Err(format!("'%' at the end of '{template}'")),
        }
    }
    Ok(out)
}

/// What autosetup decided for a device.
#[derive(Debug, PartialEq, Eq)]
pub struct Placement {
    pub mount_point: String,
    pub subscriptions: Vec<String>,
}

/// The rule for `device_id` logged in as `user` with `grants`, and a free mount point
/// from it (`is_free` tells whether a path may be mounted). `Ok(None)`: no rule matches.
pub fn place(
    config: &Config,
    user: &str,
    grants: &Grants,
    device_id: &str,
    is_free: impl Fn(&str) -> bool,
) -> Result<Option<Placement>, RpcError> {
    let refuse = |m: String| RpcError::new(code::METHOD_CALL_EXCEPTION, m);
    if device_id.len() > MAX_DEVICE_ID {
        return Err(refuse(format!(
            "deviceId longer than {MAX_DEVICE_ID} bytes"
        )));
    }
    let Some((rule, role)) = matching_rule(&config.autosetup, grants, device_id) else {
        return Ok(None);
    };
    let has_index = rule.mount_point.contains("%i");
    for index in 0..MAX_INDEX {
        let path = expand(&rule.mount_point, device_id, role, user, index).map_err(refuse)?;
        check_mount_path(&path).map_err(refuse)?;
        if !grants.may_mount(&path) {
            return Err(refuse(format!(
                "mount point '{path}' not allowed for this user"
            )));
        }
        if is_free(&path) {
            return Ok(Some(Placement {
                mount_point: path,
                subscriptions: rule.subscriptions.clone(),
            }));
        }
        if !has_index {
            return Err(refuse(format!("mount point '{path}' is taken")));
        }
    }
    Err(refuse("no free mount point for this deviceId".into()))
}

fn matching_rule<'a>(
    rules: &'a [Autosetup],
    grants: &'a Grants,
    device_id: &str,
) -> Option<(&'a Autosetup, &'a str)> {
    rules.iter().find_map(|rule| {
        if !glob(&rule.device_id, device_id) {
            return None;
        }
        if rule.roles.is_empty() {
            return Some((rule, grants.roles().first().map_or("", String::as_str)));
        }
        let role = rule.roles.iter().find(|r| grants.has_role(r))?;
        Some((rule, role.as_str()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::parse(
            "users:\n\
             \x20 admin: {password: a, roles: [admin]}\n\
             \x20 test: {password: t, roles: [test]}\n\
             \x20 viewer: {password: v, roles: [viewer]}\n\
             roles:\n\
             \x20 admin: {access: [{ri: '**:*', grant: su}], mount_points: ['**']}\n\
             \x20 test: {access: [{ri: 'test/**:*', grant: cmd}], mount_points: ['test/*']}\n\
             \x20 viewer: {access: [{ri: '**:*', grant: rd}]}\n\
             autosetup:\n\
             \x20 - {device_id: history, roles: [admin], mount_point: .history, subscriptions: ['test/**:*:*']}\n\
             \x20 - {device_id: '?*', roles: [admin, test], mount_point: 'test/%d%i'}\n",
            "t",
        )
        .unwrap()
    }

    #[test]
    fn templates() {
        assert_eq!(expand("a/%d%i", "x", "r", "u", 0).unwrap(), "a/x");
        assert_eq!(expand("a/%d%i", "x", "r", "u", 2).unwrap(), "a/x-2");
        assert_eq!(expand("%r/%u/100%%", "x", "r", "u", 0).unwrap(), "r/u/100%");
        assert!(expand("a/%q", "x", "r", "u", 0).is_err());
    }

    #[test]
    fn role_filter_decides_who_may_claim_a_device_id() {
        let c = config();
        let free = |_: &str| true;
        let admin = Grants::for_user(&c, "admin");
        let p = place(&c, "admin", &admin, "history", free)
            .unwrap()
            .unwrap();
        assert_eq!(p.mount_point, ".history");
        assert_eq!(p.subscriptions, vec!["test/**:*:*".to_string()]);
        let test = Grants::for_user(&c, "test");
        let p = place(&c, "test", &test, "history", free).unwrap().unwrap();
        assert_eq!(p.mount_point, "test/history");
        // The viewer has none of the roles: no rule, no mount.
        let viewer = Grants::for_user(&c, "viewer");
        assert_eq!(place(&c, "viewer", &viewer, "plc1", free).unwrap(), None);
    }

    #[test]
    fn index_makes_mount_points_unique_and_paths_stay_canonical() {
        let c = config();
        let test = Grants::for_user(&c, "test");
        let p = place(&c, "test", &test, "dev", |p: &str| p != "test/dev").unwrap();
        assert_eq!(p.unwrap().mount_point, "test/dev-1");
        assert!(place(&c, "test", &test, "..", |_: &str| true).is_err());
        // `test/*` only: a deviceId with a '/' would mount deeper.
        assert!(place(&c, "test", &test, "a/b", |_: &str| true).is_err());
        assert!(place(&c, "test", &test, &"x".repeat(300), |_: &str| true).is_err());
    }
}
