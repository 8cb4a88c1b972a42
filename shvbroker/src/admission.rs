//! Connections that have not logged in yet, bounded in number: in all and per source
//! address. Before login a peer costs memory the broker cannot charge to any user (a
//! TLS session, a WebSocket's message buffer, a Serial bridge), and anyone who can reach
//! a listener can open such connections; past the bounds new ones are closed at once,
//! while logged-in users are not affected.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

pub struct Admission {
    limit: usize,
    per_address: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// One connection's place among those not logged in; given back when dropped (at
/// login, or when the connection ends).
pub struct Ticket {
    admission: Arc<Admission>,
    address: Option<IpAddr>,
}

impl Admission {
    pub fn new(limit: usize, per_address: usize) -> Arc<Admission> {
        Arc::new(Admission {
            limit,
            per_address,
            state: Mutex::new(State::default()),
        })
    }

    /// A ticket for a new connection from `address` (None: a local socket), or None
    /// when the bounds are reached.
    pub fn admit(self: &Arc<Self>, address: Option<IpAddr>) -> Option<Ticket> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.total >= self.limit {
            return None;
        }
        if let Some(a) = address {
            let n = s.by_address.entry(a).or_insert(0);
            if *n >= self.per_address {
                return None;
            }
            *n += 1;
        }
        s.total += 1;
        Some(Ticket {
            admission: self.clone(),
            address,
        })
    }

    /// Connections not logged in now.
    pub fn waiting(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut s = self
            .admission
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        s.total = s.total.saturating_sub(1);
        if let Some(a) = self.address {
            if let Some(n) = s.by_address.get_mut(&a) {
                *n -= 1;
                if *n == 0 {
                    s.by_address.remove(&a);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_in_all_and_per_address_and_tickets_come_back() {
        let a = Admission::new(3, 2);
        let x: IpAddr = "10.0.0.1".parse().unwrap();
        let y: IpAddr = "10.0.0.2".parse().unwrap();
        let t1 = a.admit(Some(x)).unwrap();
        let t2 = a.admit(Some(x)).unwrap();
        assert!(a.admit(Some(x)).is_none(), "per address");
        let t3 = a.admit(Some(y)).unwrap();
        assert!(a.admit(None).is_none(), "in all");
        drop(t1);
        assert!(a.admit(Some(x)).is_some());
        drop((t2, t3));
        assert_eq!(a.waiting(), 0);
        assert!(a.state.lock().unwrap().by_address.is_empty());
    }
}
