//! The `autosetup` list as data; what it does at login is `crate::autosetup`.

use serde::{Deserialize, Serialize};

/// A device autosetup rule: a device logging in with a deviceId matching `device_id`,
/// as a user with one of `roles`, is mounted at `mount_point` (a template) and gets
/// `subscriptions` made for it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Autosetup {
    /// Glob on the deviceId (`*`, `?`, `[abc]`); `?*` is any non-empty deviceId.
    pub device_id: String,
    /// Roles that may claim such a deviceId (the user needs one of them). The mount
    /// point must also be one the user's roles may mount at.
    pub roles: Vec<String>,
    /// Mount point template: `%d` the deviceId, `%u` the user name, `%r` the user's
    /// roles joined with `-`, `%i` nothing, then 1, 2, … until the mount point is free,
    /// `%I` 0, 1, 2, …, `%%` a `%`.
    pub mount_point: String,
    /// RIs subscribed for the device when it is mounted (`path:method:signal`).
    #[serde(default)]
    pub subscriptions: Vec<String>,
}

/// Fills a mount point template: `%d` deviceId, `%u` user, `%r` the user's roles joined
/// with `-`, `%i` nothing for `index` 0 and `index` otherwise, `%I` `index`, `%%` a
/// percent sign; any other `%x` stays as it is.
pub fn expand(template: &str, device_id: &str, roles: &str, user: &str, index: usize) -> String {
    let mut out = String::with_capacity(template.len() + device_id.len());
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            Some('d') => out.push_str(device_id),
            Some('u') => out.push_str(user),
            Some('r') => out.push_str(roles),
            Some('i') if index > 0 => out.push_str(&index.to_string()),
            Some('i') => {}
            Some('I') => out.push_str(&index.to_string()),
            Some('%') => out.push('%'),
            _ => {
                out.push('%');
                continue;
            }
        }
        chars.next();
    }
    out
}
