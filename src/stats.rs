//! What a chest is doing, as numbers.

/// A snapshot of a chest's counters, from [`Chest::stats`](crate::Chest::stats).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Entries in the chest.
    pub entries: u64,
    /// Entries whose value is held in memory (some of them also have a disk copy).
    pub in_memory: u64,
    /// Entries whose current value has a copy on disk (some of them are also in memory).
    pub on_disk: u64,
    /// Sum of the weights of the values held in memory, plus room reserved for values being
    /// inserted. At most `budget_bytes` at all times, unless a failed write put values back
    /// in memory.
    pub memory_bytes: u64,
    /// The memory budget in bytes.
    pub budget_bytes: u64,
    /// Bytes of evicted values queued for (or in) a background write: still in memory, not
    /// counted in `memory_bytes`, bounded by the in-flight allowance.
    pub in_flight_bytes: u64,
    /// Bytes of value files and segment files on disk.
    pub disk_bytes: u64,
    /// Bytes of value files and of the segment records some key still refers to. Compaction
    /// keeps `disk_bytes` under about twice this.
    pub live_disk_bytes: u64,
    /// Bytes of the index log.
    pub index_bytes: u64,
    /// Value files on disk (one per large value).
    pub files: u64,
    /// Segment files on disk (holding the small values).
    pub segments: u64,
    /// Values written to disk (by eviction, oversize inserts, or flush).
    pub spills: u64,
    /// Encoded bytes of the values written to disk.
    pub spill_bytes: u64,
    /// Values read back from disk and decoded.
    pub loads: u64,
    /// Encoded bytes of the values read back.
    pub load_bytes: u64,
    /// Gets answered from a value held in memory.
    pub memory_hits: u64,
    /// Gets answered from a spilled value that a caller still held (no decode).
    pub shared_hits: u64,
    /// Spills that failed; the values stayed in memory and the error was returned.
    pub failed_spills: u64,
    /// Segments rewritten to reclaim the space of overwritten and removed values.
    pub compactions: u64,
    /// Compactions that failed after a write (the write itself succeeded; flush retries).
    pub failed_compactions: u64,
    /// Entries found damaged or missing on open and discarded, plus files adopted, in the
    /// reconciliation that opening does after a crash.
    pub mended_on_open: u64,
}
