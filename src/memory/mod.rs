//! The in-memory tier: every entry, the bytes held in memory, and the eviction order.
//!
//! All changes go through the methods here (`put`, `remove`, `promote`, `spilled`, ...), which
//! keep two invariants: `memory_bytes` is the sum of the weights of
//! `Held::Memory` entries, and the eviction order holds exactly their keys.

mod entry;
mod order;

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use crate::disk::DiskLoc;
pub(crate) use entry::{DiskCopy, Entry, Held};
use order::EvictionOrder;
pub use order::Policy;

/// Entries by key, with the accounting of what memory holds.
#[derive(Debug)]
pub(crate) struct MemoryTier<K: Hash + Eq, V> {
    entries: HashMap<K, Entry<V>>,
    order: EvictionOrder<K>,
    memory_bytes: u64,
    budget_bytes: u64,
    /// Entries whose current value has a disk copy.
    on_disk: u64,
}

impl<K: Hash + Eq + Clone, V> MemoryTier<K, V> {
    pub(crate) fn new(policy: Policy, budget_bytes: u64, capacity: usize) -> Self {
        MemoryTier {
            entries: HashMap::with_capacity(capacity),
            order: EvictionOrder::new(policy),
            memory_bytes: 0,
            budget_bytes,
            on_disk: 0,
        }
    }

    pub(crate) fn entry(&self, key: &K) -> Option<&Entry<V>> {
        self.entries.get(key)
    }

    /// Sets `key`'s entry, returning the one it replaces.
    pub(crate) fn put(&mut self, key: K, entry: Entry<V>) -> Option<Entry<V>> {
        let old = self.remove(&key);
        self.put_absent(key, entry);
        old
    }

    /// Sets the entry of a key that has none (the caller removed it): one lookup fewer.
    pub(crate) fn put_absent(&mut self, key: K, entry: Entry<V>) {
        if let Held::Memory { weight, .. } = entry.held {
            self.memory_bytes += weight;
            self.order.admit(key.clone(), weight);
        }
        if entry.disk_is_current() {
            self.on_disk += 1;
        }
        let replaced = self.entries.insert(key, entry);
        debug_assert!(replaced.is_none(), "put_absent over an existing entry");
    }

    /// Holds a value that was read back from disk in memory, with `weight`.
    pub(crate) fn promote(&mut self, key: &K, value: Arc<V>, weight: u64) {
        if let Some(entry) = self.entries.get_mut(key)
            && matches!(entry.held, Held::Disk { .. })
        {
            entry.held = Held::Memory { value, weight };
            self.memory_bytes += weight;
            self.order.admit(key.clone(), weight);
        }
    }

    /// Keeps a weak reference to a value read back from disk but not held in memory.
    pub(crate) fn share(&mut self, key: &K, value: &Arc<V>) {
        if let Some(entry) = self.entries.get_mut(key)
            && matches!(entry.held, Held::Disk { .. })
        {
            entry.held = Held::Disk {
                weak: Arc::downgrade(value),
            };
        }
    }

    /// Drops a victim's value from memory after it was written (`written`: where), or because
    /// its disk copy was already current; one lookup for both.
    pub(crate) fn spilled(&mut self, key: &K, written: Option<DiskLoc>) {
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        if let Some(loc) = written {
            if !entry.disk_is_current() {
                self.on_disk += 1;
            }
            entry.disk = Some(DiskCopy { loc, current: true });
        }
        debug_assert!(
            entry.disk_is_current(),
            "dropping a value with no current disk copy"
        );
        if let Held::Memory { value, weight } = &entry.held {
            self.memory_bytes -= *weight;
            entry.held = Held::Disk {
                weak: Arc::downgrade(value),
            };
            self.order.remove(key);
        }
    }

    /// Adds an entry found on disk when opening: held on disk only, with a current copy. Keys
    /// come from the index, which names each key once.
    pub(crate) fn put_recovered(&mut self, key: K, loc: DiskLoc) {
        let entry = Entry {
            held: Held::Disk {
                weak: std::sync::Weak::new(),
            },
            disk: Some(DiskCopy { loc, current: true }),
        };
        if self.entries.insert(key, entry).is_none() {
            self.on_disk += 1;
        }
    }

    pub(crate) fn remove(&mut self, key: &K) -> Option<Entry<V>> {
        let old = self.entries.remove(key)?;
        if let Held::Memory { weight, .. } = old.held {
            self.memory_bytes -= weight;
            self.order.remove(key);
        }
        if old.disk_is_current() {
            self.on_disk -= 1;
        }
        Some(old)
    }

    /// Records a use of `key`.
    pub(crate) fn touch(&mut self, key: &K) {
        if let Some(Entry {
            held: Held::Memory { weight, .. },
            ..
        }) = self.entries.get(key)
        {
            self.order.touch(key, *weight);
        }
    }

    /// Records that `key`'s current value now has the disk copy at `loc`.
    pub(crate) fn set_disk_current(&mut self, key: &K, loc: DiskLoc) {
        if let Some(entry) = self.entries.get_mut(key) {
            if !entry.disk_is_current() {
                self.on_disk += 1;
            }
            entry.disk = Some(DiskCopy { loc, current: true });
        }
    }

    /// Records that `key`'s disk copy moved to `loc` (compaction), current or not as before.
    pub(crate) fn relocate(&mut self, key: &K, loc: DiskLoc) {
        if let Some(copy) = self.entries.get_mut(key).and_then(|e| e.disk.as_mut()) {
            copy.loc = loc;
        }
    }

    /// Takes victims out of the eviction order, in order, until their weights add up to at
    /// least `bytes`. They stay in memory: each must then be [`spilled`](Self::spilled) or put
    /// back with [`restore_victim`](Self::restore_victim).
    pub(crate) fn take_victims(&mut self, bytes: u64) -> Vec<(K, u64)> {
        let mut out = Vec::new();
        let mut freed = 0;
        while freed < bytes {
            let Some((key, priority)) = self.order.pop() else {
                break;
            };
            freed += self.memory_weight(&key).unwrap_or(0);
            out.push((key, priority));
        }
        out
    }

    /// Puts back a victim that could not leave memory.
    pub(crate) fn restore_victim(&mut self, key: K, priority: u64) {
        if self.memory_weight(&key).is_some() {
            self.order.restore(key, priority);
        }
    }

    /// The key whose value should leave memory next.
    pub(crate) fn next_victim(&self) -> Option<&K> {
        self.order.peek()
    }

    /// The weight of `key` if its value is in memory.
    pub(crate) fn memory_weight(&self, key: &K) -> Option<u64> {
        match self.entries.get(key)?.held {
            Held::Memory { weight, .. } => Some(weight),
            Held::Disk { .. } => None,
        }
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &K> {
        self.entries.keys()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &Entry<V>)> {
        self.entries.iter()
    }

    pub(crate) fn contains(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn in_memory(&self) -> usize {
        self.order.len()
    }

    pub(crate) fn on_disk(&self) -> u64 {
        self.on_disk
    }

    pub(crate) fn memory_bytes(&self) -> u64 {
        self.memory_bytes
    }

    pub(crate) fn budget_bytes(&self) -> u64 {
        self.budget_bytes
    }

    pub(crate) fn policy(&self) -> Policy {
        self.order.policy()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::{DiskLoc, Place};

    fn hot(v: u32, weight: u64) -> Entry<u32> {
        Entry {
            held: Held::Memory {
                value: Arc::new(v),
                weight,
            },
            disk: None,
        }
    }

    #[test]
    fn accounting_follows_every_transition() {
        let mut m = MemoryTier::new(Policy::Lru, 100, 0);
        m.put("a", hot(1, 10));
        m.put("b", hot(2, 20));
        assert_eq!((m.memory_bytes(), m.in_memory()), (30, 2));
        m.put("a", hot(3, 5));
        assert_eq!(m.memory_bytes(), 25);
        let loc = DiskLoc {
            place: Place::File,
            seq: 1,
            raw_len: 20,
            stored_len: 20,
        };
        m.set_disk_current(&"b", loc);
        assert_eq!(m.on_disk(), 1);
        let kept = m.entry(&"b").unwrap().live_value().unwrap();
        m.spilled(&"b", None);
        assert_eq!((m.memory_bytes(), m.in_memory(), m.len()), (5, 1, 2));
        assert!(Arc::ptr_eq(
            &m.entry(&"b").unwrap().live_value().unwrap(),
            &kept
        ));
        drop(kept);
        assert!(m.entry(&"b").unwrap().live_value().is_none());
        m.remove(&"b");
        let victims = m.take_victims(1);
        assert_eq!(victims.len(), 1);
        assert_eq!(m.memory_bytes(), 5, "a taken victim is still in memory");
        let (k, p) = victims.into_iter().next().unwrap();
        m.restore_victim(k, p);
        assert_eq!(m.next_victim(), Some(&"a"));
        m.remove(&"a");
        assert_eq!(
            (m.memory_bytes(), m.in_memory(), m.len(), m.on_disk()),
            (0, 0, 0, 0)
        );
    }
}
