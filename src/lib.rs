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
//!   those and the operation returned the error.
//! - **Nothing is lost.** Eviction never drops data: an entry is in memory, on disk, or both.
//!   After [`Chest::flush`] returns `Ok`, every entry survives a crash or a power cut. Spilled
//!   entries whose writes completed before a process crash are still there on reopen even
//!   without a flush.
//! - **Nothing is silently corrupted.** Every byte read from disk is checked (lengths,
//!   checksums, the key). Bad bytes give [`Error::Corrupt`] naming the file, never a wrong value
//!   or a panic. A torn write from a crash is detected and discarded on reopen.
//! - **Two processes never corrupt one chest.** A lock file arbitrates: a second writer gets
//!   [`Error::Locked`] (or waits, see [`ChestBuilder::wait_for_lock`]).
//! - **Bad input changes nothing.** A value or key that fails to encode, a full disk, a chest
//!   opened with the wrong types: each is an error, and every entry stored before is intact.
//!
//! ## Design sketch
//!
//! Data flows one way: the public API, then the memory tier, then the disk tier. Nothing below
//! calls back up.
//!
//! ```text
//!  Chest<K, V, C>            chest/mod.rs      public methods; one Mutex around State
//!    ChestBuilder            chest/builder.rs  options, then DiskTier::open + State::recover
//!    State                   chest/state.rs    insert/get/update/remove/flush; enforces the
//!      │                                       budget by spilling victims the memory tier names
//!      ├─ MemoryTier<K, V>   memory/mod.rs     HashMap<K, Entry>, bytes held, budget
//!      │    Entry            memory/entry.rs   value in memory (Arc + weight) or a Weak to it,
//!      │                                       plus the DiskCopy it has, if any
//!      │    EvictionOrder    memory/order.rs   priority queue: Lru (coldest) or Largest first
//!      ├─ Codec (Bincode)    codec.rs          values and keys to bytes; Compression (lz4)
//!      └─ DiskTier           disk/mod.rs       bytes only: keys are encoded bytes, values are
//!           │                                  payloads; open = replay index + scan + reconcile
//!           ├─ LockFile      disk/lock.rs      std File::try_lock / lock_shared on `lock`
//!           ├─ Meta          disk/meta.rs      `meta`: format version, codec, type names
//!           ├─ IndexLog      disk/index_log.rs `.keys`: append-only checksummed records
//!           ├─ value files   disk/value_file.rs `values/xx/<digest>.val`: header, key, payload
//!           └─ layout, io    disk/layout.rs, disk/io.rs: paths from KeyDigest, atomic writes
//!  format                    format.rs         public checks of each file format (fuzz targets)
//!  verify_path, repair       verify.rs         check a chest's files; rebuild its index from them
//!  ChestInfo, compact_path   inspect.rs        any chest, types unknown: summary, entries, check,
//!                                              full compaction (the `spillchest` tool's library)
//! ```
//!
//! A value's *weight* is its encoded size (or what a user [`ChestBuilder::weigher`] says).
//! When the held weight exceeds the budget, [`EvictionOrder`](Policy) names a victim; if its
//! disk copy is current it is simply dropped from memory (a `Weak` is kept so a caller still
//! holding the `Arc` gets the same one back), otherwise it is encoded, compressed if that
//! helps, written to a temporary file, renamed into place and recorded in the index log.
//! The on-disk formats and the crash-safety argument are in `docs/design.md`.

mod chest;
mod codec;
mod disk;
mod error;
#[cfg(feature = "fault-injection")]
pub mod faults;
pub mod format;
mod inspect;
mod memory;
mod stats;
mod verify;

pub use chest::{
    Chest, ChestBuilder, DEFAULT_BUDGET_BYTES, DEFAULT_SEGMENT_BYTES, DEFAULT_SMALL_VALUE_BYTES,
};
pub use codec::{Bincode, Codec, CodecError, Compression};
pub use disk::KeyDigest;
pub use error::{Error, Result};
pub use inspect::{ChestInfo, ChestSummary, CompactReport, EntryInfo, EntryPlace, compact_path};
pub use memory::Policy;
pub use stats::Stats;
pub use verify::{Damage, RepairReport, VerifyReport, repair, verify_path};
