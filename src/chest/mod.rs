//! The public [`Chest`] type.

#[cfg(feature = "ndarray")]
mod arrays;
mod builder;
mod core;

use std::hash::Hash;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tempfile::TempDir;

use self::core::Core;
pub use builder::{
    ChestBuilder, DEFAULT_BUDGET_BYTES, DEFAULT_SEGMENT_BYTES, DEFAULT_SHARDS,
    DEFAULT_SMALL_VALUE_BYTES,
};

use crate::codec::{Bincode, Codec};
use crate::error::{Error, Result};
use crate::stats::Stats;
use crate::sync::{Arc, thread};

/// A typed map that keeps values in memory up to a byte budget and spills the rest to disk.
///
/// Values come back as `Arc<V>`: a value stays valid for as long as the caller holds it, even
/// after it is spilled, overwritten or removed. `Chest` is `Send + Sync` when `K` is `Send` and
/// `V` is `Send + Sync`; every method but [`close`](Chest::close) takes `&self`, so a chest can be
/// shared between threads behind an `Arc`.
///
/// See the [crate documentation](crate) for the guarantees and the design.
pub struct Chest<K, V, C = Bincode>
where
    K: Serialize + DeserializeOwned + Hash + Eq + Clone + 'static,
    V: Serialize + DeserializeOwned + 'static,
    C: Codec,
{
    core: Arc<Core<K, V, C>>,
    /// The background writer, when spilling is not synchronous.
    writer: Option<thread::JoinHandle<()>>,
    path: PathBuf,
    /// Declared last so the directory is removed after the state (and its lock file) closes.
    _temp: Option<TempDir>,
}

impl<K, V> Chest<K, V, Bincode>
where
    K: Serialize + DeserializeOwned + Hash + Eq + Clone + Send + Sync + 'static,
    V: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// A chest in a fresh temporary directory with a budget of `budget_bytes`, removed when the
    /// chest is dropped. Nothing is fsynced.
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io) when the temporary directory cannot be created.
    pub fn with_budget(budget_bytes: u64) -> Result<Self> {
        Self::builder().temp().budget(budget_bytes).open()
    }

    /// Opens the persistent chest in the directory `path`, creating it if absent, with the
    /// default budget of 1 GiB.
    ///
    /// # Errors
    /// As [`ChestBuilder::open`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::builder().path(path.as_ref()).open()
    }

    /// Options for a chest: location, budget, policy, compression, weigher, locking, codec.
    pub fn builder() -> ChestBuilder<K, V, Bincode> {
        ChestBuilder::new()
    }
}

impl<K, V, C> Chest<K, V, C>
where
    K: Serialize + DeserializeOwned + Hash + Eq + Clone + Send + Sync + 'static,
    V: Serialize + DeserializeOwned + Send + Sync + 'static,
    C: Codec,
{
    pub(crate) fn from_parts(
        core: Core<K, V, C>,
        path: PathBuf,
        temp: Option<TempDir>,
    ) -> Result<Self> {
        let core = Arc::new(core);
        let writer = if core.wants_writer() {
            let shared = Arc::clone(&core);
            let handle = thread::Builder::new()
                .name("spillchest-writer".into())
                .spawn(move || shared.run_writer())
                .map_err(|e| Error::io(&path, "start the writer thread", e))?;
            Some(handle)
        } else {
            None
        };
        Ok(Chest {
            core,
            writer,
            path,
            _temp: temp,
        })
    }

    /// Stores `value` under `key`, replacing any value it had. When memory would exceed the
    /// budget, values leave memory in policy order first; a value heavier than the whole budget
    /// goes straight to disk.
    ///
    /// # Errors
    /// [`Error::Encode`](crate::Error::Encode) when the key or value cannot be encoded;
    /// [`Error::DiskFull`](crate::Error::DiskFull) or [`Error::Io`](crate::Error::Io) when a
    /// spill needed to make room fails; [`Error::ReadOnly`](crate::Error::ReadOnly). On error the
    /// chest is unchanged.
    pub fn insert(&self, key: K, value: V) -> Result<()> {
        self.core.insert(key, value)
    }

    /// The value of `key`, from memory or read back from disk.
    ///
    /// In a read-only chest a key it does not have triggers a [`refresh`](Chest::refresh)
    /// first (every miss does: a `stat` of the index and a read of what was appended to it, so
    /// looking up absent keys in a loop costs a few system calls each), and a value the writer
    /// moved or removed since the last refresh is looked up again where it is now.
    ///
    /// # Errors
    /// [`Error::Corrupt`](crate::Error::Corrupt) naming the file when its bytes fail a check;
    /// [`Error::Decode`](crate::Error::Decode); [`Error::Io`](crate::Error::Io);
    /// [`Error::KindMismatch`](crate::Error::KindMismatch) when the entry is a raw array
    /// (stored with `insert_array` or `create_array`, cargo feature `ndarray`).
    pub fn get(&self, key: &K) -> Result<Option<Arc<V>>> {
        self.core.get(key)
    }

    /// True when the chest has `key`. Reads nothing from disk; a read-only chest answers as of
    /// its last [`refresh`](Chest::refresh).
    pub fn contains_key(&self, key: &K) -> bool {
        self.core.contains_key(key)
    }

    /// Removes `key`; true when it was present.
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io) when its value file cannot be deleted (the entry is then
    /// kept); [`Error::ReadOnly`](crate::Error::ReadOnly).
    pub fn remove(&self, key: &K) -> Result<bool> {
        self.core.remove(key)
    }

    /// Changes `key`'s value in place with `f`, whether it is in memory or on disk; true when
    /// the key existed. Callers holding an `Arc` of the old value keep the old value.
    ///
    /// `f` runs while the chest is locked: it must not call back into this chest. If `f`
    /// panics, the entry is kept (with its old value when a copy of it exists, else as `f` left
    /// it) and the panic continues.
    ///
    /// # Errors
    /// As [`get`](Chest::get) for a value read from disk, and as [`insert`](Chest::insert) for
    /// storing the result. On error the old value is kept, with one exception: when `f`
    /// mutated the only in-memory copy of a value that has no current disk copy, the changed
    /// value is kept (in memory, counted in [`Stats::failed_spills`] if it could not make room).
    pub fn update<F: FnOnce(&mut V)>(&self, key: &K, f: F) -> Result<bool> {
        self.core.update(key, f)
    }

    /// The value of `key`, or `f()`'s value inserted as `key`'s when the key is absent.
    /// Concurrent callers for the same missing key run `f` once between them and all receive
    /// its value; `f` must not call back into this chest for the same key.
    ///
    /// # Errors
    /// As [`get`](Chest::get) and [`insert`](Chest::insert).
    pub fn get_or_insert_with<F: FnOnce() -> V>(&self, key: K, f: F) -> Result<Arc<V>> {
        self.core
            .get_or_try_insert_with(key, || Ok::<V, Error>(f()))
    }

    /// Like [`get_or_insert_with`](Chest::get_or_insert_with) with a fallible `f`: its error
    /// is returned to the caller that ran it and nothing is stored, so a later call (or a
    /// waiting one) tries again. The chest's own errors convert into `E`.
    ///
    /// # Errors
    /// `f`'s error, or the chest's as in [`get_or_insert_with`](Chest::get_or_insert_with).
    pub fn get_or_try_insert_with<E, F>(&self, key: K, f: F) -> std::result::Result<Arc<V>, E>
    where
        E: From<Error>,
        F: FnOnce() -> std::result::Result<V, E>,
    {
        self.core.get_or_try_insert_with(key, f)
    }

    /// Number of entries (a read-only chest: as of its last [`refresh`](Chest::refresh)).
    pub fn len(&self) -> usize {
        self.core.len()
    }

    /// True when the chest has no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every key, in no particular order (a read-only chest: as of its last
    /// [`refresh`](Chest::refresh)).
    pub fn keys(&self) -> Vec<K> {
        self.core.keys()
    }

    /// Makes every entry durable: waits for queued background writes, writes each value that
    /// has no current disk copy (it also stays in memory), then fsyncs the value files, their
    /// directories and the index. For a temporary chest it only waits for queued writes; for
    /// a read-only chest it does nothing.
    ///
    /// # Errors
    /// [`Error::Encode`](crate::Error::Encode), [`Error::DiskFull`](crate::Error::DiskFull),
    /// [`Error::Io`](crate::Error::Io); entries are then as durable as before the call.
    pub fn flush(&self) -> Result<()> {
        self.core.flush()
    }

    /// Read-only chests: catches up with the process writing the chest. Reads only what the
    /// writer appended to the index since the open or the last refresh (or everything, when
    /// the writer rewrote the index), and applies it: keys it stored, overwrote or removed.
    ///
    /// A read-only chest sees the chest as of its last refresh (or its open), never a torn
    /// state: an index record is applied only when it is whole and passes its checksum, and
    /// the writer appends a record only after the bytes it names are in their file. A value
    /// the writer moved or removed since is read where it is now (see
    /// [`get`](Chest::get)). `get` of a key the chest does not have refreshes by itself;
    /// call `refresh` before [`contains_key`](Chest::contains_key), [`len`](Chest::len) or
    /// [`keys`](Chest::keys) to see the writer's latest state.
    ///
    /// What a reader can see is what the writer has put on disk: values it spilled or
    /// flushed. A value the writer holds only in memory is not visible until the writer
    /// spills it or calls [`flush`](Chest::flush).
    ///
    /// On a writable or temporary chest there is nothing to follow: `refresh` does nothing and
    /// returns `Ok`.
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io) when the index or a segment cannot be read;
    /// [`Error::Decode`](crate::Error::Decode) when a key in the index does not decode;
    /// [`Error::UnsupportedFormat`](crate::Error::UnsupportedFormat) when the writer replaced
    /// the index with a format this build cannot read.
    pub fn refresh(&self) -> Result<()> {
        self.core.refresh()
    }

    /// Flushes and releases the lock, reporting errors that dropping the chest would swallow.
    ///
    /// # Errors
    /// As [`flush`](Chest::flush), and [`Error::Io`](crate::Error::Io) from unlocking.
    pub fn close(mut self) -> Result<()> {
        self.core.flush()?;
        if let Some(handle) = self.writer.take() {
            self.core.stop_writer();
            let _ = handle.join();
        }
        self.core.release_lock()
    }

    /// The chest's directory (for a temporary chest, the temporary directory).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads back every stored value and walks every segment, checking lengths, checksums and
    /// keys, and reports what is damaged. Values held only in memory are not on disk yet and
    /// are not checked.
    ///
    /// # Errors
    /// [`Error::Encode`](crate::Error::Encode) if a key cannot be encoded; damage is reported,
    /// not returned as an error.
    pub fn verify(&self) -> Result<crate::VerifyReport> {
        self.core.verify()
    }

    /// A snapshot of the chest's counters.
    pub fn stats(&self) -> Stats {
        self.core.stats()
    }
}

impl<K, V, C> Drop for Chest<K, V, C>
where
    K: Serialize + DeserializeOwned + Hash + Eq + Clone + 'static,
    V: Serialize + DeserializeOwned + 'static,
    C: Codec,
{
    /// A persistent chest flushes on drop, best effort: use [`Chest::close`] to see errors.
    fn drop(&mut self) {
        if self.core.is_writable_persistent() {
            let _ = self.core.flush();
        }
        if let Some(handle) = self.writer.take() {
            self.core.stop_writer();
            let _ = handle.join();
        }
    }
}

impl<K, V, C> std::fmt::Debug for Chest<K, V, C>
where
    K: Serialize + DeserializeOwned + Hash + Eq + Clone + 'static,
    V: Serialize + DeserializeOwned + 'static,
    C: Codec,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chest")
            .field("path", &self.path)
            .field("stats", &self.core.stats())
            .finish()
    }
}
