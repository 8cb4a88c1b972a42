//! Device autosetup: where a device that logs in with a deviceId is mounted, and whether
//! its user may claim that deviceId at all. Rules come from the config's `autosetup`
//! list; the first rule whose deviceId glob and role filter match decides.

use libshv::logsafe::shown;
use libshv::message::{code, RpcError};
use libshv::ri::glob;

use crate::access::Grants;
use crate::config::check_mount_path;
pub use crate::config::{expand, Autosetup};

/// Longest deviceId accepted (it ends up in mount points and logs).
pub const MAX_DEVICE_ID: usize = 256;
/// How many `%i` variants are tried before giving up on a free mount point.
const MAX_INDEX: usize = 1000;

/// The first rule for `device_id` that one of the user's roles may use.
pub fn rule_for<'a>(
    rules: &'a [Autosetup],
    grants: &Grants,
    device_id: &str,
) -> Option<&'a Autosetup> {
    rules
        .iter()
        .find(|r| r.roles.iter().any(|role| grants.has_role(role)) && glob(&r.device_id, device_id))
}

/// Checks a deviceId before any rule sees it.
pub fn check_device_id(device_id: &str) -> Result<(), RpcError> {
    if device_id.len() > MAX_DEVICE_ID {
        return Err(RpcError::new(
            code::METHOD_CALL_EXCEPTION,
            format!("deviceId longer than {MAX_DEVICE_ID} bytes"),
        ));
    }
    Ok(())
}

/// The mount point `rule` gives `device_id`: the first expansion of its template that
/// is a valid mount point, allowed by the user's `mount_points` and free (`is_free`).
/// Numbered variants are tried only if the template has `%i` or `%I`. None: the device
/// is logged in without a mount (as pySHV does).
pub fn mount_point(
    rule: &Autosetup,
    device_id: &str,
    user: &str,
    grants: &Grants,
    is_free: impl Fn(&str) -> bool,
) -> Option<String> {
    let roles = grants.roles().join("-");
    let numbered = rule.mount_point.contains("%i") || rule.mount_point.contains("%I");
    for index in 0..MAX_INDEX {
        let path = expand(&rule.mount_point, device_id, &roles, user, index);
        if check_mount_path(&path).is_err() || !grants.may_mount(&path) {
            tracing::info!(
                device_id = %shown(device_id),
                mount = %shown(&path),
                "autosetup: mount point not valid or not allowed for the user; not mounted"
            );
            return None;
        }
        if is_free(&path) {
            return Some(path);
        }
        if !numbered {
            break;
        }
    }
    tracing::info!(device_id = %shown(device_id), "autosetup: no free mount point; not mounted");
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::settings::Settings;

    fn config() -> Settings {
        let c = Config::parse(
            "users:\n\
             \x20 admin: {password: a, roles: [admin]}\n\
             \x20 test: {password: t, roles: [test, browse]}\n\
             \x20 viewer: {password: v, roles: [viewer]}\n\
             roles:\n\
             \x20 admin: {access: [{ri: '**:*', grant: su}], mount_points: ['**']}\n\
             \x20 test: {access: [{ri: 'test/**:*', grant: cmd}], mount_points: ['test/*']}\n\
             \x20 browse: {access: [{ri: '**:ls', grant: bws}]}\n\
             \x20 viewer: {access: [{ri: '**:*', grant: rd}]}\n\
             autosetup:\n\
             \x20 - {device_id: history, roles: [admin], mount_point: .history, subscriptions: ['test/**:*:*']}\n\
             \x20 - {device_id: '?*', roles: [admin, test], mount_point: 'test/%d%i'}\n",
            "t",
        )
        .unwrap();
        Settings::new(&c).unwrap()
    }

    #[test]
    fn templates() {
        assert_eq!(expand("a/%d%i", "x", "r", "u", 0), "a/x");
        assert_eq!(expand("a/%d%i", "x", "r", "u", 2), "a/x2");
        assert_eq!(expand("a/%d-%I", "x", "r", "u", 0), "a/x-0");
        assert_eq!(
            expand("%r/%u/100%%/%q%", "x", "r-s", "u", 0),
            "r-s/u/100%/%q%"
        );
    }

    #[test]
    fn role_filter_decides_who_may_claim_a_device_id() {
        let c = config();
        let free = |_: &str| true;
        let admin = Grants::for_user(&c, "admin");
        let rule = rule_for(&c.autosetup, &admin, "history").unwrap();
        assert_eq!(rule.subscriptions, vec!["test/**:*:*".to_string()]);
        let mp = mount_point(rule, "history", "admin", &admin, free);
        assert_eq!(mp.as_deref(), Some(".history"));
        let test = Grants::for_user(&c, "test");
        let rule = rule_for(&c.autosetup, &test, "history").unwrap();
        let mp = mount_point(rule, "history", "test", &test, free);
        assert_eq!(mp.as_deref(), Some("test/history"));
        // The viewer has none of the roles: no rule. An empty deviceId matches no `?*`.
        let viewer = Grants::for_user(&c, "viewer");
        assert!(rule_for(&c.autosetup, &viewer, "plc1").is_none());
        assert!(rule_for(&c.autosetup, &test, "").is_none());
    }

    #[test]
    fn index_makes_mount_points_unique_and_paths_stay_canonical() {
        let c = config();
        let test = Grants::for_user(&c, "test");
        let rule = rule_for(&c.autosetup, &test, "dev").unwrap();
        let taken = ["test/dev", "test/dev1"];
        let mp = mount_point(rule, "dev", "test", &test, |p: &str| !taken.contains(&p));
        assert_eq!(mp.as_deref(), Some("test/dev2"));
        assert_eq!(mount_point(rule, "..", "test", &test, |_: &str| true), None);
        // `test/*` only: a deviceId with a '/' would mount deeper.
        assert_eq!(
            mount_point(rule, "a/b", "test", &test, |_: &str| true),
            None
        );
        assert!(check_device_id(&"x".repeat(300)).is_err());
    }
}
