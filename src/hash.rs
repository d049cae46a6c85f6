//! The hasher of the chest's per-key maps (slots, stored places, batches) and of shard
//! selection: foldhash, seeded per map at random like the standard `RandomState` (so a crafted
//! key set cannot be aimed at one process's tables) but several times cheaper for the small
//! keys chests mostly hold. Every insert hashes its key several times (shard, slot, eviction
//! order, stored place), and SipHash was a fifth of the instructions of W2's inserts.

/// A `HashMap` with the chest's hasher.
pub(crate) type Map<K, V> = std::collections::HashMap<K, V, State>;

/// The chest's hasher: random per instance.
pub(crate) type State = foldhash::fast::RandomState;
