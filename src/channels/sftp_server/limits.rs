//! Login and session limits, kept free of sockets and clocks so they are
//! tested with made-up instants.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::config::LoginLimit;

/// Failed logins per source address: `max_failures` within `window` block
/// the address for `block` (every connection from it is refused at once).
#[derive(Debug)]
pub struct FailedLogins {
    limit: LoginLimit,
    by_addr: HashMap<IpAddr, Record>,
}

#[derive(Debug, Default)]
struct Record {
    failures: VecDeque<Instant>,
    blocked_until: Option<Instant>,
}

/// Addresses remembered at most; beyond this the oldest quiet ones are forgotten.
const MAX_TRACKED: usize = 100_000;

impl FailedLogins {
    pub fn new(limit: LoginLimit) -> FailedLogins {
        FailedLogins {
            limit,
            by_addr: HashMap::new(),
        }
    }

    /// How much longer `addr` stays blocked, if it is.
    pub fn blocked(&mut self, addr: IpAddr, now: Instant) -> Option<Duration> {
        let r = self.by_addr.get_mut(&addr)?;
        match r.blocked_until {
            Some(t) if t > now => Some(t - now),
            Some(_) => {
                r.blocked_until = None;
                r.failures.clear();
                None
            }
            None => None,
        }
    }

    /// Count a failed login; returns true when this failure blocks `addr`.
    pub fn fail(&mut self, addr: IpAddr, now: Instant) -> bool {
        if self.by_addr.len() >= MAX_TRACKED {
            let window = self.limit.window;
            self.by_addr.retain(|_, r| {
                r.blocked_until.is_some_and(|t| t > now)
                    || r.failures
                        .back()
                        .is_some_and(|t| now.duration_since(*t) < window)
            });
        }
        let r = self.by_addr.entry(addr).or_default();
        if r.blocked_until.is_some_and(|t| t > now) {
            return false;
        }
        while r
            .failures
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.limit.window)
        {
            r.failures.pop_front();
        }
        r.failures.push_back(now);
        if r.failures.len() >= self.limit.max_failures as usize {
            r.blocked_until = Some(now + self.limit.block);
            r.failures.clear();
            return true;
        }
        false
    }
}

/// Live sessions per partner. A [`SessionSlot`] is held for as long as a
/// session lives and gives its place back when dropped.
#[derive(Debug, Clone, Default)]
pub struct Sessions {
    live: Arc<Mutex<HashMap<String, usize>>>,
}

impl Sessions {
    /// Take a slot for `partner`, unless it already has `max` sessions.
    pub fn try_take(&self, partner: &str, max: usize) -> Option<SessionSlot> {
        let mut live = self.live.lock().ok()?;
        let n = live.entry(partner.to_string()).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(SessionSlot {
            sessions: self.clone(),
            partner: partner.to_string(),
        })
    }

    pub fn count(&self, partner: &str) -> usize {
        self.live
            .lock()
            .map(|l| l.get(partner).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

#[derive(Debug)]
pub struct SessionSlot {
    sessions: Sessions,
    partner: String,
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        if let Ok(mut live) = self.sessions.live.lock()
            && let Some(n) = live.get_mut(&self.partner)
        {
            *n = n.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_block_an_address_for_a_while() {
        let limit = LoginLimit {
            max_failures: 3,
            window: Duration::from_secs(60),
            block: Duration::from_secs(300),
        };
        let mut f = FailedLogins::new(limit);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        let s = Duration::from_secs;
        assert!(!f.fail(a, t0));
        assert!(!f.fail(a, t0 + s(10)));
        assert_eq!(f.blocked(a, t0 + s(11)), None);
        // Failures older than the window do not count.
        assert!(!f.fail(a, t0 + s(65)));
        assert_eq!(f.blocked(a, t0 + s(66)), None);
        assert!(f.fail(a, t0 + s(69)));
        assert_eq!(f.blocked(a, t0 + s(70)), Some(s(299)));
        // Another address is not affected.
        assert_eq!(f.blocked(b, t0 + s(70)), None);
        // Blocked: further failures do not extend the block.
        assert!(!f.fail(a, t0 + s(100)));
        assert_eq!(f.blocked(a, t0 + s(369)), None);
        // After the block, a fresh start.
        assert!(!f.fail(a, t0 + s(370)));
        assert_eq!(f.blocked(a, t0 + s(371)), None);
    }

    #[test]
    fn sessions_are_capped_per_partner_and_given_back() {
        let s = Sessions::default();
        let a1 = s.try_take("a", 2).unwrap();
        let _a2 = s.try_take("a", 2).unwrap();
        assert!(s.try_take("a", 2).is_none());
        let _b = s.try_take("b", 2).unwrap();
        drop(a1);
        assert_eq!(s.count("a"), 1);
        assert!(s.try_take("a", 2).is_some());
    }
}
