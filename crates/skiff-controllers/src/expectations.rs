//! Expectations: the writes a controller made that its cache does not show
//! yet.
//!
//! A controller that creates three pods and is woken again before the
//! informer has seen them would otherwise create three more. Upstream's
//! `ControllerExpectations` counts pending adds and deletes; Skiff records the
//! pod names instead (controllers name their pods themselves, see
//! [`crate::pods::generate_name`]), so a reconcile can count the pods it
//! asked for as present and the pods it deleted as gone, and never waits on a
//! counter that a lost event left unbalanced. An expectation the cache never
//! confirms expires after [`EXPECTATION_TTL`], as upstream's do.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an unconfirmed write is assumed in flight.
pub const EXPECTATION_TTL: Duration = Duration::from_secs(5 * 60);

/// Pending writes per owner (keyed by the owner's UID).
#[derive(Debug, Default)]
pub struct Expectations {
    owners: Mutex<HashMap<String, Pending>>,
}

#[derive(Debug, Default)]
struct Pending {
    creates: HashMap<String, Instant>,
    deletes: HashMap<String, Instant>,
}

/// What is still in flight for one owner after [`Expectations::settle`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct InFlight {
    /// Names created but not yet in the cache.
    pub creates: Vec<String>,
    /// Names deleted but still shown as live in the cache.
    pub deletes: Vec<String>,
}

impl Expectations {
    /// Records that `name` is being created for `owner`.
    pub fn expect_create(&self, owner: &str, name: &str) {
        self.with(owner, |p| {
            p.creates.insert(name.to_string(), Instant::now());
        });
    }

    /// Records that `name` is being deleted for `owner`.
    pub fn expect_delete(&self, owner: &str, name: &str) {
        self.with(owner, |p| {
            p.deletes.insert(name.to_string(), Instant::now());
        });
    }

    /// Drops an expectation whose write failed.
    pub fn write_failed(&self, owner: &str, name: &str) {
        self.with(owner, |p| {
            p.creates.remove(name);
            p.deletes.remove(name);
        });
    }

    /// Forgets an owner that is gone.
    pub fn forget(&self, owner: &str) {
        self.owners
            .lock()
            .expect("expectations poisoned")
            .remove(owner);
    }

    /// Drops what the cache now confirms (`live(name)` is true for a name the
    /// cache shows alive) and what expired, and returns what is left.
    pub fn settle(&self, owner: &str, live: impl Fn(&str) -> bool) -> InFlight {
        let now = Instant::now();
        let fresh = |at: &Instant| now.duration_since(*at) < EXPECTATION_TTL;
        let mut owners = self.owners.lock().expect("expectations poisoned");
        let Some(pending) = owners.get_mut(owner) else {
            return InFlight::default();
        };
        pending.creates.retain(|name, at| fresh(at) && !live(name));
        pending.deletes.retain(|name, at| fresh(at) && live(name));
        let mut in_flight = InFlight {
            creates: pending.creates.keys().cloned().collect(),
            deletes: pending.deletes.keys().cloned().collect(),
        };
        if pending.creates.is_empty() && pending.deletes.is_empty() {
            owners.remove(owner);
        }
        in_flight.creates.sort();
        in_flight.deletes.sort();
        in_flight
    }

    fn with(&self, owner: &str, f: impl FnOnce(&mut Pending)) {
        let mut owners = self.owners.lock().expect("expectations poisoned");
        f(owners.entry(owner.to_string()).or_default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_count_until_the_cache_confirms_them() {
        let expectations = Expectations::default();
        expectations.expect_create("rs", "a");
        expectations.expect_create("rs", "b");
        expectations.expect_delete("rs", "old");
        let in_flight = expectations.settle("rs", |name| name == "a" || name == "old");
        assert_eq!(in_flight.creates, ["b"]);
        assert_eq!(in_flight.deletes, ["old"]);
        let in_flight = expectations.settle("rs", |name| name == "a" || name == "b");
        assert_eq!(in_flight, InFlight::default());
    }

    #[test]
    fn failed_writes_and_forgotten_owners_leave_nothing_pending() {
        let expectations = Expectations::default();
        expectations.expect_create("rs", "a");
        expectations.write_failed("rs", "a");
        assert!(expectations.settle("rs", |_| false).creates.is_empty());
        expectations.expect_create("other", "x");
        expectations.forget("other");
        assert!(expectations.settle("other", |_| false).creates.is_empty());
    }
}
