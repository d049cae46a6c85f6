//! One slot of a shard: where a key's value is held, what the disk has of it, and its version.

use std::sync::{Arc, Weak};

/// Where a slot's value is held.
#[derive(Debug)]
pub(crate) enum Held<V> {
    /// In memory, counted against the budget with `weight` bytes.
    Memory { value: Arc<V>, weight: u64 },
    /// Evicted and queued for a background write: still served from memory, counted as
    /// in-flight bytes (not against the budget) until the write is done.
    Writing { value: Arc<V>, weight: u64 },
    /// Only on disk. `weak` still reaches the value while a caller holds an `Arc` of it, so a
    /// later `get` returns that same `Arc` instead of decoding a copy. (A key on disk only
    /// that nobody holds has no slot at all.)
    Disk { weak: Weak<V> },
    /// Removed: the key has no entry, but the removal of its stored copy is still queued. The
    /// tombstone stands in for the stored copy until the removal is done.
    Removed,
}

/// What the disk index holds for a slot's key, compared with the slot's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stored {
    /// Nothing: the key was never written (or its record was removed).
    Nothing,
    /// An older value (or a write of one may still be queued): the slot's value must be
    /// written before it can leave memory, and a removal must reach the disk.
    Stale,
    /// Exactly this value.
    Current,
}

/// A weak reference to a value leaving memory, for `get` to share while a caller still holds
/// it; a dangling one when nobody does (`ours` is how many references the chest itself holds).
/// A weak reference keeps the `Arc`'s allocation alive after the value is dropped: tens of
/// bytes per spilled entry, which for a million small values was tens of MiB.
pub(crate) fn shared_weak<V>(value: &Arc<V>, ours: usize) -> std::sync::Weak<V> {
    if Arc::strong_count(value) > ours {
        Arc::downgrade(value)
    } else {
        std::sync::Weak::new()
    }
}

/// One key's slot.
#[derive(Debug)]
pub(crate) struct Slot<V> {
    pub(crate) held: Held<V>,
    pub(crate) stored: Stored,
    /// Changes with every new value of the key (chest-wide counter), so a background write or
    /// a read from disk can tell whether the slot still holds the value it started from.
    pub(crate) version: u64,
}

impl<V> Slot<V> {
    /// The tombstone of a removed key whose stored copy's removal is queued (version
    /// `version`); a new value over it has a stale copy on disk.
    pub(crate) fn removed(version: u64) -> Self {
        Slot {
            held: Held::Removed,
            stored: Stored::Stale,
            version,
        }
    }

    /// The value, if some `Arc` of it is alive.
    pub(crate) fn live_value(&self) -> Option<Arc<V>> {
        match &self.held {
            Held::Memory { value, .. } | Held::Writing { value, .. } => Some(value.clone()),
            Held::Disk { weak } => weak.upgrade(),
            Held::Removed => None,
        }
    }

    /// The weight counted against the budget (0 unless in memory).
    pub(crate) fn memory_weight(&self) -> u64 {
        match self.held {
            Held::Memory { weight, .. } => weight,
            _ => 0,
        }
    }

    /// What the disk will hold for this key once queued writes are done, for the slot that
    /// replaces this one: anything ever written or queued makes it stale.
    pub(crate) fn stored_after_replace(&self) -> Stored {
        if self.stored == Stored::Nothing && !matches!(self.held, Held::Writing { .. }) {
            Stored::Nothing
        } else {
            Stored::Stale
        }
    }
}
