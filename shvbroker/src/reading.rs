//! The memory of frames being read (`limits.read_bytes`, `read_bytes_per_user`,
//! `frame_timeout`): a frame beyond 64 KiB is charged to its user's budget and to the
//! broker's before its bytes are read (libshv::reader), so a client that announces
//! large frames and never finishes them pins at most its user's budget, and all
//! clients together at most the broker's. Connections of one user share the user's
//! budget; tunnel ends, which log in with a secret rather than as a user, share one
//! per source address.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use libshv::reader::ReadBudget;
use tokio::sync::Semaphore;

pub struct ReadBudgets {
    global: Arc<Semaphore>,
    global_total: usize,
    per_user: usize,
    frame_timeout: Duration,
    /// The budget of every user with a connection (dropped with its last one).
    users: Mutex<HashMap<String, Weak<Semaphore>>>,
}

impl ReadBudgets {
    pub fn new(global: usize, per_user: usize, frame_timeout: Duration) -> ReadBudgets {
        ReadBudgets {
            global: Arc::new(Semaphore::new(global)),
            global_total: global,
            per_user,
            frame_timeout,
            users: Mutex::new(HashMap::new()),
        }
    }

    /// The budget of connections that logged in as `user`.
    pub fn for_user(&self, user: &str) -> ReadBudget {
        self.budget(user)
    }

    /// The budget of tunnel ends from `addr` (`ip:port`).
    pub fn for_tunnel_end(&self, addr: &str) -> ReadBudget {
        let ip = addr.rsplit_once(':').map_or(addr, |(ip, _)| ip);
        // A user name never holds a NUL: the two kinds of key cannot meet.
        self.budget(&format!("\0tunnel\0{ip}"))
    }

    fn budget(&self, key: &str) -> ReadBudget {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        let user = match users.get(key).and_then(Weak::upgrade) {
            Some(s) => s,
            None => {
                if users.len() >= 1024 && users.len().is_power_of_two() {
                    users.retain(|_, w| w.strong_count() > 0);
                }
                let s = Arc::new(Semaphore::new(self.per_user));
                users.insert(key.to_string(), Arc::downgrade(&s));
                s
            }
        };
        ReadBudget {
            user,
            user_total: self.per_user,
            global: self.global.clone(),
            global_total: self.global_total,
            frame_timeout: self.frame_timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_users_connections_share_one_budget_and_others_have_their_own() {
        let b = ReadBudgets::new(100, 10, Duration::from_secs(1));
        let a1 = b.for_user("a");
        let a2 = b.for_user("a");
        assert!(Arc::ptr_eq(&a1.user, &a2.user));
        let other = b.for_user("b");
        assert!(!Arc::ptr_eq(&a1.user, &other.user));
        let t1 = b.for_tunnel_end("127.0.0.1:4000");
        let t2 = b.for_tunnel_end("127.0.0.1:4001");
        assert!(Arc::ptr_eq(&t1.user, &t2.user));
        assert!(!Arc::ptr_eq(
            &t1.user,
            &b.for_tunnel_end("127.0.0.2:1").user
        ));
        assert!(Arc::ptr_eq(&a1.global, &other.global));
        // The last connection of a user gone: its budget goes too.
        drop((a1, a2));
        let fresh = b.for_user("a");
        assert_eq!(fresh.user.available_permits(), 10);
    }
}
