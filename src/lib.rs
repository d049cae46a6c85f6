//! # spillchest
//!
//! A [`Chest`] is a typed map that keeps hot values in memory under a byte budget and spills
//! the rest to disk, so data-processing code can hold more than RAM, persist it, and reopen it
//! later or from another process.
//!
//! ```
//! use spillchest::Chest;
//!
//! # fn main() -> spillchest::Result<()> {
//! // A spill buffer in a temporary directory, removed when the chest is dropped.
//! let chest: Chest<String, Vec<f64>> = Chest::with_budget(1 << 20)?;
//! for i in 0..64 {
//!     // 64 values of about 64 KiB each: four times the budget, so most of them spill.
//!     chest.insert(format!("run-{i}"), vec![i as f64; 8192])?;
//! }
//! assert_eq!(chest.len(), 64);
//! assert_eq!(chest.get(&"run-3".to_string())?.as_deref(), Some(&vec![3.0; 8192]));
//! chest.update(&"run-3".to_string(), |v| v.push(1.0))?;
//! let stats = chest.stats();
//! assert!(stats.memory_bytes <= stats.budget_bytes);
//! assert!(stats.on_disk > 0);
//! # Ok(())
//! # }
//! ```
//!
//! A persistent chest lives in a directory; [`Chest::flush`] makes everything durable, and
//! reopening it (in this process, a later run, or another process) sees every flushed entry:
//!
//! ```
//! use spillchest::{Chest, Compression, Policy};
//!
//! # fn main() -> spillchest::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! # let path = dir.path().join("data.chest");
//! let chest: Chest<u64, Vec<u8>> = Chest::builder()
//!     .path(&path)
//!     .budget(64 << 10)
//!     .policy(Policy::Largest)
//!     .compression(Compression::Lz4)
//!     .open()?;
//! chest.insert(7, vec![0; 100_000])?;
//! chest.close()?;
//!
//! let chest: Chest<u64, Vec<u8>> = Chest::open(&path)?;
//! assert_eq!(chest.get(&7)?.map(|v| v.len()), Some(100_000));
//! # Ok(())
//! # }
//! ```
//!
//! ## Guarantees
//!
//! - **The memory bound holds.** [`Stats::memory_bytes`], the sum of the weights of the values
//!   held in memory, is at most the budget after every operation. The only exception is a spill
//!   that failed (full disk, a value that cannot be encoded); [`Stats::failed_spills`] counts
//!   those and the operation returned the error. A weight is the value's encoded size (or what
//!   a [`ChestBuilder::weigher`] says); the bookkeeping of a value held in memory (its
//!   allocation, its slot, its place in the eviction order) costs about 350 to 420 bytes
//!   more, and a key on disk only about 40 to 75. With values of a few hundred bytes or less
//!   that outweighs the values: give a weigher that adds it (below) to bound the process's
//!   memory by the budget plus the keys on disk.
//!
//! ```
//! use spillchest::Chest;
//!
//! # fn main() -> spillchest::Result<()> {
//! // Small values: each counts its bookkeeping too, so the budget bounds memory, not just bytes.
//! let chest: Chest<u64, Vec<u8>> = Chest::builder()
//!     .temp()
//!     .budget(64 << 20)
//!     .weigher(|v: &Vec<u8>| v.len() as u64 + 400)
//!     .open()?;
//! chest.insert(1, vec![0; 100])?;
//! assert_eq!(chest.stats().memory_bytes, 500);
//! # Ok(())
//! # }
//! ```
//! - **Nothing is lost.** Eviction never drops data: an entry is in memory, on disk, or both.
//!   After [`Chest::flush`] returns `Ok`, every entry survives a crash or a power cut. Spilled
//!   entries whose writes completed before a process crash are still there on reopen even
//!   without a flush.
//! - **Nothing is silently corrupted.** Every byte read from disk is checked (lengths,
//!   checksums, the key). Bad bytes give [`Error::Corrupt`] naming the file, never a wrong value
//!   or a panic. A torn write from a crash is detected and discarded on reopen.
//! - **One writer, any number of readers.** A lock file admits one writer: a second writer
//!   gets [`Error::Locked`] (or waits, see [`ChestBuilder::wait_for_lock`]). Read-only chests
//!   ([`ChestBuilder::read_only`]) take no lock; in any process they open beside the writer and
//!   see what it has spilled or flushed as of their last [`Chest::refresh`], never a torn state,
//!   reading correct bytes while it compacts, overwrites and removes files.
//! - **Bad input changes nothing.** A value or key that fails to encode, a full disk, a chest
//!   opened with the wrong types: each is an error, and every entry stored before is intact.
//!
//! ## Arrays and memory maps (cargo feature `ndarray`)
//!
//! Large numeric arrays (`ndarray::ArrayBase` of `f32`, `f64`, `i8` to `i64`, `u8` to `u64`,
//! any number of dimensions) are stored raw: a small header (element type, shape, byte order)
//! then the elements, little-endian, in standard order, 64-byte aligned, neither serialized
//! nor compressed. [`Chest::insert_array`] writes one (from any memory layout);
//! [`Chest::get_array`] returns a [`MappedArray`], a read-only view backed by a memory map of
//! the file, with no copy; [`Chest::create_array`] returns an [`ArrayWriter`], a zeroed array
//! mapped from a file and filled in place, which becomes an entry on
//! [`ArrayWriter::commit`] (dropped without a commit, it leaves nothing behind). So an array
//! larger than RAM can be produced and read.
//!
//! ```
//! # #[cfg(feature = "ndarray")]
//! # fn main() -> spillchest::Result<()> {
//! use spillchest::Chest;
//! use spillchest::ndarray::{Array2, Ix2};
//!
//! let chest: Chest<String, Vec<u8>> = Chest::with_budget(1 << 20)?;
//! let a = Array2::from_shape_fn((300, 200), |(r, c)| (r * c) as f64);
//! chest.insert_array("a".into(), &a.t())?; // any layout in; standard order on disk
//! let view = chest.get_array::<f64, Ix2>(&"a".into())?.expect("present");
//! assert_eq!(view.view(), a.t());
//! assert!(chest.get_array::<f32, Ix2>(&"a".into()).is_err()); // never reinterpreted
//!
//! let mut writer = chest.create_array::<u16, Ix2>("b".into(), (1000, 1000))?;
//! writer.as_array_mut().fill(7);
//! writer.commit()?;
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "ndarray"))]
//! # fn main() {}
//! ```
//!
//! - **Views do not count against the budget.** Arrays go straight to disk and never enter
//!   the memory tier; a view's pages are file-backed (the page cache), not anonymous memory,
//!   and the kernel can drop them under pressure. [`Stats::memory_bytes`] does not include
//!   them.
//! - **A view outlives its entry.** Removing or overwriting the entry unlinks the file or
//!   renames a new one over it; the chest never truncates or rewrites a value file in place,
//!   so a live view keeps the old bytes until it is dropped.
//! - **What is checked when.** On every `get_array`: the value file's header checksum and
//!   key, the array header's own checksum, the element type, the number of dimensions and
//!   every length, so a view is never built from a damaged shape. The elements' checksum
//!   (xxh3 over the whole payload, computed on write) is verified on reopen for every file
//!   written after the last flush (as for every value), and on demand by
//!   [`MappedArray::verify`]; it is not verified on every `get_array`, because that would
//!   read the whole array and defeat zero-copy. A view of an element whose bytes were damaged
//!   on disk after the last flush reads those bytes until `verify` is called. Plain values
//!   are unaffected: values of 1 MiB or more are also read through a map, and their every
//!   byte is checked before decoding, as before.
//! - **What a user must not do** while a view or a writer is alive: truncate, rewrite or edit
//!   the chest's files from another program or handle (truncation under a live map kills the
//!   process with `SIGBUS`; edits change the view's bytes), or put the chest on a file system
//!   that does not keep unlinked files alive for open maps. `get` of an array entry and
//!   `get_array` of a serialized value return [`Error::KindMismatch`].
//! - The feature needs a little-endian target (elements are mapped as they are on disk).
//!
//! ## Design sketch
//!
//! Data flows one way: the public API, then the memory tier, then the disk tier. Nothing below
//! calls back up.
//!
//! ```text
//!  Chest<K, V, C>            chest/mod.rs      public methods; Arc<Core> + the writer thread
//!    ChestBuilder            chest/builder.rs  options, then DiskTier::open + Core::recover
//!    Core                    chest/core.rs     insert/get/update/remove/flush; the budget
//!      │                                       (one atomic, reserved before a value enters
//!      │                                       memory), chest-wide eviction over the shards,
//!      │                                       segment file handles for readers (RwLock)
//!      ├─ jobs               chest/core/jobs.rs FIFO queue of disk work (put, remove) drained
//!      │                                       in batches by the writer thread, by callers
//!      │                                       held back by the in-flight allowance, or by
//!      │                                       callers with synchronous_spill(true): each
//!      │                                       batch encoded and written with no lock, placed
//!      │                                       and committed under `engine`, in ticket order
//!      ├─ MemoryTier<K, V>   memory/mod.rs     one per shard, each behind its own Mutex: the
//!      │                                       shard's disk index (K -> stored copy), slots
//!      │                                       (K -> Slot, only for keys memory knows more
//!      │                                       of), bytes held, eviction order
//!      │    Slot             memory/entry.rs   Memory (Arc + weight), Writing (evicted, queued),
//!      │                                       Disk (a Weak a caller holds) or Removed (a
//!      │                                       tombstone); what the disk holds; version
//!      │    EvictionOrder    memory/order.rs   per shard: S3Fifo (default; small and main FIFO
//!      │                                       queues, ghosts) or a priority queue (Lru: coldest
//!      │                                       first; Largest); priorities compare across shards
//!      ├─ Codec (Bincode)    codec.rs          values and keys to bytes (byte and float
//!      │                                       vectors in bulk); Compression (lz4)
//!      └─ DiskTier           disk/mod.rs       bytes only: keys are encoded bytes, values are
//!           │                                  payloads; open = replay index + scan + reconcile
//!           ├─ LockFile      disk/lock.rs      std File::try_lock on `lock` (the writer only)
//!           ├─ Follower      disk/follow.rs    read-only: reads what the writer appended to
//!           │                                  `.keys` since the last refresh
//!           ├─ Meta          disk/meta.rs      `meta`: format version, codec, type names
//!           ├─ IndexLog      disk/index_log.rs `.keys`: append-only checksummed records
//!           ├─ value files   disk/value_file.rs `values/xx/<digest>.val`: header, key, payload
//!           ├─ array payload disk/array_file.rs  raw arrays: header, shape, elements
//!           ├─ PendingValue  disk/pending.rs   a value file written in pieces or mapped
//!           ├─ mapped        disk/mapped.rs    memory maps and byte casts: the only `unsafe`
//!           └─ layout, io    disk/layout.rs, disk/io.rs: paths from KeyDigest, atomic writes
//!  Memo, par_map             memo/             memoised results in a chest; compute-once; pool
//!  format                    format.rs         public checks of each file format (fuzz targets)
//!  verify_path, repair       verify.rs         check a chest's files; rebuild its index from them
//!  MappedArray, ArrayWriter  array/mod.rs      views over maps (feature `ndarray`)
//!  ChestInfo, compact_path   inspect.rs        any chest, types unknown: summary, entries, check,
//!                                              full compaction (the `spillchest` tool's library)
//! ```
//!
//! A value's *weight* is its encoded size (or what a user [`ChestBuilder::weigher`] says).
//! Before a value enters memory its weight is reserved against the budget; when that would
//! exceed it, victims leave memory chest-wide in [`Policy`] order. A victim whose disk copy is
//! current is simply dropped from memory, and its slot with it (unless a caller still holds the
//! `Arc`: then a `Weak` is kept so it gets the same one back): a key on disk only costs its
//! entry in its shard's disk index and nothing else. Otherwise it becomes `Writing` (still
//! served from memory, counted as in-flight bytes) and a job is queued. A drainer (the writer
//! thread, callers spilling synchronously, or callers the in-flight allowance holds back,
//! several at once) encodes a batch of queued
//! values with no lock held, small ones straight into its record batch, large ones for a file
//! of their own; reserves places for the records (under `engine`, in the segment of one of two
//! lanes); writes them with no lock held; then, in the order batches were taken, commits
//! their index records and only then records each key's stored copy and settles its slot,
//! under one shard lock. Locks: `engine` (the disk tier; held to reserve and to commit) → a
//! shard → the queue or the segment handles; readers of spilled values take a shard lock
//! briefly and read with no lock held.
//! The on-disk formats and the crash-safety argument are in `docs/design.md`.

// The crate docs link to the array API, which exists only with the `ndarray` feature.
#![cfg_attr(not(feature = "ndarray"), allow(rustdoc::broken_intra_doc_links))]

#[cfg(feature = "ndarray")]
mod array;
mod chest;
mod codec;
mod disk;
mod error;
#[cfg(feature = "fault-injection")]
pub mod faults;
pub mod format;
mod hash;
mod inspect;
pub mod memo;
mod memory;
mod stats;
mod sync;
mod verify;

#[cfg(feature = "ndarray")]
pub use array::{ArrayWriter, Element, MappedArray};
pub use chest::{
    Chest, ChestBuilder, DEFAULT_BUDGET_BYTES, DEFAULT_SEGMENT_BYTES, DEFAULT_SHARDS,
    DEFAULT_SMALL_VALUE_BYTES,
};
pub use codec::{Bincode, Codec, CodecError, Compression};
pub use disk::KeyDigest;
pub use error::{Error, Result};
pub use inspect::{ChestInfo, ChestSummary, CompactReport, EntryInfo, EntryPlace, compact_path};
pub use memo::{Memo, MemoKey};
pub use memory::Policy;
/// The `ndarray` crate this build uses, so array types always match.
#[cfg(feature = "ndarray")]
pub use ndarray;
pub use stats::Stats;
pub use verify::{Damage, RepairReport, VerifyReport, repair, verify_path};
