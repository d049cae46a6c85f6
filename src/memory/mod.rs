//! The in-memory tier of one shard: its slots, its part of the index of stored copies, and its
//! eviction order.
//!
//! A chest has several shards (keys are spread by hash); each is a `MemoryTier` behind its
//! own mutex. A shard holds two maps. `stored` says where the disk holds each key's stored
//! copy (the shard's part of the disk index). `slots` holds what memory knows beyond that: a
//! value in memory or being written, a weak reference to a spilled value a caller still holds,
//! or a removal not yet on disk (a tombstone). A key without a slot is exactly its stored copy
//! (on disk only), so a million spilled keys cost a million `stored` entries and no slots.
//!
//! Every change keeps these invariants: `memory_bytes` is the sum of the weights of
//! `Held::Memory` slots, the eviction order holds exactly their keys, `on_disk` counts the
//! slots whose current value the disk holds, `writing` the `Held::Writing` ones, `removed` the
//! tombstones, and `covered` the keys that have both a slot and a stored copy (so the number
//! of entries is the live slots plus the stored copies no slot covers). Most changes take the
//! old slot out of the tally and count the new one; the hot transitions (eviction, a finished
//! write) change a slot in place and adjust just the counts they move. Unit tests recompute
//! the tally from the maps after every step. The chest-wide byte count (against the budget) is
//! kept by the chest, from the weights these methods report.

mod entry;
mod order;

use std::collections::hash_map::Entry;
use std::hash::Hash;

use crate::disk::{DiskLoc, PackedLoc};
use crate::hash::Map;
use std::sync::Arc;

pub(crate) use entry::{Held, Slot, Stored, shared_weak};
use order::EvictionOrder;
pub use order::Policy;

/// What a value read from disk without the shard lock was read for, so that under the lock
/// it can be told whether the value is still the key's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadFrom {
    /// The key's slot, at this version.
    Slot(u64),
    /// The key's stored copy, the write with this sequence number (the key had no slot).
    Stored(u64),
}

impl ReadFrom {
    /// The same source, once the write `seq` was read (the stored copy may have moved on to a
    /// newer write between the look and the read).
    pub(crate) fn read(self, seq: u64) -> Self {
        match self {
            ReadFrom::Stored(_) => ReadFrom::Stored(seq),
            slot => slot,
        }
    }
}

/// What [`MemoryTier::take_victim`] did with a victim.
pub(crate) enum Victim<K, V> {
    /// Its disk copy was current: it left memory at once.
    Clean { weight: u64 },
    /// It must be written: it is now `Writing`, and the caller queues the write.
    Dirty {
        key: K,
        value: Arc<V>,
        weight: u64,
        version: u64,
    },
}

/// One shard's slots, with the accounting of what memory holds.
#[derive(Debug)]
pub(crate) struct MemoryTier<K: Hash + Eq, V> {
    slots: Map<K, Slot<V>>,
    /// Where the disk holds each key's stored copy (packed: 24 bytes a place).
    stored: Map<K, PackedLoc>,
    tally: Tally<K>,
}

/// The accounting of a shard's slots, kept apart from them so that a slot can be changed in
/// place (one hash lookup) while the accounting follows.
#[derive(Debug)]
struct Tally<K: Hash + Eq> {
    order: EvictionOrder<K>,
    memory_bytes: u64,
    /// Slots whose current value the disk holds.
    on_disk: u64,
    /// Slots whose value waits for (or is in) a background write.
    writing: u64,
    /// Tombstones: slots of keys removed in memory whose removal has not reached the disk.
    removed: u64,
    /// Keys with both a slot and a stored copy.
    covered: u64,
}

impl<K: Hash + Eq + Clone> Tally<K> {
    /// Takes a slot out of the counts (not out of the eviction order: see
    /// [`reorder`](Self::reorder)).
    fn uncount<V>(&mut self, slot: &Slot<V>) {
        let (weight, current) = account(slot);
        self.memory_bytes -= weight;
        if current {
            self.on_disk -= 1;
        }
        match slot.held {
            Held::Writing { .. } => self.writing -= 1,
            Held::Removed => self.removed -= 1,
            _ => {}
        }
    }

    /// Puts a slot in the counts.
    fn count<V>(&mut self, slot: &Slot<V>) {
        let (weight, current) = account(slot);
        self.memory_bytes += weight;
        if current {
            self.on_disk += 1;
        }
        match slot.held {
            Held::Writing { .. } => self.writing += 1,
            Held::Removed => self.removed += 1,
            _ => {}
        }
    }

    /// Tells the eviction order that `key`'s slot changed from `before` to `after` (each a
    /// weight held in memory, or `None`). A value that stays in memory keeps its place unless
    /// the change is a new value (`used`: an overwrite counts as a use) or its weight
    /// changed; a change of what the disk holds (a flush, a finished write) is not a use.
    fn reorder(&mut self, key: &K, before: Option<u64>, after: Option<u64>, used: bool) {
        match (before, after) {
            (Some(_), None) => self.order.remove(key),
            (None, Some(weight)) => self.order.admit(key.clone(), weight),
            (Some(old), Some(weight)) if used || old != weight => {
                self.order.admit(key.clone(), weight);
            }
            _ => {}
        }
    }
}

/// What a slot counts for.
fn account<V>(slot: &Slot<V>) -> (u64, bool) {
    (slot.memory_weight(), slot.stored == Stored::Current)
}

/// The weight of a slot's value if it is held in memory (so in the eviction order).
fn held_weight<V>(slot: &Slot<V>) -> Option<u64> {
    match slot.held {
        Held::Memory { weight, .. } => Some(weight),
        _ => None,
    }
}

impl<K: Hash + Eq + Clone, V> MemoryTier<K, V> {
    /// An empty shard.
    #[cfg(test)]
    pub(crate) fn new(policy: Policy) -> Self {
        Self::with_stored(policy, Map::default())
    }

    /// A shard of keys on disk only: `stored` says where each key's stored copy is.
    pub(crate) fn with_stored(policy: Policy, stored: Map<K, PackedLoc>) -> Self {
        MemoryTier {
            slots: Map::default(),
            stored,
            tally: Tally {
                order: EvictionOrder::new(policy),
                memory_bytes: 0,
                on_disk: 0,
                writing: 0,
                removed: 0,
                covered: 0,
            },
        }
    }

    /// `key`'s slot, if it has one (a key without one is on disk only, or absent).
    pub(crate) fn get(&self, key: &K) -> Option<&Slot<V>> {
        self.slots.get(key)
    }

    /// Where the disk holds `key`'s stored copy.
    pub(crate) fn stored_at(&self, key: &K) -> Option<DiskLoc> {
        self.stored.get(key).map(DiskLoc::from)
    }

    /// Records where the disk holds `key`'s stored copy (`None`: it holds none).
    pub(crate) fn set_stored(&mut self, key: &K, loc: Option<DiskLoc>) {
        let changed = match loc {
            Some(loc) => match self.stored.get_mut(key) {
                Some(place) => {
                    *place = loc.into();
                    false
                }
                None => {
                    self.stored.insert(key.clone(), loc.into());
                    true
                }
            },
            None => self.stored.remove(key).is_some(),
        };
        if changed && self.slots.contains_key(key) {
            if loc.is_some() {
                self.tally.covered += 1;
            } else {
                self.tally.covered -= 1;
            }
        }
    }

    /// Every stored copy of this shard's keys.
    pub(crate) fn stored(&self) -> impl Iterator<Item = (&K, DiskLoc)> {
        self.stored
            .iter()
            .map(|(key, loc)| (key, DiskLoc::from(loc)))
    }

    /// Stored copies in this shard.
    pub(crate) fn stored_count(&self) -> usize {
        self.stored.len()
    }

    /// Sets `key`'s slot, returning the one it replaces. A new value over one held in memory
    /// counts as a use of the key.
    pub(crate) fn put(&mut self, key: K, slot: Slot<V>) -> Option<Slot<V>> {
        self.replace(key, |_| slot)
    }

    /// Sets `key`'s slot to the one `make` builds, given what the disk will hold for the new
    /// value (see [`Slot::stored_after_replace`]; a key on disk only has a stale copy), and
    /// returns the slot it replaces, as [`put`](Self::put) does.
    pub(crate) fn replace(
        &mut self,
        key: K,
        make: impl FnOnce(Stored) -> Slot<V>,
    ) -> Option<Slot<V>> {
        match self.slots.entry(key) {
            Entry::Occupied(mut e) => {
                let slot = make(e.get().stored_after_replace());
                let before = held_weight(e.get());
                self.tally.uncount(e.get());
                self.tally.count(&slot);
                self.tally
                    .reorder(e.key(), before, held_weight(&slot), true);
                Some(std::mem::replace(e.get_mut(), slot))
            }
            Entry::Vacant(e) => {
                let on_disk = self.stored.contains_key(e.key());
                let slot = make(if on_disk {
                    Stored::Stale
                } else {
                    Stored::Nothing
                });
                self.tally.covered += u64::from(on_disk);
                self.tally.count(&slot);
                self.tally.reorder(e.key(), None, held_weight(&slot), true);
                e.insert(slot);
                None
            }
        }
    }

    /// Drops `key`'s slot: the key is then its stored copy, or absent without one.
    pub(crate) fn remove(&mut self, key: &K) -> Option<Slot<V>> {
        let old = self.slots.remove(key)?;
        self.tally.uncount(&old);
        self.tally.reorder(key, held_weight(&old), None, false);
        self.tally.covered -= u64::from(self.stored.contains_key(key));
        Some(old)
    }

    /// True when `key` has an entry: a live slot, or a stored copy and no slot.
    pub(crate) fn exists(&self, key: &K) -> bool {
        match self.slots.get(key) {
            Some(slot) => !matches!(slot.held, Held::Removed),
            None => self.stored.contains_key(key),
        }
    }

    /// A removal of `key` (its tombstone `version`) reached the disk: the tombstone goes.
    pub(crate) fn removal_done(&mut self, key: &K, version: u64) {
        if self
            .slots
            .get(key)
            .is_some_and(|s| s.version == version && matches!(s.held, Held::Removed))
        {
            self.remove(key);
        }
    }

    /// Drops `key`'s slot when it only holds a weak reference nobody else holds any more: the
    /// key is its stored copy again.
    pub(crate) fn drop_dead_weak(&mut self, key: &K) {
        if let Some(Slot {
            held: Held::Disk { weak },
            stored: Stored::Current,
            ..
        }) = self.slots.get(key)
            && weak.strong_count() == 0
        {
            self.remove(key);
        }
    }

    /// Changes `key`'s slot with `f`, keeping the accounting; `None` when the key is absent.
    /// A value that stays in memory with the same weight keeps its place in the eviction order.
    pub(crate) fn update<R>(&mut self, key: &K, f: impl FnOnce(&mut Slot<V>) -> R) -> Option<R> {
        let slot = self.slots.get_mut(key)?;
        let before = held_weight(slot);
        self.tally.uncount(slot);
        let result = f(slot);
        self.tally.count(slot);
        self.tally.reorder(key, before, held_weight(slot), false);
        Some(result)
    }

    /// Notes that the disk holds, or may come to hold, an older value of `key` (a flush queued
    /// a write of the value in memory; a removal of the key's record failed): a slot the disk
    /// held nothing for becomes `Stale`, which the slot replacing it inherits (see
    /// [`Slot::stored_after_replace`]), so a later removal reaches the disk and the old value
    /// never comes back at reopen. Not a use: the eviction order is left alone.
    pub(crate) fn note_disk_may_hold(&mut self, key: &K) {
        if let Some(slot) = self.slots.get_mut(key)
            && slot.stored == Stored::Nothing
        {
            slot.stored = Stored::Stale;
        }
    }

    /// Records a use of `key`.
    pub(crate) fn touch(&mut self, key: &K) {
        if let Some(Slot {
            held: Held::Memory { weight, .. },
            ..
        }) = self.slots.get(key)
        {
            self.tally.order.touch(key, *weight);
        }
    }

    /// The priority of the next victim (higher leaves first; comparable between shards).
    pub(crate) fn peek_priority(&self) -> Option<u64> {
        self.tally.order.peek_priority()
    }

    /// The weight of the next victim and whether it must be written first.
    pub(crate) fn peek_victim(&self) -> Option<(u64, bool)> {
        let key = self.tally.order.peek()?;
        let slot = self.slots.get(key)?;
        Some((slot.memory_weight(), slot.stored != Stored::Current))
    }

    /// Takes the next victim out of memory: a clean one goes to disk only (see
    /// [`leave_for_disk`](Self::leave_for_disk)), a dirty one becomes `Writing` (the caller
    /// must queue its write).
    pub(crate) fn take_victim(&mut self) -> Option<Victim<K, V>> {
        let (key, _) = self.tally.order.pop()?;
        let slot = self.slots.get_mut(&key)?;
        let Held::Memory { value, weight } = std::mem::replace(&mut slot.held, Held::Removed)
        else {
            debug_assert!(false, "a key in the eviction order is not in memory");
            return None;
        };
        self.tally.memory_bytes -= weight;
        if slot.stored == Stored::Current {
            // The slot's held value is counted nowhere while `Removed` stands in for it.
            slot.held = Held::Disk {
                weak: std::sync::Weak::new(),
            };
            self.leave_for_disk(&key, shared_weak(&value, 1));
            return Some(Victim::Clean { weight });
        }
        self.tally.writing += 1;
        slot.held = Held::Writing {
            value: value.clone(),
            weight,
        };
        Some(Victim::Dirty {
            key,
            value,
            weight,
            version: slot.version,
        })
    }

    /// `key`'s slot (`Held::Disk`, its value current on disk) had its value leave memory: the
    /// slot keeps `weak` when a caller still holds the value (see [`shared_weak`]), so a
    /// `get` returns the same `Arc`, and otherwise goes, leaving the key on disk only.
    fn leave_for_disk(&mut self, key: &K, weak: std::sync::Weak<V>) {
        if weak.strong_count() > 0 || !self.stored.contains_key(key) {
            debug_assert!(
                self.stored.contains_key(key),
                "a value current on disk has a stored copy"
            );
            if let Some(slot) = self.slots.get_mut(key) {
                slot.held = Held::Disk { weak };
            }
        } else {
            self.remove(key);
        }
    }

    /// `key`'s new value (`version`) was written straight to disk (its stored copy already
    /// recorded): the key is on disk only, keeping `weak` as [`leave_for_disk`] does. Returns
    /// the slot replaced.
    ///
    /// [`leave_for_disk`]: Self::leave_for_disk
    pub(crate) fn now_on_disk(
        &mut self,
        key: K,
        version: u64,
        weak: std::sync::Weak<V>,
    ) -> Option<Slot<V>> {
        let old = self.put(
            key.clone(),
            Slot {
                held: Held::Disk {
                    weak: std::sync::Weak::new(),
                },
                stored: Stored::Current,
                version,
            },
        );
        self.leave_for_disk(&key, weak);
        old
    }

    /// What the disk will hold for a new value of `key` (see [`Slot::stored_after_replace`]):
    /// a key on disk only has a stale copy then.
    pub(crate) fn stored_after_replace(&self, key: &K) -> Stored {
        match self.slots.get(key) {
            Some(slot) => slot.stored_after_replace(),
            None if self.stored.contains_key(key) => Stored::Stale,
            None => Stored::Nothing,
        }
    }

    /// A queued write of `key`'s evicted value `version` is done: `Writing` goes to disk
    /// (written; see [`leave_for_disk`](Self::leave_for_disk)) or becomes `Memory` again
    /// (failed; returns the weight now back in memory).
    pub(crate) fn write_done(&mut self, key: &K, version: u64, written: bool) -> u64 {
        let Some(slot) = self.slots.get_mut(key) else {
            return 0;
        };
        if slot.version != version {
            return 0;
        }
        if written && slot.stored != Stored::Current {
            slot.stored = Stored::Current;
            self.tally.on_disk += 1;
        }
        let Held::Writing { value, weight } = std::mem::replace(
            &mut slot.held,
            Held::Disk {
                weak: std::sync::Weak::new(),
            },
        ) else {
            debug_assert!(
                false,
                "a write of an evicted value finished on a slot not Writing"
            );
            return 0;
        };
        self.tally.writing -= 1;
        if written {
            // The finished job holds one more reference besides this slot's.
            self.leave_for_disk(key, shared_weak(&value, 2));
            return 0;
        }
        slot.held = Held::Memory { value, weight };
        self.tally.memory_bytes += weight;
        self.tally.order.admit(key.clone(), weight);
        weight
    }

    /// A flush's write of `key`'s value `version` (left in memory) is done: the disk now holds
    /// it. Not a use: the key keeps its place in the eviction order.
    pub(crate) fn mark_written(&mut self, key: &K, version: u64) {
        if let Some(slot) = self.slots.get_mut(key)
            && slot.version == version
            && slot.stored != Stored::Current
        {
            slot.stored = Stored::Current;
            self.tally.on_disk += 1;
        }
    }

    /// What a read of `key` without the lock starts from: its slot's version, or (no slot)
    /// its stored copy's write; `None` when the key has no entry.
    pub(crate) fn read_from(&self, key: &K) -> Option<ReadFrom> {
        match self.slots.get(key) {
            Some(Slot {
                held: Held::Removed,
                ..
            }) => None,
            Some(slot) => Some(ReadFrom::Slot(slot.version)),
            None => self.stored_at(key).map(|loc| ReadFrom::Stored(loc.seq)),
        }
    }

    /// True when a value read from disk is still `key`'s value: its slot still has the
    /// version it had, on disk only, or the key still has no slot and its stored copy is
    /// still the write read.
    fn still_on_disk(&self, key: &K, from: ReadFrom) -> bool {
        match (self.slots.get(key), from) {
            (Some(slot), ReadFrom::Slot(version)) => {
                slot.version == version && matches!(slot.held, Held::Disk { .. })
            }
            (None, ReadFrom::Stored(seq)) => self.stored_at(key).is_some_and(|l| l.seq == seq),
            _ => false,
        }
    }

    /// Holds a value read back from disk in memory when it is still the key's value (see
    /// `still_on_disk`); a key without a slot gets one of version `fresh`. False (nothing
    /// changed) otherwise.
    pub(crate) fn promote(
        &mut self,
        key: &K,
        from: ReadFrom,
        fresh: u64,
        value: Arc<V>,
        weight: u64,
    ) -> bool {
        self.hold_read(key, from, fresh, Held::Memory { value, weight })
    }

    /// Keeps a weak reference to a value read back from disk but not held in memory, when it
    /// is still the key's value (a key without a slot gets one of version `fresh`).
    pub(crate) fn share(&mut self, key: &K, from: ReadFrom, fresh: u64, value: &Arc<V>) {
        let weak = Arc::downgrade(value);
        self.hold_read(key, from, fresh, Held::Disk { weak });
    }

    /// Sets what `key`'s slot holds of a value read back from disk, when it is still the key's
    /// value: a key without a slot gets one (version `fresh`, current on disk).
    fn hold_read(&mut self, key: &K, from: ReadFrom, fresh: u64, held: Held<V>) -> bool {
        if !self.still_on_disk(key, from) {
            return false;
        }
        match from {
            ReadFrom::Stored(_) => {
                self.put(
                    key.clone(),
                    Slot {
                        held,
                        stored: Stored::Current,
                        version: fresh,
                    },
                );
            }
            ReadFrom::Slot(_) => {
                self.update(key, |slot| slot.held = held);
            }
        }
        true
    }

    /// Every key with an entry: live slots, then stored copies without a slot.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &K> {
        let live = self
            .slots
            .iter()
            .filter(|(_, slot)| !matches!(slot.held, Held::Removed))
            .map(|(key, _)| key);
        let disk_only = self
            .stored
            .keys()
            .filter(|key| !self.slots.contains_key(*key));
        live.chain(disk_only)
    }

    /// Every slot (values in memory, weak references, tombstones).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &Slot<V>)> {
        self.slots.iter()
    }

    /// Entries: live slots plus stored copies without a slot.
    pub(crate) fn len(&self) -> usize {
        self.slots.len() + self.stored.len() - (self.tally.removed + self.tally.covered) as usize
    }

    /// Slots whose value is in memory: counted against the budget, or waiting for a write.
    pub(crate) fn in_memory(&self) -> usize {
        self.tally.order.len() + self.tally.writing as usize
    }

    /// Entries whose current value the disk holds.
    pub(crate) fn on_disk(&self) -> u64 {
        self.tally.on_disk + self.stored.len() as u64 - self.tally.covered
    }

    /// Recomputes the tally from the slots and checks it (tests).
    #[cfg(test)]
    fn check_tally(&self) {
        let mut memory = (0, 0);
        let (mut on_disk, mut writing, mut removed, mut covered) = (0, 0, 0, 0);
        for (key, slot) in &self.slots {
            if let Held::Memory { weight, .. } = slot.held {
                memory = (memory.0 + weight, memory.1 + 1);
            }
            on_disk += u64::from(slot.stored == Stored::Current);
            writing += u64::from(matches!(slot.held, Held::Writing { .. }));
            removed += u64::from(matches!(slot.held, Held::Removed));
            covered += u64::from(self.stored.contains_key(key));
        }
        let entries = self
            .slots
            .values()
            .filter(|s| !matches!(s.held, Held::Removed))
            .count()
            + self
                .stored
                .keys()
                .filter(|k| !self.slots.contains_key(*k))
                .count();
        assert_eq!((entries, self.keys().count()), (self.len(), self.len()));
        assert_eq!(
            (memory.0, memory.1, on_disk, writing, removed, covered),
            (
                self.tally.memory_bytes,
                self.tally.order.len(),
                self.tally.on_disk,
                self.tally.writing,
                self.tally.removed,
                self.tally.covered,
            )
        );
    }

    /// The weights of this shard's in-memory values (the chest keeps the chest-wide count).
    #[cfg(test)]
    pub(crate) fn memory_bytes(&self) -> u64 {
        self.tally.memory_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hot(v: u32, weight: u64, version: u64) -> Slot<u32> {
        Slot {
            held: Held::Memory {
                value: Arc::new(v),
                weight,
            },
            stored: Stored::Nothing,
            version,
        }
    }

    #[test]
    fn accounting_follows_every_transition() {
        let mut m = MemoryTier::new(Policy::Lru);
        m.put("a", hot(1, 10, 1));
        m.put("b", hot(2, 20, 2));
        assert_eq!((m.memory_bytes(), m.in_memory()), (30, 2));
        m.put("a", hot(3, 5, 3));
        assert_eq!((m.memory_bytes(), m.in_memory()), (25, 2));
        // "b" is the least recently used: it leaves first and must be written.
        let Some(Victim::Dirty { key, version, .. }) = m.take_victim() else {
            panic!("b has no disk copy: it is dirty");
        };
        assert_eq!((key, version), ("b", 2));
        // Out of the budget, but still in memory until written.
        assert_eq!((m.memory_bytes(), m.in_memory()), (5, 2));
        assert!(
            m.get(&"b").unwrap().live_value().is_some(),
            "served while writing"
        );
        // The writer records the stored copy, then the slot learns the outcome: nobody else
        // holds b's value, so b keeps no slot and is on disk only.
        m.set_stored(&"b", Some(loc(40)));
        assert_eq!(m.write_done(&"b", 2, true), 0);
        assert_eq!((m.on_disk(), m.len()), (1, 2));
        assert!(m.get(&"b").is_none() && m.exists(&"b"));
        // A failed write puts the value back in memory.
        let Some(Victim::Dirty { key, version, .. }) = m.take_victim() else {
            panic!("a is dirty");
        };
        assert_eq!(m.write_done(&key, version, false), 5);
        assert_eq!((m.memory_bytes(), m.in_memory()), (5, 1));
        // A write of an older version changes nothing.
        m.put("a", hot(4, 7, 9));
        assert_eq!(m.write_done(&"a", 3, true), 0);
        assert_eq!(m.get(&"a").unwrap().version, 9);
        assert_eq!(m.memory_bytes(), 7);
        // Promotion only of the write read.
        assert_eq!(m.read_from(&"b"), Some(ReadFrom::Stored(40)));
        assert!(!m.promote(&"b", ReadFrom::Stored(39), 10, Arc::new(2), 20));
        assert!(!m.promote(&"b", ReadFrom::Slot(2), 10, Arc::new(2), 20));
        assert!(m.promote(&"b", ReadFrom::Stored(40), 10, Arc::new(2), 20));
        assert_eq!(m.get(&"b").unwrap().version, 10);
        assert_eq!((m.memory_bytes(), m.in_memory(), m.on_disk()), (27, 2, 1));
        // A clean victim leaves without a write.
        let mut seen_clean = false;
        while let Some(v) = m.take_victim() {
            if let Victim::Clean { weight } = v {
                assert_eq!(weight, 20);
                seen_clean = true;
            }
        }
        assert!(seen_clean);
        assert!(
            m.get(&"b").is_none(),
            "a clean victim nobody holds keeps no slot"
        );
        m.remove(&"a");
        assert_eq!((m.len(), m.on_disk()), (1, 1), "b is still on disk");
        // A removal: the tombstone hides the stored copy until the removal is done.
        m.put("b", Slot::removed(50));
        assert_eq!((m.len(), m.exists(&"b")), (0, false));
        m.set_stored(&"b", None);
        m.removal_done(&"b", 50);
        assert!(m.get(&"b").is_none());
        assert_eq!(
            (m.memory_bytes(), m.in_memory(), m.len(), m.on_disk()),
            (0, 0, 0, 0)
        );
        m.check_tally();
    }

    fn loc(seq: u64) -> DiskLoc {
        DiskLoc {
            place: crate::disk::Place::File,
            seq,
            raw_len: 1,
            stored_len: 1,
        }
    }

    #[test]
    fn a_read_of_an_older_write_is_not_held_once_another_read_gave_the_key_a_slot() {
        let mut m: MemoryTier<&str, u32> = MemoryTier::new(Policy::Lru);
        m.set_stored(&"k", Some(loc(1)));
        // One reader starts from the stored copy of write 1...
        let first = m.read_from(&"k").unwrap();
        // ...meanwhile the key gets write 2, and a second read of it keeps a weak reference.
        m.set_stored(&"k", Some(loc(2)));
        let second = m.read_from(&"k").unwrap();
        let held = Arc::new(2);
        m.share(&"k", second.read(2), 7, &held);
        assert_eq!(m.read_from(&"k"), Some(ReadFrom::Slot(7)));
        // The first reader's value (write 1) must not become the key's value in memory.
        assert!(!m.promote(&"k", first.read(1), 8, Arc::new(1), 4));
        assert!(matches!(m.get(&"k").unwrap().held, Held::Disk { .. }));
        m.check_tally();
    }

    #[test]
    fn a_value_a_caller_still_holds_keeps_a_weak_slot_and_a_dead_one_goes() {
        let mut m = MemoryTier::new(Policy::Lru);
        let value = Arc::new(5u32);
        m.put(
            "a",
            Slot {
                held: Held::Memory {
                    value: value.clone(),
                    weight: 4,
                },
                stored: Stored::Current,
                version: 3,
            },
        );
        m.set_stored(&"a", Some(loc(1)));
        assert!(matches!(m.take_victim(), Some(Victim::Clean { weight: 4 })));
        let slot = m.get(&"a").expect("a caller holds the value");
        assert!(Arc::ptr_eq(&slot.live_value().unwrap(), &value));
        m.drop_dead_weak(&"a");
        assert!(m.get(&"a").is_some(), "still held");
        drop(value);
        m.drop_dead_weak(&"a");
        assert!(m.get(&"a").is_none() && m.exists(&"a"));
        m.check_tally();
    }

    #[test]
    fn the_tally_matches_the_slots_after_every_transition() {
        for policy in [Policy::Lru, Policy::Largest, Policy::S3Fifo] {
            tally_under(policy);
        }
    }

    fn tally_under(policy: Policy) {
        let mut m: MemoryTier<u8, u32> = MemoryTier::new(policy);
        let mut writes: Vec<(u8, u64)> = Vec::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for version in 1..5000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = (x % 13) as u8;
            match (x >> 8) % 8 {
                0 | 1 => {
                    m.replace(key, |stored| Slot {
                        held: Held::Memory {
                            value: Arc::new(version as u32),
                            weight: x % 50 + 1,
                        },
                        stored,
                        version,
                    });
                }
                2 => {
                    if let Some(Victim::Dirty { key, version, .. }) = m.take_victim() {
                        writes.push((key, version));
                    }
                }
                3 if !writes.is_empty() => {
                    let (key, version) = writes.remove((x >> 16) as usize % writes.len());
                    let ok = !(x >> 24).is_multiple_of(3);
                    if ok {
                        // The writer records the stored copy before the slot learns.
                        m.set_stored(&key, Some(loc(version)));
                    }
                    let back = m.write_done(&key, version, ok);
                    assert!(back == 0 || m.get(&key).unwrap().memory_weight() == back);
                }
                4 => {
                    let current = m.get(&key).map(|s| s.version);
                    if let Some(v) = current {
                        m.set_stored(&key, Some(loc(version)));
                        let before = m.tally.order.peek().copied();
                        m.mark_written(&key, v);
                        assert_eq!(m.tally.order.peek().copied(), before, "not a use");
                    }
                }
                5 => {
                    m.update(&key, |slot| slot.version = version);
                    writes.retain(|(k, _)| *k != key);
                }
                6 => match (x >> 12) % 6 {
                    0 => m.note_disk_may_hold(&key),
                    1 => m.set_stored(&key, Some(loc(version))),
                    // Only a removal's record goes, while no slot is current on disk.
                    2 if m.get(&key).is_some_and(|s| s.stored != Stored::Current) => {
                        m.set_stored(&key, None)
                    }
                    3 => {
                        m.put(key, Slot::removed(version));
                        writes.retain(|(k, _)| *k != key);
                    }
                    4 => {
                        let v = m.get(&key).map_or(0, |s| s.version);
                        m.removal_done(&key, v);
                    }
                    _ => {
                        if let Some(from) = m.read_from(&key) {
                            if (x >> 20).is_multiple_of(2) {
                                m.promote(&key, from, version, Arc::new(1), x % 30 + 1);
                            } else {
                                m.share(&key, from, version, &Arc::new(1));
                                m.drop_dead_weak(&key);
                            }
                        }
                    }
                },
                _ => {
                    m.remove(&key);
                    writes.retain(|(k, _)| *k != key);
                }
            }
            m.check_tally();
        }
    }

    #[test]
    fn a_finished_write_keeps_the_place_and_an_overwrite_counts_as_a_use() {
        for policy in [Policy::Lru, Policy::S3Fifo] {
            let mut m = MemoryTier::new(policy);
            m.put("a", hot(1, 10, 1));
            m.put("b", hot(2, 20, 2));
            assert_eq!(
                m.peek_victim(),
                Some((10, true)),
                "{policy:?}: a came first"
            );
            // A flush wrote a's value: not a use, so a is still the next victim.
            m.update(&"a", |slot| slot.stored = Stored::Current);
            assert_eq!(m.peek_victim(), Some((10, false)), "{policy:?}");
            assert_eq!((m.on_disk(), m.memory_bytes()), (1, 30));
            // A new value of a over the one in memory is a use: b leaves first.
            m.put("a", hot(3, 11, 3));
            assert_eq!(m.peek_victim(), Some((20, true)), "{policy:?}");
            assert_eq!((m.on_disk(), m.memory_bytes(), m.in_memory()), (0, 31, 2));
            let Some(Victim::Dirty { key, .. }) = m.take_victim() else {
                panic!("{policy:?}: b has no disk copy");
            };
            assert_eq!(key, "b");
            assert_eq!(m.peek_victim(), Some((11, true)), "{policy:?}");
        }
    }
}
