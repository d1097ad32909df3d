//! Slowing password guesses, per client address and per user name, never globally. After a few
//! free failures, each further failure doubles the wait before the next attempt is checked (1 s
//! up to 60 s); an attempt inside the wait is answered 429 without checking anything (so it
//! costs no hashing). Failures are forgotten 15 minutes after the last one, and a success
//! forgets those of its address and user.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed without waiting, from one address and for one user name. A user name gets
/// more, so that guesses from elsewhere slow its owner later than they slow the guesser.
const FREE_PER_ADDR: u32 = 5;
const FREE_PER_USER: u32 = 10;
const MAX_WAIT: Duration = Duration::from_secs(60);
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Most addresses and users remembered; the longest quiet go first.
const MAX_ENTRIES: usize = 65_536;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Addr(IpAddr),
    User(String),
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    failures: u32,
    last: Instant,
}

impl Entry {
    /// How long after the last failure the next attempt must wait.
    fn wait(&self, free: u32) -> Duration {
        if self.failures < free {
            return Duration::ZERO;
        }
        let doublings = (self.failures - free).min(6);
        Duration::from_secs(1 << doublings).min(MAX_WAIT)
    }
}

/// The failures of recent logins.
#[derive(Debug, Default)]
pub struct Throttle {
    entries: Mutex<HashMap<Key, Entry>>,
}

/// An attempt refused before being checked: who is slowed, and for how long.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("too many failed logins {who}; try again in {} s", retry_after.as_secs().max(1))]
pub struct Slowed {
    pub who: String,
    pub retry_after: Duration,
}

impl Throttle {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether an attempt from `addr` for `user` may be checked now.
    pub fn check(&self, addr: Option<IpAddr>, user: &str) -> Result<(), Slowed> {
        self.check_at(addr, user, Instant::now())
    }

    fn check_at(&self, addr: Option<IpAddr>, user: &str, now: Instant) -> Result<(), Slowed> {
        let entries = self.lock();
        let mut slowest: Option<Slowed> = None;
        let keys = [
            addr.map(|a| (Key::Addr(a), FREE_PER_ADDR, format!("from {a}"))),
            Some((
                Key::User(user.to_string()),
                FREE_PER_USER,
                format!("for user {user}"),
            )),
        ];
        for (key, free, who) in keys.into_iter().flatten() {
            let Some(e) = entries.get(&key) else { continue };
            let until = e.last + e.wait(free);
            if until > now {
                let retry_after = until - now;
                if slowest.as_ref().is_none_or(|s| s.retry_after < retry_after) {
                    slowest = Some(Slowed { who, retry_after });
                }
            }
        }
        slowest.map_or(Ok(()), Err)
    }

    /// Records a failed check.
    pub fn failed(&self, addr: Option<IpAddr>, user: &str) {
        self.failed_at(addr, user, Instant::now());
    }

    fn failed_at(&self, addr: Option<IpAddr>, user: &str, now: Instant) {
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, e| now.duration_since(e.last) < FORGET_AFTER);
            if entries.len() >= MAX_ENTRIES
                && let Some(k) = entries
                    .iter()
                    .min_by_key(|(_, e)| e.last)
                    .map(|(k, _)| k.clone())
            {
                entries.remove(&k);
            }
        }
        for key in [addr.map(Key::Addr), Some(Key::User(user.to_string()))]
            .into_iter()
            .flatten()
        {
            let e = entries.entry(key).or_insert(Entry {
                failures: 0,
                last: now,
            });
            if now.duration_since(e.last) >= FORGET_AFTER {
                e.failures = 0;
            }
            e.failures = e.failures.saturating_add(1);
            e.last = now;
        }
    }

    /// Records a successful check: its address and user start afresh.
    pub fn succeeded(&self, addr: Option<IpAddr>, user: &str) {
        let mut entries = self.lock();
        if let Some(a) = addr {
            entries.remove(&Key::Addr(a));
        }
        entries.remove(&Key::User(user.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn an_address_is_slowed_after_its_free_failures_and_others_are_not() {
        let t = Throttle::default();
        let now = Instant::now();
        for i in 0..FREE_PER_ADDR {
            assert_eq!(t.check_at(ip("10.0.0.1"), &format!("u{i}"), now), Ok(()));
            t.failed_at(ip("10.0.0.1"), &format!("u{i}"), now);
        }
        let e = t.check_at(ip("10.0.0.1"), "someone", now).unwrap_err();
        assert_eq!(e.retry_after, Duration::from_secs(1));
        assert_eq!(
            e.to_string(),
            "too many failed logins from 10.0.0.1; try again in 1 s"
        );
        // Another address, and the same address a second later, are checked.
        assert_eq!(t.check_at(ip("10.0.0.2"), "someone", now), Ok(()));
        let later = now + Duration::from_secs(1);
        assert_eq!(t.check_at(ip("10.0.0.1"), "someone", later), Ok(()));
        // Each further failure doubles the wait, up to a minute.
        t.failed_at(ip("10.0.0.1"), "x", later);
        let e = t.check_at(ip("10.0.0.1"), "y", later).unwrap_err();
        assert_eq!(e.retry_after, Duration::from_secs(2));
        for _ in 0..20 {
            t.failed_at(ip("10.0.0.1"), "x", later);
        }
        let e = t.check_at(ip("10.0.0.1"), "y", later).unwrap_err();
        assert_eq!(e.retry_after, MAX_WAIT);
        // Forgotten after a quiet quarter of an hour.
        let much_later = later + FORGET_AFTER;
        assert_eq!(t.check_at(ip("10.0.0.1"), "y", much_later), Ok(()));
        t.failed_at(ip("10.0.0.1"), "y", much_later);
        assert_eq!(t.check_at(ip("10.0.0.1"), "z", much_later), Ok(()));
    }

    #[test]
    fn a_user_guessed_from_many_addresses_is_slowed() {
        let t = Throttle::default();
        let now = Instant::now();
        for i in 0..FREE_PER_USER {
            t.failed_at(ip(&format!("10.0.1.{i}")), "alice", now);
        }
        let e = t.check_at(ip("10.0.2.1"), "alice", now).unwrap_err();
        assert_eq!(e.who, "for user alice");
        assert_eq!(t.check_at(ip("10.0.2.1"), "bob", now), Ok(()));
        t.succeeded(ip("10.0.2.1"), "alice");
        assert_eq!(t.check_at(ip("10.0.2.1"), "alice", now), Ok(()));
    }
}
