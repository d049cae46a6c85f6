//! The in-memory tier of one shard: its slots and its eviction order.
//!
//! A chest has several shards (keys are spread by hash); each is a `MemoryTier` behind its
//! own mutex. Every change keeps four invariants: `memory_bytes` is the sum of the weights of
//! `Held::Memory` slots, the eviction order holds exactly their keys, `on_disk` counts the
//! slots whose current value the disk holds, and `writing` the `Held::Writing` ones. Most
//! changes take the old slot out of the tally and count the new one; the hot transitions
//! (eviction, a finished write) change a slot in place and adjust just the counts they move.
//! Unit tests recompute the tally from the slots after every step. The chest-wide byte count (against the budget) is kept by the chest,
//! from the weights these methods report.

mod entry;
mod order;

use std::collections::hash_map::Entry;
use std::hash::Hash;

use crate::hash::Map;
use std::sync::Arc;

use entry::shared_weak;
pub(crate) use entry::{Held, Slot, Stored};
use order::EvictionOrder;
pub use order::Policy;

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
        if matches!(slot.held, Held::Writing { .. }) {
            self.writing -= 1;
        }
    }

    /// Puts a slot in the counts.
    fn count<V>(&mut self, slot: &Slot<V>) {
        let (weight, current) = account(slot);
        self.memory_bytes += weight;
        if current {
            self.on_disk += 1;
        }
        if matches!(slot.held, Held::Writing { .. }) {
            self.writing += 1;
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
    pub(crate) fn new(policy: Policy, capacity: usize) -> Self {
        MemoryTier {
            slots: Map::with_capacity_and_hasher(capacity, Default::default()),
            tally: Tally {
                order: EvictionOrder::new(policy),
                memory_bytes: 0,
                on_disk: 0,
                writing: 0,
            },
        }
    }

    pub(crate) fn get(&self, key: &K) -> Option<&Slot<V>> {
        self.slots.get(key)
    }

    /// Sets `key`'s slot, returning the one it replaces. A new value over one held in memory
    /// counts as a use of the key.
    pub(crate) fn put(&mut self, key: K, slot: Slot<V>) -> Option<Slot<V>> {
        self.replace(key, |_| slot)
    }

    /// Sets `key`'s slot to the one `make` builds from the slot it replaces (if any), and
    /// returns that one, as [`put`](Self::put) does. One hash lookup.
    pub(crate) fn replace(
        &mut self,
        key: K,
        make: impl FnOnce(Option<&Slot<V>>) -> Slot<V>,
    ) -> Option<Slot<V>> {
        match self.slots.entry(key) {
            Entry::Occupied(mut e) => {
                let slot = make(Some(e.get()));
                let before = held_weight(e.get());
                self.tally.uncount(e.get());
                self.tally.count(&slot);
                self.tally
                    .reorder(e.key(), before, held_weight(&slot), true);
                Some(std::mem::replace(e.get_mut(), slot))
            }
            Entry::Vacant(e) => {
                let slot = make(None);
                self.tally.count(&slot);
                self.tally.reorder(e.key(), None, held_weight(&slot), true);
                e.insert(slot);
                None
            }
        }
    }

    pub(crate) fn remove(&mut self, key: &K) -> Option<Slot<V>> {
        let old = self.slots.remove(key)?;
        self.tally.uncount(&old);
        self.tally.reorder(key, held_weight(&old), None, false);
        Some(old)
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

    /// Takes the next victim out of memory: a clean one becomes `Disk`, a dirty one
    /// `Writing` (the caller must queue its write).
    pub(crate) fn take_victim(&mut self) -> Option<Victim<K, V>> {
        let (key, _) = self.tally.order.pop()?;
        let slot = self.slots.get_mut(&key)?;
        let Held::Memory { value, weight } = std::mem::replace(
            &mut slot.held,
            Held::Disk {
                weak: std::sync::Weak::new(),
            },
        ) else {
            debug_assert!(false, "a key in the eviction order is not in memory");
            return None;
        };
        self.tally.memory_bytes -= weight;
        if slot.stored == Stored::Current {
            slot.held = Held::Disk {
                weak: shared_weak(&value, 1),
            };
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

    /// A queued write of `key`'s evicted value `version` is done: `Writing` becomes `Disk`
    /// (written) or `Memory` again (failed; returns the weight now back in memory).
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
            slot.held = Held::Disk {
                weak: shared_weak(&value, 2),
            };
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

    /// Holds a value read back from disk in memory when the slot still has `version` on disk
    /// only; false (nothing changed) otherwise.
    pub(crate) fn promote(&mut self, key: &K, version: u64, value: Arc<V>, weight: u64) -> bool {
        let fits = self
            .slots
            .get(key)
            .is_some_and(|s| s.version == version && matches!(s.held, Held::Disk { .. }));
        if fits {
            self.update(key, |slot| slot.held = Held::Memory { value, weight });
        }
        fits
    }

    /// Keeps a weak reference to a value read back from disk but not held in memory.
    pub(crate) fn share(&mut self, key: &K, version: u64, value: &Arc<V>) {
        if let Some(slot) = self.slots.get_mut(key)
            && slot.version == version
            && matches!(slot.held, Held::Disk { .. })
        {
            slot.held = Held::Disk {
                weak: Arc::downgrade(value),
            };
        }
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &K> {
        self.slots.keys()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &Slot<V>)> {
        self.slots.iter()
    }

    pub(crate) fn contains(&self, key: &K) -> bool {
        self.slots.contains_key(key)
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Slots whose value is in memory: counted against the budget, or waiting for a write.
    pub(crate) fn in_memory(&self) -> usize {
        self.tally.order.len() + self.tally.writing as usize
    }

    pub(crate) fn on_disk(&self) -> u64 {
        self.tally.on_disk
    }

    /// Recomputes the tally from the slots and checks it (tests).
    #[cfg(test)]
    fn check_tally(&self) {
        let mut memory = (0, 0);
        let (mut on_disk, mut writing) = (0, 0);
        for slot in self.slots.values() {
            if let Held::Memory { weight, .. } = slot.held {
                memory = (memory.0 + weight, memory.1 + 1);
            }
            on_disk += u64::from(slot.stored == Stored::Current);
            writing += u64::from(matches!(slot.held, Held::Writing { .. }));
        }
        assert_eq!(
            (memory.0, memory.1, on_disk, writing),
            (
                self.tally.memory_bytes,
                self.tally.order.len(),
                self.tally.on_disk,
                self.tally.writing
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
        let mut m = MemoryTier::new(Policy::Lru, 0);
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
        assert_eq!(m.write_done(&"b", 2, true), 0);
        assert_eq!(m.on_disk(), 1);
        assert!(matches!(m.get(&"b").unwrap().held, Held::Disk { .. }));
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
        // Promotion only of the version read.
        assert!(!m.promote(&"b", 1, Arc::new(2), 20));
        assert!(m.promote(&"b", 2, Arc::new(2), 20));
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
        m.remove(&"a");
        m.remove(&"b");
        assert_eq!(
            (m.memory_bytes(), m.in_memory(), m.len(), m.on_disk()),
            (0, 0, 0, 0)
        );
    }

    #[test]
    fn the_tally_matches_the_slots_after_every_transition() {
        for policy in [Policy::Lru, Policy::Largest, Policy::S3Fifo] {
            tally_under(policy);
        }
    }

    fn tally_under(policy: Policy) {
        let mut m: MemoryTier<u8, u32> = MemoryTier::new(policy, 0);
        let mut writes: Vec<(u8, u64)> = Vec::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for version in 1..5000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = (x % 13) as u8;
            match (x >> 8) % 8 {
                0 | 1 => {
                    m.replace(key, |old| Slot {
                        held: Held::Memory {
                            value: Arc::new(version as u32),
                            weight: x % 50 + 1,
                        },
                        stored: old.map_or(Stored::Nothing, Slot::stored_after_replace),
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
                    let back = m.write_done(&key, version, !(x >> 24).is_multiple_of(3));
                    assert!(back == 0 || m.get(&key).unwrap().memory_weight() == back);
                }
                4 => {
                    let current = m.get(&key).map(|s| s.version);
                    if let Some(v) = current {
                        let before = m.tally.order.peek().copied();
                        m.mark_written(&key, v);
                        assert_eq!(m.tally.order.peek().copied(), before, "not a use");
                    }
                }
                5 => {
                    m.update(&key, |slot| slot.version = version);
                    writes.retain(|(k, _)| *k != key);
                }
                6 => {
                    m.note_disk_may_hold(&key);
                }
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
            let mut m = MemoryTier::new(policy, 0);
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
