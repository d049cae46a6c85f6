//! The on-disk tier. It knows bytes only: keys arrive encoded, values arrive as encoded
//! payloads. It never calls up into the memory tier.
//!
//! Opening a chest directory: lock, check `meta`, replay `.keys`, scan `values/`, reconcile the
//! two (see `docs/design.md` for why each rule keeps a crash harmless):
//! - an index entry whose file is missing is dropped (a removal whose record was lost);
//! - an entry written after the last Commit is verified in full, and discarded if torn;
//! - a file with no index entry is verified and adopted (a spill whose record was lost);
//! - `*.tmp` files are deleted (writes that never reached their rename).

#[cfg(feature = "ndarray")]
pub(crate) mod array_file;
mod index_log;
mod io;
mod layout;
mod lock;
pub(crate) mod mapped;
mod meta;
mod pending;
mod value_file;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::codec::{Compression, lz4_decompress};
use crate::error::{Error, Result};

use index_log::{IndexLog, Record};
pub(crate) use index_log::{PutSizes, now_unix_ms};
pub use layout::KeyDigest;
use layout::Layout;
use lock::{LockFile, LockMode};
pub(crate) use meta::Meta;
pub(crate) use pending::PendingValue;

/// How a chest directory is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DiskMode {
    /// A fresh temporary directory: no index, no fsync.
    Temp,
    /// A persistent chest opened for writing.
    Persistent,
    /// A persistent chest opened for reading only.
    ReadOnly,
}

/// What opening found and mended.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct OpenReport {
    /// Why the index replay stopped early (a torn tail), if it did.
    pub(crate) torn_index_tail: Option<String>,
    /// Index entries dropped because their value file was missing.
    pub(crate) dropped_missing: u64,
    /// Value files found without an index entry, verified and adopted.
    pub(crate) adopted_orphans: u64,
    /// Value files that failed verification on open and were discarded.
    pub(crate) discarded_damaged: u64,
    /// The index was missing or unreadable and was rebuilt from the value files.
    pub(crate) rebuilt_index: bool,
}

/// A key found on disk when opening.
#[derive(Debug)]
pub(crate) struct RecoveredEntry {
    pub(crate) key: Vec<u8>,
    pub(crate) sizes: PutSizes,
}

/// A value's encoded bytes read back from disk.
#[derive(Debug)]
pub(crate) struct Payload {
    bytes: io::FileBytes,
    start: usize,
    /// The sizes the file's header gives.
    pub(crate) sizes: PutSizes,
    /// The file the bytes came from, for error messages.
    pub(crate) path: PathBuf,
}

impl Payload {
    /// The encoded value.
    pub(crate) fn raw(&self) -> &[u8] {
        &self.bytes[self.start..]
    }
}

/// A value file mapped read-only whose header and key were checked (not its payload).
#[cfg_attr(not(feature = "ndarray"), allow(dead_code))]
#[derive(Debug)]
pub(crate) struct MappedValue {
    pub(crate) map: memmap2::Mmap,
    /// Where the payload starts in the map.
    pub(crate) payload_offset: usize,
    /// The xxh3-64 the header records for the payload.
    pub(crate) payload_checksum: u64,
    /// The payload is a raw array.
    pub(crate) array: bool,
    pub(crate) path: PathBuf,
}

#[cfg_attr(not(feature = "ndarray"), allow(dead_code))]
impl MappedValue {
    /// The payload bytes.
    pub(crate) fn payload(&self) -> &[u8] {
        &self.map[self.payload_offset..]
    }
}

/// The checksum value files record for their payload.
#[cfg_attr(not(feature = "ndarray"), allow(dead_code))]
pub(crate) fn payload_checksum(bytes: &[u8]) -> u64 {
    io::checksum(bytes)
}

/// The error for a value file that holds an array where a serialized value was asked for.
pub(crate) fn array_not_value(path: &Path) -> Error {
    Error::KindMismatch {
        path: path.to_path_buf(),
        expected: "a serialized value".into(),
        found: "a raw array (read it with get_array)".into(),
    }
}

/// The on-disk tier of one chest.
#[derive(Debug)]
pub(crate) struct DiskTier {
    layout: Layout,
    mode: DiskMode,
    lock: Option<LockFile>,
    index: Option<IndexLog>,
    /// Value files written since the last sync.
    unsynced_files: HashSet<PathBuf>,
    /// Directories whose entries changed since the last sync.
    unsynced_dirs: HashSet<PathBuf>,
    /// Fan-out directories known to exist.
    fan_out_made: Box<[bool; 256]>,
    /// Index records appended since the last Commit.
    uncommitted: bool,
    live_files: u64,
    disk_bytes: u64,
    scratch: Vec<u8>,
}

/// The bytes a value file takes for a key of `key_len` and a payload of `stored_len`.
fn file_bytes(key_len: usize, stored_len: u64) -> u64 {
    (value_file::HEADER_LEN as u64 + key_len as u64).div_ceil(value_file::PAYLOAD_ALIGN)
        * value_file::PAYLOAD_ALIGN
        + stored_len
}

impl DiskTier {
    /// Opens (or, unless read-only, creates) the chest directory `root` for a chest whose
    /// contents `meta` describes. Returns the tier, every key on disk, and what was mended.
    pub(crate) fn open(
        root: &Path,
        mode: DiskMode,
        meta: &Meta,
        lock_wait: Duration,
    ) -> Result<(DiskTier, Vec<RecoveredEntry>, OpenReport)> {
        let layout = Layout::new(root);
        let writable = mode != DiskMode::ReadOnly;
        if writable {
            io::create_dir(root)?;
        } else if !root.is_dir() {
            return Err(Error::NotAChest {
                path: root.to_path_buf(),
            });
        }
        if !layout.meta().exists() && !looks_empty(root)? {
            return Err(Error::NotAChest {
                path: root.to_path_buf(),
            });
        }
        if !writable && !layout.lock().exists() {
            return Err(Error::NotAChest {
                path: root.to_path_buf(),
            });
        }
        let lock_mode = if writable {
            LockMode::Exclusive
        } else {
            LockMode::Shared
        };
        let lock = LockFile::acquire(&layout.lock(), lock_mode, lock_wait, writable)?;
        let sync = mode == DiskMode::Persistent;
        check_or_create_meta(&layout, meta, writable, sync)?;

        let mut tier = DiskTier {
            layout,
            mode,
            lock: Some(lock),
            index: None,
            unsynced_files: HashSet::new(),
            unsynced_dirs: HashSet::new(),
            fan_out_made: Box::new([false; 256]),
            uncommitted: false,
            live_files: 0,
            disk_bytes: 0,
            scratch: Vec::new(),
        };
        let (entries, report) = tier.recover()?;
        tier.live_files = entries.len() as u64;
        tier.disk_bytes = entries
            .iter()
            .map(|e| file_bytes(e.key.len(), e.sizes.stored_len))
            .sum();
        Ok((tier, entries, report))
    }

    /// Replays the index, scans the value files, reconciles them, and opens the index for
    /// appending (rewriting it when anything was mended).
    fn recover(&mut self) -> Result<(Vec<RecoveredEntry>, OpenReport)> {
        let mut report = OpenReport::default();
        if self.mode == DiskMode::Temp {
            return Ok((Vec::new(), report));
        }
        let writable = self.mode == DiskMode::Persistent;
        let index_path = self.layout.index();
        let replay = match std::fs::read(&index_path) {
            Ok(bytes) => match index_log::check_header(&bytes) {
                Ok(()) => Some(index_log::replay(&bytes)),
                Err(Some(version)) => {
                    return Err(Error::UnsupportedFormat {
                        path: index_path,
                        version: version.into(),
                    });
                }
                Err(None) => None,
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(&index_path, "read index", e)),
        };
        let (mut indexed, unflushed, records, valid_len) = match replay {
            Some(r) => {
                report.torn_index_tail = r.torn_tail;
                (r.entries, r.unflushed, r.records, r.valid_len)
            }
            None => {
                report.rebuilt_index = true;
                (HashMap::new(), HashSet::new(), 0, 0)
            }
        };

        let mut present = self.scan_value_files(writable)?;
        let mut entries = Vec::with_capacity(indexed.len());
        let mut to_sync = Vec::new();
        for (key, sizes) in indexed.drain() {
            let digest = KeyDigest::of(&key);
            if !present.remove(&digest) {
                report.dropped_missing += 1;
                continue;
            }
            let mut sizes = sizes;
            if unflushed.contains(&key) {
                match self.check_file(digest) {
                    Ok((file_key, file_sizes)) if file_key == key => sizes = file_sizes,
                    _ => {
                        report.discarded_damaged += 1;
                        if writable {
                            io::remove_file(&self.layout.value_file(digest))?;
                        }
                        continue;
                    }
                }
                to_sync.push(digest);
            }
            entries.push(RecoveredEntry { key, sizes });
        }
        for digest in present {
            match self.check_file(digest) {
                Ok((key, sizes)) if KeyDigest::of(&key) == digest => {
                    report.adopted_orphans += 1;
                    to_sync.push(digest);
                    entries.push(RecoveredEntry { key, sizes });
                }
                _ => {
                    report.discarded_damaged += 1;
                    if writable {
                        io::remove_file(&self.layout.value_file(digest))?;
                    }
                }
            }
        }

        if !writable {
            return Ok((entries, report));
        }
        let mended = report != OpenReport::default();
        let bloated = records > 2 * entries.len() as u64 + 1024;
        if mended || bloated || !to_sync.is_empty() {
            // The rewritten index ends with a Commit, so every file it names must be durable.
            for digest in to_sync {
                io::sync_file(&self.layout.value_file(digest))?;
            }
            self.sync_all_dirs()?;
            self.index = Some(IndexLog::rewrite(
                &index_path,
                entries.iter().map(|e| (&e.key[..], e.sizes)),
                true,
            )?);
            io::sync_dir(self.layout.root())?;
        } else {
            self.index = Some(IndexLog::open_append(&index_path, valid_len, records)?);
        }
        Ok((entries, report))
    }

    /// Lists the value files present, deleting leftover temporary files when writable.
    fn scan_value_files(&mut self, writable: bool) -> Result<HashSet<KeyDigest>> {
        let mut present = HashSet::new();
        let values = self.layout.values();
        let fans = match std::fs::read_dir(&values) {
            Ok(fans) => fans,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(present),
            Err(e) => return Err(Error::io(&values, "list directory", e)),
        };
        for fan in fans {
            let fan = fan.map_err(|e| Error::io(&values, "list directory", e))?;
            let fan_path = fan.path();
            if !fan_path.is_dir() {
                continue;
            }
            if let Some(i) = fan
                .file_name()
                .to_str()
                .and_then(|s| u8::from_str_radix(s, 16).ok())
            {
                self.fan_out_made[i as usize] = true;
            }
            let files = std::fs::read_dir(&fan_path)
                .map_err(|e| Error::io(&fan_path, "list directory", e))?;
            for file in files {
                let file = file.map_err(|e| Error::io(&fan_path, "list directory", e))?;
                let name = file.file_name();
                let Some(name) = name.to_str() else { continue };
                if let Some(stem) = name.strip_suffix(layout::VALUE_SUFFIX) {
                    if let Some(digest) = KeyDigest::from_hex(stem) {
                        present.insert(digest);
                    }
                } else if name.ends_with(layout::TMP_SUFFIX) && writable {
                    io::remove_file(&file.path())?;
                }
            }
        }
        Ok(present)
    }

    /// Reads and verifies the value file of `digest` in full.
    fn check_file(&self, digest: KeyDigest) -> Result<(Vec<u8>, PutSizes), String> {
        let path = self.layout.value_file(digest);
        let bytes = io::read_file(&path).map_err(|e| e.to_string())?;
        let parsed = value_file::parse(&bytes)?;
        Ok((
            parsed.key.to_vec(),
            PutSizes {
                raw_len: parsed.header.raw_len,
                stored_len: parsed.header.payload_len,
            },
        ))
    }

    fn sync_all_dirs(&mut self) -> Result<()> {
        for dir in self.unsynced_dirs.drain() {
            io::sync_dir(&dir)?;
        }
        Ok(())
    }

    fn refuse_if_read_only(&self) -> Result<()> {
        if self.mode == DiskMode::ReadOnly {
            return Err(Error::ReadOnly {
                path: self.layout.root().to_path_buf(),
            });
        }
        Ok(())
    }

    /// How the directory is used.
    pub(crate) fn mode(&self) -> DiskMode {
        self.mode
    }

    /// The chest's directory.
    pub(crate) fn root(&self) -> &Path {
        self.layout.root()
    }

    /// The path of the value file of an encoded key.
    pub(crate) fn value_path(&self, key: &[u8]) -> PathBuf {
        self.layout.value_file(KeyDigest::of(key))
    }

    /// Writes the encoded value `raw` of `key` to its value file (compressed when that helps)
    /// and records it in the index. `previous` is the key's current file, if it has one.
    /// On error nothing that was stored before is touched.
    pub(crate) fn write_value(
        &mut self,
        key: &[u8],
        raw: &[u8],
        compression: Compression,
        previous: Option<PutSizes>,
    ) -> Result<PutSizes> {
        self.refuse_if_read_only()?;
        let digest = KeyDigest::of(key);
        let dir = self.make_fan_out(digest)?;
        let mut scratch = std::mem::take(&mut self.scratch);
        let compressed = compression.compress(raw, &mut scratch);
        let payload = if compressed { &scratch[..] } else { raw };
        let prefix = value_file::encode_prefix(key, payload, raw.len() as u64, compressed);
        let path = self.layout.value_file(digest);
        let written = io::write_then_rename(
            &self.layout.value_tmp(digest),
            &path,
            &[&prefix, payload],
            false,
        );
        let sizes = PutSizes {
            raw_len: raw.len() as u64,
            stored_len: payload.len() as u64,
        };
        self.scratch = scratch;
        written?;
        self.record_put(key, path, dir, sizes, previous)?;
        Ok(sizes)
    }

    /// Creates the fan-out directory of `digest` if it is not known to exist.
    fn make_fan_out(&mut self, digest: KeyDigest) -> Result<PathBuf> {
        let dir = self.layout.value_dir(digest);
        let fan_index = digest.fan_out_index();
        if !self.fan_out_made[fan_index] {
            io::create_dir(&dir)?;
            self.fan_out_made[fan_index] = true;
            self.unsynced_dirs.insert(self.layout.values());
            self.unsynced_dirs.insert(self.layout.root().to_path_buf());
        }
        Ok(dir)
    }

    #[cfg_attr(not(feature = "ndarray"), allow(dead_code))]
    /// Starts a value file for `key` written in pieces, under a temporary name of its own.
    /// `array` marks its payload as a raw array.
    pub(crate) fn begin_value(&mut self, key: &[u8], array: bool) -> Result<PendingValue> {
        self.refuse_if_read_only()?;
        let digest = KeyDigest::of(key);
        let dir = self.make_fan_out(digest)?;
        let flags = if array { value_file::FLAG_ARRAY } else { 0 };
        PendingValue::create(
            key,
            self.layout.value_tmp_unique(digest),
            self.layout.value_file(digest),
            dir,
            flags,
        )
    }

    #[cfg_attr(not(feature = "ndarray"), allow(dead_code))]
    /// Writes the header of a value built with [`begin_value`](Self::begin_value), renames it
    /// into place and records it in the index. `previous` is the key's current file, if any.
    /// On error the temporary file is deleted when `pending` drops and nothing stored before
    /// is touched.
    pub(crate) fn commit_value(
        &mut self,
        pending: &mut PendingValue,
        previous: Option<PutSizes>,
    ) -> Result<PutSizes> {
        self.refuse_if_read_only()?;
        let payload_len = pending.write_prefix()?;
        pending.rename_into_place()?;
        let sizes = PutSizes {
            raw_len: payload_len,
            stored_len: payload_len,
        };
        let (path, dir) = (pending.dest.clone(), pending.dir.clone());
        self.record_put(&pending.key, path, dir, sizes, previous)?;
        Ok(sizes)
    }

    /// Records a value file renamed into place: index Put, files to sync, accounting.
    fn record_put(
        &mut self,
        key: &[u8],
        path: PathBuf,
        dir: PathBuf,
        sizes: PutSizes,
        previous: Option<PutSizes>,
    ) -> Result<()> {
        if let Some(index) = &mut self.index {
            index.append(&Record::Put {
                key,
                raw_len: sizes.raw_len,
                stored_len: sizes.stored_len,
            })?;
            self.uncommitted = true;
        }
        if self.mode == DiskMode::Persistent {
            self.unsynced_files.insert(path);
            self.unsynced_dirs.insert(dir);
        }
        match previous {
            Some(old) => {
                self.disk_bytes -= file_bytes(key.len(), old.stored_len).min(self.disk_bytes);
            }
            None => self.live_files += 1,
        }
        self.disk_bytes += file_bytes(key.len(), sizes.stored_len);
        Ok(())
    }

    #[cfg_attr(not(feature = "ndarray"), allow(dead_code))]
    /// Maps the value file of `key` and checks its header, key and length, but not its payload
    /// checksum (see the crate docs on arrays for when that is verified).
    pub(crate) fn map_value(&self, key: &[u8]) -> Result<MappedValue> {
        let path = self.value_path(key);
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::corrupt(&path, "value file is missing"));
            }
            Err(e) => return Err(Error::io(&path, "open value file", e)),
        };
        let map = mapped::map_read(&file).map_err(|e| Error::io(&path, "map value file", e))?;
        let (header, file_key) = value_file::parse_prefix(&map, map.len() as u64)
            .map_err(|reason| Error::corrupt(&path, reason))?;
        if file_key != key {
            return Err(Error::corrupt(&path, "file holds a different key"));
        }
        Ok(MappedValue {
            payload_offset: header.payload_offset as usize,
            payload_checksum: header.payload_checksum,
            array: header.array,
            map,
            path,
        })
    }

    /// Reads and verifies the value of `key`, decompressing it.
    pub(crate) fn read_value(&self, key: &[u8]) -> Result<Payload> {
        let path = self.value_path(key);
        let bytes = match io::read_file(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::corrupt(&path, "value file is missing"));
            }
            Err(e) => return Err(Error::io(&path, "read value file", e)),
        };
        // The header first: an array is refused before its (possibly huge) payload is hashed.
        let (header, file_key) = value_file::parse_prefix(&bytes, bytes.len() as u64)
            .map_err(|reason| Error::corrupt(&path, reason))?;
        if file_key != key {
            return Err(Error::corrupt(&path, "file holds a different key"));
        }
        if header.array {
            return Err(array_not_value(&path));
        }
        let parsed = value_file::parse(&bytes).map_err(|reason| Error::corrupt(&path, reason))?;
        let header = parsed.header.clone();
        let sizes = PutSizes {
            raw_len: header.raw_len,
            stored_len: header.payload_len,
        };
        if header.compressed {
            // LZ4 expands at most about 255 times; a larger claim is damage, not a value.
            if header.raw_len > header.payload_len.saturating_mul(255).saturating_add(64) {
                return Err(Error::corrupt(
                    &path,
                    "raw length impossible for its payload",
                ));
            }
            let raw = lz4_decompress(parsed.payload, header.raw_len as usize)
                .map_err(|reason| Error::corrupt(&path, reason))?;
            return Ok(Payload {
                bytes: io::FileBytes::Owned(raw),
                start: 0,
                sizes,
                path,
            });
        }
        Ok(Payload {
            start: header.payload_offset as usize,
            bytes,
            sizes,
            path,
        })
    }

    /// Deletes the value file of `key` and records the removal. The file goes first: a crash
    /// between the two leaves an index entry without a file, which open drops.
    pub(crate) fn remove_value(&mut self, key: &[u8], previous: PutSizes) -> Result<()> {
        self.refuse_if_read_only()?;
        let digest = KeyDigest::of(key);
        let path = self.layout.value_file(digest);
        io::remove_file(&path)?;
        self.unsynced_files.remove(&path);
        self.live_files = self.live_files.saturating_sub(1);
        self.disk_bytes -= file_bytes(key.len(), previous.stored_len).min(self.disk_bytes);
        if self.mode == DiskMode::Persistent {
            self.unsynced_dirs.insert(self.layout.value_dir(digest));
        }
        if let Some(index) = &mut self.index {
            index.append(&Record::Remove { key })?;
            self.uncommitted = true;
        }
        Ok(())
    }

    /// True when a sync has something to do.
    pub(crate) fn needs_sync(&self) -> bool {
        self.mode == DiskMode::Persistent
            && (self.uncommitted
                || !self.unsynced_files.is_empty()
                || !self.unsynced_dirs.is_empty())
    }

    /// True when the index holds so many dead records that the next sync should rewrite it.
    pub(crate) fn index_is_bloated(&self) -> bool {
        self.index
            .as_ref()
            .is_some_and(|i| i.records() > 2 * self.live_files + 1024)
    }

    /// Makes every file written so far durable: value files, their directories, then a Commit
    /// record in the fsynced index. With `rewrite`, the index is replaced by one Put per entry
    /// in it (every file the chest has) instead.
    #[allow(clippy::type_complexity)] // pre-existing; main replaced this signature
    pub(crate) fn sync<'a>(
        &mut self,
        rewrite: Option<Box<dyn Iterator<Item = (&'a [u8], PutSizes)> + 'a>>,
    ) -> Result<()> {
        if self.mode != DiskMode::Persistent {
            return Ok(());
        }
        for path in self.unsynced_files.iter() {
            io::sync_file(path)?;
        }
        self.unsynced_files.clear();
        self.sync_all_dirs()?;
        let index_path = self.layout.index();
        match rewrite {
            Some(puts) => {
                self.index = Some(IndexLog::rewrite(&index_path, puts, true)?);
                io::sync_dir(self.layout.root())?;
            }
            None => {
                if let Some(index) = &mut self.index {
                    index.append(&Record::Commit {
                        unix_ms: index_log::now_unix_ms(),
                    })?;
                    index.sync()?;
                }
            }
        }
        self.uncommitted = false;
        Ok(())
    }

    /// Value files on disk.
    pub(crate) fn live_files(&self) -> u64 {
        self.live_files
    }

    /// Bytes of value files on disk.
    pub(crate) fn disk_bytes(&self) -> u64 {
        self.disk_bytes
    }

    /// Bytes of the index log.
    pub(crate) fn index_bytes(&self) -> u64 {
        self.index.as_ref().map_or(0, IndexLog::len_bytes)
    }

    /// Releases the lock, reporting an error the operating system gives.
    pub(crate) fn release(&mut self) -> Result<()> {
        match self.lock.take() {
            Some(lock) => lock.release(),
            None => Ok(()),
        }
    }
}

/// True when `root` holds nothing but possibly a lock file (a chest that was never finished
/// being created, or a fresh directory).
fn looks_empty(root: &Path) -> Result<bool> {
    let entries = std::fs::read_dir(root).map_err(|e| Error::io(root, "list directory", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(root, "list directory", e))?;
        let name = entry.file_name();
        if name != layout::LOCK_FILE && name != "meta.tmp" {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Checks the metadata against `expected`, or writes it for a new chest.
fn check_or_create_meta(
    layout: &Layout,
    expected: &Meta,
    writable: bool,
    sync: bool,
) -> Result<()> {
    let path = layout.meta();
    match std::fs::read(&path) {
        Ok(bytes) => {
            let found = Meta::parse(&bytes).map_err(|e| match e {
                meta::MetaError::Bad(reason) => Error::corrupt(&path, reason),
                meta::MetaError::Version(v) => Error::UnsupportedFormat {
                    path: path.clone(),
                    version: v.into(),
                },
            })?;
            if !found.same_contents(expected) {
                return Err(Error::TypeMismatch {
                    path,
                    expected: expected.describe(),
                    found: found.describe(),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && writable => {
            io::write_then_rename(
                &layout.root().join("meta.tmp"),
                &path,
                &[&expected.encode()],
                sync,
            )?;
            if sync {
                io::sync_dir(layout.root())?;
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::NotAChest {
            path: layout.root().to_path_buf(),
        }),
        Err(e) => Err(Error::io(&path, "read metadata", e)),
    }
}
