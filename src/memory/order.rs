//! The order in which values leave memory.

use std::hash::Hash;

use std::sync::atomic::{AtomicU64, Ordering};

use priority_queue::PriorityQueue;

/// Use ticks, shared by every order in the process so that the shards of a chest can compare
/// their least recently used keys.
static TICK: AtomicU64 = AtomicU64::new(0);

/// Which values leave memory first when the budget is exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Policy {
    /// The least recently used value leaves first. `insert`, `get` and `update` all count as a
    /// use.
    #[default]
    Lru,
    /// The heaviest value leaves first, so many small values stay in memory.
    Largest,
}

/// A priority queue over the keys of in-memory values; the top is the next victim.
#[derive(Debug)]
pub(crate) struct EvictionOrder<K: Hash + Eq> {
    policy: Policy,
    queue: PriorityQueue<K, u64>,
}

impl<K: Hash + Eq> EvictionOrder<K> {
    pub(crate) fn new(policy: Policy) -> Self {
        EvictionOrder {
            policy,
            queue: PriorityQueue::new(),
        }
    }

    fn priority(&mut self, weight: u64) -> u64 {
        match self.policy {
            Policy::Lru => u64::MAX - TICK.fetch_add(1, Ordering::Relaxed),
            Policy::Largest => weight,
        }
    }

    /// Adds a key (or updates its place) as just used, with its weight.
    pub(crate) fn admit(&mut self, key: K, weight: u64) {
        let priority = self.priority(weight);
        self.queue.push(key, priority);
    }

    /// Marks a key as just used.
    pub(crate) fn touch(&mut self, key: &K, weight: u64) {
        if self.policy == Policy::Lru {
            let priority = self.priority(weight);
            self.queue.change_priority(key, priority);
        }
    }

    /// Takes the next victim out of the order, with its priority.
    pub(crate) fn pop(&mut self) -> Option<(K, u64)> {
        self.queue.pop()
    }

    pub(crate) fn remove(&mut self, key: &K) {
        self.queue.remove(key);
    }

    /// The priority of the next key to leave memory: higher leaves first, comparable between
    /// the orders of one chest's shards.
    pub(crate) fn peek_priority(&self) -> Option<u64> {
        self.queue.peek().map(|(_, p)| *p)
    }

    /// The next key to leave memory.
    pub(crate) fn peek(&self) -> Option<&K> {
        self.queue.peek().map(|(k, _)| k)
    }

    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_names_the_least_recently_used() {
        let mut o = EvictionOrder::new(Policy::Lru);
        o.admit("a", 1);
        o.admit("b", 100);
        o.admit("c", 1);
        assert_eq!(o.peek(), Some(&"a"));
        o.touch(&"a", 1);
        assert_eq!(o.peek(), Some(&"b"));
        o.remove(&"b");
        assert_eq!(o.peek(), Some(&"c"));
        assert_eq!(o.len(), 2);
    }

    #[test]
    fn largest_names_the_heaviest_and_ignores_use() {
        let mut o = EvictionOrder::new(Policy::Largest);
        o.admit("small", 1);
        o.admit("big", 100);
        o.touch(&"big", 100);
        assert_eq!(o.peek(), Some(&"big"));
        o.admit("big", 0);
        assert_eq!(o.peek(), Some(&"small"));
    }
}
