//! S3-FIFO (Yang et al., "FIFO queues are all you need for cache eviction", SOSP 2023), with
//! the queues' sizes counted in bytes.
//!
//! Every value held sits in one of two FIFO queues. A new value joins the *small* queue. While
//! the small queue holds at least a tenth of the bytes (or the main queue is empty), victims
//! come from its front: a value used since it came in moves to the back of the *main* queue
//! instead, and one that was not leaves, its key kept as a *ghost* (a 32-bit fingerprint).
//! A value whose key is a ghost when it enters memory (read back from disk soon after it
//! left) joins the main queue directly. Otherwise victims come from the main queue's front: a
//! value used since it last got there goes round again with one use fewer (at most three are
//! counted), any other leaves.
//!
//! So a value used once (one pass over many values) leaves through the small queue without
//! pushing out the values used again, and a value in the main queue stays one round per use.
//!
//! Ghosts are as many as the keys held (the newest count; at least one). A victim handed out
//! by [`pop`](S3Fifo::pop) is gone from the order. [`peek`](S3Fifo::peek) names the key `pop`
//! would take without changing anything, by following `pop` over the values it would move.
//! Queue stamps come from one process-wide counter, so the next victims of several orders
//! (the shards of one chest) can be ranked as if they were in one order
//! ([`peek_priority`](S3Fifo::peek_priority)).

use std::collections::hash_map::Entry as MapEntry;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::hash::Map;

/// Uses counted per value: a value of the main queue goes round at most this many times
/// without a new use.
const MAX_USES: u8 = 3;
/// Victims come from the small queue while it holds at least 1 / `SMALL_SHARE` of the bytes.
const SMALL_SHARE: u128 = 10;
/// Ghosts kept however few keys are held, so that an order holding a handful of large values
/// still knows one that comes back. Per order, so per shard: a chest of 16 shards keeps at
/// least 16. More would make a chest that holds a few values remember most keys that ever
/// left it, and send every value read back straight to the main queue, as if read twice.
const MIN_GHOSTS: usize = 1;
/// Set in the priority of a victim that leaves from the small queue: those leave first.
const SMALL_BIT: u64 = 1 << 63;

/// Queue stamps, shared by every order in the process: a lower stamp joined its queue
/// earlier, whichever shard it is in.
static STAMPS: AtomicU64 = AtomicU64::new(0);

fn next_stamp() -> u64 {
    STAMPS.fetch_add(1, Ordering::Relaxed)
}

/// The priority of a victim (higher leaves first): from a small queue before from a main one,
/// then the earlier stamp.
fn priority(stamp: u64, from_small: bool) -> u64 {
    let age = (SMALL_BIT - 1).saturating_sub(stamp);
    if from_small { age | SMALL_BIT } else { age }
}

/// A key's fingerprint: 32 bits of a hash that is the same in every run.
fn fingerprint<K: Hash>(hasher: &BuildHasherDefault<DefaultHasher>, key: &K) -> u32 {
    (hasher.hash_one(key) >> 32) as u32
}

/// Counts a use of a held value whose weight is now `weight`, in its entry and its queue's
/// bytes.
fn count_use<K>(entry: &mut Entry, weight: u64, small: &mut Fifo<K>, main: &mut Fifo<K>) {
    entry.uses = (entry.uses + 1).min(MAX_USES);
    let fifo = match entry.queue {
        Queue::Small => small,
        Queue::Main => main,
    };
    fifo.bytes = fifo.bytes - entry.weight + weight;
    entry.weight = weight;
}

/// Which queue a value is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queue {
    Small,
    Main,
}

/// How [`S3Fifo::pop`] reaches its next victim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reached {
    /// At the front of the small queue (after moving used values to the main queue).
    Small,
    /// At the front of the main queue (after sending used values round).
    Main,
    /// Only after the victim itself moved to the back of the main queue, or every value of
    /// the main queue went round.
    AfterRound,
}

/// What the order knows of a value held.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Its key in its queue; a new stamp each time it joins the back of a queue.
    stamp: u64,
    weight: u64,
    /// Its key's fingerprint, kept so that it need not be hashed again when it leaves.
    fingerprint: u32,
    /// Uses since it joined its queue or last went round, at most `MAX_USES`.
    uses: u8,
    queue: Queue,
}

/// One FIFO queue, oldest stamp first, with the weights of its values.
#[derive(Debug)]
struct Fifo<K> {
    by_stamp: BTreeMap<u64, K>,
    bytes: u64,
}

impl<K> Fifo<K> {
    fn new() -> Self {
        Fifo {
            by_stamp: BTreeMap::new(),
            bytes: 0,
        }
    }

    fn push(&mut self, stamp: u64, key: K, weight: u64) {
        self.by_stamp.insert(stamp, key);
        self.bytes += weight;
    }
}

/// Fingerprints of keys that left recently, each with the number of the addition that made
/// it a ghost: a fingerprint counts while it is among the newest `capacity` additions (a taken
/// one stops counting at once). The others are dropped together once the map holds half as
/// many again as count, so an addition costs one map insert and, amortized, a few entries of a
/// sequential sweep.
#[derive(Debug, Default)]
struct Ghosts {
    added: HashMap<u32, u32, BuildHasherDefault<FingerprintHasher>>,
    /// Additions so far, wrapping: a ghost that outlived four billion additions without a
    /// sweep may pass for a new one, which only sends one value to the main queue.
    count: u32,
}

impl Ghosts {
    /// The number of newest additions that count, as the counter's type.
    fn limit(capacity: usize) -> u32 {
        u32::try_from(capacity).unwrap_or(u32::MAX)
    }

    fn add(&mut self, fingerprint: u32, capacity: usize) {
        self.count = self.count.wrapping_add(1);
        self.added.insert(fingerprint, self.count);
        if self.added.len() > capacity + capacity / 2 + MIN_GHOSTS {
            let (count, limit) = (self.count, Self::limit(capacity));
            self.added.retain(|_, at| count.wrapping_sub(*at) < limit);
        }
    }

    /// True if `fingerprint` was among the newest `capacity` ghosts; it is a ghost no longer.
    fn take(&mut self, fingerprint: u32, capacity: usize) -> bool {
        self.added
            .remove(&fingerprint)
            .is_some_and(|at| self.count.wrapping_sub(at) < Self::limit(capacity))
    }
}

/// Hashes a fingerprint (already a hash of its key) by one multiplication that spreads its
/// bits over the 64 the map uses, instead of hashing it again with SipHash.
#[derive(Debug, Default)]
struct FingerprintHasher(u64);

/// An odd constant with well-mixed bits (2^64 divided by the golden ratio).
const SPREAD: u64 = 0x9e37_79b9_7f4a_7c15;

impl Hasher for FingerprintHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(byte)).wrapping_mul(SPREAD);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0 ^ u64::from(n)).wrapping_mul(SPREAD);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The S3-FIFO order over the keys of one shard's values in memory.
#[derive(Debug)]
pub(super) struct S3Fifo<K> {
    entries: Map<K, Entry>,
    small: Fifo<K>,
    main: Fifo<K>,
    ghosts: Ghosts,
    /// A fixed hasher for fingerprints, so that the same keys give the same decisions in
    /// every run.
    fingerprints: BuildHasherDefault<DefaultHasher>,
}

impl<K: Hash + Eq + Clone> S3Fifo<K> {
    pub(super) fn new() -> Self {
        S3Fifo {
            entries: Map::default(),
            small: Fifo::new(),
            main: Fifo::new(),
            ghosts: Ghosts::default(),
            fingerprints: BuildHasherDefault::default(),
        }
    }

    /// Ghosts that count: as many as the keys held, and at least `MIN_GHOSTS`.
    fn ghost_capacity(&self) -> usize {
        self.entries.len().max(MIN_GHOSTS)
    }

    fn fifo(&mut self, queue: Queue) -> &mut Fifo<K> {
        match queue {
            Queue::Small => &mut self.small,
            Queue::Main => &mut self.main,
        }
    }

    /// True when the next victim comes from the small queue, for a small queue of
    /// `small_bytes` beside a main queue of `main_len` values (the total of bytes is the
    /// order's: moving values between the queues does not change it).
    fn small_is_source(&self, small_bytes: u64, main_len: usize) -> bool {
        let total = u128::from(self.small.bytes) + u128::from(self.main.bytes);
        main_len == 0 || u128::from(small_bytes) * SMALL_SHARE >= total
    }

    /// A value entering memory with `weight`: into the main queue if its key is a ghost, else
    /// into the small one. A key already held counts a use, and takes `weight` as its weight.
    pub(super) fn admit(&mut self, key: K, weight: u64) {
        let capacity = self.ghost_capacity();
        let fingerprints = &self.fingerprints;
        let vacant = match self.entries.entry(key) {
            MapEntry::Occupied(mut held) => {
                count_use(held.get_mut(), weight, &mut self.small, &mut self.main);
                return;
            }
            MapEntry::Vacant(vacant) => vacant,
        };
        let fingerprint = fingerprint(fingerprints, vacant.key());
        let queue = if self.ghosts.take(fingerprint, capacity) {
            Queue::Main
        } else {
            Queue::Small
        };
        let stamp = next_stamp();
        let key = vacant.key().clone();
        vacant.insert(Entry {
            stamp,
            weight,
            fingerprint,
            uses: 0,
            queue,
        });
        self.fifo(queue).push(stamp, key, weight);
    }

    /// A use of a held key, whose weight is now `weight`; nothing if the key is not held.
    pub(super) fn touch(&mut self, key: &K, weight: u64) {
        if let Some(entry) = self.entries.get_mut(key) {
            count_use(entry, weight, &mut self.small, &mut self.main);
        }
    }

    /// Forgets a held key (its value was removed, replaced, or left memory by other means
    /// than `pop`). A key whose value was used again (in the main queue, or used in the small
    /// one) becomes a ghost, so a new value of it (an `update`) joins the main queue.
    pub(super) fn remove(&mut self, key: &K) {
        let Some(entry) = self.entries.remove(key) else {
            return;
        };
        let fifo = self.fifo(entry.queue);
        fifo.by_stamp.remove(&entry.stamp);
        fifo.bytes -= entry.weight;
        if entry.queue == Queue::Main || entry.uses > 0 {
            self.add_ghost(entry.fingerprint);
        }
    }

    fn add_ghost(&mut self, fingerprint: u32) {
        let capacity = self.ghost_capacity();
        self.ghosts.add(fingerprint, capacity);
    }

    /// Takes the next victim out of the order for good, with its priority (from the stamp it
    /// had when it left). Used values met on the way move to the main queue or go round it.
    pub(super) fn pop(&mut self) -> Option<(K, u64)> {
        loop {
            let from_small = !self.small.by_stamp.is_empty()
                && self.small_is_source(self.small.bytes, self.main.by_stamp.len());
            let fifo = if from_small {
                &mut self.small
            } else {
                &mut self.main
            };
            let (stamp, key) = fifo.by_stamp.pop_first()?;
            let Some(entry) = self.entries.get_mut(&key) else {
                debug_assert!(false, "a queued key has no entry");
                continue;
            };
            fifo.bytes -= entry.weight;
            if entry.uses > 0 {
                entry.uses = if from_small { 0 } else { entry.uses - 1 };
                entry.queue = Queue::Main;
                entry.stamp = next_stamp();
                self.main.push(entry.stamp, key, entry.weight);
                continue;
            }
            let fingerprint = entry.fingerprint;
            self.entries.remove(&key);
            if from_small {
                self.add_ghost(fingerprint);
            }
            return Some((key, priority(stamp, from_small)));
        }
    }

    /// The key [`pop`](Self::pop) would take next.
    pub(super) fn peek(&self) -> Option<&K> {
        self.next_victim().map(|(key, _)| key)
    }

    /// The priority of the next victim (higher leaves first), comparable between the orders
    /// of one process, as if they were one order: a value leaving from a small queue before
    /// one leaving from a main queue, then the one whose stamp is older. A victim that `pop`
    /// reaches only after sending it or every value of the main queue to its back counts as
    /// the newest value: that is where it would be in one order.
    pub(super) fn peek_priority(&self) -> Option<u64> {
        let (key, reached) = self.next_victim()?;
        Some(match reached {
            Reached::Small => priority(self.entries[key].stamp, true),
            Reached::Main => priority(self.entries[key].stamp, false),
            Reached::AfterRound => priority(STAMPS.load(Ordering::Relaxed), false),
        })
    }

    /// The next victim and how `pop` reaches it, found by following `pop` without moving
    /// anything.
    fn next_victim(&self) -> Option<(&K, Reached)> {
        // Through the small queue while it is the source: pop would move each used value to
        // the back of the main queue, taking its bytes out of the small queue.
        let (mut small_bytes, mut main_len) = (self.small.bytes, self.main.by_stamp.len());
        let mut first_moved = None;
        for key in self.small.by_stamp.values() {
            if !self.small_is_source(small_bytes, main_len) {
                break;
            }
            let entry = &self.entries[key];
            if entry.uses == 0 {
                return Some((key, Reached::Small));
            }
            small_bytes -= entry.weight;
            main_len += 1;
            first_moved.get_or_insert(key);
        }
        // Then the main queue. Its first unused value leaves; if every one was used, pop
        // sends each round once with a use fewer, and the values moved from the small queue
        // (no uses) wait behind them: the first of those leaves, or if there is none, the
        // first value of the fewest uses.
        let mut fewest: Option<(&K, u8)> = None;
        for key in self.main.by_stamp.values() {
            let uses = self.entries[key].uses;
            if uses == 0 {
                return Some((key, Reached::Main));
            }
            if fewest.is_none_or(|(_, least)| uses < least) {
                fewest = Some((key, uses));
            }
        }
        first_moved
            .or(fewest.map(|(key, _)| key))
            .map(|key| (key, Reached::AfterRound))
    }

    /// Keys held.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// The queues agree with the entries: each held key in its queue at its stamp, and each
    /// queue's bytes the sum of its values' weights.
    fn check(o: &S3Fifo<u32>) {
        for (queue, fifo) in [(Queue::Small, &o.small), (Queue::Main, &o.main)] {
            let mut bytes = 0;
            for (stamp, key) in &fifo.by_stamp {
                let entry = o.entries[key];
                assert_eq!((entry.stamp, entry.queue), (*stamp, queue), "key {key}");
                bytes += entry.weight;
            }
            assert_eq!(fifo.bytes, bytes, "{queue:?} queue bytes");
        }
        assert_eq!(o.len(), o.small.by_stamp.len() + o.main.by_stamp.len());
    }

    /// A fixed xorshift sequence: `next(n)` is below `n`.
    fn xorshift(mut x: u64) -> impl FnMut(u64) -> u64 {
        move |n| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        }
    }

    /// Counts from [`random_operations`]: victims popped, by how `pop` reached them.
    #[derive(Debug, Default)]
    struct Seen {
        small: u32,
        main: u32,
        /// After moving the victim or a whole main queue round: the walks `peek` must follow.
        after_round: u32,
    }

    /// Runs a fixed random sequence of admits, uses, removals and pops in the proportions
    /// `mix` gives, over `keys` keys, checking `peek` and `peek_priority` against every pop
    /// and the queues against the entries after every step.
    fn random_operations(seed: u64, mix: [u64; 4], keys: u64, seen: &mut Seen) {
        let mut next = xorshift(seed);
        let mut o = S3Fifo::new();
        let mut held = HashSet::new();
        let [admit, touch, remove, pop] = mix;
        for _ in 0..30_000 {
            let key = next(keys) as u32;
            let op = next(admit + touch + remove + pop);
            if op < admit {
                o.admit(key, 1 + next(50));
                held.insert(key);
            } else if op < admit + touch {
                o.touch(&key, 1 + next(50));
            } else if op < admit + touch + remove {
                o.remove(&key);
                held.remove(&key);
            } else {
                let expected = o.next_victim().map(|(k, reached)| (*k, reached));
                let priority = o.peek_priority();
                assert_eq!(o.peek().copied(), expected.map(|(k, _)| k));
                let popped = o.pop();
                assert_eq!(popped.map(|(k, _)| k), expected.map(|(k, _)| k));
                let Some(((k, p), (_, reached))) = popped.zip(expected) else {
                    assert!(held.is_empty() && priority.is_none());
                    continue;
                };
                let small = reached == Reached::Small;
                assert_eq!(priority.map(|p| p & SMALL_BIT != 0), Some(small));
                assert_eq!(p & SMALL_BIT != 0, small);
                assert!(held.remove(&k));
                assert!(!o.entries.contains_key(&k), "popped for good");
                match reached {
                    Reached::Small => seen.small += 1,
                    Reached::Main => seen.main += 1,
                    Reached::AfterRound => seen.after_round += 1,
                }
            }
            check(&o);
            assert_eq!(o.len(), held.len());
        }
        while let Some(next) = o.peek().copied() {
            assert_eq!(o.pop().map(|(k, _)| k), Some(next));
        }
        assert_eq!((o.len(), o.small.bytes, o.main.bytes), (0, 0, 0));
        assert!(o.pop().is_none() && o.peek_priority().is_none());
    }

    #[test]
    fn peek_names_what_pop_takes_under_random_operations() {
        // Balanced; then many uses, so that whole main queues have been used and values
        // moved from the small queue wait behind them; then few pops over many keys.
        let mixes = [[3, 3, 1, 5], [2, 12, 1, 3], [4, 6, 1, 2]];
        let mut seen = Seen::default();
        for (seed, mix) in (1..).zip(mixes) {
            for keys in [8, 64, 512] {
                random_operations(0x2545_f491_4f6c_dd1d * seed, mix, keys, &mut seen);
            }
        }
        assert!(
            seen.small > 1000 && seen.main > 1000 && seen.after_round > 1000,
            "{seen:?}"
        );
    }

    #[test]
    fn a_victim_reached_after_a_round_ranks_as_the_newest() {
        let (mut a, mut b) = (S3Fifo::new(), S3Fifo::new());
        a.admit(1u32, 10);
        a.touch(&1, 10);
        b.admit(3u32, 10);
        b.touch(&3, 10);
        b.admit(2, 10);
        assert_eq!(b.pop().map(|(k, _)| k), Some(2));
        // a's only value is used: pop moves it to the back of the main queue and takes it.
        // b's 3 (moved to main by the pop that took 2, unused since) is older there.
        assert_eq!(a.next_victim(), Some((&1, Reached::AfterRound)));
        assert_eq!(b.next_victim(), Some((&3, Reached::Main)));
        assert!(b.peek_priority() > a.peek_priority());
    }

    /// The ghosts that count for `capacity`.
    fn counting(g: &Ghosts, capacity: usize) -> usize {
        let limit = Ghosts::limit(capacity);
        g.added
            .values()
            .filter(|at| g.count.wrapping_sub(**at) < limit)
            .count()
    }

    #[test]
    fn ghosts_are_the_newest_capacity_added_and_each_is_taken_once() {
        let mut g = Ghosts::default();
        for f in 0..100 {
            g.add(f, 10);
            assert!(g.added.len() <= 10 + 5 + MIN_GHOSTS, "swept");
        }
        assert_eq!(counting(&g, 10), 10);
        assert!(!g.take(89, 10), "too old");
        assert!(g.take(90, 10));
        assert!(!g.take(90, 10), "taken once");
        // Added again while still a ghost: counted from its newest addition.
        g.add(95, 10);
        for f in 200..208 {
            g.add(f, 10);
        }
        assert!(!g.take(96, 10), "pushed out");
        assert!(g.take(95, 10));
        // A larger capacity counts older ones again, if the sweep left them.
        let mut g = Ghosts::default();
        for f in 0..20 {
            g.add(f, 100);
        }
        assert!(!g.take(0, 10) && g.take(1, 20));
    }

    #[test]
    fn ghost_count_follows_the_keys_held() {
        let mut o = S3Fifo::new();
        for k in 0..1000u32 {
            o.admit(k, 1);
        }
        // Every unused value leaves through the small queue and leaves a ghost.
        for _ in 0..900 {
            o.pop();
        }
        assert_eq!(o.len(), 100);
        assert_eq!(counting(&o.ghosts, o.ghost_capacity()), 100);
        // The newest ghost comes back into the main queue; an old one is a new value.
        o.admit(899, 1);
        o.admit(0, 1);
        assert_eq!(o.entries[&899].queue, Queue::Main);
        assert_eq!(o.entries[&0].queue, Queue::Small);
        check(&o);
    }
}
