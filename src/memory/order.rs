//! The order in which values leave memory.

mod s3fifo;

use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};

use priority_queue::PriorityQueue;

use crate::hash::State;
use s3fifo::S3Fifo;

/// Use ticks, shared by every order in the process so that the shards of a chest can compare
/// their least recently used keys.
static TICK: AtomicU64 = AtomicU64::new(0);

/// Which values leave memory first when the budget is exceeded.
///
/// Every policy works on the weights of values (their encoded size, or what the weigher says):
/// victims leave in the policy's order until enough bytes are free. The order is chest-wide:
/// each shard of the memory tier keeps its own, and the next victims of the shards are
/// compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Policy {
    /// The least recently used value leaves first. `insert`, `get` and `update` all count as a
    /// use.
    ///
    /// Prefer it when the values used last are the likeliest to be used next: a batch of
    /// values written and then read back, when the batch is more than a tenth of the budget
    /// (under `S3Fifo` all but the last tenth of it would be read back from disk), or a
    /// working set that shifts quickly. A single pass over many values pushes everything else
    /// out of memory.
    Lru,
    /// The heaviest value leaves first, so many small values stay in memory.
    Largest,
    /// S3-FIFO (Yang et al., SOSP 2023), sized in bytes: values used more than once are kept
    /// ahead of values used once. The default.
    ///
    /// A new value (inserted, or loaded from disk by `get`) joins a small FIFO queue holding
    /// about a tenth of the bytes in memory. When it reaches the front it moves to the main
    /// queue if it was used again meanwhile, and otherwise leaves memory first, its key
    /// remembered for a while; if that key is loaded again soon it joins the main queue
    /// directly. In the main queue a value that reaches the front goes round again if it was
    /// used since its last round (up to three uses are counted), and leaves otherwise. An
    /// `insert` over a value held in memory counts as a use of it; an `update` of a value
    /// that was used again keeps it in the main queue.
    ///
    /// Prefer it when some keys are read much more often than others (skewed, e.g. Zipf, gets)
    /// and when one-off passes over many values (scans) mix with repeated reads: the values
    /// read once leave after passing through the small queue, without pushing out the hot
    /// ones. On W5 of BENCHMARKS.md (Zipf(1.0) gets, budget 10% of the data) it serves 74.1%
    /// of gets from memory where `Lru` serves 69.0% (moka, W-TinyLFU, 71.8%), and on W1's hot
    /// re-read about as many as `Lru`. Its costs: a value read soon after it is written, but
    /// only after more than a tenth of the budget of newer values, is read back from disk,
    /// where `Lru` would still hold it; its bookkeeping takes about twice as long as `Lru`'s
    /// per value that enters and leaves memory, which shows on many small inserts; and it
    /// keeps more per value held (a second copy of the key and its place in a queue), plus
    /// fingerprints of the keys of values that left.
    #[default]
    S3Fifo,
}

/// The order over the keys of one shard's in-memory values; the next victim comes first.
///
/// The memory tier tells it of every value that enters memory ([`admit`](Self::admit)),
/// every use ([`touch`](Self::touch)) and every value that leaves other than as a victim
/// ([`remove`](Self::remove)); a victim taken by [`pop`](Self::pop) is gone from the order.
#[derive(Debug)]
pub(crate) struct EvictionOrder<K: Hash + Eq> {
    kind: Kind<K>,
}

/// Each policy's structure.
#[derive(Debug)]
enum Kind<K: Hash + Eq> {
    /// A priority queue keyed by [`TICK`] (the higher, the older).
    Lru(PriorityQueue<K, u64, State>),
    /// A priority queue keyed by weight.
    Largest(PriorityQueue<K, u64, State>),
    S3Fifo(S3Fifo<K>),
}

fn lru_priority() -> u64 {
    u64::MAX - TICK.fetch_add(1, Ordering::Relaxed)
}

impl<K: Hash + Eq + Clone> EvictionOrder<K> {
    pub(crate) fn new(policy: Policy) -> Self {
        let kind = match policy {
            Policy::Lru => Kind::Lru(PriorityQueue::with_default_hasher()),
            Policy::Largest => Kind::Largest(PriorityQueue::with_default_hasher()),
            Policy::S3Fifo => Kind::S3Fifo(S3Fifo::new()),
        };
        EvictionOrder { kind }
    }

    /// Adds a key whose value entered memory with `weight`. A key already held counts as a
    /// use (its value was replaced), with `weight` as its weight now.
    pub(crate) fn admit(&mut self, key: K, weight: u64) {
        match &mut self.kind {
            Kind::Lru(queue) => {
                queue.push(key, lru_priority());
            }
            Kind::Largest(queue) => {
                queue.push(key, weight);
            }
            Kind::S3Fifo(order) => order.admit(key, weight),
        }
    }

    /// Marks a held key as just used; `weight` is its weight.
    pub(crate) fn touch(&mut self, key: &K, weight: u64) {
        match &mut self.kind {
            Kind::Lru(queue) => {
                queue.change_priority(key, lru_priority());
            }
            Kind::Largest(_) => {}
            Kind::S3Fifo(order) => order.touch(key, weight),
        }
    }

    /// Takes the next victim out of the order for good, with its priority.
    pub(crate) fn pop(&mut self) -> Option<(K, u64)> {
        match &mut self.kind {
            Kind::Lru(queue) | Kind::Largest(queue) => queue.pop(),
            Kind::S3Fifo(order) => order.pop(),
        }
    }

    /// Forgets a key whose value left memory other than through [`pop`](Self::pop): removed,
    /// or no longer held in memory.
    pub(crate) fn remove(&mut self, key: &K) {
        match &mut self.kind {
            Kind::Lru(queue) | Kind::Largest(queue) => {
                queue.remove(key);
            }
            Kind::S3Fifo(order) => order.remove(key),
        }
    }

    /// The priority of the next key to leave memory: higher leaves first, comparable between
    /// the orders of one chest's shards (`Lru`: use ticks from one process-wide counter;
    /// `Largest`: weights; `S3Fifo`: small-queue victims first, then the oldest by stamps
    /// from one process-wide counter).
    pub(crate) fn peek_priority(&self) -> Option<u64> {
        match &self.kind {
            Kind::Lru(queue) | Kind::Largest(queue) => queue.peek().map(|(_, p)| *p),
            Kind::S3Fifo(order) => order.peek_priority(),
        }
    }

    /// The next key to leave memory: the one [`pop`](Self::pop) takes next.
    pub(crate) fn peek(&self) -> Option<&K> {
        match &self.kind {
            Kind::Lru(queue) | Kind::Largest(queue) => queue.peek().map(|(k, _)| k),
            Kind::S3Fifo(order) => order.peek(),
        }
    }

    /// Keys held.
    pub(crate) fn len(&self) -> usize {
        match &self.kind {
            Kind::Lru(queue) | Kind::Largest(queue) => queue.len(),
            Kind::S3Fifo(order) => order.len(),
        }
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

    /// Every victim in order, checking `peek` against each `pop`.
    fn drain(o: &mut EvictionOrder<u32>) -> Vec<u32> {
        let mut out = Vec::new();
        while let Some(&next) = o.peek() {
            assert!(o.peek_priority().is_some());
            let (k, _) = o.pop().expect("peek named a victim");
            assert_eq!(k, next);
            out.push(k);
        }
        assert_eq!(o.len(), 0);
        assert!(o.pop().is_none());
        out
    }

    fn filled(
        policy: Policy,
        keys: impl IntoIterator<Item = u32>,
        weight: u64,
    ) -> EvictionOrder<u32> {
        let mut o = EvictionOrder::new(policy);
        for k in keys {
            o.admit(k, weight);
        }
        o
    }

    #[test]
    fn s3fifo_takes_unused_new_values_first_and_moves_used_ones_to_main() {
        let mut o = filled(Policy::S3Fifo, 1..=5, 10);
        o.touch(&4, 10);
        o.touch(&2, 10);
        // Small queue: 1 2 3 4 5, with 2 and 4 used. 1 leaves; 2 moves to main; 3 leaves; 4
        // moves to main; 5 leaves; then main in the order values joined it: 2, 4.
        assert_eq!(drain(&mut o), vec![1, 3, 5, 2, 4]);

        let mut lru = filled(Policy::Lru, 1..=5, 10);
        lru.touch(&4, 10);
        lru.touch(&2, 10);
        assert_eq!(drain(&mut lru), vec![1, 3, 5, 4, 2]);
    }

    #[test]
    fn s3fifo_main_values_go_round_once_per_use() {
        let mut o = filled(Policy::S3Fifo, 1..=3, 10);
        for k in 1..=3 {
            o.touch(&k, 10);
        }
        // All three move to main with their use spent; then 1, first there, leaves.
        assert_eq!(o.pop().map(|(k, _)| k), Some(1));
        for _ in 0..5 {
            o.touch(&2, 10); // counted up to three
        }
        o.touch(&3, 10);
        // Main: 2 (3 uses), 3 (1 use). 3 goes round once, 2 three times: 3 leaves first.
        assert_eq!(drain(&mut o), vec![3, 2]);
    }

    #[test]
    fn s3fifo_a_key_that_left_the_small_queue_comes_back_to_main() {
        let mut o = filled(Policy::S3Fifo, [1, 2], 10);
        assert_eq!(o.pop().map(|(k, _)| k), Some(1));
        o.admit(1, 10); // loaded again from disk: a ghost, so into main
        o.admit(3, 10);
        // Small holds 2 and 3 (20 of 30 bytes): they leave before 1.
        assert_eq!(drain(&mut o), vec![2, 3, 1]);
    }

    #[test]
    fn s3fifo_a_replaced_value_that_was_used_stays_in_main() {
        // An update takes the old value out (remove) and puts the new one in (admit).
        let mut o = filled(Policy::S3Fifo, [1, 2], 10);
        o.touch(&1, 10);
        o.remove(&1);
        o.admit(1, 12);
        o.admit(3, 10);
        assert_eq!(drain(&mut o), vec![2, 3, 1]);
        // Unused, it is a new value at the back of the small queue.
        let mut o = filled(Policy::S3Fifo, [1, 2], 10);
        o.remove(&1);
        o.admit(1, 12);
        assert_eq!(drain(&mut o), vec![2, 1]);
    }

    #[test]
    fn admitting_a_held_key_again_counts_as_a_use() {
        let mut o = filled(Policy::S3Fifo, [1, 2], 10);
        o.admit(1, 15);
        assert_eq!(o.len(), 2);
        // 1 was used: it moves to main, and 2 leaves first.
        assert_eq!(drain(&mut o), vec![2, 1]);

        let mut lru = filled(Policy::Lru, [1, 2], 10);
        lru.admit(1, 15);
        assert_eq!(drain(&mut lru), vec![2, 1]);

        // Largest: the new weight counts.
        let mut largest = filled(Policy::Largest, [1, 2], 10);
        largest.admit(1, 5);
        assert_eq!(drain(&mut largest), vec![2, 1]);
    }

    #[test]
    fn s3fifo_a_hot_key_survives_a_scan_that_lru_lets_push_it_out() {
        // A budget of 100 bytes, values of 10: the hot key is read often, then 200 keys are
        // read once each (a scan), and the hot key is read once more after every 50 of them.
        // Returns the keys that left memory, in order.
        let run = |policy| {
            let mut o = EvictionOrder::new(policy);
            let (mut held, mut left) = (0, Vec::new());
            let mut admit = |o: &mut EvictionOrder<u32>, k: u32| {
                while held + 10 > 100 {
                    let (victim, _) = o.pop().expect("something is held");
                    left.push(victim);
                    held -= 10;
                }
                o.admit(k, 10);
                held += 10;
            };
            admit(&mut o, 0);
            for _ in 0..3 {
                o.touch(&0, 10);
            }
            for k in 1..=200 {
                admit(&mut o, k);
                if k % 50 == 0 {
                    o.touch(&0, 10);
                }
            }
            left
        };
        let s3 = run(Policy::S3Fifo);
        assert_eq!(s3.len(), 191);
        assert!(!s3.contains(&0), "the hot key left memory under S3-FIFO");
        assert!(run(Policy::Lru).contains(&0), "LRU kept the hot key");
    }

    #[test]
    fn s3fifo_queue_shares_are_counted_in_bytes() {
        // Two used 50-byte values and a 1-byte newcomer. Once the used ones moved to main, the
        // small queue holds under a tenth of the bytes, so main gives the victim although the
        // newcomer was never used.
        let mut o = filled(Policy::S3Fifo, [1, 2], 50);
        o.touch(&1, 50);
        o.touch(&2, 50);
        o.admit(9, 1);
        assert_eq!(
            o.pop().map(|(k, _)| k),
            Some(1),
            "1 and 2 move to main; 1 leaves"
        );
        o.admit(3, 1);
        // Small: 9 and 3 (2 bytes of 52): main's 2 leaves before them.
        assert_eq!(o.peek(), Some(&2));
        // A heavy newcomer makes the small queue more than a tenth of the bytes again: victims
        // come from it, oldest first, until it is under a tenth; then main.
        o.admit(4, 60);
        assert_eq!(drain(&mut o), vec![9, 3, 4, 2]);
    }

    #[test]
    fn priorities_compare_between_the_orders_of_shards() {
        // Two shards of one chest under S3-FIFO: small-queue victims first, then the older.
        let (mut a, mut b) = (
            EvictionOrder::new(Policy::S3Fifo),
            EvictionOrder::new(Policy::S3Fifo),
        );
        a.admit(1, 10);
        b.admit(2, 10);
        assert!(a.peek_priority() > b.peek_priority(), "1 came in first");
        // b's value moves to its main queue (used, then a pop takes its newcomer 3).
        b.touch(&2, 10);
        b.admit(3, 10);
        assert_eq!(b.pop().map(|(k, _)| k), Some(3));
        assert_eq!(b.peek(), Some(&2));
        a.admit(4, 10);
        a.touch(&1, 10);
        // a's next victim is 4, from its small queue: before b's main-queue 2, though younger.
        assert_eq!(a.peek(), Some(&4));
        assert!(a.peek_priority() > b.peek_priority());
        assert_eq!(
            EvictionOrder::<u32>::new(Policy::S3Fifo).peek_priority(),
            None
        );

        // Under LRU the ticks are process-wide: the shard whose key was used longer ago wins.
        let (mut a, mut b) = (
            EvictionOrder::new(Policy::Lru),
            EvictionOrder::new(Policy::Lru),
        );
        a.admit(1, 10);
        b.admit(2, 10);
        assert!(a.peek_priority() > b.peek_priority());
        a.touch(&1, 10);
        assert!(a.peek_priority() < b.peek_priority());
    }
}
