//! The on-disk tier. It knows bytes only: keys arrive encoded, values arrive as encoded
//! payloads. It never calls up into the memory tier.
//!
//! Values smaller than `small_value_bytes` are records in segment files; larger ones have a
//! value file each (so they can be memory-mapped). Writes are *staged*: segment records and
//! index records collect in memory and reach their files with one write each in
//! [`DiskTier::commit_staged`]; until then nothing that was stored before is touched, so a
//! failed commit is undone by [`DiskTier::discard_staged`]. Opening reconciles the index with
//! the files (see `recover.rs` and `docs/design.md`).

#[cfg(feature = "ndarray")]
pub(crate) mod array_file;
mod compact_all;
pub(crate) mod follow;
pub(crate) mod index_log;
mod inspect;
mod io;
mod layout;
mod lock;
pub(crate) mod mapped;
pub(crate) mod meta;
mod pending;
mod recover;
pub(crate) mod segment;
pub(crate) mod value_file;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::codec::{Compression, lz4_decompress};
use crate::error::{Error, Result};

pub(crate) use follow::Changes;
use follow::{Follower, Pending, Step};
pub(crate) use index_log::{DiskLoc, PackedLoc, Place, now_unix_ms};
use index_log::{IndexLog, Record};
pub(crate) use inspect::check_is_chest;
pub use layout::KeyDigest;
use layout::Layout;
use lock::LockFile;
pub(crate) use meta::Meta;
pub(crate) use pending::PendingValue;
pub(crate) use recover::{OpenReport, Recovered};

pub(crate) use segment::{RecordBatch, Reservation};
use segment::{RecordPlace, SegmentStore};

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

/// What opening requires of the chest's metadata.
#[derive(Debug, Clone, Copy)]
pub(crate) enum MetaCheck<'a> {
    /// The chest must hold exactly this (written if the chest is new).
    Expect(&'a Meta),
    /// Any existing chest (tools that do not know the types: verify, repair).
    Any,
}

/// Sizes that shape the disk tier.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DiskOptions {
    /// Encoded values below this go into segments; the rest get their own file.
    pub(crate) small_value_bytes: u64,
    /// A segment is sealed and a new one started when a record would take it past this.
    pub(crate) max_segment_bytes: u64,
    /// Ignore the index and rebuild it from the files' own records (repair).
    pub(crate) rebuild_index: bool,
}

/// A value's encoded bytes read back from disk.
#[derive(Debug)]
pub(crate) struct Payload {
    bytes: io::FileBytes,
    start: usize,
    end: usize,
    /// The value file the bytes came from, for error messages; `None` for a segment record
    /// (naming it means formatting a path, which reads do not pay for unless something fails:
    /// the caller names it with [`Reader::path_of`]).
    pub(crate) path: Option<PathBuf>,
}

impl Payload {
    /// The encoded value.
    pub(crate) fn raw(&self) -> &[u8] {
        &self.bytes[self.start..self.end]
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

/// Reads stored values without the disk tier: the paths, plus the segment file handle the
/// caller looked up. Only records whose index entry was committed (a writer) or read whole
/// from the index (a follower) are read, so their bytes are in the file.
#[derive(Debug, Clone)]
pub(crate) struct Reader {
    layout: Layout,
    segments_dir: PathBuf,
    /// A read-only tier following a writer: a place may have changed since the index entry
    /// naming it was read, which [`fetch`](Self::fetch) tells apart from damage.
    following: bool,
}

impl Reader {
    /// The file a stored value lives in, for error messages.
    pub(crate) fn path_of(&self, key: &[u8], loc: &DiskLoc) -> PathBuf {
        match loc.place {
            Place::File => self.layout.value_file(KeyDigest::of(key)),
            Place::Segment(p) => self.segments_dir.join(segment::file_name(p.segment)),
        }
    }

    /// Reads and verifies the value of `key` stored at `loc` (in `segment_file` for a segment
    /// record), decompressing it. A following tier tells a place the writer has changed since
    /// the entry was read ([`Fetched::Moved`], [`Fetched::Gone`]) from damage
    /// (`Error::Corrupt`); for other tiers both are errors. A value file holding a newer write than `loc` (renamed into place
    /// before its index record was read) is complete and checked like any: it is returned with
    /// where it came from, so the caller can remember that it has seen that write.
    pub(crate) fn fetch(
        &self,
        segment_file: Option<&File>,
        key: &[u8],
        loc: &DiskLoc,
    ) -> Result<Fetched> {
        let mut read_loc = *loc;
        let (bytes, start, compressed, raw_len, path) = match loc.place {
            Place::File => {
                let path = self.path_of(key, loc);
                let bytes = match io::read_file(&path) {
                    Ok(bytes) => bytes,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        let e = Error::corrupt(&path, "value file is missing");
                        return if self.following {
                            Ok(Fetched::Gone(e))
                        } else {
                            Err(e)
                        };
                    }
                    Err(e) => return Err(Error::io(&path, "read value file", e)),
                };
                // The header first: an array is refused before its (maybe huge) payload is hashed.
                let (header, file_key) = value_file::parse_prefix(&bytes, bytes.len() as u64)
                    .map_err(|r| Error::corrupt(&path, r))?;
                if file_key != key {
                    return Err(Error::corrupt(&path, "file holds a different key"));
                }
                if self.following && header.seq < loc.seq {
                    return Ok(Fetched::Moved(Error::corrupt(
                        &path,
                        format!(
                            "file holds write {} where the index names write {}",
                            header.seq, loc.seq
                        ),
                    )));
                }
                if header.array {
                    return Err(array_not_value(&path));
                }
                let parsed = value_file::parse(&bytes).map_err(|r| Error::corrupt(&path, r))?;
                let h = &parsed.header;
                if self.following {
                    read_loc = DiskLoc {
                        place: Place::File,
                        seq: h.seq,
                        raw_len: h.raw_len,
                        stored_len: h.payload_len,
                    };
                }
                let (start, compressed, raw_len) =
                    (h.payload_offset as usize, h.compressed, h.raw_len);
                (bytes, start, compressed, raw_len, Some(path))
            }
            Place::Segment(place) => {
                let Some(file) = segment_file else {
                    let e = Error::corrupt(self.path_of(key, loc), "segment file is missing");
                    return if self.following {
                        Ok(Fetched::Moved(e))
                    } else {
                        Err(e)
                    };
                };
                match self.read_record(file, key, loc, place) {
                    Ok((bytes, start, compressed, raw_len)) => {
                        (bytes, start, compressed, raw_len, None)
                    }
                    // The segment this tier has open is not the file of that name any more
                    // (deleted, or a new segment took its number): the writer moved the record.
                    Err(e) if self.following && !same_file(file, &self.path_of(key, loc)) => {
                        return Ok(Fetched::Moved(e));
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let end = bytes.len();
        let payload = if compressed {
            let raw = lz4_decompress(&bytes[start..end], raw_len).map_err(|reason| {
                Error::corrupt(
                    path.clone().unwrap_or_else(|| self.path_of(key, loc)),
                    reason,
                )
            })?;
            let end = raw.len();
            Payload {
                bytes: io::FileBytes::Owned(raw),
                start: 0,
                end,
                path,
            }
        } else {
            Payload {
                bytes,
                start,
                end,
                path,
            }
        };
        Ok(Fetched::Value(payload, read_loc))
    }

    /// Reads and checks the segment record of `key` at `place`: the bytes, where the payload
    /// starts, whether it is compressed, and its raw length.
    fn read_record(
        &self,
        file: &File,
        key: &[u8],
        loc: &DiskLoc,
        place: RecordPlace,
    ) -> Result<(io::FileBytes, usize, bool, u64)> {
        let path = || self.path_of(key, loc);
        let mut buf = vec![0u8; segment::record_len(key.len(), loc.stored_len) as usize];
        file.read_exact_at(&mut buf, place.offset).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::corrupt(path(), "record runs past the end of the segment")
            } else {
                Error::io(path(), "read segment", e)
            }
        })?;
        let bytes = io::FileBytes::Owned(buf);
        let record = segment::parse_record(&bytes).map_err(|r| {
            Error::corrupt(path(), format!("record at offset {}: {r}", place.offset))
        })?;
        if record.key != key || record.header.kind != segment::KIND_VALUE {
            return Err(Error::corrupt(
                path(),
                format!("record at offset {} holds another key", place.offset),
            ));
        }
        if self.following && record.header.seq != loc.seq {
            return Err(Error::corrupt(
                path(),
                format!(
                    "record at offset {} holds write {} where the index names write {}",
                    place.offset, record.header.seq, loc.seq
                ),
            ));
        }
        let h = &record.header;
        let start = segment::RECORD_HEADER_LEN + key.len();
        Ok((bytes, start, h.compressed, h.raw_len))
    }
}

/// True when `path` names the file `file` is open on.
fn same_file(file: &File, path: &Path) -> bool {
    file.metadata()
        .is_ok_and(|open| io::path_names(path, io::identity(&open)))
}

/// What a read-only tier's [`DiskTier::refresh`] found the writer had done.
#[derive(Debug)]
pub(crate) enum Refreshed {
    /// What changed since the last refresh (or the open), netted per key; often nothing.
    Changes(Changes),
    /// The index was replaced (or could not be followed): every key the tier now sees, found as
    /// an open finds them. Keys not in it are gone.
    Reloaded(Recovered),
}

/// How a stored value read through a possibly out-of-date index entry turned out.
#[derive(Debug)]
pub(crate) enum Fetched {
    /// The value, checked, and the write it came from: `loc`, or for a value file renamed into
    /// place since the index entry was read, the newer write it holds (read-only tiers).
    Value(Payload, DiskLoc),
    /// Read-only tiers only: the place no longer holds that write (its segment was compacted
    /// away or replaced, or the file holds an older write). Refresh and look again; the error
    /// is what to report if the entry still names this place.
    Moved(Error),
    /// Read-only tiers only: the value file is gone. The writer deletes a value file before it
    /// records the removal, so if a refresh still names it, the key is being removed.
    Gone(Error),
}

/// The on-disk tier of one chest.
#[derive(Debug)]
pub(crate) struct DiskTier {
    layout: Layout,
    mode: DiskMode,
    options: DiskOptions,
    /// The writer's exclusive lock; read-only tiers take none.
    lock: Option<LockFile>,
    index: Option<IndexLog>,
    /// Read-only tiers: the index file replayed, followed by [`refresh`](Self::refresh).
    follower: Option<Follower>,
    segments: SegmentStore,
    next_seq: u64,
    /// Value files written since the last sync.
    unsynced_files: HashSet<PathBuf>,
    /// Directories whose entries changed since the last sync.
    unsynced_dirs: HashSet<PathBuf>,
    /// Fan-out directories known to exist.
    fan_out_made: Box<[bool; 256]>,
    /// Index records appended since the last Commit.
    uncommitted: bool,
    /// Segment records that stop being live when the staged writes commit.
    pending_dead: Vec<(u32, u64)>,
    /// Segment records staged by this batch (dead if the batch fails after the segment write).
    pending_live: Vec<(u32, u64)>,
    /// Value files to delete once the staged writes are in their files.
    pending_deletes: Vec<(PathBuf, u64)>,
    own_files: u64,
    own_file_bytes: u64,
    scratch: Vec<u8>,
    /// Time of the index's last Commit record when it was replayed on open (tools show it).
    last_commit_ms: Option<u64>,
}

/// Times a read-only open (or reload) replays again when it found something amiss (a torn
/// index tail, an entry whose file is missing) and the index changed while it ran: the writer
/// was appending then, and the next attempt sees the records that explain it.
const READ_ONLY_OPEN_ATTEMPTS: u32 = 5;

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
        meta: MetaCheck<'_>,
        lock_wait: Duration,
        options: DiskOptions,
    ) -> Result<(DiskTier, Recovered, OpenReport)> {
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
        // Only a writer locks: readers follow what it appends to the index instead.
        let lock = if writable {
            Some(LockFile::acquire(&layout.lock(), lock_wait)?)
        } else {
            None
        };
        match meta {
            MetaCheck::Expect(expected) => {
                check_or_create_meta(&layout, expected, writable, mode == DiskMode::Persistent)?;
            }
            MetaCheck::Any => {
                read_meta(&layout)?;
            }
        }
        let segments =
            SegmentStore::open(&layout.segments(), &[], options.max_segment_bytes, writable)?;
        let mut tier = DiskTier {
            layout,
            mode,
            options,
            lock,
            index: None,
            follower: None,
            segments,
            next_seq: 1,
            unsynced_files: HashSet::new(),
            unsynced_dirs: HashSet::new(),
            fan_out_made: Box::new([false; 256]),
            uncommitted: false,
            pending_dead: Vec::new(),
            pending_live: Vec::new(),
            pending_deletes: Vec::new(),
            own_files: 0,
            own_file_bytes: 0,
            scratch: Vec::new(),
            last_commit_ms: None,
        };
        let (entries, report) = if writable {
            tier.recover()?
        } else {
            tier.recover_following()?
        };
        tier.count_files(&entries);
        Ok((tier, entries, report))
    }

    /// Counts the value files among `entries` and the next sequence number.
    fn count_files(&mut self, entries: &Recovered) {
        self.own_files = 0;
        self.own_file_bytes = 0;
        for (key, loc) in entries.iter() {
            if loc.place == Place::File {
                self.own_files += 1;
                self.own_file_bytes += file_bytes(key.len(), loc.stored_len);
            }
            self.next_seq = self.next_seq.max(loc.seq + 1);
        }
    }

    /// A read-only open: [`recover`](Self::recover), again (a few times at most) when it found
    /// something amiss while the index changed under it.
    fn recover_following(&mut self) -> Result<(Recovered, OpenReport)> {
        let mut attempts = 1;
        loop {
            let (entries, report) = self.recover()?;
            if report == OpenReport::default()
                || attempts >= READ_ONLY_OPEN_ATTEMPTS
                || !self.index_changed_since_replay()?
            {
                return Ok((entries, report));
            }
            attempts += 1;
        }
    }

    /// True when the index is not what the last replay read.
    fn index_changed_since_replay(&self) -> Result<bool> {
        match &self.follower {
            Some(follower) => follower.changed_since_open(),
            None => Ok(self.layout.index().exists()),
        }
    }

    /// Read-only tiers: reads what the writer appended to the index since the open or the last
    /// refresh. Only whole, checksum-valid records are applied; a record still being written
    /// is read next time. When the index was rewritten (or cannot be followed) everything is
    /// replayed again and [`Refreshed::Reloaded`] lists every key. Segments the new records
    /// name are opened; handles of segments deleted since are closed. A writable tier has
    /// nothing to follow: no changes.
    pub(crate) fn refresh(&mut self) -> Result<Refreshed> {
        if self.mode != DiskMode::ReadOnly {
            return Ok(Refreshed::Changes(Changes::default()));
        }
        let pending = match &self.follower {
            Some(follower) => follower.pending()?,
            None if self.layout.index().exists() => Pending::Reload,
            None => Pending::Nothing,
        };
        let step = match (pending, &mut self.follower) {
            (Pending::Nothing, _) => Step::Changes(Changes::default()),
            (Pending::Grew, Some(_)) => {
                // Segments deleted before the index is read had their records moved (and the
                // moves recorded) before they went, so no record read below names them.
                let listed = self.scan_segment_files(false)?;
                self.segments.forget_missing(&listed);
                match &mut self.follower {
                    Some(follower) => follower.step()?,
                    None => Step::Reload,
                }
            }
            _ => Step::Reload,
        };
        let changes = match step {
            Step::Changes(changes) => changes,
            Step::Reload => {
                let (entries, _) = self.recover_following()?;
                self.count_files(&entries);
                return Ok(Refreshed::Reloaded(entries));
            }
        };
        if changes.last_commit_ms.is_some() {
            self.last_commit_ms = changes.last_commit_ms;
        }
        let mut ends: HashMap<u32, u64> = HashMap::new();
        for (key, loc) in &changes.puts {
            if let Place::Segment(p) = loc.place {
                let end = p.offset + segment::record_len(key.len(), loc.stored_len);
                let slot = ends.entry(p.segment).or_default();
                *slot = (*slot).max(end);
            }
        }
        for (id, end) in ends {
            self.segments.follow(id, end)?;
        }
        Ok(Refreshed::Changes(changes))
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

    /// The file a stored value lives in, for error messages.
    pub(crate) fn path_of(&self, key: &[u8], loc: &DiskLoc) -> PathBuf {
        match loc.place {
            Place::File => self.layout.value_file(KeyDigest::of(key)),
            Place::Segment(p) => self.segments.path_of(p.segment),
        }
    }

    fn take_seq(&mut self) -> u64 {
        self.take_seqs(1)
    }

    /// Takes `n` sequence numbers in a row; returns the first. A drainer takes its batch's
    /// numbers when it takes the batch, so that they follow queue order even when batches
    /// are encoded and written side by side.
    pub(crate) fn take_seqs(&mut self, n: u64) -> u64 {
        let first = self.next_seq;
        self.next_seq += n;
        first
    }

    /// The size from which a value gets a file of its own instead of a segment record.
    pub(crate) fn small_value_bytes(&self) -> u64 {
        self.options.small_value_bytes
    }

    /// Places the records of `batch` in segments (see [`SegmentStore::reserve`]); the caller
    /// writes them with no lock held, then [`adopt`](Self::adopt)s or abandons them and
    /// releases the reservation with [`end_reservation`](Self::end_reservation).
    pub(crate) fn reserve(&mut self, batch: &RecordBatch) -> Result<Reservation> {
        self.refuse_if_read_only()?;
        self.segments.reserve(batch)
    }

    /// Ends `reservation`. Unless its records were adopted (`adopted`), they are counted
    /// dead: nothing will name them.
    pub(crate) fn end_reservation(
        &mut self,
        reservation: &Reservation,
        batch: &RecordBatch,
        adopted: bool,
    ) {
        if !adopted {
            self.segments.abandon(reservation, batch);
        }
        self.segments.release(reservation);
    }

    /// Records that the value of `key` is now the reserved record at `loc` (written), in
    /// place of `previous`: its index record is staged, and it is counted live already.
    pub(crate) fn adopt(&mut self, key: &[u8], loc: DiskLoc, previous: Option<DiskLoc>) {
        self.after_put(key, loc, previous, false);
    }

    /// Stores the payload of a large value in a file of its own (written under a temporary
    /// name and renamed into place), as sequence number `seq` (taken with
    /// [`take_seqs`](Self::take_seqs)), in place of `previous`.
    pub(crate) fn store_file(
        &mut self,
        key: &[u8],
        payload: &[u8],
        raw_len: u64,
        compressed: bool,
        seq: u64,
        previous: Option<DiskLoc>,
    ) -> Result<DiskLoc> {
        self.refuse_if_read_only()?;
        let digest = KeyDigest::of(key);
        let dir = self.make_fan_out(digest)?;
        let prefix = value_file::encode_prefix(key, payload, raw_len, compressed, seq);
        let path = self.layout.value_file(digest);
        io::write_then_rename(
            &self.layout.value_tmp(digest),
            &path,
            &[&prefix, payload],
            false,
        )?;
        if self.mode == DiskMode::Persistent {
            self.unsynced_files.insert(path);
            self.unsynced_dirs.insert(dir);
        }
        let loc = DiskLoc {
            place: Place::File,
            seq,
            raw_len,
            stored_len: payload.len() as u64,
        };
        self.after_put(key, loc, previous, true);
        Ok(loc)
    }

    /// Stores the encoded value `raw` of `key` (compressed when that helps): a staged segment
    /// record for a small value, a value file written and renamed into place for a large one.
    /// Either way its index record is staged. `previous` is where the key's value was stored.
    pub(crate) fn write_value(
        &mut self,
        key: &[u8],
        raw: &[u8],
        compression: Compression,
        previous: Option<DiskLoc>,
    ) -> Result<DiskLoc> {
        self.refuse_if_read_only()?;
        let seq = self.take_seq();
        let mut scratch = std::mem::take(&mut self.scratch);
        let compressed = compression.compress(raw, &mut scratch);
        let payload = if compressed { &scratch[..] } else { raw };
        let raw_len = raw.len() as u64;
        let result = if segment::holds(key.len(), raw.len(), self.options.small_value_bytes) {
            let staged =
                self.segments
                    .stage(segment::KIND_VALUE, key, seq, payload, raw_len, compressed);
            staged.map(|place| {
                let loc = DiskLoc {
                    place: Place::Segment(place),
                    seq,
                    raw_len,
                    stored_len: payload.len() as u64,
                };
                self.after_put(key, loc, previous, true);
                loc
            })
        } else {
            self.store_file(key, payload, raw_len, compressed, seq, previous)
        };
        self.scratch = scratch;
        result
    }

    /// Stages a copy of the segment record at `loc` into the active segment, keeping its
    /// sequence number (compaction).
    pub(crate) fn copy_record(&mut self, key: &[u8], loc: DiskLoc) -> Result<DiskLoc> {
        let Place::Segment(place) = loc.place else {
            return Ok(loc);
        };
        let path = self.segments.path_of(place.segment);
        let bytes = self
            .segments
            .read(place, segment::record_len(key.len(), loc.stored_len))?;
        let record = segment::parse_record(&bytes).map_err(|r| Error::corrupt(&path, r))?;
        if record.key != key {
            return Err(Error::corrupt(&path, "record holds a different key"));
        }
        let new_place = self.segments.stage(
            segment::KIND_VALUE,
            key,
            loc.seq,
            record.payload,
            record.header.raw_len,
            record.header.compressed,
        )?;
        let new = DiskLoc {
            place: Place::Segment(new_place),
            ..loc
        };
        self.after_put(key, new, Some(loc), true);
        Ok(new)
    }

    /// Bookkeeping after a value was stored at `loc` in place of `previous`. A staged segment
    /// record (`staged`) is counted dead again if the staged writes are discarded; a reserved
    /// one's reservation does that.
    fn after_put(&mut self, key: &[u8], loc: DiskLoc, previous: Option<DiskLoc>, staged: bool) {
        if let Place::Segment(p) = loc.place
            && staged
        {
            self.pending_live
                .push((p.segment, segment::record_len(key.len(), loc.stored_len)));
        }
        match previous.map(|prev| (prev, prev.place)) {
            Some((prev, Place::Segment(p))) => self
                .pending_dead
                .push((p.segment, segment::record_len(key.len(), prev.stored_len))),
            Some((prev, Place::File)) if loc.place != Place::File => {
                // The value moved into a segment: its old file goes once the record is written.
                let path = self.layout.value_file(KeyDigest::of(key));
                self.pending_deletes
                    .push((path, file_bytes(key.len(), prev.stored_len)));
            }
            Some((prev, Place::File)) => {
                self.own_file_bytes = self
                    .own_file_bytes
                    .saturating_sub(file_bytes(key.len(), prev.stored_len));
                self.own_file_bytes += file_bytes(key.len(), loc.stored_len);
            }
            None => {}
        }
        if loc.place == Place::File && previous.is_none_or(|p| p.place != Place::File) {
            self.own_files += 1;
            self.own_file_bytes += file_bytes(key.len(), loc.stored_len);
        }
        if let Some(index) = &mut self.index {
            index.stage(&Record::Put { key, loc });
        }
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

    /// Starts a value file for `key` written in pieces, under a temporary name of its own.
    /// `array` marks its payload as a raw array. Such values always get a file of their own.
    #[cfg_attr(not(feature = "ndarray"), allow(dead_code))]
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

    /// Writes the header of a value built with [`begin_value`](Self::begin_value), renames it
    /// into place and commits its index record. `previous` is where the key's value was. On
    /// error the temporary file is deleted when `pending` drops and nothing stored before is
    /// touched.
    #[cfg_attr(not(feature = "ndarray"), allow(dead_code))]
    pub(crate) fn commit_value(
        &mut self,
        pending: &mut PendingValue,
        previous: Option<DiskLoc>,
    ) -> Result<DiskLoc> {
        self.refuse_if_read_only()?;
        let seq = self.take_seq();
        let payload_len = pending.write_prefix(seq)?;
        pending.rename_into_place()?;
        if self.mode == DiskMode::Persistent {
            self.unsynced_files.insert(pending.dest.clone());
            self.unsynced_dirs.insert(pending.dir.clone());
        }
        let loc = DiskLoc {
            place: Place::File,
            seq,
            raw_len: payload_len,
            stored_len: payload_len,
        };
        let key = pending.key.clone();
        self.after_put(&key, loc, previous, true);
        self.commit_staged()?;
        Ok(loc)
    }

    /// Maps the value file of `key` and checks its header, key and length, but not its payload
    /// checksum (see the crate docs on arrays for when that is verified).
    #[cfg_attr(not(feature = "ndarray"), allow(dead_code))]
    pub(crate) fn map_value(&self, key: &[u8]) -> Result<MappedValue> {
        let path = self.layout.value_file(KeyDigest::of(key));
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

    /// Removes `key`'s stored value. A value file is deleted at once (before its Remove record,
    /// so a crash between the two leaves an index entry whose file is missing, which open
    /// drops); a segment record gets a staged tombstone of sequence number `seq` (taken with
    /// [`take_seqs`](Self::take_seqs)).
    pub(crate) fn remove_value(&mut self, key: &[u8], previous: DiskLoc, seq: u64) -> Result<()> {
        self.refuse_if_read_only()?;
        match previous.place {
            Place::File => {
                let digest = KeyDigest::of(key);
                let path = self.layout.value_file(digest);
                io::remove_file(&path)?;
                self.unsynced_files.remove(&path);
                self.own_files = self.own_files.saturating_sub(1);
                self.own_file_bytes = self
                    .own_file_bytes
                    .saturating_sub(file_bytes(key.len(), previous.stored_len));
                if self.mode == DiskMode::Persistent {
                    self.unsynced_dirs.insert(self.layout.value_dir(digest));
                }
            }
            Place::Segment(p) => {
                self.segments
                    .stage(segment::KIND_TOMBSTONE, key, seq, &[], 0, false)?;
                self.pending_dead.push((
                    p.segment,
                    segment::record_len(key.len(), previous.stored_len),
                ));
            }
        }
        if let Some(index) = &mut self.index {
            index.stage(&Record::Remove { key });
        }
        Ok(())
    }

    /// Writes what is staged: segment records first, then index records (so an index record
    /// never reaches its file before the record it names), then deletes files the batch made
    /// obsolete. On error everything staged is forgotten and nothing stored before is touched.
    pub(crate) fn commit_staged(&mut self) -> Result<()> {
        if let Err(e) = self.segments.write_staged() {
            self.discard_staged();
            return Err(e);
        }
        if let Some(index) = &mut self.index {
            if let Err(e) = index.write_staged() {
                // The segment records are written but nothing names them: dead bytes.
                self.discard_staged();
                return Err(e);
            }
            self.uncommitted = true;
        }
        self.pending_live.clear();
        for (id, len) in std::mem::take(&mut self.pending_dead) {
            self.segments.mark_dead(id, len);
        }
        for (path, bytes) in std::mem::take(&mut self.pending_deletes) {
            // A file left behind by a failed delete is older than the index entry that
            // replaced it; open discards it by its sequence number.
            if io::remove_file(&path).is_ok() {
                self.unsynced_files.remove(&path);
                self.own_files = self.own_files.saturating_sub(1);
                self.own_file_bytes = self.own_file_bytes.saturating_sub(bytes);
                if let Some(dir) = path.parent() {
                    self.unsynced_dirs.insert(dir.to_path_buf());
                }
            }
        }
        Ok(())
    }

    /// Forgets everything staged since the last commit.
    pub(crate) fn discard_staged(&mut self) {
        // Staged records were counted live; none of them is referred to now (some may have
        // reached a file when a segment rolled over mid-batch: they are dead bytes there).
        for (id, len) in std::mem::take(&mut self.pending_live) {
            self.segments.mark_dead(id, len);
        }
        self.segments.discard_staged();
        if let Some(index) = &mut self.index {
            index.discard_staged();
        }
        self.pending_dead.clear();
        self.pending_live.clear();
        self.pending_deletes.clear();
    }

    /// Reads and verifies the value of `key` stored at `loc`: see [`Reader::fetch`].
    pub(crate) fn fetch_value(&self, key: &[u8], loc: &DiskLoc) -> Result<Fetched> {
        let handle = match loc.place {
            Place::Segment(p) => self.segments.handle(p.segment),
            Place::File => None,
        };
        self.reader().fetch(handle.as_deref(), key, loc)
    }

    /// What reads need, for use without the disk tier.
    pub(crate) fn reader(&self) -> Reader {
        Reader {
            layout: self.layout.clone(),
            segments_dir: self.segments.dir().to_path_buf(),
            following: self.mode == DiskMode::ReadOnly,
        }
    }

    /// Changes whenever a segment file is opened, created or removed.
    pub(crate) fn segment_generation(&self) -> u64 {
        self.segments.generation()
    }

    /// A shared handle of every segment file.
    pub(crate) fn segment_handles(&self) -> Vec<(u32, Arc<File>)> {
        self.segments.handles()
    }

    /// True when a sync has something to do.
    pub(crate) fn needs_sync(&self) -> bool {
        self.mode == DiskMode::Persistent
            && (self.uncommitted
                || !self.unsynced_files.is_empty()
                || !self.unsynced_dirs.is_empty())
    }

    /// True when the index holds so many dead records that the next sync should rewrite it.
    pub(crate) fn index_is_bloated(&self, live_entries: u64) -> bool {
        self.index
            .as_ref()
            .is_some_and(|i| i.records() > 2 * live_entries + 1024)
    }

    /// Makes every write so far durable: segments, value files, their directories, then a
    /// Commit record in the fsynced index. With `rewrite`, the index is replaced by one Put per
    /// entry given (every stored value the chest has) instead.
    pub(crate) fn sync(&mut self, rewrite: Option<&[(Vec<u8>, DiskLoc)]>) -> Result<()> {
        if self.mode != DiskMode::Persistent {
            return Ok(());
        }
        self.commit_staged()?;
        if self.segments.sync()? {
            // New segment files: their names must be durable too.
            self.unsynced_dirs.insert(self.segments.dir().to_path_buf());
            self.unsynced_dirs.insert(self.layout.root().to_path_buf());
        }
        for path in self.unsynced_files.iter() {
            io::sync_file(path)?;
        }
        self.unsynced_files.clear();
        self.sync_dirs()?;
        match rewrite {
            Some(puts) => {
                let puts = puts.iter().map(|(key, loc)| (&key[..], *loc));
                self.index = Some(IndexLog::rewrite(&self.layout.index(), puts, true)?);
                io::sync_dir(self.layout.root())?;
            }
            None => {
                if let Some(index) = &mut self.index {
                    index.append(&Record::Commit {
                        unix_ms: now_unix_ms(),
                    })?;
                    index.sync()?;
                }
            }
        }
        self.uncommitted = false;
        Ok(())
    }

    /// Fsyncs every directory whose entries changed; one that does not exist (nothing was ever
    /// created in it) has nothing to make durable.
    fn sync_dirs(&mut self) -> Result<()> {
        for dir in self.unsynced_dirs.drain() {
            if dir.is_dir() {
                io::sync_dir(&dir)?;
            }
        }
        Ok(())
    }

    /// Sealed segments that compaction should rewrite, emptiest first.
    pub(crate) fn compaction_candidates(&self) -> Vec<u32> {
        self.segments.compaction_candidates()
    }

    /// True when `loc` is a record of segment `id`.
    pub(crate) fn is_in_segment(loc: &DiskLoc, id: u32) -> bool {
        matches!(loc.place, Place::Segment(RecordPlace { segment, .. }) if segment == id)
    }

    /// Deletes segment `id` once nothing refers to it. For a persistent chest the caller must
    /// have synced the copies of its records first.
    pub(crate) fn remove_segment(&mut self, id: u32) -> Result<()> {
        self.segments.remove_segment(id)?;
        if self.mode == DiskMode::Persistent {
            self.unsynced_dirs.insert(self.segments.dir().to_path_buf());
        }
        Ok(())
    }

    /// Value files on disk.
    pub(crate) fn own_files(&self) -> u64 {
        self.own_files
    }

    /// Segment files on disk.
    pub(crate) fn segment_count(&self) -> u64 {
        self.segments.count() as u64
    }

    /// Bytes of value files and segments on disk.
    pub(crate) fn disk_bytes(&self) -> u64 {
        self.own_file_bytes + self.segments.total_bytes()
    }

    /// Bytes of value files and of live segment records.
    pub(crate) fn live_disk_bytes(&self) -> u64 {
        self.own_file_bytes + self.segments.live_bytes()
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

/// Reads the metadata of an existing chest, whatever it holds.
fn read_meta(layout: &Layout) -> Result<Meta> {
    let path = layout.meta();
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NotAChest {
                path: layout.root().to_path_buf(),
            });
        }
        Err(e) => return Err(Error::io(&path, "read metadata", e)),
    };
    Meta::parse(&bytes).map_err(|e| match e {
        meta::MetaError::Bad(reason) => Error::corrupt(&path, reason),
        meta::MetaError::Version(v) => Error::UnsupportedFormat {
            path: path.clone(),
            version: v.into(),
        },
    })
}

/// Checks the metadata against `expected`, or writes it for a new chest.
fn check_or_create_meta(
    layout: &Layout,
    expected: &Meta,
    writable: bool,
    sync: bool,
) -> Result<()> {
    let path = layout.meta();
    if !path.exists() && writable {
        io::write_then_rename(
            &layout.root().join("meta.tmp"),
            &path,
            &[&expected.encode()],
            sync,
        )?;
        if sync {
            io::sync_dir(layout.root())?;
        }
        return Ok(());
    }
    let found = read_meta(layout)?;
    if !found.same_contents(expected) {
        return Err(Error::TypeMismatch {
            path,
            expected: expected.describe(),
            found: found.describe(),
        });
    }
    Ok(())
}
