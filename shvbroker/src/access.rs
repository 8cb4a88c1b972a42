//! What a logged-in user may do: access grants per path/method and allowed mount points,
//! compiled once from the user's roles at login.

use libshv::ri::{path_match, Ri};

use crate::settings::Settings;

#[derive(Debug, Clone, Default)]
pub struct Grants {
    rules: Vec<(Ri, i64)>,
    mount_points: Vec<String>,
    roles: Vec<String>,
}

impl Grants {
    /// Grants of `user` (roles in order, rules in order; the first matching rule wins).
    pub fn for_user(settings: &Settings, user: &str) -> Grants {
        let (rules, mount_points) = settings.rules_of(user);
        Grants {
            rules,
            mount_points,
            roles: settings
                .account(user)
                .map(|a| a.roles.clone())
                .unwrap_or_default(),
        }
    }

    /// Everything: for a parent broker, whose requests carry the level it granted
    /// (which we only ever lower).
    pub fn all() -> Grants {
        Grants {
            rules: vec![(Ri::parse("**:*"), libshv::access::level::ADMIN)],
            mount_points: Vec::new(),
            roles: Vec::new(),
        }
    }

    /// A tunnel end: only what its tunnel needs (handled separately), nothing here.
    pub fn none() -> Grants {
        Grants::default()
    }

    /// Access level granted for `path:method`, if any rule matches.
    pub fn level(&self, path: &str, method: &str) -> Option<i64> {
        self.rules
            .iter()
            .find(|(ri, _)| ri.matches_method(path, method))
            .map(|(_, l)| *l)
    }

    pub fn may_mount(&self, path: &str) -> bool {
        self.mount_points.iter().any(|p| path_match(p, path))
    }

    /// The user's roles, in the config's order.
    pub fn roles(&self) -> &[String] {
        &self.roles
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn default_roles() {
        let c = Settings::default();
        let admin = Grants::for_user(&c, "admin");
        assert_eq!(admin.level("a/b", "set"), Some(63));
        assert!(admin.may_mount("x/y"));
        let viewer = Grants::for_user(&c, "viewer");
        assert_eq!(viewer.level("a/b", "set"), Some(8));
        assert!(!viewer.may_mount("test/x"));
        let dev = Grants::for_user(&c, "device");
        assert!(dev.may_mount("test/agent"));
        assert!(!dev.may_mount("prod/agent"));
        assert_eq!(Grants::for_user(&c, "nobody").level("", "ls"), None);
    }

    #[test]
    fn first_rule_wins() {
        let c = Config::parse(
            "users:\n  u: {password: p, roles: [r]}\nroles:\n  r:\n    access:\n      - {ri: 'secret/**', grant: bws}\n      - {ri: '**:*', grant: wr}\n",
            "t",
        )
        .unwrap();
        let g = Grants::for_user(&Settings::new(&c).unwrap(), "u");
        assert_eq!(g.level("secret/x", "get"), Some(1));
        assert_eq!(g.level("other", "get"), Some(16));
    }
}
