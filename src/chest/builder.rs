//! Options for opening a chest.

use std::hash::Hash;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::chest::Chest;
use crate::chest::core::{Core, CoreOptions, Weigher};
use crate::codec::{Bincode, Codec, Compression};
use crate::disk::{DiskMode, DiskOptions, DiskTier, Meta, MetaCheck};
use crate::error::{Error, Result};
use crate::memory::Policy;

/// The budget of [`Chest::open`] and of a builder that is given none: 1 GiB.
pub const DEFAULT_BUDGET_BYTES: u64 = 1 << 30;

/// The default size under which an encoded value is packed into a segment: 64 KiB.
pub const DEFAULT_SMALL_VALUE_BYTES: u64 = 64 << 10;
/// The size at which a segment file is sealed and a new one started: 32 MiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 32 << 20;

/// Where a chest lives.
#[derive(Debug, Clone)]
enum Location {
    Temp,
    Path(PathBuf),
}

/// Options for a [`Chest`], from [`Chest::builder`]. Every option has a default: a temporary
/// directory, a 1 GiB budget, [`Policy::S3Fifo`], [`Compression::None`], weights by encoded
/// size, read-write, and no waiting for a lock.
#[must_use = "a builder does nothing until `open` is called"]
pub struct ChestBuilder<K, V, C = Bincode> {
    location: Location,
    budget_bytes: u64,
    policy: Policy,
    compression: Compression,
    weigher: Option<Weigher<V>>,
    read_only: bool,
    lock_wait: Duration,
    small_value_bytes: u64,
    segment_bytes: u64,
    background: bool,
    in_flight_bytes: Option<u64>,
    shards: usize,
    codec: C,
    _keys: PhantomData<fn() -> K>,
}

/// The default number of shards the memory tier is split into.
pub const DEFAULT_SHARDS: usize = 16;

impl<K, V> ChestBuilder<K, V, Bincode> {
    pub(crate) fn new() -> Self {
        ChestBuilder {
            location: Location::Temp,
            budget_bytes: DEFAULT_BUDGET_BYTES,
            policy: Policy::default(),
            compression: Compression::default(),
            weigher: None,
            read_only: false,
            lock_wait: Duration::ZERO,
            small_value_bytes: DEFAULT_SMALL_VALUE_BYTES,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            background: true,
            in_flight_bytes: None,
            shards: DEFAULT_SHARDS,
            codec: Bincode,
            _keys: PhantomData,
        }
    }
}

impl<K, V, C> ChestBuilder<K, V, C> {
    /// A persistent chest in the directory `path`, created if absent.
    pub fn path(mut self, path: impl Into<PathBuf>) -> Self {
        self.location = Location::Path(path.into());
        self
    }

    /// A chest in a fresh temporary directory, removed when the chest is dropped (the default).
    pub fn temp(mut self) -> Self {
        self.location = Location::Temp;
        self
    }

    /// The most bytes of values held in memory.
    pub fn budget(mut self, bytes: u64) -> Self {
        self.budget_bytes = bytes;
        self
    }

    /// Which values leave memory first (default [`Policy::S3Fifo`]).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// How spilled values are compressed.
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Weighs values with `weigher` (bytes) instead of their encoded size. Encoding is then
    /// first tried when a value is spilled, so a value that cannot be encoded is reported by
    /// the operation that tries to spill it.
    pub fn weigher(mut self, weigher: impl Fn(&V) -> u64 + Send + Sync + 'static) -> Self {
        self.weigher = Some(Arc::new(weigher));
        self
    }

    /// Opens an existing chest for reading only. Writes give [`Error::ReadOnly`]. A read-only
    /// chest takes no lock: any number of them open beside each other and beside one writer
    /// (in this process or another), and follow what the writer stores with
    /// [`Chest::refresh`].
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    /// Waits up to `wait` for another writer to release the lock, instead of failing at once
    /// with [`Error::Locked`]. Read-only chests take no lock and never wait.
    pub fn wait_for_lock(mut self, wait: Duration) -> Self {
        self.lock_wait = wait;
        self
    }

    /// Values whose encoding is smaller than `bytes` are appended to shared segment files;
    /// larger ones get a file of their own (default 64 KiB). Zero gives every value its own file.
    pub fn small_value_bytes(mut self, bytes: u64) -> Self {
        self.small_value_bytes = bytes;
        self
    }

    /// The size at which a segment file is sealed and a new one started (default 32 MiB).
    pub fn segment_bytes(mut self, bytes: u64) -> Self {
        self.segment_bytes = bytes;
        self
    }

    /// Spills synchronously: an operation that evicts values returns only after they are
    /// written, and reports a failed write itself. By default (`false`) evicted values are
    /// encoded and written by a background writer thread, `insert` returns without waiting for
    /// the disk, and a failed background write keeps the value in memory and is reported by
    /// the next operation (and by [`flush`](Chest::flush)).
    pub fn synchronous_spill(mut self, synchronous: bool) -> Self {
        self.background = !synchronous;
        self
    }

    /// The most bytes of evicted values waiting for (or in) a background write; when reached,
    /// operations that evict are held back (backpressure): they write queued batches
    /// themselves, beside the writer thread, until there is room. Default: an eighth of the
    /// budget. Memory holds at most the budget plus this allowance (or, if
    /// larger, one value), plus one value per thread whose `update` found no room.
    pub fn in_flight_bytes(mut self, bytes: u64) -> Self {
        self.in_flight_bytes = Some(bytes);
        self
    }

    /// Splits the memory tier into `shards` parts (by key hash), each with its own lock, so
    /// threads working on different keys rarely wait for each other (default 16; 0 counts as
    /// 1). The budget and the eviction order stay chest-wide.
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = shards;
        self
    }

    /// Encodes keys and values with `codec` instead of [`Bincode`].
    pub fn codec<C2: Codec>(self, codec: C2) -> ChestBuilder<K, V, C2> {
        ChestBuilder {
            location: self.location,
            budget_bytes: self.budget_bytes,
            policy: self.policy,
            compression: self.compression,
            weigher: self.weigher,
            read_only: self.read_only,
            lock_wait: self.lock_wait,
            small_value_bytes: self.small_value_bytes,
            segment_bytes: self.segment_bytes,
            background: self.background,
            in_flight_bytes: self.in_flight_bytes,
            shards: self.shards,
            codec,
            _keys: PhantomData,
        }
    }
}

impl<K, V, C> ChestBuilder<K, V, C>
where
    K: Serialize + DeserializeOwned + Hash + Eq + Clone + Send + Sync + 'static,
    V: Serialize + DeserializeOwned + Send + Sync + 'static,
    C: Codec,
{
    /// Opens the chest.
    ///
    /// # Errors
    /// [`Error::Locked`] when another writer holds the lock (never for a read-only chest); [`Error::TypeMismatch`] when the
    /// chest holds other types or another codec; [`Error::UnsupportedFormat`],
    /// [`Error::NotAChest`], [`Error::Corrupt`] for directories it cannot use;
    /// [`Error::Io`] for the file system's errors; [`Error::InvalidConfig`] for a read-only
    /// temporary chest.
    pub fn open(self) -> Result<Chest<K, V, C>> {
        let meta = Meta {
            codec: C::NAME.to_string(),
            key_type: std::any::type_name::<K>().to_string(),
            value_type: std::any::type_name::<V>().to_string(),
            created_unix_ms: crate::disk::now_unix_ms(),
        };
        let (root, temp, mode) = match (&self.location, self.read_only) {
            (Location::Temp, true) => {
                return Err(Error::InvalidConfig {
                    reason: "a temporary chest cannot be read-only".into(),
                });
            }
            (Location::Temp, false) => {
                let dir = tempfile::Builder::new()
                    .prefix("spillchest-")
                    .tempdir()
                    .map_err(|e| {
                        Error::io(std::env::temp_dir(), "create temporary directory", e)
                    })?;
                (dir.path().to_path_buf(), Some(dir), DiskMode::Temp)
            }
            (Location::Path(path), read_only) => {
                let mode = if read_only {
                    DiskMode::ReadOnly
                } else {
                    DiskMode::Persistent
                };
                (path.clone(), None, mode)
            }
        };
        if self.segment_bytes < 4096 {
            return Err(Error::InvalidConfig {
                reason: format!("segment_bytes {} is under 4096", self.segment_bytes),
            });
        }
        let options = DiskOptions {
            small_value_bytes: self.small_value_bytes,
            max_segment_bytes: self.segment_bytes,
            rebuild_index: false,
        };
        let (disk, found, report) = DiskTier::open(
            &root,
            mode,
            MetaCheck::Expect(&meta),
            self.lock_wait,
            options,
        )?;
        let core = Core::recover(
            disk,
            found,
            &report,
            CoreOptions {
                budget_bytes: self.budget_bytes,
                policy: self.policy,
                compression: self.compression,
                weigher: self.weigher,
                codec: self.codec,
                background: self.background,
                in_flight_bytes: self.in_flight_bytes,
                shards: self.shards,
            },
        )?;
        Chest::from_parts(core, root, temp)
    }
}
