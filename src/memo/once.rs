//! Compute-once: a table of the calls being computed, so concurrent callers of the same
//! missing call wait for one computation instead of each running it.

use std::collections::HashMap;
use std::hash::Hash;

use crate::sync::{Arc, Condvar, Mutex};

/// One computation in flight; waiters sleep until its leader lets go.
#[derive(Default)]
pub(crate) struct Slot {
    done: Mutex<bool>,
    finished: Condvar,
}

impl Slot {
    /// Waits until the computation finished (stored its result, failed or panicked).
    pub(crate) fn wait(&self) {
        let mut done = self.done.lock();
        while !*done {
            self.finished.wait(&mut done);
        }
    }
}

/// The calls (or keys) being computed.
pub(crate) struct InFlight<Q> {
    slots: Mutex<HashMap<Q, Arc<Slot>>>,
}

impl<Q> Default for InFlight<Q> {
    fn default() -> Self {
        InFlight {
            slots: Mutex::new(HashMap::new()),
        }
    }
}

/// What a caller should do.
pub(crate) enum Claim<'a, Q: Hash + Eq> {
    /// Compute it; the guard lets waiters go when it drops, even on a panic.
    Lead(Leader<'a, Q>),
    /// Someone else computes it: wait on this slot, then look again.
    Wait(Arc<Slot>),
}

/// The right to compute a call, released on drop.
pub(crate) struct Leader<'a, Q: Hash + Eq> {
    table: &'a InFlight<Q>,
    key: Q,
    slot: Arc<Slot>,
}

impl<Q: Hash + Eq> Drop for Leader<'_, Q> {
    fn drop(&mut self) {
        self.table.slots.lock().remove(&self.key);
        *self.slot.done.lock() = true;
        self.slot.finished.notify_all();
    }
}

impl<Q: Hash + Eq + Clone> InFlight<Q> {
    /// Claims `key`: the first caller leads, later ones wait.
    pub(crate) fn claim(&self, key: &Q) -> Claim<'_, Q> {
        let mut slots = self.slots.lock();
        if let Some(slot) = slots.get(key) {
            return Claim::Wait(Arc::clone(slot));
        }
        let slot = Arc::new(Slot::default());
        slots.insert(key.clone(), Arc::clone(&slot));
        Claim::Lead(Leader {
            table: self,
            key: key.clone(),
            slot,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memo::MemoKey;

    fn key(n: u8) -> MemoKey {
        MemoKey {
            name: "f".into(),
            version: 1,
            args: vec![n],
        }
    }

    #[test]
    fn the_first_claim_leads_and_later_ones_wait_until_it_drops() {
        let table = InFlight::<MemoKey>::default();
        let Claim::Lead(leader) = table.claim(&key(1)) else {
            panic!("the first claim must lead")
        };
        let Claim::Wait(slot) = table.claim(&key(1)) else {
            panic!("a second claim must wait")
        };
        assert!(
            matches!(table.claim(&key(2)), Claim::Lead(_)),
            "other keys are free"
        );
        let waiter = std::thread::spawn(move || slot.wait());
        drop(leader);
        waiter.join().unwrap();
        assert!(
            matches!(table.claim(&key(1)), Claim::Lead(_)),
            "released after the leader"
        );
    }

    #[test]
    fn a_panicking_leader_still_releases_its_waiters() {
        let table = Arc::new(InFlight::<MemoKey>::default());
        let t = Arc::clone(&table);
        let leader = std::thread::spawn(move || {
            let _claim = t.claim(&key(7));
            panic!("the computation fails");
        });
        assert!(leader.join().is_err());
        assert!(matches!(table.claim(&key(7)), Claim::Lead(_)));
    }
}
