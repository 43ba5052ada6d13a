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
    /// Password checks running now: they count against the limit before
    /// their answer, so parallel connections cannot try more than it allows.
    checking: u32,
}

/// Why a login attempt is not even checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotChecked {
    /// The address is blocked after failed logins.
    Blocked,
    /// Failed logins and checks in progress already reach the limit.
    AtLimit,
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

    /// Start checking a login from `addr`, unless it is blocked or the
    /// failures and the checks in progress already reach the limit. Every
    /// `Ok` must be followed by [`FailedLogins::end_check`].
    pub fn begin_check(&mut self, addr: IpAddr, now: Instant) -> Result<(), NotChecked> {
        if self.blocked(addr, now).is_some() {
            return Err(NotChecked::Blocked);
        }
        let window = self.limit.window;
        let max = self.limit.max_failures as usize;
        let r = self.by_addr.entry(addr).or_default();
        while r
            .failures
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            r.failures.pop_front();
        }
        if r.failures.len() + r.checking as usize >= max {
            return Err(NotChecked::AtLimit);
        }
        r.checking += 1;
        Ok(())
    }

    /// A check begun with [`FailedLogins::begin_check`] ended; a failure is
    /// counted (true: it blocks `addr`), a success clears the address.
    pub fn end_check(&mut self, addr: IpAddr, now: Instant, ok: bool) -> bool {
        if let Some(r) = self.by_addr.get_mut(&addr) {
            r.checking = r.checking.saturating_sub(1);
        }
        if ok {
            self.succeeded(addr);
            false
        } else {
            self.fail(addr, now)
        }
    }

    /// A successful login clears the address's failures (not a block).
    pub fn succeeded(&mut self, addr: IpAddr) {
        if let Some(r) = self.by_addr.get_mut(&addr) {
            r.failures.clear();
        }
    }

    /// Count a failed login; returns true when this failure blocks `addr`.
    pub fn fail(&mut self, addr: IpAddr, now: Instant) -> bool {
        if self.by_addr.len() >= MAX_TRACKED {
            let window = self.limit.window;
            self.by_addr.retain(|_, r| {
                r.checking > 0
                    || r.blocked_until.is_some_and(|t| t > now)
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

/// Connections that have not logged in yet, per address and in total. A
/// [`PreAuthSlot`] is held from accept until the login (or the end of the
/// connection).
#[derive(Debug, Clone, Default)]
pub struct PreAuth {
    live: Arc<Mutex<(HashMap<IpAddr, usize>, usize)>>,
}

/// Why a new connection is closed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreAuthFull {
    Address,
    Total,
}

impl PreAuth {
    pub fn try_take(
        &self,
        addr: IpAddr,
        per_address: usize,
        total: usize,
    ) -> Result<PreAuthSlot, PreAuthFull> {
        let Ok(mut live) = self.live.lock() else {
            return Err(PreAuthFull::Total);
        };
        let (by_addr, all) = &mut *live;
        if *all >= total {
            return Err(PreAuthFull::Total);
        }
        let n = by_addr.entry(addr).or_insert(0);
        if *n >= per_address {
            return Err(PreAuthFull::Address);
        }
        *n += 1;
        *all += 1;
        Ok(PreAuthSlot {
            pre_auth: self.clone(),
            addr,
        })
    }
}

#[derive(Debug)]
pub struct PreAuthSlot {
    pre_auth: PreAuth,
    addr: IpAddr,
}

impl Drop for PreAuthSlot {
    fn drop(&mut self) {
        if let Ok(mut live) = self.pre_auth.live.lock() {
            let (by_addr, all) = &mut *live;
            *all = all.saturating_sub(1);
            if let Some(n) = by_addr.get_mut(&self.addr) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    by_addr.remove(&self.addr);
                }
            }
        }
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
    fn checks_in_progress_count_against_the_limit() {
        let limit = LoginLimit {
            max_failures: 3,
            window: Duration::from_secs(60),
            block: Duration::from_secs(300),
        };
        let mut f = FailedLogins::new(limit);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        // Three parallel checks; a fourth is not even begun.
        for _ in 0..3 {
            assert_eq!(f.begin_check(a, t0), Ok(()));
        }
        assert_eq!(f.begin_check(a, t0), Err(NotChecked::AtLimit));
        // One succeeds: it clears the failures, and its place is free.
        assert!(!f.end_check(a, t0, true));
        assert_eq!(f.begin_check(a, t0), Ok(()));
        // Three failures: the third blocks.
        assert!(!f.end_check(a, t0, false));
        assert!(!f.end_check(a, t0, false));
        assert!(f.end_check(a, t0, false));
        assert_eq!(f.begin_check(a, t0), Err(NotChecked::Blocked));
    }

    #[test]
    fn a_success_clears_the_failures() {
        let limit = LoginLimit {
            max_failures: 3,
            window: Duration::from_secs(60),
            block: Duration::from_secs(300),
        };
        let mut f = FailedLogins::new(limit);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..10 {
            assert!(!f.fail(a, t0));
            assert!(!f.fail(a, t0));
            f.succeeded(a);
        }
        assert_eq!(f.blocked(a, t0), None);
    }

    #[test]
    fn unauthenticated_connections_are_capped() {
        let p = PreAuth::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = p.try_take(a, 2, 3).unwrap();
        let _a2 = p.try_take(a, 2, 3).unwrap();
        assert_eq!(p.try_take(a, 2, 3).err(), Some(PreAuthFull::Address));
        let _b1 = p.try_take(b, 2, 3).unwrap();
        assert_eq!(p.try_take(b, 2, 3).err(), Some(PreAuthFull::Total));
        drop(a1);
        assert!(p.try_take(b, 2, 3).is_ok());
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
