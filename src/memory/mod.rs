//! The in-memory tier of one shard: its slots and its eviction order.
//!
//! A chest has several shards (keys are spread by hash); each is a `MemoryTier` behind its
//! own mutex. All changes go through [`MemoryTier::update`] or the methods built on it, which
//! keep three invariants: `memory_bytes` is the sum of the weights of `Held::Memory` slots,
//! the eviction order holds exactly their keys, and `on_disk` counts the slots whose current
//! value the disk holds. The chest-wide byte count (against the budget) is kept by the chest,
//! from the weights these methods report.

mod entry;
mod order;

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

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
    slots: HashMap<K, Slot<V>>,
    order: EvictionOrder<K>,
    memory_bytes: u64,
    /// Slots whose current value the disk holds.
    on_disk: u64,
    /// Slots whose value waits for (or is in) a background write.
    writing: u64,
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
            slots: HashMap::with_capacity(capacity),
            order: EvictionOrder::new(policy),
            memory_bytes: 0,
            on_disk: 0,
            writing: 0,
        }
    }

    pub(crate) fn get(&self, key: &K) -> Option<&Slot<V>> {
        self.slots.get(key)
    }

    /// Takes a slot out of the counts (not out of the eviction order: see [`reorder`]).
    ///
    /// [`reorder`]: Self::reorder
    fn uncount(&mut self, slot: &Slot<V>) {
        let (weight, current) = account(slot);
        self.memory_bytes -= weight;
        if current {
            self.on_disk -= 1;
        }
        if matches!(slot.held, Held::Writing { .. }) {
            self.writing -= 1;
        }
    }

    fn count(&mut self, slot: &Slot<V>) {
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

    /// Sets `key`'s slot, returning the one it replaces. A new value over one held in memory
    /// counts as a use of the key.
    pub(crate) fn put(&mut self, key: K, slot: Slot<V>) -> Option<Slot<V>> {
        let old = self.slots.remove(&key);
        if let Some(old) = &old {
            self.uncount(old);
        }
        self.count(&slot);
        self.reorder(
            &key,
            old.as_ref().and_then(held_weight),
            held_weight(&slot),
            true,
        );
        self.slots.insert(key, slot);
        old
    }

    pub(crate) fn remove(&mut self, key: &K) -> Option<Slot<V>> {
        let old = self.slots.remove(key)?;
        self.uncount(&old);
        self.reorder(key, held_weight(&old), None, false);
        Some(old)
    }

    /// Changes `key`'s slot with `f`, keeping the accounting; `None` when the key is absent.
    /// A value that stays in memory with the same weight keeps its place in the eviction order.
    pub(crate) fn update<R>(&mut self, key: &K, f: impl FnOnce(&mut Slot<V>) -> R) -> Option<R> {
        let mut slot = self.slots.remove(key)?;
        self.uncount(&slot);
        let before = held_weight(&slot);
        let result = f(&mut slot);
        self.count(&slot);
        self.reorder(key, before, held_weight(&slot), false);
        self.slots.insert(key.clone(), slot);
        Some(result)
    }

    /// Records a use of `key`.
    pub(crate) fn touch(&mut self, key: &K) {
        if let Some(Slot {
            held: Held::Memory { weight, .. },
            ..
        }) = self.slots.get(key)
        {
            self.order.touch(key, *weight);
        }
    }

    /// The priority of the next victim (higher leaves first; comparable between shards).
    pub(crate) fn peek_priority(&self) -> Option<u64> {
        self.order.peek_priority()
    }

    /// The weight of the next victim and whether it must be written first.
    pub(crate) fn peek_victim(&self) -> Option<(u64, bool)> {
        let key = self.order.peek()?;
        let slot = self.slots.get(key)?;
        Some((slot.memory_weight(), slot.stored != Stored::Current))
    }

    /// Takes the next victim out of memory: a clean one becomes `Disk`, a dirty one
    /// `Writing` (the caller must queue its write).
    pub(crate) fn take_victim(&mut self) -> Option<Victim<K, V>> {
        let (key, _) = self.order.pop()?;
        let mut slot = self.slots.remove(&key)?;
        let Held::Memory { value, weight } = std::mem::replace(
            &mut slot.held,
            Held::Disk {
                weak: std::sync::Weak::new(),
            },
        ) else {
            debug_assert!(false, "a key in the eviction order is not in memory");
            return None;
        };
        self.memory_bytes -= weight;
        let victim = if slot.stored == Stored::Current {
            slot.held = Held::Disk {
                weak: Arc::downgrade(&value),
            };
            Victim::Clean { weight }
        } else {
            self.writing += 1;
            slot.held = Held::Writing {
                value: value.clone(),
                weight,
            };
            Victim::Dirty {
                key: key.clone(),
                value,
                weight,
                version: slot.version,
            }
        };
        self.slots.insert(key, slot);
        Some(victim)
    }

    /// A queued write of `key`'s value `version` is done: `Writing` becomes `Disk` (written)
    /// or `Memory` again (failed; returns the weight now back in memory).
    pub(crate) fn write_done(&mut self, key: &K, version: u64, written: bool) -> u64 {
        self.update(key, |slot| {
            if slot.version != version {
                return 0;
            }
            if written {
                slot.stored = Stored::Current;
            }
            match std::mem::replace(
                &mut slot.held,
                Held::Disk {
                    weak: std::sync::Weak::new(),
                },
            ) {
                Held::Writing { value, weight } if !written => {
                    slot.held = Held::Memory { value, weight };
                    weight
                }
                Held::Writing { value, .. } => {
                    slot.held = Held::Disk {
                        weak: Arc::downgrade(&value),
                    };
                    0
                }
                other => {
                    slot.held = other;
                    0
                }
            }
        })
        .unwrap_or(0)
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
        self.order.len() + self.writing as usize
    }

    pub(crate) fn on_disk(&self) -> u64 {
        self.on_disk
    }

    /// The weights of this shard's in-memory values (the chest keeps the chest-wide count).
    #[cfg(test)]
    pub(crate) fn memory_bytes(&self) -> u64 {
        self.memory_bytes
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
