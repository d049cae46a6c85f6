//! Every system measured, behind one small trait so the workloads drive them the same way:
//! spillchest (under any eviction policy), an in-memory `HashMap`, a one-file-per-key store,
//! redb, foyer and moka.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use spillchest::{Bincode, Chest, ChestBuilder, Codec, Compression, Policy};

use crate::common::{Report, dir_usage};

/// Errors from any system, boxed: the harness only reports them.
pub type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The operations the workloads need.
pub trait KvStore<V> {
    /// Stores `value` under `key`.
    fn insert(&mut self, key: u64, value: V) -> BenchResult<()>;
    /// Calls `f` with the value of `key`; false when the store has none.
    fn get_with(&mut self, key: u64, f: &mut dyn FnMut(&V)) -> BenchResult<bool>;
    /// Makes everything durable (or, for a cache, waits for its writes).
    fn flush(&mut self) -> BenchResult<()>;
    /// False for stores that keep nothing on disk (no flush to time).
    fn durable(&self) -> bool {
        true
    }
    /// Closes the store (untimed) and opens it again; returns the seconds the open took, or
    /// `None` when the store cannot be reopened.
    fn reopen(&mut self) -> BenchResult<Option<f64>>;
    /// Gets served from memory so far, when the store can tell.
    fn served_from_memory(&self) -> Option<u64> {
        None
    }
    /// Disk bytes, files and anything else the store can say.
    fn report(&self, r: &Report);
}

/// The bytes `value` encodes to with the codec every system here uses: spillchest's default,
/// [`Bincode`] (bincode 2, standard configuration, with its bulk path for byte and float
/// vectors), so that the comparison is of the stores, not of codecs.
pub fn encode<T: Serialize + 'static>(value: &T) -> BenchResult<Vec<u8>> {
    let mut out = Vec::new();
    Bincode.encode(value, &mut out)?;
    Ok(out)
}

/// Decodes what [`encode`] wrote.
pub fn decode<T: DeserializeOwned + 'static>(bytes: &[u8]) -> BenchResult<T> {
    Bincode.decode(bytes)
}

/// spillchest, persistent in its own directory so that flush and reopen mean something.
pub struct SpillStore<V: Serialize + DeserializeOwned + 'static> {
    chest: Option<Chest<u64, V>>,
    path: PathBuf,
    budget_bytes: u64,
    policy: Policy,
}

impl<V: Serialize + DeserializeOwned + Send + Sync + 'static> SpillStore<V> {
    /// A fresh chest in `dir/chest` with `budget_bytes` and `policy` (no compression).
    pub fn create(dir: &Path, budget_bytes: u64, policy: Policy) -> BenchResult<Self> {
        Self::open_existing(dir, budget_bytes, policy)
    }

    /// The chest a `create` in `dir` left behind, opened with `budget_bytes` and `policy`.
    pub fn open_existing(dir: &Path, budget_bytes: u64, policy: Policy) -> BenchResult<Self> {
        let path = dir.join("chest");
        let chest = Self::open_chest(&path, budget_bytes, policy)?;
        Ok(SpillStore {
            chest: Some(chest),
            path,
            budget_bytes,
            policy,
        })
    }

    /// The chest every spillchest workload uses: persistent at `path`, `budget_bytes`, `policy`,
    /// no compression, the default shards and background writer.
    pub fn open_chest(
        path: &Path,
        budget_bytes: u64,
        policy: Policy,
    ) -> BenchResult<Chest<u64, V>> {
        Ok(Self::chest_builder(path, budget_bytes, policy).open()?)
    }

    /// The builder of [`open_chest`](Self::open_chest), for a workload that sets one more option.
    pub fn chest_builder(path: &Path, budget_bytes: u64, policy: Policy) -> ChestBuilder<u64, V> {
        Chest::builder()
            .path(path)
            .budget(budget_bytes)
            .policy(policy)
            .compression(Compression::None)
    }

    fn chest(&self) -> &Chest<u64, V> {
        self.chest
            .as_ref()
            .expect("chest is open between operations")
    }
}

impl<V: Serialize + DeserializeOwned + Send + Sync + 'static> KvStore<V> for SpillStore<V> {
    fn insert(&mut self, key: u64, value: V) -> BenchResult<()> {
        Ok(self.chest().insert(key, value)?)
    }

    fn get_with(&mut self, key: u64, f: &mut dyn FnMut(&V)) -> BenchResult<bool> {
        match self.chest().get(&key)? {
            Some(v) => {
                f(&v);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn flush(&mut self) -> BenchResult<()> {
        Ok(self.chest().flush()?)
    }

    fn reopen(&mut self) -> BenchResult<Option<f64>> {
        if let Some(chest) = self.chest.take() {
            chest.close()?;
        }
        let t = std::time::Instant::now();
        self.chest = Some(Self::open_chest(
            &self.path,
            self.budget_bytes,
            self.policy,
        )?);
        Ok(Some(t.elapsed().as_secs_f64()))
    }

    fn served_from_memory(&self) -> Option<u64> {
        let s = self.chest().stats();
        Some(s.memory_hits + s.shared_hits)
    }

    fn report(&self, r: &Report) {
        let s = self.chest().stats();
        r.metric("entries", s.entries as f64);
        r.metric("in_memory", s.in_memory as f64);
        r.metric("memory_bytes", s.memory_bytes as f64);
        r.metric("stats_disk_bytes", (s.disk_bytes + s.index_bytes) as f64);
        r.metric("stats_files", s.files as f64);
        r.metric("spills", s.spills as f64);
        r.metric("loads", s.loads as f64);
        let (bytes, files) = dir_usage(&self.path);
        r.metric("disk_bytes", bytes as f64);
        r.metric("files", files as f64);
    }
}

/// A plain `HashMap`: the ceiling for in-memory operations (no budget, no disk).
pub struct MapStore<V>(HashMap<u64, V>);

impl<V> MapStore<V> {
    /// An empty map.
    pub fn new() -> Self {
        MapStore(HashMap::new())
    }
}

impl<V> KvStore<V> for MapStore<V> {
    fn insert(&mut self, key: u64, value: V) -> BenchResult<()> {
        self.0.insert(key, value);
        Ok(())
    }

    fn get_with(&mut self, key: u64, f: &mut dyn FnMut(&V)) -> BenchResult<bool> {
        Ok(self.0.get(&key).map(f).is_some())
    }

    fn flush(&mut self) -> BenchResult<()> {
        Ok(())
    }

    fn reopen(&mut self) -> BenchResult<Option<f64>> {
        Ok(None)
    }

    fn durable(&self) -> bool {
        false
    }

    fn report(&self, r: &Report) {
        r.metric("entries", self.0.len() as f64);
        r.metric("disk_bytes", 0.0);
        r.metric("files", 0.0);
    }
}

/// One file per key, written with `std::fs` and the same codec: what the Python chest does.
/// Files go to 256 subdirectories by key; flush fsyncs every file and directory.
pub struct FileStore {
    root: PathBuf,
    written: Vec<PathBuf>,
    flush_timebox: std::time::Duration,
    /// Files left unsynced when a flush ran out of its time box.
    pub unsynced: usize,
}

impl FileStore {
    /// A store under `dir/files`; a flush stops fsyncing after `flush_timebox`.
    pub fn create(dir: &Path, flush_timebox: std::time::Duration) -> BenchResult<Self> {
        let root = dir.join("files");
        for i in 0..256 {
            std::fs::create_dir_all(root.join(format!("{i:02x}")))?;
        }
        Ok(FileStore {
            root,
            written: Vec::new(),
            flush_timebox,
            unsynced: 0,
        })
    }

    fn path(&self, key: u64) -> PathBuf {
        self.root
            .join(format!("{:02x}", key % 256))
            .join(format!("{key}.val"))
    }
}

impl<V: Serialize + DeserializeOwned + 'static> KvStore<V> for FileStore {
    fn insert(&mut self, key: u64, value: V) -> BenchResult<()> {
        let bytes = encode(&value)?;
        let path = self.path(key);
        File::create(&path)?.write_all(&bytes)?;
        self.written.push(path);
        Ok(())
    }

    fn get_with(&mut self, key: u64, f: &mut dyn FnMut(&V)) -> BenchResult<bool> {
        match std::fs::read(self.path(key)) {
            Ok(bytes) => {
                f(&decode::<V>(&bytes)?);
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn flush(&mut self) -> BenchResult<()> {
        let t = std::time::Instant::now();
        let written = std::mem::take(&mut self.written);
        for (i, path) in written.iter().enumerate() {
            if t.elapsed() > self.flush_timebox {
                self.unsynced = written.len() - i;
                break;
            }
            File::open(path)?.sync_all()?;
        }
        for i in 0..256 {
            File::open(self.root.join(format!("{i:02x}")))?.sync_all()?;
        }
        Ok(())
    }

    fn reopen(&mut self) -> BenchResult<Option<f64>> {
        // No index to load: a reopen has to list the directories to learn the keys.
        let t = std::time::Instant::now();
        let mut keys = 0u64;
        for i in 0..256 {
            keys += std::fs::read_dir(self.root.join(format!("{i:02x}")))?.count() as u64;
        }
        std::hint::black_box(keys);
        Ok(Some(t.elapsed().as_secs_f64()))
    }

    fn report(&self, r: &Report) {
        let (bytes, files) = dir_usage(&self.root);
        r.metric("disk_bytes", bytes as f64);
        r.metric("files", files as f64);
        if self.unsynced > 0 {
            r.note(&format!(
                "flush stopped by the {} s time box with {} files not fsynced",
                self.flush_timebox.as_secs(),
                self.unsynced
            ));
        }
    }
}

/// redb with one table `u64 -> bytes` (the same codec), its cache set to the chest's budget.
/// Inserts go in write transactions of `batch` entries, each committed with redb's default
/// (durable) commit.
pub struct RedbStore {
    db: Option<redb::Database>,
    path: PathBuf,
    cache_bytes: usize,
    pending: Option<redb::WriteTransaction>,
    in_batch: usize,
    batch: usize,
}

const REDB_TABLE: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("values");

impl RedbStore {
    /// A fresh database at `dir/redb.db`.
    pub fn create(dir: &Path, cache_bytes: usize, batch: usize) -> BenchResult<Self> {
        let path = dir.join("redb.db");
        let db = redb::Database::builder()
            .set_cache_size(cache_bytes)
            .create(&path)?;
        Ok(RedbStore {
            db: Some(db),
            path,
            cache_bytes,
            pending: None,
            in_batch: 0,
            batch,
        })
    }

    /// An existing database at `path`.
    pub fn open(path: &Path, cache_bytes: usize) -> BenchResult<Self> {
        let db = redb::Database::builder()
            .set_cache_size(cache_bytes)
            .open(path)?;
        Ok(RedbStore {
            db: Some(db),
            path: path.to_path_buf(),
            cache_bytes,
            pending: None,
            in_batch: 0,
            batch: 1,
        })
    }

    fn db(&self) -> &redb::Database {
        self.db
            .as_ref()
            .expect("database is open between operations")
    }

    fn commit(&mut self) -> BenchResult<()> {
        if let Some(txn) = self.pending.take() {
            txn.commit()?;
        }
        self.in_batch = 0;
        Ok(())
    }
}

impl<V: Serialize + DeserializeOwned + 'static> KvStore<V> for RedbStore {
    fn insert(&mut self, key: u64, value: V) -> BenchResult<()> {
        let bytes = encode(&value)?;
        if self.pending.is_none() {
            self.pending = Some(self.db().begin_write()?);
        }
        if let Some(txn) = &self.pending {
            txn.open_table(REDB_TABLE)?.insert(key, bytes.as_slice())?;
        }
        self.in_batch += 1;
        if self.in_batch >= self.batch {
            self.commit()?;
        }
        Ok(())
    }

    fn get_with(&mut self, key: u64, f: &mut dyn FnMut(&V)) -> BenchResult<bool> {
        use redb::ReadableDatabase;
        let txn = self.db().begin_read()?;
        let table = txn.open_table(REDB_TABLE)?;
        match table.get(key)? {
            Some(guard) => {
                f(&decode::<V>(guard.value())?);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn flush(&mut self) -> BenchResult<()> {
        self.commit()
    }

    fn reopen(&mut self) -> BenchResult<Option<f64>> {
        self.commit()?;
        drop(self.db.take());
        let t = std::time::Instant::now();
        self.db = Some(
            redb::Database::builder()
                .set_cache_size(self.cache_bytes)
                .open(&self.path)?,
        );
        Ok(Some(t.elapsed().as_secs_f64()))
    }

    fn report(&self, r: &Report) {
        use redb::{ReadableDatabase, ReadableTableMetadata};
        let entries = self
            .db()
            .begin_read()
            .ok()
            .and_then(|t| t.open_table(REDB_TABLE).ok()?.len().ok());
        if let Some(n) = entries {
            r.metric("entries", n as f64);
        }
        let (bytes, files) = dir_usage(self.path.parent().unwrap_or(Path::new(".")));
        r.metric("disk_bytes", bytes as f64);
        r.metric("files", files as f64);
    }
}

/// foyer's `HybridCache` with a byte weigher (memory = the chest's budget) and a file device,
/// writing every entry to disk on insertion so that "durable" means the same as a flush (foyer
/// never fsyncs: its writes reach the page cache). It may drop entries (a full submit queue, a
/// full device); the workloads count what it returns. `queue_bytes` raises the submit queue's
/// drop threshold (default 16 MiB) so that it buffers instead of dropping.
pub struct FoyerStore {
    rt: tokio::runtime::Runtime,
    cache: foyer::HybridCache<u64, Vec<u8>>,
    dir: PathBuf,
    memory_hits: u64,
}

impl FoyerStore {
    /// A cache with `memory_bytes` of memory and a device of `device_bytes` under `dir/foyer`.
    pub fn create(
        dir: &Path,
        memory_bytes: usize,
        device_bytes: usize,
        queue_bytes: Option<usize>,
    ) -> BenchResult<Self> {
        use foyer::{BlockEngineConfig, DeviceBuilder, FsDeviceBuilder, HybridCacheBuilder};
        let dir = dir.join("foyer");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let device_bytes = device_bytes.max(64 << 20).div_ceil(16 << 20) * (16 << 20);
        let cache = rt.block_on(async {
            let device = FsDeviceBuilder::new(&dir)
                .with_capacity(device_bytes)
                .build()?;
            let mut engine = BlockEngineConfig::new(device);
            if let Some(q) = queue_bytes {
                engine = engine.with_submit_queue_size_threshold(q);
            }
            HybridCacheBuilder::new()
                .with_policy(foyer::HybridCachePolicy::WriteOnInsertion)
                .memory(memory_bytes)
                .with_weighter(|_k: &u64, v: &Vec<u8>| v.len())
                .storage()
                .with_engine_config(engine)
                .build()
                .await
        })?;
        Ok(FoyerStore {
            rt,
            cache,
            dir,
            memory_hits: 0,
        })
    }
}

impl KvStore<Vec<u8>> for FoyerStore {
    fn insert(&mut self, key: u64, value: Vec<u8>) -> BenchResult<()> {
        let _guard = self.rt.enter();
        self.cache.insert(key, value);
        Ok(())
    }

    fn get_with(&mut self, key: u64, f: &mut dyn FnMut(&Vec<u8>)) -> BenchResult<bool> {
        if self.cache.memory().contains(&key) {
            self.memory_hits += 1;
        }
        match self.rt.block_on(self.cache.get(&key))? {
            Some(entry) => {
                f(entry.value());
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn flush(&mut self) -> BenchResult<()> {
        self.rt.block_on(self.cache.storage().wait());
        Ok(())
    }

    fn reopen(&mut self) -> BenchResult<Option<f64>> {
        Ok(None)
    }

    fn served_from_memory(&self) -> Option<u64> {
        Some(self.memory_hits)
    }

    fn report(&self, r: &Report) {
        let (bytes, files) = dir_usage(&self.dir);
        r.metric("disk_bytes", bytes as f64);
        r.metric("files", files as f64);
        r.metric("memory_usage", self.cache.memory().usage() as f64);
    }
}

/// moka's `sync::Cache` with a byte weigher: memory only, used for W5's hit ratio. A miss is
/// served by regenerating the value (a read-through cache in front of a source).
pub struct MokaStore<V: Send + Sync + 'static> {
    /// The cache.
    pub cache: moka::sync::Cache<u64, Arc<V>>,
}

impl<V: Send + Sync + 'static> MokaStore<V> {
    /// A cache holding at most `budget_bytes`, weighing each value with `weigh`.
    pub fn new(budget_bytes: u64, weigh: fn(&V) -> u32) -> Self {
        let cache = moka::sync::Cache::builder()
            .max_capacity(budget_bytes)
            .weigher(move |_k: &u64, v: &Arc<V>| weigh(v))
            .build();
        MokaStore { cache }
    }
}
