//! Restart and image-pull back-off, with upstream's numbers.
//!
//! A key (pod uid + container or image) that fails waits 10 s before the next
//! attempt, then 20 s, 40 s... up to 5 min; a key that has not failed for
//! twice the maximum starts over from 10 s. As in upstream's
//! `flowcontrol.Backoff`, the first failure is retried at once: the entry is
//! created when a retry is made, and a later failure waits out its delay.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

/// The first delay.
pub const INITIAL: Duration = Duration::from_secs(10);
/// The longest delay.
pub const MAX: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy)]
struct Entry {
    delay: Duration,
    updated: SystemTime,
}

/// Back-off state per key.
#[derive(Debug, Default)]
pub struct Backoff {
    entries: HashMap<String, Entry>,
}

impl Backoff {
    /// How much longer `key` must wait after a failure at `failed_at`, or
    /// `None` if it may be retried now.
    pub fn remaining(&self, key: &str, failed_at: SystemTime, now: SystemTime) -> Option<Duration> {
        let entry = self.entries.get(key)?;
        if expired(entry, now) {
            return None;
        }
        let waited = now.duration_since(failed_at).unwrap_or_default();
        entry.delay.checked_sub(waited).filter(|d| !d.is_zero())
    }

    /// The delay `key` is currently at (for messages), if it has one.
    pub fn delay(&self, key: &str) -> Option<Duration> {
        self.entries.get(key).map(|e| e.delay)
    }

    /// Records a retry of `key` at `now`: the next failure waits twice as
    /// long as the previous one.
    pub fn step(&mut self, key: &str, now: SystemTime) {
        let delay = match self.entries.get(key) {
            Some(entry) if !expired(entry, now) => (entry.delay * 2).min(MAX),
            _ => INITIAL,
        };
        self.entries.insert(
            key.to_string(),
            Entry {
                delay,
                updated: now,
            },
        );
    }

    /// Forgets every key starting with `prefix` (a deleted pod's).
    pub fn forget_prefix(&mut self, prefix: &str) {
        self.entries.retain(|key, _| !key.starts_with(prefix));
    }
}

fn expired(entry: &Entry, now: SystemTime) -> bool {
    now.duration_since(entry.updated).unwrap_or_default() > MAX * 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
    }

    #[test]
    fn first_failure_retries_at_once_then_doubles_to_the_cap() {
        let mut backoff = Backoff::default();
        assert_eq!(backoff.remaining("c", at(0), at(0)), None);
        backoff.step("c", at(0));
        // Fails again at t=1: must wait 10 s from the failure.
        assert_eq!(
            backoff.remaining("c", at(1), at(5)),
            Some(Duration::from_secs(6))
        );
        assert_eq!(backoff.remaining("c", at(1), at(11)), None);
        backoff.step("c", at(11));
        assert_eq!(backoff.delay("c"), Some(Duration::from_secs(20)));
        let mut now = 11;
        for _ in 0..10 {
            now += 1;
            backoff.step("c", at(now));
        }
        assert_eq!(backoff.delay("c"), Some(MAX));
    }

    #[test]
    fn a_long_quiet_period_resets_the_delay() {
        let mut backoff = Backoff::default();
        backoff.step("c", at(0));
        backoff.step("c", at(1));
        assert_eq!(backoff.delay("c"), Some(Duration::from_secs(20)));
        assert_eq!(backoff.remaining("c", at(700), at(701)), None);
        backoff.step("c", at(702));
        assert_eq!(backoff.delay("c"), Some(INITIAL));
    }

    #[test]
    fn forget_prefix_drops_a_pods_keys() {
        let mut backoff = Backoff::default();
        backoff.step("uid1/a", at(0));
        backoff.step("uid2/a", at(0));
        backoff.forget_prefix("uid1/");
        assert_eq!(backoff.delay("uid1/a"), None);
        assert!(backoff.delay("uid2/a").is_some());
    }
}
