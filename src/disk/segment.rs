//! Segment files: many small values appended to one file, so a million values need a handful
//! of files, not a million.
//!
//! ```text
//! segment file: header (16 bytes): magic b"SPCHSEG\0" | version u16 (1) | reserved u16 | id u32
//! then records, back to back:
//! offset size field
//!  0      1   kind: 1 = value, 2 = tombstone (the key was removed)
//!  1      1   flags: bit 0 = payload is an LZ4 block
//!  2      2   key length K (keys longer than 65,535 bytes get value files instead)
//!  4      4   stored length S (0 for a tombstone)
//!  8      4   raw length R
//! 12      8   sequence number (orders every write of the chest)
//! 20      8   xxh3-64 of bytes 0..20, the key and the payload
//! 28      K   key
//! 28+K    S   payload
//! ```
//! Records are self-describing: `repair` rebuilds the index from them, the highest sequence
//! number of a key winning.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::disk::io::{self, Cursor};
use crate::error::{Error, Result};

/// The magic bytes every segment file starts with.
pub(crate) const MAGIC: [u8; 8] = *b"SPCHSEG\0";
/// The segment format this build writes and reads.
pub(crate) const VERSION: u16 = 1;
/// Length of the file header.
pub(crate) const FILE_HEADER_LEN: u64 = 16;
/// Length of a record's fixed header.
pub(crate) const RECORD_HEADER_LEN: usize = 28;
/// The longest key a segment record can hold.
pub(crate) const MAX_KEY_LEN: usize = u16::MAX as usize;
/// The longest payload a segment record can hold.
pub(crate) const MAX_PAYLOAD_LEN: usize = u32::MAX as usize;
/// Record kind: a value.
pub(crate) const KIND_VALUE: u8 = 1;
/// Record kind: a removal.
pub(crate) const KIND_TOMBSTONE: u8 = 2;
const FLAG_LZ4: u8 = 1;

/// True when a value of `raw_len` encoded bytes under a key of `key_len` goes to a segment
/// record: it is under `small_value_bytes` (larger ones get a file of their own) and within
/// what a record can hold.
pub(crate) fn holds(key_len: usize, raw_len: usize, small_value_bytes: u64) -> bool {
    (raw_len as u64) < small_value_bytes && key_len <= MAX_KEY_LEN && raw_len <= MAX_PAYLOAD_LEN
}

/// The bytes a record of `key_len` and `stored_len` takes.
pub(crate) fn record_len(key_len: usize, stored_len: u64) -> u64 {
    RECORD_HEADER_LEN as u64 + key_len as u64 + stored_len
}

/// A record's fixed header, after its checks passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecordHeader {
    pub(crate) kind: u8,
    pub(crate) compressed: bool,
    pub(crate) seq: u64,
    pub(crate) raw_len: u64,
    pub(crate) stored_len: u64,
}

/// Appends a record to `out`. The key must be at most [`MAX_KEY_LEN`] bytes and the payload
/// at most [`MAX_PAYLOAD_LEN`] (callers send longer ones to value files).
pub(crate) fn encode_record(
    out: &mut Vec<u8>,
    kind: u8,
    key: &[u8],
    seq: u64,
    payload: &[u8],
    raw_len: u64,
    compressed: bool,
) {
    let start = out.len();
    out.resize(start + RECORD_HEADER_LEN, 0);
    out.extend_from_slice(key);
    out.extend_from_slice(payload);
    seal_record(&mut out[start..], kind, key.len(), seq, raw_len, compressed);
}

/// Fills in the header of `record`: header space, then a key of `key_len` bytes, then the
/// payload, which runs to the end. The checksum covers what the header says and both.
fn seal_record(
    record: &mut [u8],
    kind: u8,
    key_len: usize,
    seq: u64,
    raw_len: u64,
    compressed: bool,
) {
    let payload_len = record.len() - RECORD_HEADER_LEN - key_len;
    debug_assert!(key_len <= MAX_KEY_LEN && payload_len <= MAX_PAYLOAD_LEN);
    let (header, body) = record.split_at_mut(RECORD_HEADER_LEN);
    header[0] = kind;
    header[1] = if compressed { FLAG_LZ4 } else { 0 };
    header[2..4].copy_from_slice(&(key_len as u16).to_le_bytes());
    header[4..8].copy_from_slice(&(payload_len as u32).to_le_bytes());
    header[8..12].copy_from_slice(&(raw_len as u32).to_le_bytes());
    header[12..20].copy_from_slice(&seq.to_le_bytes());
    let (key, payload) = body.split_at(key_len);
    let sum = record_checksum(&header[..20], key, payload);
    header[20..28].copy_from_slice(&sum.to_le_bytes());
}

/// The checksum of a record: xxh3-64 of its first 20 header bytes, its key and its payload, as
/// if they were one run of bytes. A small record is copied to the stack and hashed in one call
/// (the streaming hasher costs more to set up than hashing a hundred bytes); a larger one is
/// streamed. Both give the same digest.
fn record_checksum(first_20: &[u8], key: &[u8], payload: &[u8]) -> u64 {
    const SMALL: usize = 512;
    let len = first_20.len() + key.len() + payload.len();
    if len <= SMALL {
        let mut buf = [0u8; SMALL];
        let (head, rest) = buf.split_at_mut(first_20.len());
        head.copy_from_slice(first_20);
        let (k, rest) = rest.split_at_mut(key.len());
        k.copy_from_slice(key);
        rest[..payload.len()].copy_from_slice(payload);
        return xxhash_rust::xxh3::xxh3_64(&buf[..len]);
    }
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(first_20);
    h.update(key);
    h.update(payload);
    h.digest()
}

/// A fully checked record.
#[derive(Debug)]
pub(crate) struct ParsedRecord<'a> {
    pub(crate) header: RecordHeader,
    pub(crate) key: &'a [u8],
    pub(crate) payload: &'a [u8],
}

/// Parses one whole record at the start of `bytes` and checks it: first what costs nothing
/// (kind, flags, lengths), then the checksum.
pub(crate) fn parse_record(bytes: &[u8]) -> Result<ParsedRecord<'_>, String> {
    let (header, key_len) = parse_header(bytes)?;
    let key = &bytes[RECORD_HEADER_LEN..RECORD_HEADER_LEN + key_len];
    let payload_at = RECORD_HEADER_LEN + key_len;
    let payload = &bytes[payload_at..payload_at + header.stored_len as usize];
    let stored_sum = u64::from_le_bytes(bytes[20..28].try_into().expect("8 bytes"));
    if record_checksum(&bytes[..20], key, payload) != stored_sum {
        return Err("record checksum mismatch".into());
    }
    Ok(ParsedRecord {
        header,
        key,
        payload,
    })
}

/// The checks of a record header that need no checksum (its fields, and that the key and the
/// payload lie within `bytes`); returns the header and the key's length.
fn parse_header(bytes: &[u8]) -> Result<(RecordHeader, usize), String> {
    let mut c = Cursor::new(bytes);
    let short = || "record header runs past the end".to_string();
    let kind = c.u8().ok_or_else(short)?;
    let flags = c.u8().ok_or_else(short)?;
    let key_len = c.u16().ok_or_else(short)?;
    let stored_len = c.u32().ok_or_else(short)?;
    let raw_len = c.u32().ok_or_else(short)?;
    let seq = c.u64().ok_or_else(short)?;
    c.u64().ok_or_else(short)?;
    if kind != KIND_VALUE && kind != KIND_TOMBSTONE {
        return Err(format!("unknown record kind {kind}"));
    }
    if flags & !FLAG_LZ4 != 0 {
        return Err(format!("unknown record flags {flags:#x}"));
    }
    let compressed = flags & FLAG_LZ4 != 0;
    if !compressed && raw_len != stored_len {
        return Err(format!(
            "raw length {raw_len} differs from stored length {stored_len}"
        ));
    }
    c.take(key_len.into())
        .ok_or_else(|| "record key runs past the end".to_string())?;
    c.take(stored_len as usize)
        .ok_or_else(|| "record payload runs past the end".to_string())?;
    let header = RecordHeader {
        kind,
        compressed,
        seq,
        raw_len: raw_len.into(),
        stored_len: stored_len.into(),
    };
    Ok((header, key_len.into()))
}

/// The file header of segment `id`.
pub(crate) fn file_header(id: u32) -> [u8; FILE_HEADER_LEN as usize] {
    let mut h = [0u8; FILE_HEADER_LEN as usize];
    h[..8].copy_from_slice(&MAGIC);
    h[8..10].copy_from_slice(&VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&id.to_le_bytes());
    h
}

/// Checks a segment file header, returning the segment id.
pub(crate) fn parse_file_header(bytes: &[u8]) -> Result<u32, String> {
    let mut c = Cursor::new(bytes);
    if c.take(8) != Some(&MAGIC[..]) {
        return Err("not a segment file (bad magic)".into());
    }
    match c.u16() {
        Some(VERSION) => {}
        Some(v) => return Err(format!("unsupported segment version {v}")),
        None => return Err("segment header truncated".into()),
    }
    c.u16().ok_or("segment header truncated")?;
    c.u32()
        .ok_or_else(|| "segment header truncated".to_string())
}

/// A run of a segment file where no record passes its checks: from `start` to `end`, where
/// the next one that does begins, or the end of the file (a torn tail).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Damaged {
    pub(crate) start: u64,
    pub(crate) end: u64,
    /// Why the record at `start` failed.
    pub(crate) why: String,
}

impl Damaged {
    /// The run as a report line names it.
    pub(crate) fn describe(&self) -> String {
        format!(
            "records from offset {} to {} unreadable: {}",
            self.start, self.end, self.why
        )
    }
}

/// Candidate records (headers that pass the checks needing no checksum) that a search for the
/// next readable record checksums before it gives up on the rest of the file: bounds the work
/// on bytes made to look like record headers everywhere.
const RESYNC_CHECKSUMS: usize = 4096;

/// Walks the records of a whole segment file, calling `each` with every valid record and its
/// offset. A record that fails a check starts a damaged run, and the walk goes on after it:
/// where its header says it ends when that header holds, else at the next offset where a
/// record passes every check (records after a damaged one, or after a range a failed write
/// left, are still found). Returns the damaged runs in file order.
pub(crate) fn scan(
    bytes: &[u8],
    mut each: impl FnMut(u64, &ParsedRecord<'_>),
) -> Result<Vec<Damaged>, String> {
    parse_file_header(bytes)?;
    let mut damaged = Vec::new();
    let mut at = FILE_HEADER_LEN as usize;
    while at < bytes.len() {
        match parse_record(&bytes[at..]) {
            Ok(record) => {
                each(at as u64, &record);
                at += record_len(record.key.len(), record.header.stored_len) as usize;
            }
            Err(why) => {
                // A record whose header holds (its payload or checksum damaged) ends where its
                // header says, if a record or the end of the file follows there: skipping it
                // so never mistakes records stored inside its payload for the chest's own.
                // Otherwise the next record is searched for.
                let next = parse_header(&bytes[at..])
                    .ok()
                    .map(|(h, key_len)| at + record_len(key_len, h.stored_len) as usize)
                    .filter(|&end| end == bytes.len() || parse_record(&bytes[end..]).is_ok())
                    .or_else(|| next_record(bytes, at + 1))
                    .unwrap_or(bytes.len());
                damaged.push(Damaged {
                    start: at as u64,
                    end: next as u64,
                    why,
                });
                at = next;
            }
        }
    }
    Ok(damaged)
}

/// The first offset from `from` on where a whole record passes every check, if any (and if
/// found within [`RESYNC_CHECKSUMS`] candidates).
fn next_record(bytes: &[u8], from: usize) -> Option<usize> {
    let mut checksummed = 0;
    for at in from..bytes.len() {
        if parse_header(&bytes[at..]).is_err() {
            continue;
        }
        if parse_record(&bytes[at..]).is_ok() {
            return Some(at);
        }
        checksummed += 1;
        if checksummed == RESYNC_CHECKSUMS {
            return None;
        }
    }
    None
}

/// The file name of segment `id`.
pub(crate) fn file_name(id: u32) -> String {
    format!("{id:08x}.seg")
}

/// Parses a segment file name.
pub(crate) fn parse_file_name(name: &str) -> Option<u32> {
    let stem = name.strip_suffix(".seg")?;
    if stem.len() != 8 {
        return None;
    }
    u32::from_str_radix(stem, 16).ok()
}

/// A new segment generation, unique in the process: a store opened again (a follower's
/// reload) never repeats the generation of the store it replaces.
fn next_generation() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[derive(Debug)]
struct Segment {
    /// Shared with readers, who read committed records without the disk tier's lock.
    file: Arc<File>,
    /// Device and inode of `file`: a reader tells by them that the name now belongs to
    /// another file (the writer deleted the segment and a new one took its number).
    identity: (u64, u64),
    /// Bytes in the file, including what is still staged for the active segment.
    len: u64,
    /// Bytes of records that are some key's current value.
    live_bytes: u64,
}

/// Device and inode of an open file.
fn identity_of(file: &File, path: &Path) -> Result<(u64, u64)> {
    let meta = file
        .metadata()
        .map_err(|e| Error::io(path, "stat segment", e))?;
    Ok(io::identity(&meta))
}

/// The most staged bytes whose room is kept after they are written.
const STAGED_KEPT: usize = 8 << 20;

/// Records encoded away from the store, back to back, for [`SegmentStore::reserve`] to place
/// and [`Reservation::write`] to write: a drainer fills one holding no lock.
#[derive(Debug, Default)]
pub(crate) struct RecordBatch {
    bytes: Vec<u8>,
    /// Each record's start and length in `bytes`.
    records: Vec<(usize, usize)>,
}

impl RecordBatch {
    /// Empties the batch, keeping its room.
    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.records.clear();
    }

    /// Number of records.
    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }

    /// The key of record `i`.
    pub(crate) fn key(&self, i: usize) -> &[u8] {
        let (start, _) = self.records[i];
        let header = &self.bytes[start..start + RECORD_HEADER_LEN];
        let key_len = u16::from_le_bytes([header[2], header[3]]) as usize;
        &self.bytes[start + RECORD_HEADER_LEN..start + RECORD_HEADER_LEN + key_len]
    }

    /// Bytes of record `i`.
    pub(crate) fn record_len(&self, i: usize) -> usize {
        self.records[i].1
    }

    /// Appends a record (see [`encode_record`]); returns its number.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn push(
        &mut self,
        kind: u8,
        key: &[u8],
        seq: u64,
        payload: &[u8],
        raw_len: u64,
        compressed: bool,
    ) -> usize {
        let start = self.bytes.len();
        encode_record(
            &mut self.bytes,
            kind,
            key,
            seq,
            payload,
            raw_len,
            compressed,
        );
        self.records.push((start, self.bytes.len() - start));
        self.records.len() - 1
    }

    /// Appends an uncompressed value record whose payload `encode` appends in place, with no
    /// copy through another buffer; returns its number and the payload's length. A payload
    /// of `below` bytes or more is not kept: it is moved to `spill` and `None` returned (the
    /// caller gives it a value file). An encoding error leaves the batch as it was; an
    /// encoder that cut into the batch instead of appending empties it and is an error (the
    /// caller fails the batch).
    pub(crate) fn push_encoded(
        &mut self,
        key: &[u8],
        seq: u64,
        below: usize,
        spill: &mut Vec<u8>,
        encode: impl FnOnce(&mut Vec<u8>) -> Result<()>,
    ) -> Result<Option<(usize, u64)>> {
        debug_assert!(key.len() <= MAX_KEY_LEN);
        let start = self.bytes.len();
        self.bytes.resize(start + RECORD_HEADER_LEN, 0);
        self.bytes.extend_from_slice(key);
        let payload_start = self.bytes.len();
        if let Err(e) = encode(&mut self.bytes) {
            self.bytes.truncate(start);
            return Err(e);
        }
        let Some(payload_len) = self.bytes.len().checked_sub(payload_start) else {
            self.clear();
            return Err(Error::Corrupt {
                path: PathBuf::new(),
                reason: "a value's encoder shortened the batch".into(),
            });
        };
        if payload_len >= below.min(MAX_PAYLOAD_LEN + 1) {
            spill.clear();
            spill.extend_from_slice(&self.bytes[payload_start..]);
            self.bytes.truncate(start);
            return Ok(None);
        }
        let raw_len = payload_len as u64;
        seal_record(
            &mut self.bytes[start..],
            KIND_VALUE,
            key.len(),
            seq,
            raw_len,
            false,
        );
        self.records.push((start, self.bytes.len() - start));
        Ok(Some((self.records.len() - 1, raw_len)))
    }
}

/// Where [`SegmentStore::reserve`] placed a batch's records, and the writes that put them
/// there.
#[derive(Debug)]
pub(crate) struct Reservation {
    lane: usize,
    dir: PathBuf,
    /// Each record's place, in batch order.
    pub(crate) places: Vec<RecordPlace>,
    writes: Vec<PlannedWrite>,
}

/// One write of a reservation: a run of the batch's bytes to one place in one segment.
#[derive(Debug)]
struct PlannedWrite {
    segment: u32,
    file: Arc<File>,
    offset: u64,
    range: Range<usize>,
}

impl Reservation {
    /// Writes `batch`'s records to their places (one write per segment touched). Needs no
    /// access to the store: the reserved bytes are this reservation's alone.
    pub(crate) fn write(&self, batch: &RecordBatch) -> Result<()> {
        for w in &self.writes {
            io::hook(io::Op::Write)
                .and_then(|()| w.file.write_all_at(&batch.bytes[w.range.clone()], w.offset))
                .map_err(|e| Error::io(self.dir.join(file_name(w.segment)), "write segment", e))?;
        }
        Ok(())
    }
}

/// Where a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct RecordPlace {
    pub(crate) segment: u32,
    pub(crate) offset: u64,
}

/// Segments appended to at once: batches written side by side go to different files (a
/// file system takes a file's lock for each buffered write, so writes to one file queue).
pub(crate) const LANES: usize = 2;

/// All segment files of a chest. Up to [`LANES`] of them are open for appending, one per
/// lane; lane 0's also takes the records staged under the disk tier's lock.
#[derive(Debug)]
pub(crate) struct SegmentStore {
    dir: PathBuf,
    segments: BTreeMap<u32, Segment>,
    /// Each lane's segment, appended to (lane 0 is the "active" segment of staged records).
    lanes: [Option<u32>; LANES],
    /// Reservations not yet released, per lane.
    lane_busy: [u32; LANES],
    /// Reservations not yet released, per segment: such a segment is never compacted away.
    reserved: BTreeMap<u32, u32>,
    /// Bytes appended to lane 0's segment but not yet written to the file.
    staged: Vec<u8>,
    /// Where in lane 0's segment `staged` begins (meaningful while it holds bytes).
    staged_at: u64,
    max_segment_bytes: u64,
    /// Segments written since the last sync.
    unsynced: Vec<u32>,
    /// A segment file was created since the last sync.
    created: bool,
    /// Changes whenever a segment file is opened, created or removed (readers refresh their
    /// handles); unique in the process.
    generation: u64,
}

impl SegmentStore {
    /// Opens the segments found in `dir` (ids and lengths as listed), none of them active.
    /// Read-only, a segment deleted since it was listed is left out (a writer compacted it
    /// away after recording where its records went).
    pub(crate) fn open(
        dir: &Path,
        found: &[(u32, u64)],
        max_segment_bytes: u64,
        writable: bool,
    ) -> Result<Self> {
        let mut segments = BTreeMap::new();
        for &(id, len) in found {
            let path = dir.join(file_name(id));
            let file = match OpenOptions::new().read(true).write(writable).open(&path) {
                Ok(file) => file,
                Err(e) if !writable && e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(&path, "open segment", e)),
            };
            segments.insert(
                id,
                Segment {
                    identity: identity_of(&file, &path)?,
                    file: Arc::new(file),
                    len,
                    live_bytes: 0,
                },
            );
        }
        Ok(SegmentStore {
            dir: dir.to_path_buf(),
            segments,
            lanes: [None; LANES],
            lane_busy: [0; LANES],
            reserved: BTreeMap::new(),
            staged: Vec::new(),
            staged_at: 0,
            max_segment_bytes,
            unsynced: Vec::new(),
            created: false,
            generation: next_generation(),
        })
    }

    pub(crate) fn path_of(&self, id: u32) -> PathBuf {
        self.dir.join(file_name(id))
    }

    /// Counts `bytes` of segment `id` as live (used when rebuilding accounting on open).
    pub(crate) fn add_live(&mut self, id: u32, bytes: u64) {
        if let Some(s) = self.segments.get_mut(&id) {
            s.live_bytes += bytes;
        }
    }

    /// Counts `bytes` of segment `id` as dead (overwritten or removed).
    pub(crate) fn mark_dead(&mut self, id: u32, bytes: u64) {
        if let Some(s) = self.segments.get_mut(&id) {
            s.live_bytes = s.live_bytes.saturating_sub(bytes);
        }
    }

    /// True when `place` lies within an existing segment's bytes.
    pub(crate) fn contains(&self, place: RecordPlace, len: u64) -> bool {
        self.segments.get(&place.segment).is_some_and(|s| {
            place.offset >= FILE_HEADER_LEN && place.offset.saturating_add(len) <= s.len
        })
    }

    /// Creates the next segment file, its header written, as the segment of `lane` (the
    /// segment the lane had is sealed: nothing more is appended to it).
    fn start_segment(&mut self, lane: usize) -> Result<u32> {
        if lane == 0 {
            self.write_staged()?;
        }
        let id = self.segments.keys().next_back().map_or(1, |last| last + 1);
        let path = self.path_of(id);
        io::create_dir(&self.dir)?;
        let file = io::hook(io::Op::Write)
            .and_then(|()| {
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(&path)
            })
            .map_err(|e| Error::io(&path, "create segment", e))?;
        let header = io::hook(io::Op::Write).and_then(|()| file.write_all_at(&file_header(id), 0));
        if let Err(e) = header {
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Err(Error::io(&path, "write segment header", e));
        }
        self.segments.insert(
            id,
            Segment {
                identity: identity_of(&file, &path)?,
                file: Arc::new(file),
                len: FILE_HEADER_LEN,
                live_bytes: 0,
            },
        );
        self.lanes[lane] = Some(id);
        self.created = true;
        self.generation = next_generation();
        self.unsynced.push(id);
        Ok(id)
    }

    /// True when a record of `len` bytes fits in `lane`'s segment (an empty one takes any).
    fn fits(&self, lane: usize, len: u64) -> bool {
        self.lanes[lane]
            .and_then(|id| self.segments.get(&id))
            .is_some_and(|s| s.len + len <= self.max_segment_bytes || s.len == FILE_HEADER_LEN)
    }

    /// Claims the next `len` bytes of `lane`'s segment, which has room (see [`fits`]).
    ///
    /// [`fits`]: Self::fits
    fn claim(&mut self, lane: usize, len: u64, kind: u8) -> Result<RecordPlace> {
        let id = self.lanes[lane].ok_or_else(|| Error::corrupt(&self.dir, "no active segment"))?;
        let segment = self
            .segments
            .get_mut(&id)
            .ok_or_else(|| Error::corrupt(&self.dir, "active segment vanished"))?;
        let offset = segment.len;
        segment.len += len;
        if kind == KIND_VALUE {
            segment.live_bytes += len;
        }
        if !self.unsynced.contains(&id) {
            self.unsynced.push(id);
        }
        Ok(RecordPlace {
            segment: id,
            offset,
        })
    }

    /// Places every record of `batch` (encoded without this store) in the segment of the
    /// least busy lane, starting new segments as they fill, and returns the places and the
    /// writes that put the bytes there: [`Reservation::write`] needs no access to the store,
    /// so it runs without the disk tier's lock. Until [`release`](Self::release), no segment
    /// the reservation touches is compacted away. Staged records must have been written.
    pub(crate) fn reserve(&mut self, batch: &RecordBatch) -> Result<Reservation> {
        debug_assert!(self.staged.is_empty());
        let lane = (0..LANES).min_by_key(|&l| self.lane_busy[l]).unwrap_or(0);
        let mut reservation = Reservation {
            lane,
            dir: self.dir.clone(),
            places: Vec::with_capacity(batch.records.len()),
            writes: Vec::new(),
        };
        self.lane_busy[lane] += 1;
        let placed = (|| {
            for &(start, len) in &batch.records {
                if !self.fits(lane, len as u64) {
                    self.start_segment(lane)?;
                }
                let place = self.claim(lane, len as u64, KIND_VALUE)?;
                reservation.places.push(place);
                match reservation.writes.last_mut() {
                    Some(w) if w.segment == place.segment && w.range.end == start => {
                        w.range.end = start + len;
                    }
                    _ => {
                        let file = self.segments.get(&place.segment).map(|s| s.file.clone());
                        let file =
                            file.ok_or_else(|| Error::corrupt(&self.dir, "segment vanished"))?;
                        *self.reserved.entry(place.segment).or_default() += 1;
                        reservation.writes.push(PlannedWrite {
                            segment: place.segment,
                            file,
                            offset: place.offset,
                            range: start..start + len,
                        });
                    }
                }
            }
            Ok(())
        })();
        if let Err(e) = placed {
            // What was placed is counted dead, and nothing stays reserved.
            self.abandon(&reservation, batch);
            self.release(&reservation);
            return Err(e);
        }
        Ok(reservation)
    }

    /// Counts every record of `reservation` dead: its bytes will never be referred to (the
    /// write failed, or the batch did not commit). Where they are the last bytes of their
    /// segment, the segment is cut back to where they began, so that a failed write leaves no
    /// unreadable bytes behind. (When a batch reserved after it was written, its bytes stay:
    /// dead, and unreadable if the write failed. No entry refers to them.)
    pub(crate) fn abandon(&mut self, reservation: &Reservation, batch: &RecordBatch) {
        for (place, &(_, len)) in reservation.places.iter().zip(&batch.records) {
            self.mark_dead(place.segment, len as u64);
        }
        for w in reservation.writes.iter().rev() {
            if let Some(segment) = self.segments.get_mut(&w.segment)
                && segment.len == w.offset + w.range.len() as u64
            {
                segment.len = w.offset;
                let _ = segment.file.set_len(w.offset);
            }
        }
    }

    /// Ends `reservation`: its segments may be compacted again, its lane is free.
    pub(crate) fn release(&mut self, reservation: &Reservation) {
        let busy = &mut self.lane_busy[reservation.lane];
        *busy = busy.saturating_sub(1);
        for w in &reservation.writes {
            if let Some(n) = self.reserved.get_mut(&w.segment) {
                *n -= 1;
                if *n == 0 {
                    self.reserved.remove(&w.segment);
                }
            }
        }
    }

    /// Stages a record for the active segment (starting a new one when it is full) and returns
    /// where it will be. Nothing reaches the file until [`write_staged`](Self::write_staged).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn stage(
        &mut self,
        kind: u8,
        key: &[u8],
        seq: u64,
        payload: &[u8],
        raw_len: u64,
        compressed: bool,
    ) -> Result<RecordPlace> {
        let start = self.staged.len();
        encode_record(
            &mut self.staged,
            kind,
            key,
            seq,
            payload,
            raw_len,
            compressed,
        );
        self.place_last(start, kind)
    }

    /// Gives the record staged last (from `start` to the end of the staged bytes) its place:
    /// in lane 0's segment when it fits there, else first in a new segment.
    fn place_last(&mut self, start: usize, kind: u8) -> Result<RecordPlace> {
        let len = (self.staged.len() - start) as u64;
        let mut start = start;
        if !self.fits(0, len) {
            // The records before it go to the segment that was active; it goes first in the
            // next one (a copy once per segment).
            let record = self.staged.split_off(start);
            self.start_segment(0)?;
            self.staged.extend_from_slice(&record);
            start = 0;
        }
        let place = self.claim(0, len, kind)?;
        if start == 0 {
            self.staged_at = place.offset;
        }
        Ok(place)
    }

    /// Writes staged records to lane 0's segment with one write.
    pub(crate) fn write_staged(&mut self) -> Result<()> {
        if self.staged.is_empty() {
            return Ok(());
        }
        let Some(id) = self.lanes[0] else {
            self.staged.clear();
            return Ok(());
        };
        let path = self.path_of(id);
        let segment = self
            .segments
            .get_mut(&id)
            .ok_or_else(|| Error::corrupt(&path, "active segment vanished"))?;
        let written = io::hook(io::Op::Write)
            .and_then(|()| segment.file.write_all_at(&self.staged, self.staged_at));
        if let Err(e) = written {
            return Err(Error::io(&path, "write segment", e));
        }
        self.staged.clear();
        // A compaction can stage a whole segment's records: do not keep that much around.
        self.staged.shrink_to(STAGED_KEPT);
        Ok(())
    }

    /// Forgets staged records after a failed write: lane 0's segment ends where they began.
    /// Records staged since the last write must no longer be referenced. (Reservations are
    /// never made while records are staged, so none lies past them.)
    pub(crate) fn discard_staged(&mut self) {
        if !self.staged.is_empty()
            && let Some(id) = self.lanes[0]
            && let Some(segment) = self.segments.get_mut(&id)
        {
            segment.len = self.staged_at;
            let _ = segment.file.set_len(self.staged_at);
        }
        self.staged.clear();
    }

    /// Reads the record at `place`, `len` bytes long, and checks it.
    pub(crate) fn read(&self, place: RecordPlace, len: u64) -> Result<Vec<u8>> {
        let path = self.path_of(place.segment);
        let segment = self
            .segments
            .get(&place.segment)
            .ok_or_else(|| Error::corrupt(&path, "segment file is missing"))?;
        if place.offset.saturating_add(len) > segment.len {
            return Err(Error::corrupt(
                &path,
                "record runs past the end of the segment",
            ));
        }
        let mut buf = vec![0u8; len as usize];
        let staged_from = if self.lanes[0] == Some(place.segment) && !self.staged.is_empty() {
            self.staged_at
        } else {
            u64::MAX
        };
        if place.offset >= staged_from {
            let start = (place.offset - staged_from) as usize;
            buf.copy_from_slice(&self.staged[start..start + len as usize]);
        } else {
            segment
                .file
                .read_exact_at(&mut buf, place.offset)
                .map_err(|e| Error::io(&path, "read segment", e))?;
        }
        Ok(buf)
    }

    /// Fsyncs every segment written since the last sync (staged bytes must be written first).
    /// Returns true when a segment was created since then.
    pub(crate) fn sync(&mut self) -> Result<bool> {
        let created = std::mem::take(&mut self.created);
        for id in self.unsynced.drain(..) {
            if let Some(segment) = self.segments.get(&id) {
                io::hook(io::Op::Sync)
                    .and_then(|()| segment.file.sync_data())
                    .map_err(|e| Error::io(self.dir.join(file_name(id)), "fsync segment", e))?;
            }
        }
        Ok(created)
    }

    /// Sealed segments whose live bytes are under half their length, emptiest first. No
    /// lane's segment, and none that a reservation is writing.
    pub(crate) fn compaction_candidates(&self) -> Vec<u32> {
        let mut out: Vec<(u32, f64)> = self
            .segments
            .iter()
            .filter(|(id, _)| !self.lanes.contains(&Some(**id)) && !self.reserved.contains_key(id))
            .filter(|(_, s)| s.live_bytes * 2 < s.len.saturating_sub(FILE_HEADER_LEN))
            .map(|(id, s)| (*id, s.live_bytes as f64 / s.len.max(1) as f64))
            .collect();
        out.sort_by(|a, b| a.1.total_cmp(&b.1));
        out.into_iter().map(|(id, _)| id).collect()
    }

    /// Deletes segment `id`, whose records must no longer be referenced.
    pub(crate) fn remove_segment(&mut self, id: u32) -> Result<()> {
        if self.lanes[0] == Some(id) {
            self.write_staged()?;
        }
        for lane in &mut self.lanes {
            if *lane == Some(id) {
                *lane = None;
            }
        }
        self.segments.remove(&id);
        self.generation = next_generation();
        self.unsynced.retain(|u| *u != id);
        io::remove_file(&self.path_of(id))
    }

    /// Seals every lane's segment, so the next record starts a new one (full compaction,
    /// which may rewrite the segments that were open).
    pub(crate) fn seal(&mut self) -> Result<()> {
        self.write_staged()?;
        self.lanes = [None; LANES];
        Ok(())
    }

    /// Each segment's id, length in bytes and bytes of live records.
    pub(crate) fn usage(&self) -> Vec<(u32, u64, u64)> {
        let usage = self.segments.iter();
        usage.map(|(id, s)| (*id, s.len, s.live_bytes)).collect()
    }

    /// Changes whenever a segment file is created or removed.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// A shared handle of segment `id`'s file.
    pub(crate) fn handle(&self, id: u32) -> Option<Arc<File>> {
        self.segments.get(&id).map(|s| s.file.clone())
    }

    /// A shared handle of every segment file, for reads without the store's owner.
    pub(crate) fn handles(&self) -> Vec<(u32, Arc<File>)> {
        let handles = self.segments.iter();
        handles.map(|(id, s)| (*id, s.file.clone())).collect()
    }

    /// The ids of every segment.
    pub(crate) fn ids(&self) -> Vec<u32> {
        self.segments.keys().copied().collect()
    }

    /// Makes the last segment active again when it has room, cutting off a torn tail after its
    /// last whole record. It stays sealed when a live record (`live_end`: the end of the last
    /// live record of each segment) lies past the first bad record.
    pub(crate) fn resume_last(
        &mut self,
        live_end: &std::collections::HashMap<u32, u64>,
    ) -> Result<()> {
        let Some((&id, last)) = self.segments.iter().next_back() else {
            return Ok(());
        };
        if last.len >= self.max_segment_bytes {
            return Ok(());
        }
        let path = self.path_of(id);
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, "read segment", e))?;
        let valid_end = match scan(&bytes, |_, _| {}).as_deref() {
            Ok([]) => bytes.len() as u64,
            Ok([tail]) if tail.end == bytes.len() as u64 => tail.start,
            // Records follow a damaged run (or the header is bad): the segment stays sealed.
            _ => return Ok(()),
        };
        if live_end.get(&id).is_some_and(|end| *end > valid_end) {
            return Ok(());
        }
        if let Some(segment) = self.segments.get_mut(&id)
            && valid_end < segment.len
        {
            segment
                .file
                .set_len(valid_end)
                .map_err(|e| Error::io(&path, "truncate torn segment tail", e))?;
            segment.len = valid_end;
        }
        self.lanes[0] = Some(id);
        Ok(())
    }

    /// True when the open segment `id` is still the file its name gives (not deleted, not
    /// replaced by a new segment of the same number).
    pub(crate) fn is_same_file(&self, id: u32) -> bool {
        let Some(segment) = self.segments.get(&id) else {
            return false;
        };
        io::path_names(&self.path_of(id), segment.identity)
    }

    /// Read-only: a record the writer wrote ends at `end` in segment `id`. Opens the segment
    /// if this store does not have it or has another file of that number (one that was
    /// deleted), and extends its known length to `end`. A segment already deleted again is
    /// left out: reads of its records find them moved.
    pub(crate) fn follow(&mut self, id: u32, end: u64) -> Result<()> {
        if !self.is_same_file(id) {
            self.segments.remove(&id);
            let path = self.path_of(id);
            let file = match File::open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(Error::io(&path, "open segment", e)),
            };
            let segment = Segment {
                identity: identity_of(&file, &path)?,
                file: Arc::new(file),
                len: 0,
                live_bytes: 0,
            };
            self.segments.insert(id, segment);
            self.generation = next_generation();
        }
        if let Some(segment) = self.segments.get_mut(&id) {
            segment.len = segment.len.max(end);
        }
        Ok(())
    }

    /// Read-only: closes the segments not in `listed` (ids and lengths of the files present),
    /// which the writer deleted.
    pub(crate) fn forget_missing(&mut self, listed: &[(u32, u64)]) {
        let before = self.segments.len();
        self.segments
            .retain(|id, _| listed.binary_search_by_key(id, |(l, _)| *l).is_ok());
        if self.segments.len() != before {
            self.generation = next_generation();
        }
    }

    /// Bytes of all segment files.
    pub(crate) fn total_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.len).sum()
    }

    /// Bytes of live records.
    pub(crate) fn live_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.live_bytes).sum()
    }

    /// Number of segment files.
    pub(crate) fn count(&self) -> usize {
        self.segments.len()
    }

    /// The segment directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn small_and_streamed_checksums_agree() {
        for n in [0usize, 1, 90, 483, 484, 485, 2000] {
            let payload: Vec<u8> = (0..n).map(|i| (i * 7 + 3) as u8).collect();
            let header = [9u8; 20];
            let key = b"some key";
            let mut h = xxhash_rust::xxh3::Xxh3::new();
            h.update(&header);
            h.update(key);
            h.update(&payload);
            assert_eq!(
                super::record_checksum(&header, key, &payload),
                h.digest(),
                "{n}"
            );
        }
    }

    use super::*;

    fn record(key: &[u8], payload: &[u8], seq: u64) -> Vec<u8> {
        let mut out = Vec::new();
        encode_record(
            &mut out,
            KIND_VALUE,
            key,
            seq,
            payload,
            payload.len() as u64,
            false,
        );
        out
    }

    #[test]
    fn records_round_trip_and_every_flip_is_caught() {
        let r = record(b"key", b"payload", 9);
        let p = parse_record(&r).unwrap();
        assert_eq!(
            (p.key, p.payload, p.header.seq),
            (&b"key"[..], &b"payload"[..], 9)
        );
        assert_eq!(r.len() as u64, record_len(3, 7));
        for i in 0..r.len() {
            let mut bad = r.clone();
            bad[i] ^= 0x08;
            assert!(parse_record(&bad).is_err(), "byte {i}");
        }
        for len in 0..r.len() {
            assert!(parse_record(&r[..len]).is_err(), "len {len}");
        }
    }

    #[test]
    fn scan_walks_records_and_stops_at_a_torn_tail() {
        let mut file = file_header(3).to_vec();
        file.extend(record(b"a", b"1", 1));
        file.extend(record(b"b", b"22", 2));
        let full = file.len();
        file.extend(&record(b"c", b"333", 3)[..20]);
        let mut seen = Vec::new();
        let damaged = scan(&file, |at, r| seen.push((at, r.key.to_vec()))).unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].0, FILE_HEADER_LEN);
        let ends: Vec<(u64, u64)> = damaged.iter().map(|d| (d.start, d.end)).collect();
        assert_eq!(
            ends,
            vec![(full as u64, file.len() as u64)],
            "one torn tail"
        );
        assert_eq!(parse_file_header(&file), Ok(3));
    }

    #[test]
    fn scan_goes_on_after_a_damaged_record_and_after_a_run_of_zeros() {
        let mut file = file_header(3).to_vec();
        file.extend(record(b"a", b"1", 1));
        let damaged_at = file.len();
        let mut b = record(b"b", b"22", 2);
        *b.last_mut().unwrap() ^= 0x55;
        file.extend(&b);
        let zeros_at = file.len();
        let c = record(b"c", b"333", 3);
        file.extend(&c);
        // A range a failed write left: zeros where a record was reserved.
        let hole_at = file.len();
        file.extend([0u8; 100]);
        let d_at = file.len();
        file.extend(record(b"d", b"4444", 4));
        let mut seen = Vec::new();
        let damaged = scan(&file, |at, r| seen.push((at, r.key.to_vec()))).unwrap();
        let keys: Vec<&[u8]> = seen.iter().map(|(_, k)| k.as_slice()).collect();
        assert_eq!(keys, vec![&b"a"[..], b"c", b"d"]);
        assert_eq!(seen[1].0, zeros_at as u64);
        assert_eq!(seen[2].0, d_at as u64);
        let runs: Vec<(u64, u64)> = damaged.iter().map(|d| (d.start, d.end)).collect();
        assert_eq!(
            runs,
            vec![
                (damaged_at as u64, zeros_at as u64),
                (hole_at as u64, d_at as u64)
            ]
        );
        assert_eq!(damaged[0].why, "record checksum mismatch");
        assert!(
            damaged[0]
                .describe()
                .contains(&format!("{damaged_at} to {zeros_at}"))
        );
    }

    #[test]
    fn a_damaged_record_with_a_whole_header_is_skipped_whole() {
        // Its payload holds a whole record (a chest's segment stored as a value, say): the
        // walk must not take that for a record of this file.
        let mut file = file_header(3).to_vec();
        let inner = record(b"inner", b"not this file's", 99);
        let mut outer = record(b"outer", &inner, 1);
        // Its checksum damaged (bytes 20 to 27 of the header), its payload whole.
        outer[20] ^= 0x55;
        file.extend(&outer);
        let after = file.len();
        file.extend(record(b"next", b"1", 2));
        let mut seen = Vec::new();
        let damaged = scan(&file, |at, r| seen.push((at, r.key.to_vec()))).unwrap();
        assert_eq!(seen, vec![(after as u64, b"next".to_vec())]);
        let runs: Vec<(u64, u64)> = damaged.iter().map(|d| (d.start, d.end)).collect();
        assert_eq!(runs, vec![(FILE_HEADER_LEN, after as u64)]);
    }

    #[test]
    fn a_search_for_the_next_record_gives_up_after_its_bound_of_checksums() {
        // Headers that pass every check but the checksum, one after another at every offset
        // would take a checksum each: after the bound the rest counts as damaged.
        let mut file = file_header(3).to_vec();
        let mut fake = record(b"k", b"v", 1);
        let last = fake.len() - 1;
        fake[last] ^= 1;
        for _ in 0..RESYNC_CHECKSUMS + 10 {
            file.extend(&fake);
        }
        file.extend(record(b"z", b"after", 2));
        let mut seen = 0;
        let damaged = scan(&file, |_, _| seen += 1).unwrap();
        assert_eq!(seen, 0);
        assert_eq!(damaged.len(), 1);
        assert_eq!(damaged[0].end, file.len() as u64);
    }

    #[test]
    fn store_stages_reads_writes_and_rolls_over() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SegmentStore::open(dir.path(), &[], 200, true).unwrap();
        let a = store
            .stage(KIND_VALUE, b"a", 1, &[1; 50], 50, false)
            .unwrap();
        let len_a = record_len(1, 50);
        // Readable while staged, and after the write.
        assert_eq!(
            parse_record(&store.read(a, len_a).unwrap())
                .unwrap()
                .payload,
            &[1; 50]
        );
        store.write_staged().unwrap();
        assert_eq!(
            parse_record(&store.read(a, len_a).unwrap())
                .unwrap()
                .payload,
            &[1; 50]
        );
        let b = store
            .stage(KIND_VALUE, b"b", 2, &[2; 100], 100, false)
            .unwrap();
        assert_ne!(a.segment, b.segment, "200-byte segments roll over");
        store.write_staged().unwrap();
        assert_eq!(store.count(), 2);
        // A failed or abandoned stage leaves the file as written.
        let c = store
            .stage(KIND_VALUE, b"c", 3, &[3; 10], 10, false)
            .unwrap();
        store.discard_staged();
        assert!(!store.contains(c, record_len(1, 10)));
        // The disk tier counts a discarded record dead, as here.
        store.mark_dead(c.segment, record_len(1, 10));
        store.mark_dead(a.segment, len_a);
        assert_eq!(store.compaction_candidates(), vec![a.segment]);
        store.remove_segment(a.segment).unwrap();
        assert_eq!(store.count(), 1);
        assert_eq!(store.live_bytes(), record_len(1, 100));
    }

    /// A staged record, read back through the store and checked.
    fn staged_payload(store: &SegmentStore, place: RecordPlace, key: &[u8], len: u64) -> Vec<u8> {
        let bytes = store.read(place, record_len(key.len(), len)).unwrap();
        let record = parse_record(&bytes).unwrap();
        assert_eq!(record.key, key);
        record.payload.to_vec()
    }

    #[test]
    fn records_encoded_in_place_are_the_records_staged_from_a_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let mut staged =
            SegmentStore::open(&dir.path().join("staged"), &[], 1 << 20, true).unwrap();
        let mut reserved =
            SegmentStore::open(&dir.path().join("reserved"), &[], 1 << 20, true).unwrap();
        let (mut copied, mut in_place) = (RecordBatch::default(), RecordBatch::default());
        let mut spill = Vec::new();
        let mut places = Vec::new();
        for (seq, len) in [(1u64, 0usize), (2, 1), (3, 100), (4, 483), (5, 5000)] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 + seq as usize) as u8).collect();
            places.push(
                staged
                    .stage(KIND_VALUE, b"key", seq, &payload, len as u64, false)
                    .unwrap(),
            );
            let n = copied.push(KIND_VALUE, b"key", seq, &payload, len as u64, false);
            let pushed = in_place.push_encoded(b"key", seq, 1 << 16, &mut spill, |out| {
                out.extend_from_slice(&payload);
                Ok(())
            });
            assert_eq!(pushed.unwrap(), Some((n, len as u64)));
            assert_eq!(in_place.key(n), b"key");
            assert_eq!(in_place.record_len(n) as u64, record_len(3, len as u64));
        }
        assert_eq!(copied.bytes, in_place.bytes, "byte for byte");
        // Placed and written, the batch's records are where staging put the same records.
        let reservation = reserved.reserve(&in_place).unwrap();
        assert_eq!(reservation.places, places);
        reservation.write(&in_place).unwrap();
        reserved.release(&reservation);
        staged.write_staged().unwrap();
        assert_eq!(staged.live_bytes(), reserved.live_bytes());
        let read = |store: &SegmentStore| std::fs::read(store.path_of(places[0].segment)).unwrap();
        assert_eq!(read(&staged), read(&reserved));
        assert_eq!(scan(&read(&reserved), |_, _| {}).unwrap(), vec![]);
    }

    #[test]
    fn in_place_encoding_that_is_too_large_or_fails_leaves_the_batch_as_it_was() {
        let mut batch = RecordBatch::default();
        batch.push(KIND_VALUE, b"a", 1, &[1; 10], 10, false);
        let before = batch.bytes.clone();
        let mut spill = vec![9; 3];
        let large = batch.push_encoded(b"big", 2, 100, &mut spill, |out| {
            out.extend_from_slice(&[5; 100]);
            Ok(())
        });
        assert!(large.unwrap().is_none(), "100 bytes is not under 100");
        assert_eq!(spill, vec![5; 100], "the payload moved out, nothing else");
        assert_eq!((batch.bytes.clone(), batch.len()), (before.clone(), 1));
        let failed = batch.push_encoded(b"bad", 3, 100, &mut spill, |out| {
            out.extend_from_slice(&[6; 40]);
            Err(Error::corrupt("x", "cannot encode"))
        });
        assert!(failed.is_err());
        assert_eq!((batch.bytes.clone(), batch.len()), (before, 1));
        // An encoder that cuts into the batch empties it: the caller fails the batch.
        let cut = batch.push_encoded(b"cut", 4, 100, &mut spill, |out| {
            out.clear();
            Ok(())
        });
        assert!(matches!(cut, Err(Error::Corrupt { .. })));
        assert_eq!(batch.len(), 0);
    }

    #[test]
    fn a_reserved_record_that_does_not_fit_starts_the_next_segment() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SegmentStore::open(dir.path(), &[], 200, true).unwrap();
        let mut batch = RecordBatch::default();
        for (key, seq, fill) in [(b"a", 1, 1u8), (b"b", 2, 2), (b"c", 3, 3)] {
            batch.push(KIND_VALUE, key, seq, &[fill; 60], 60, false);
        }
        let reservation = store.reserve(&batch).unwrap();
        let [a, b, c] = reservation.places[..] else {
            panic!("three places")
        };
        assert_eq!(a.segment, b.segment);
        // 16 + 2 x 89 bytes: a third record does not fit in 200.
        assert_ne!(c.segment, a.segment);
        assert_eq!(c.offset, FILE_HEADER_LEN, "first in the new segment");
        assert_eq!(store.count(), 2);
        reservation.write(&batch).unwrap();
        store.release(&reservation);
        for (place, key, fill) in [(a, b"a", 1u8), (b, b"b", 2), (c, b"c", 3)] {
            assert_eq!(staged_payload(&store, place, key, 60), vec![fill; 60]);
        }
        // Both files hold whole records only: a scan of each finds no torn tail.
        for id in [a.segment, c.segment] {
            let bytes = std::fs::read(store.path_of(id)).unwrap();
            assert_eq!(scan(&bytes, |_, _| {}).unwrap(), vec![]);
        }
    }

    #[test]
    fn batches_reserved_side_by_side_go_to_different_segments_that_stay_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SegmentStore::open(dir.path(), &[], 1 << 20, true).unwrap();
        let batch = |key: &[u8], seq| {
            let mut b = RecordBatch::default();
            b.push(KIND_VALUE, key, seq, &[seq as u8; 50], 50, false);
            b
        };
        let (first, second) = (batch(b"x", 1), batch(b"y", 2));
        let r1 = store.reserve(&first).unwrap();
        let r2 = store.reserve(&second).unwrap();
        assert_ne!(r1.places[0].segment, r2.places[0].segment, "one lane each");
        // The second is written first: the writes need no access to the store.
        r2.write(&second).unwrap();
        r1.write(&first).unwrap();
        // Staged records go to lane 0, after what was reserved there.
        let staged = store
            .stage(KIND_VALUE, b"z", 3, &[3; 50], 50, false)
            .unwrap();
        assert_eq!(staged.segment, r1.places[0].segment);
        assert!(staged.offset > r1.places[0].offset);
        store.write_staged().unwrap();
        // Lane 1's segment, dead and sealed, is no candidate while its reservation lasts.
        store.release(&r1);
        // Lane 1's record is overwritten meanwhile (dead) and the lane moves on.
        store.mark_dead(r2.places[0].segment, record_len(1, 50));
        store.lanes[1] = None;
        assert!(store.compaction_candidates().is_empty());
        store.release(&r2);
        assert_eq!(store.compaction_candidates(), vec![r2.places[0].segment]);
        for (place, key, seq) in [(r1.places[0], b"x", 1u8), (staged, b"z", 3)] {
            assert_eq!(staged_payload(&store, place, key, 50), vec![seq; 50]);
        }
        let lane0 = std::fs::read(store.path_of(staged.segment)).unwrap();
        assert_eq!(
            scan(&lane0, |_, _| {}).unwrap(),
            vec![],
            "no hole, no torn tail"
        );
        // A batch abandoned (its write failed) while last in its segment is cut off.
        let third = batch(b"w", 4);
        let r3 = store.reserve(&third).unwrap();
        let (segment, before) = (r3.places[0].segment, r3.places[0].offset);
        let live = store.live_bytes();
        store.abandon(&r3, &third);
        store.release(&r3);
        assert_eq!(store.live_bytes(), live - record_len(1, 50));
        let len = std::fs::metadata(store.path_of(segment)).unwrap().len();
        assert_eq!(len, before, "nothing unreadable left behind");
        assert!(!store.contains(r3.places[0], record_len(1, 50)));
    }
}
