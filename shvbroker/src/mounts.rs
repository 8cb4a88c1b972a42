//! The mount table: which peer serves which subtree. Its invariant: no mount point
//! equals, nests in or covers another, so a path has at most one serving mount.

use std::collections::{BTreeSet, HashMap};

use libshv::path::is_under;

use crate::peers::PeerId;

pub use crate::config::check_mount_path;

#[derive(Default)]
pub struct Mounts {
    by_path: HashMap<String, PeerId>,
}

impl Mounts {
    /// The existing mount that `path` would equal, nest in or cover.
    pub fn collision(&self, path: &str) -> Option<&str> {
        self.by_path
            .keys()
            .find(|m| *m == path || is_under(m, path) || is_under(path, m))
            .map(String::as_str)
    }

    /// Mounts `peer` at `path`; refused (false) if that would break the invariant.
    pub fn insert(&mut self, path: &str, peer: PeerId) -> bool {
        if self.collision(path).is_some() {
            return false;
        }
        self.by_path.insert(path.to_string(), peer);
        true
    }

    pub fn remove(&mut self, path: &str) {
        self.by_path.remove(path);
    }

    /// The peer serving `path` and the path relative to its mount point: the longest
    /// mount prefix (whole segments).
    pub fn route<'p>(&self, path: &'p str) -> Option<(PeerId, &'p str)> {
        let mut prefix = path;
        loop {
            if let Some(id) = self.by_path.get(prefix) {
                let rest = path[prefix.len()..].trim_start_matches('/');
                return Some((*id, rest));
            }
            prefix = &prefix[..prefix.rfind('/')?];
        }
    }

    /// The peer mounted exactly at `path`.
    pub fn at(&self, path: &str) -> Option<PeerId> {
        self.by_path.get(path).copied()
    }

    /// The mount points, sorted.
    pub fn paths(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.by_path.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// The names of `path`'s children that lead to mounts, and whether `path` exists
    /// because of them (a mount at or below it).
    pub fn children(&self, path: &str) -> (BTreeSet<String>, bool) {
        let mut out = BTreeSet::new();
        let mut exists = false;
        for m in self.by_path.keys() {
            let rest = if path.is_empty() {
                Some(m.as_str())
            } else {
                m.strip_prefix(path).and_then(|r| r.strip_prefix('/'))
            };
            if let Some(rest) = rest {
                exists = true;
                out.insert(rest.split('/').next().unwrap_or(rest).to_string());
            }
        }
        (out, exists)
    }

    /// The topmost node that appears with mounting `mount` (or disappears with its
    /// unmounting): the mount point itself, or its highest ancestor no other mount
    /// keeps. `mount` may or may not be in the table.
    pub fn topmost_new_node<'m>(&self, mount: &'m str) -> &'m str {
        let others = || self.by_path.keys().filter(|m| m.as_str() != mount);
        for (i, _) in mount.match_indices('/') {
            let prefix = &mount[..i];
            if !others().any(|m| m == prefix || is_under(m, prefix)) {
                return prefix;
            }
        }
        mount
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_longest_prefix_and_keeps_mounts_apart() {
        let mut m = Mounts::default();
        assert!(m.insert("test/a", 1));
        assert!(m.insert("test/ab", 2));
        assert!(!m.insert("test/a/b", 3));
        assert!(!m.insert("test", 3));
        assert_eq!(m.route("test/a/x/y"), Some((1, "x/y")));
        assert_eq!(m.route("test/ab"), Some((2, "")));
        assert_eq!(m.route("test"), None);
        let (children, exists) = m.children("test");
        assert!(exists);
        assert_eq!(children.into_iter().collect::<Vec<_>>(), ["a", "ab"]);
        assert_eq!(m.topmost_new_node("test/node/well"), "test/node");
        assert_eq!(m.topmost_new_node("other/x"), "other");
        m.remove("test/a");
        assert_eq!(m.paths(), ["test/ab"]);
    }
}
