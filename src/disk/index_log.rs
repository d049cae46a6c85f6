//! The `.keys` index: an append-only log of checksummed records naming every key that has a
//! value file, so reopening does not read every file.
//!
//! ```text
//! file header (16 bytes): magic b"SPCHKEYS" | version u16 (2; 1 is read too) | 6 zero bytes
//! record: body length u32 | xxh3-64 of body u64 | body
//! body:   tag u8, then
//!   1 Put     key length u32 | key | sequence u64 | raw length u64 | stored length u64 |
//!             place u8 (0 = own value file, 1 = segment) | for a segment: id u32 | offset u64
//!   2 Remove  key length u32 | key
//!   3 Commit  unix time in ms u64   (written by flush after every file it covers is synced)
//!   4 Puts    count varint (at least 1) | count entries, each:
//!             key length varint | key | sequence Δ | raw length varint | stored length varint |
//!             place varint (0 = own value file, n = segment n - 1) | for a segment: offset Δ
//! ```
//! Varints are unsigned LEB128. A Δ is the zigzag-coded difference from the same field of the
//! entry before it in the record (from 0 for the first; offsets skip entries in value files),
//! so a batch of a writer's puts, whose sequences and offsets climb in small steps, costs about
//! a dozen bytes per entry besides the key instead of fifty. The writer packs consecutive puts
//! into Puts records of up to about 64 KiB; version 1 files hold only tags 1 to 3. Each entry of
//! a Puts record counts as one record (for the record numbers a Commit is compared with).
//!
//! Replay applies records in order and stops at the first record that is incomplete or fails
//! its checksum: that is a torn tail from a crash, and the writer truncates it away.

use std::collections::hash_map::Entry;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::disk::io::{self, Cursor, apply_zigzag, checksum, put_varint, zigzag_delta};
use crate::disk::layout::{DigestHalvesMap, KeyDigest};
use crate::disk::segment::RecordPlace;
use crate::error::{Error, Result};

/// The magic bytes the index starts with.
pub(crate) const MAGIC: [u8; 8] = *b"SPCHKEYS";
/// The index format this build writes.
pub(crate) const VERSION: u16 = 2;
/// The oldest index format this build reads (it has no Puts records).
pub(crate) const OLDEST_VERSION: u16 = 1;
/// Length of the file header.
pub(crate) const HEADER_LEN: usize = 16;
/// Length of a record's frame (body length and checksum).
pub(crate) const FRAME_LEN: usize = 12;

const TAG_PUT: u8 = 1;
const TAG_REMOVE: u8 = 2;
const TAG_COMMIT: u8 = 3;
const TAG_PUTS: u8 = 4;
/// A Puts record being staged is closed once its entries reach this many bytes.
const PUTS_BODY_BYTES: usize = 64 << 10;

/// One index record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record<'a> {
    /// `key`'s value is stored at `loc`.
    Put { key: &'a [u8], loc: DiskLoc },
    /// `key` no longer has a value file.
    Remove { key: &'a [u8] },
    /// Every record before this one was durable when it was written.
    Commit { unix_ms: u64 },
    /// Several keys' stored places, in order (each as a Put).
    Puts(Puts<'a>),
}

/// The packed entries of a Puts record, checked to parse when the record was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Puts<'a> {
    count: u64,
    entries: &'a [u8],
}

impl<'a> Puts<'a> {
    /// The entries, in order: each key (borrowed from the record's bytes) and its place.
    pub(crate) fn iter(&self) -> PutsIter<'a> {
        PutsIter {
            cursor: Cursor::new(self.entries),
            left: self.count,
            prev: Previous::default(),
        }
    }

    /// Checks that `entries` holds exactly `count` entries.
    fn parse(count: u64, entries: &'a [u8]) -> Option<Self> {
        let puts = Puts { count, entries };
        let mut iter = puts.iter();
        for _ in 0..count {
            iter.read()?;
        }
        (iter.cursor.remaining() == 0).then_some(puts)
    }
}

/// The fields a Puts entry is coded against: those of the entry before it.
#[derive(Debug, Default, Clone, Copy)]
struct Previous {
    seq: u64,
    offset: u64,
}

/// Iterates over the entries of a [`Puts`] record.
pub(crate) struct PutsIter<'a> {
    cursor: Cursor<'a>,
    left: u64,
    prev: Previous,
}

impl<'a> PutsIter<'a> {
    fn read(&mut self) -> Option<(&'a [u8], DiskLoc)> {
        let c = &mut self.cursor;
        let key_len = usize::try_from(c.varint()?).ok()?;
        let key = c.take(key_len)?;
        let seq = apply_zigzag(self.prev.seq, c.varint()?);
        let (raw_len, stored_len) = (c.varint()?, c.varint()?);
        let place = match c.varint()? {
            0 => Place::File,
            n => {
                let segment = u32::try_from(n - 1).ok()?;
                let offset = apply_zigzag(self.prev.offset, c.varint()?);
                self.prev.offset = offset;
                Place::Segment(RecordPlace { segment, offset })
            }
        };
        self.prev.seq = seq;
        let loc = DiskLoc {
            place,
            seq,
            raw_len,
            stored_len,
        };
        Some((key, loc))
    }
}

impl<'a> Iterator for PutsIter<'a> {
    type Item = (&'a [u8], DiskLoc);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        self.read()
    }
}

/// Appends one Puts entry to `out`, coded against `prev` (which it then becomes).
fn write_puts_entry(out: &mut Vec<u8>, prev: &mut Previous, key: &[u8], loc: &DiskLoc) {
    put_varint(out, key.len() as u64);
    out.extend_from_slice(key);
    put_varint(out, zigzag_delta(prev.seq, loc.seq));
    prev.seq = loc.seq;
    put_varint(out, loc.raw_len);
    put_varint(out, loc.stored_len);
    match loc.place {
        Place::File => out.push(0),
        Place::Segment(RecordPlace { segment, offset }) => {
            put_varint(out, u64::from(segment) + 1);
            put_varint(out, zigzag_delta(prev.offset, offset));
            prev.offset = offset;
        }
    }
}

/// Puts being packed into one Puts record.
#[derive(Debug, Default)]
struct PutsBuilder {
    count: u64,
    entries: Vec<u8>,
    prev: Previous,
}

impl PutsBuilder {
    /// Adds a put; the record is framed into `out` once its entries reach
    /// [`PUTS_BODY_BYTES`].
    fn push(&mut self, out: &mut Vec<u8>, key: &[u8], loc: &DiskLoc) {
        write_puts_entry(&mut self.entries, &mut self.prev, key, loc);
        self.count += 1;
        if self.entries.len() >= PUTS_BODY_BYTES {
            self.close_into(out);
        }
    }

    /// Appends the framed Puts record to `out` (nothing if empty) and starts afresh.
    fn close_into(&mut self, out: &mut Vec<u8>) {
        if self.count == 0 {
            return;
        }
        Record::Puts(Puts {
            count: self.count,
            entries: &self.entries,
        })
        .encode(out);
        self.count = 0;
        self.entries.clear();
        self.prev = Previous::default();
    }
}

/// Fills in the frame at `frame_at` of the body that starts at `body_at` and runs to the end.
fn finish_frame(out: &mut [u8], frame_at: usize, body_at: usize) {
    let body_len = (out.len() - body_at) as u32;
    let sum = checksum(&out[body_at..]);
    out[frame_at..frame_at + 4].copy_from_slice(&body_len.to_le_bytes());
    out[frame_at + 4..frame_at + 12].copy_from_slice(&sum.to_le_bytes());
}

impl Record<'_> {
    /// Appends the framed record to `out`.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let frame_at = out.len();
        out.extend_from_slice(&[0; FRAME_LEN]);
        let body_at = out.len();
        match self {
            Record::Put { key, loc } => {
                out.push(TAG_PUT);
                out.extend_from_slice(&(key.len() as u32).to_le_bytes());
                out.extend_from_slice(key);
                out.extend_from_slice(&loc.seq.to_le_bytes());
                out.extend_from_slice(&loc.raw_len.to_le_bytes());
                out.extend_from_slice(&loc.stored_len.to_le_bytes());
                match loc.place {
                    Place::File => out.push(0),
                    Place::Segment(RecordPlace { segment, offset }) => {
                        out.push(1);
                        out.extend_from_slice(&segment.to_le_bytes());
                        out.extend_from_slice(&offset.to_le_bytes());
                    }
                }
            }
            Record::Remove { key } => {
                out.push(TAG_REMOVE);
                out.extend_from_slice(&(key.len() as u32).to_le_bytes());
                out.extend_from_slice(key);
            }
            Record::Commit { unix_ms } => {
                out.push(TAG_COMMIT);
                out.extend_from_slice(&unix_ms.to_le_bytes());
            }
            Record::Puts(puts) => {
                out.push(TAG_PUTS);
                put_varint(out, puts.count);
                out.extend_from_slice(puts.entries);
            }
        }
        finish_frame(out, frame_at, body_at);
    }

    /// The records this one counts as: one, or a Puts record's entries.
    pub(crate) fn weight(&self) -> u64 {
        match self {
            Record::Puts(puts) => puts.count,
            _ => 1,
        }
    }
}

fn parse_body(body: &[u8]) -> Option<Record<'_>> {
    let mut c = Cursor::new(body);
    let record = match c.u8()? {
        TAG_PUT => {
            let key_len = c.u32()? as usize;
            let key = c.take(key_len)?;
            let (seq, raw_len, stored_len) = (c.u64()?, c.u64()?, c.u64()?);
            let place = match c.u8()? {
                0 => Place::File,
                1 => Place::Segment(RecordPlace {
                    segment: c.u32()?,
                    offset: c.u64()?,
                }),
                _ => return None,
            };
            Record::Put {
                key,
                loc: DiskLoc {
                    place,
                    seq,
                    raw_len,
                    stored_len,
                },
            }
        }
        TAG_REMOVE => {
            let key_len = c.u32()? as usize;
            Record::Remove {
                key: c.take(key_len)?,
            }
        }
        TAG_COMMIT => Record::Commit { unix_ms: c.u64()? },
        TAG_PUTS => {
            let count = c.varint()?;
            if count == 0 {
                return None;
            }
            let rest = c.take(c.remaining())?;
            Record::Puts(Puts::parse(count, rest)?)
        }
        _ => return None,
    };
    (c.remaining() == 0).then_some(record)
}

/// One record read from the start of some bytes of an index.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Framed<'a> {
    /// A whole record that passed its checksum and parsed, and its length with its frame.
    Record(Record<'a>, usize),
    /// The bytes end inside the record (a write still under way, or a torn tail): why.
    Incomplete(&'static str),
    /// A whole record that fails its checksum or does not parse: why.
    Invalid(&'static str),
}

/// Reads the framed record at the start of `bytes`. Never fails: see [`Framed`].
pub(crate) fn read_framed(bytes: &[u8]) -> Framed<'_> {
    let mut c = Cursor::new(bytes);
    let (Some(len), Some(sum)) = (c.u32(), c.u64()) else {
        return Framed::Incomplete("incomplete record frame");
    };
    let Some(body) = c.take(len as usize) else {
        return Framed::Incomplete("record runs past the end");
    };
    if checksum(body) != sum {
        return Framed::Invalid("record fails its checksum");
    }
    match parse_body(body) {
        Some(record) => Framed::Record(record, c.pos()),
        None => Framed::Invalid("record is malformed"),
    }
}

/// Where some bytes (a key) are within a larger buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyAt {
    pub(crate) at: usize,
    pub(crate) len: usize,
}

impl KeyAt {
    /// The bytes in `buffer`.
    pub(crate) fn of<'a>(&self, buffer: &'a [u8]) -> &'a [u8] {
        &buffer[self.at..self.at + self.len]
    }
}

/// Where a key's value is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// In its own value file, named by the key's digest.
    File,
    /// In a record of a segment file.
    Segment(RecordPlace),
}

/// A stored value: where it is, which write made it, and its lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DiskLoc {
    pub(crate) place: Place,
    /// The sequence number of the write; a higher one is newer.
    pub(crate) seq: u64,
    /// The encoded value's length.
    pub(crate) raw_len: u64,
    /// The bytes stored (compressed or not).
    pub(crate) stored_len: u64,
}

/// A [`DiskLoc`] as the per-key tables hold it: 24 bytes instead of 40. A segment record's
/// place, whose offset and lengths fit in 32 bits (any record of a segment under 4 GiB), is
/// held inline; anything else (a value file's place, or a larger record) in a box of its own,
/// which costs a heap allocation but only for values of a file each, 64 KiB and up by default.
/// Segment ids start at 1, so the inline form's id is never 0 and the box fits beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PackedLoc {
    Segment {
        seq: u64,
        segment: std::num::NonZeroU32,
        offset: u32,
        raw_len: u32,
        stored_len: u32,
    },
    Other(Box<DiskLoc>),
}

const _: () = assert!(std::mem::size_of::<PackedLoc>() == 24);

impl From<DiskLoc> for PackedLoc {
    fn from(loc: DiskLoc) -> Self {
        let small = |n: u64| u32::try_from(n).ok();
        if let Place::Segment(p) = loc.place
            && let (Some(segment), Some(offset), Some(raw_len), Some(stored_len)) = (
                std::num::NonZeroU32::new(p.segment),
                small(p.offset),
                small(loc.raw_len),
                small(loc.stored_len),
            )
        {
            return PackedLoc::Segment {
                seq: loc.seq,
                segment,
                offset,
                raw_len,
                stored_len,
            };
        }
        PackedLoc::Other(Box::new(loc))
    }
}

impl From<&PackedLoc> for DiskLoc {
    fn from(packed: &PackedLoc) -> Self {
        match packed {
            PackedLoc::Segment {
                seq,
                segment,
                offset,
                raw_len,
                stored_len,
            } => DiskLoc {
                place: Place::Segment(RecordPlace {
                    segment: segment.get(),
                    offset: u64::from(*offset),
                }),
                seq: *seq,
                raw_len: u64::from(*raw_len),
                stored_len: u64::from(*stored_len),
            },
            PackedLoc::Other(loc) => **loc,
        }
    }
}

/// The state an index log describes.
#[derive(Debug, Default)]
pub(crate) struct Replay {
    /// Every key with a stored value: where the encoded key is in the replayed bytes, where
    /// its value is, and the number of the record that put it there. Keys are not copied: a
    /// million keys would be a million allocations.
    pub(crate) entries: Entries,
    /// The number of the last Commit record: entries put by later records may not have been
    /// synced.
    pub(crate) last_commit_record: Option<u64>,
    /// Records applied (a Puts record counting as its entries).
    pub(crate) records: u64,
    /// Bytes of header and valid records; anything after is a torn tail.
    pub(crate) valid_len: u64,
    /// Why replay stopped early, if it did.
    pub(crate) torn_tail: Option<String>,
    /// Time of the last Commit record.
    pub(crate) last_commit_ms: Option<u64>,
    /// The highest sequence number of any Put.
    pub(crate) max_seq: u64,
    /// Where the last record applied starts (a follower checks it is still there).
    pub(crate) last_record_at: Option<u64>,
    /// The format version in the header (a writer rewrites an index older than
    /// [`VERSION`] before appending to it).
    pub(crate) version: u16,
}

impl Replay {
    /// True when the entry put by record `record` came after the last Commit.
    pub(crate) fn is_unflushed(&self, record: u64) -> bool {
        self.last_commit_record.is_none_or(|commit| record > commit)
    }
}

/// Checks the header of an index file and returns its version. `Err(None)` means a foreign
/// file, `Err(Some(v))` an unsupported version.
pub(crate) fn check_header(bytes: &[u8]) -> Result<u16, Option<u16>> {
    let mut c = Cursor::new(bytes);
    if c.take(8) != Some(&MAGIC[..]) {
        return Err(None);
    }
    match c.u16() {
        Some(v) if (OLDEST_VERSION..=VERSION).contains(&v) => Ok(v),
        Some(v) => Err(Some(v)),
        None => Err(None),
    }
}

/// Replays an index whose header has been checked. Never fails: damage ends the replay.
pub(crate) fn replay(bytes: &[u8]) -> Replay {
    let mut out = Replay {
        valid_len: HEADER_LEN.min(bytes.len()) as u64,
        ..Replay::default()
    };
    if bytes.len() < HEADER_LEN {
        out.torn_tail = Some("index header is incomplete".into());
        return out;
    }
    out.version = u16::from_le_bytes([bytes[8], bytes[9]]);
    // Sized up front from a small entry (a dozen bytes in a Puts record, fifty in a version 1
    // Put): growing a table of a million entries step by step is most of the cost of a replay.
    out.entries
        .reserve(bytes.len() / if out.version < 2 { 50 } else { 8 });
    // A Puts record's entries, decoded before any goes into the table: inserting from a flat
    // list lets the processor overlap the table's cache misses (twice as fast as decoding
    // each entry just before its insert).
    let mut batch = Vec::new();
    let mut pos = HEADER_LEN;
    while pos < bytes.len() {
        let at = pos;
        let (record, len) = match read_framed(&bytes[at..]) {
            Framed::Record(record, len) => (record, len),
            Framed::Incomplete(why) | Framed::Invalid(why) => {
                out.torn_tail = Some(format!("{} at byte {at}", why));
                break;
            }
        };
        let weight = record.weight();
        let applied = match record {
            Record::Put { key, loc } => {
                out.apply_put(bytes, KeyDigest::of(key), key, loc, out.records)
            }
            Record::Puts(puts) => {
                batch.clear();
                batch.extend(
                    puts.iter()
                        .zip(out.records..)
                        .map(|((key, loc), record)| (KeyDigest::of(key), key, loc, record)),
                );
                // Stable: a key put twice in the record keeps its later place.
                batch.sort_by_key(|entry| entry.0.table_order());
                batch.drain(..).try_for_each(|(digest, key, loc, record)| {
                    out.apply_put(bytes, digest, key, loc, record)
                })
            }
            Record::Remove { key } => {
                out.entries.remove(&KeyDigest::of(key));
                Ok(())
            }
            Record::Commit { unix_ms } => {
                out.last_commit_record = Some(out.records);
                out.last_commit_ms = Some(unix_ms);
                Ok(())
            }
        };
        if let Err(why) = applied {
            out.torn_tail = Some(format!("record at byte {at}: {why}"));
            break;
        }
        out.records += weight;
        pos += len;
        out.valid_len = pos as u64;
        out.last_record_at = Some(at as u64);
    }
    out
}

impl Replay {
    /// Applies a put of `key` (a slice of `bytes`) numbered `record`.
    fn apply_put(
        &mut self,
        bytes: &[u8],
        digest: KeyDigest,
        key: &[u8],
        loc: DiskLoc,
        record: u64,
    ) -> Result<(), &'static str> {
        self.max_seq = self.max_seq.max(loc.seq);
        let key_at = KeyAt {
            at: key.as_ptr() as usize - bytes.as_ptr() as usize,
            len: key.len(),
        };
        let list = &mut self.entries.list;
        match self.entries.index.entry(digest.into()) {
            Entry::Occupied(e) if list[*e.get()].0.of(bytes) == key => {
                list[*e.get()] = (key_at, loc.into(), record);
            }
            // A digest collision (of 128 bits) leaves the puts before it in a Puts record
            // applied; it has never been seen.
            Entry::Occupied(_) => return Err("two keys share a digest"),
            Entry::Vacant(e) => {
                e.insert(list.len());
                list.push((key_at, loc.into(), record));
            }
        }
        Ok(())
    }
}

/// One entry of a replay's list: the key's place in the index bytes, the value's place, and
/// the number of the record that put it there.
pub(crate) type ListEntry = (KeyAt, PackedLoc, u64);

const _: () = assert!(std::mem::size_of::<ListEntry>() == 48);
const _: () = assert!(std::mem::size_of::<(crate::disk::layout::DigestHalves, usize)>() == 24);

/// A list entry with its value's place unpacked.
fn unpack(entry: &ListEntry) -> (KeyAt, DiskLoc, u64) {
    (entry.0, DiskLoc::from(&entry.1), entry.2)
}

/// The entries of a replay: a table from each key's digest to its entry in a flat list. The
/// table, which every put reaches at random, holds 24 bytes a key (the digest in two halves,
/// see [`DigestHalves`](crate::disk::layout::DigestHalves), and a position), and the entries
/// (48 bytes each: the key's place in the index bytes, the value's place packed, the record
/// number) are written and read in order. A removed key's entry stays in the list, marked
/// [`REMOVED`](Self::REMOVED).
#[derive(Debug, Default)]
pub(crate) struct Entries {
    index: DigestHalvesMap<usize>,
    list: Vec<ListEntry>,
}

impl Entries {
    /// The record number that marks a removed entry (no record has it).
    const REMOVED: u64 = u64::MAX;

    fn reserve(&mut self, additional: usize) {
        self.index.reserve(additional);
        self.list.reserve(additional);
    }

    fn remove(&mut self, digest: &KeyDigest) {
        if let Some(i) = self.index.remove(&(*digest).into()) {
            self.list[i].2 = Self::REMOVED;
        }
    }

    /// Keys with a stored value.
    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    /// The entry of the key with `digest`: its key's place, its value's, and its record.
    #[cfg(test)]
    pub(crate) fn get(&self, digest: &KeyDigest) -> Option<(KeyAt, DiskLoc, u64)> {
        self.index
            .get(&(*digest).into())
            .map(|&i| unpack(&self.list[i]))
    }

    /// Every entry, in the order keys were first put.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (KeyAt, DiskLoc, u64)> {
        self.list
            .iter()
            .filter(|e| !Self::is_removed(e))
            .map(unpack)
    }

    /// Every entry, giving up the table.
    #[cfg(test)]
    pub(crate) fn into_entries(self) -> impl Iterator<Item = (KeyAt, DiskLoc, u64)> {
        self.into_list()
            .into_iter()
            .filter(|e| !Self::is_removed(e))
            .map(|e| unpack(&e))
    }

    /// The list of entries, giving up the table: removed keys' entries are still in it (see
    /// [`is_removed`](Self::is_removed)), so that a caller filters it in place.
    pub(crate) fn into_list(self) -> Vec<ListEntry> {
        self.list
    }

    /// True for the entry of a removed key in [`into_list`](Self::into_list)'s list.
    pub(crate) fn is_removed(entry: &ListEntry) -> bool {
        entry.2 == Self::REMOVED
    }
}

fn header_bytes() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(&MAGIC);
    h[8..10].copy_from_slice(&VERSION.to_le_bytes());
    h
}

/// The milliseconds since the Unix epoch, for Commit records.
pub(crate) fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// An open index log, appended to by the writer.
#[derive(Debug)]
pub(crate) struct IndexLog {
    path: PathBuf,
    file: File,
    /// Bytes known to be valid; a failed append truncates back to this.
    len: u64,
    /// Records in the file (a Puts record counting as its entries).
    records: u64,
    /// Records staged but not yet written, and their bytes.
    staged_records: u64,
    buf: Vec<u8>,
    /// Staged puts not yet framed into `buf`: they become one Puts record.
    puts: PutsBuilder,
}

impl IndexLog {
    /// Opens an existing index for appending, cutting off a torn tail at `valid_len`.
    pub(crate) fn open_append(path: &Path, valid_len: u64, records: u64) -> Result<Self> {
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, "open index", e))?;
        let current = file
            .metadata()
            .map_err(|e| Error::io(path, "stat index", e))?
            .len();
        if current != valid_len {
            file.set_len(valid_len)
                .map_err(|e| Error::io(path, "truncate torn index tail", e))?;
        }
        Ok(IndexLog {
            path: path.to_path_buf(),
            file,
            len: valid_len,
            records,
            staged_records: 0,
            buf: Vec::new(),
            puts: PutsBuilder::default(),
        })
    }

    /// Writes a fresh index holding `puts` and a Commit, syncs it, and renames it over `path`.
    /// Callers must have synced every value file the puts name.
    pub(crate) fn rewrite<'a>(
        path: &Path,
        puts: impl Iterator<Item = (&'a [u8], DiskLoc)>,
        sync: bool,
    ) -> Result<Self> {
        let mut buf = header_bytes().to_vec();
        let mut records = 0;
        let mut batch = PutsBuilder::default();
        for (key, loc) in puts {
            batch.push(&mut buf, key, &loc);
            records += 1;
        }
        batch.close_into(&mut buf);
        Record::Commit {
            unix_ms: now_unix_ms(),
        }
        .encode(&mut buf);
        records += 1;
        let tmp = path.with_extension("tmp");
        crate::disk::io::write_then_rename(&tmp, path, &[&buf], sync)?;
        let len = buf.len() as u64;
        Self::open_append(path, len, records)
    }

    /// Stages a record; it reaches the file with the next [`write_staged`](Self::write_staged).
    /// Consecutive Puts are packed into Puts records.
    pub(crate) fn stage(&mut self, record: &Record<'_>) {
        match record {
            Record::Put { key, loc } => {
                self.puts.push(&mut self.buf, key, loc);
            }
            _ => {
                self.puts.close_into(&mut self.buf);
                record.encode(&mut self.buf);
            }
        }
        self.staged_records += record.weight();
    }

    /// Forgets the staged records.
    pub(crate) fn discard_staged(&mut self) {
        self.buf.clear();
        self.puts = PutsBuilder::default();
        self.staged_records = 0;
    }

    /// Appends one record and writes everything staged.
    pub(crate) fn append(&mut self, record: &Record<'_>) -> Result<()> {
        self.stage(record);
        self.write_staged()
    }

    /// Writes the staged records with a single write. On failure the file is cut back so that
    /// later records never follow a partial one, and the staged records are forgotten.
    pub(crate) fn write_staged(&mut self) -> Result<()> {
        self.puts.close_into(&mut self.buf);
        if self.buf.is_empty() {
            return Ok(());
        }
        let written = io::hook(io::Op::Write).and_then(|()| self.file.write_all(&self.buf));
        let staged = std::mem::take(&mut self.staged_records);
        if let Err(e) = written {
            self.buf.clear();
            let err = Error::io(&self.path, "append to index", e);
            self.file
                .set_len(self.len)
                .map_err(|e| Error::io(&self.path, "cut back a failed index append", e))?;
            return Err(err);
        }
        self.len += self.buf.len() as u64;
        self.records += staged;
        self.buf.clear();
        Ok(())
    }

    /// Fsyncs the index.
    pub(crate) fn sync(&mut self) -> Result<()> {
        io::hook(io::Op::Sync)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| Error::io(&self.path, "fsync index", e))
    }

    /// Records in the file, live or dead (a Puts record counting as its entries).
    pub(crate) fn records(&self) -> u64 {
        self.records
    }

    /// Bytes in the file.
    pub(crate) fn len_bytes(&self) -> u64 {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_loc(raw_len: u64, stored_len: u64) -> DiskLoc {
        DiskLoc {
            place: Place::File,
            seq: raw_len,
            raw_len,
            stored_len,
        }
    }

    #[test]
    fn segment_places_round_trip() {
        let loc = DiskLoc {
            place: Place::Segment(RecordPlace {
                segment: 7,
                offset: 1 << 40,
            }),
            seq: 99,
            raw_len: 5,
            stored_len: 4,
        };
        let mut bytes = header_bytes().to_vec();
        Record::Put { key: b"k", loc }.encode(&mut bytes);
        let r = replay(&bytes);
        assert_eq!(r.entries.get(&KeyDigest::of(b"k")).unwrap().1, loc);
        assert_eq!(r.max_seq, 99);
    }

    fn log(records: &[Record<'_>]) -> Vec<u8> {
        let mut out = header_bytes().to_vec();
        for r in records {
            r.encode(&mut out);
        }
        out
    }

    #[test]
    fn replay_applies_records_in_order() {
        let bytes = log(&[
            Record::Put {
                key: b"a",
                loc: file_loc(3, 2),
            },
            Record::Put {
                key: b"b",
                loc: file_loc(1, 1),
            },
            Record::Commit { unix_ms: 5 },
            Record::Remove { key: b"a" },
            Record::Put {
                key: b"c",
                loc: file_loc(9, 9),
            },
        ]);
        assert_eq!(check_header(&bytes), Ok(VERSION));
        let r = replay(&bytes);
        assert_eq!(r.torn_tail, None);
        assert_eq!(r.records, 5);
        assert_eq!(r.valid_len, bytes.len() as u64);
        assert_eq!(r.entries.len(), 2);
        let (key, loc, record) = r.entries.get(&KeyDigest::of(b"c")).unwrap();
        assert_eq!((key.of(&bytes), loc), (&b"c"[..], file_loc(9, 9)));
        assert!(r.is_unflushed(record));
        assert!(!r.is_unflushed(r.entries.get(&KeyDigest::of(b"b")).unwrap().2));
        assert_eq!(r.last_commit_ms, Some(5));
    }

    #[test]
    fn a_packed_place_gives_back_the_same_place_inline_or_boxed() {
        let segment = |segment, offset, raw_len, stored_len| DiskLoc {
            place: Place::Segment(RecordPlace { segment, offset }),
            seq: u64::MAX,
            raw_len,
            stored_len,
        };
        let big = u64::from(u32::MAX) + 1;
        for (loc, inline) in [
            (segment(1, 16, 100, 90), true),
            (segment(u32::MAX, u64::from(u32::MAX), 7, 7), true),
            (segment(0, 16, 1, 1), false),
            (segment(2, big, 1, 1), false),
            (segment(2, 16, big, 1), false),
            (segment(2, 16, 1, big), false),
            (file_loc(5, 6), false),
        ] {
            let packed = PackedLoc::from(loc);
            assert_eq!(
                matches!(packed, PackedLoc::Segment { .. }),
                inline,
                "{loc:?}"
            );
            assert_eq!(DiskLoc::from(&packed), loc);
        }
    }

    #[test]
    fn entries_skip_removed_keys_and_a_key_put_again_comes_last() {
        let put = |key: &'static [u8], seq| Record::Put {
            key,
            loc: file_loc(seq, 1),
        };
        let bytes = log(&[
            put(b"a", 1),
            put(b"b", 2),
            Record::Remove { key: b"a" },
            put(b"c", 3),
            put(b"b", 4),
            put(b"a", 5),
            Record::Remove { key: b"c" },
        ]);
        let r = replay(&bytes);
        let seen: Vec<(&[u8], u64, u64)> = r
            .entries
            .iter()
            .map(|(at, loc, record)| (at.of(&bytes), loc.seq, record))
            .collect();
        assert_eq!(seen, [(&b"b"[..], 4, 4), (&b"a"[..], 5, 5)]);
        assert_eq!(r.entries.len(), 2);
        assert!(r.entries.get(&KeyDigest::of(b"c")).is_none());
        let owned: Vec<u64> = r.entries.into_entries().map(|e| e.1.seq).collect();
        assert_eq!(owned, [4, 5]);
    }

    #[test]
    fn replay_stops_cleanly_at_any_torn_tail() {
        let full = log(&[
            Record::Put {
                key: b"a",
                loc: file_loc(1, 1),
            },
            Record::Put {
                key: b"b",
                loc: file_loc(1, 1),
            },
        ]);
        let first_end = {
            let mut one = header_bytes().to_vec();
            Record::Put {
                key: b"a",
                loc: file_loc(1, 1),
            }
            .encode(&mut one);
            one.len()
        };
        for cut in HEADER_LEN..full.len() {
            let r = replay(&full[..cut]);
            let expect = if cut >= first_end { 1 } else { 0 };
            assert_eq!(r.entries.len(), expect, "cut {cut}");
            assert_eq!(r.torn_tail.is_some(), cut != first_end && cut != HEADER_LEN);
            assert!(r.valid_len as usize <= cut);
        }
        let mut flipped = full.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(replay(&flipped).entries.len(), 1);
    }

    fn seg_loc(seq: u64, segment: u32, offset: u64, len: u64) -> DiskLoc {
        DiskLoc {
            place: Place::Segment(RecordPlace { segment, offset }),
            seq,
            raw_len: len,
            stored_len: len,
        }
    }

    #[test]
    fn staged_puts_are_packed_and_replay_like_single_puts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".keys");
        let mut log = IndexLog::rewrite(&path, std::iter::empty(), true).unwrap();
        // Sequences and offsets that go back as well as forward, across segments and files,
        // and a key put twice in one record.
        let puts: Vec<(Vec<u8>, DiskLoc)> = vec![
            (b"a".to_vec(), seg_loc(10, 0, 16, 100)),
            (b"b".to_vec(), seg_loc(11, 0, 144, 100)),
            (b"c".to_vec(), file_loc(70_000, 69_000)),
            (b"d".to_vec(), seg_loc(5, 3, 1 << 40, 7)),
            (b"a".to_vec(), seg_loc(u64::MAX, u32::MAX, 0, u64::MAX)),
            (Vec::new(), seg_loc(0, 1, 8, 0)),
        ];
        let mut single = header_bytes().to_vec();
        for (key, loc) in &puts {
            log.stage(&Record::Put { key, loc: *loc });
            Record::Put { key, loc: *loc }.encode(&mut single);
        }
        log.stage(&Record::Remove { key: b"b" });
        Record::Remove { key: b"b" }.encode(&mut single);
        log.stage(&Record::Put {
            key: b"e",
            loc: file_loc(1, 1),
        });
        Record::Put {
            key: b"e",
            loc: file_loc(1, 1),
        }
        .encode(&mut single);
        log.write_staged().unwrap();
        // The rewrite's Commit, six puts, a removal and a put.
        assert_eq!(log.records(), 9);
        let packed = std::fs::read(&path).unwrap();
        assert!(packed.len() < single.len());
        let (p, s) = (replay(&packed), replay(&single));
        assert_eq!(p.torn_tail, None);
        assert_eq!(p.records, 9);
        assert_eq!(p.max_seq, u64::MAX);
        let places = |r: &Replay, bytes: &[u8]| {
            let mut v: Vec<(Vec<u8>, DiskLoc)> = r
                .entries
                .iter()
                .map(|(at, loc, _)| (at.of(bytes).to_vec(), loc))
                .collect();
            v.sort_by(|x, y| x.0.cmp(&y.0));
            v
        };
        assert_eq!(places(&p, &packed), places(&s, &single));
        assert_eq!(p.entries.get(&KeyDigest::of(b"a")).unwrap().1, puts[4].1);
        // The entries of the packed record are numbered after the Commit, one each.
        assert_eq!(p.last_commit_record, Some(0));
        assert_eq!(p.entries.get(&KeyDigest::of(b"d")).unwrap().2, 4);
        assert_eq!(p.entries.get(&KeyDigest::of(b"e")).unwrap().2, 8);
    }

    #[test]
    fn a_cut_or_flipped_puts_record_is_a_torn_tail_with_nothing_of_it_applied() {
        let mut batch = PutsBuilder::default();
        let mut bytes = header_bytes().to_vec();
        for i in 0..50u64 {
            batch.push(&mut bytes, &i.to_le_bytes(), &seg_loc(i, 0, i * 40, 30));
        }
        Record::Put {
            key: b"first",
            loc: file_loc(1, 1),
        }
        .encode(&mut bytes);
        let first_end = bytes.len();
        batch.close_into(&mut bytes);
        assert_eq!(replay(&bytes).entries.len(), 51);
        for cut in first_end..bytes.len() {
            let r = replay(&bytes[..cut]);
            assert_eq!(r.entries.len(), 1, "cut {cut}");
            assert_eq!(r.valid_len as usize, first_end);
        }
        let mut flipped = bytes.clone();
        flipped[first_end + FRAME_LEN + 3] ^= 0x40;
        let r = replay(&flipped);
        assert_eq!((r.entries.len(), r.records), (1, 1));
    }

    #[test]
    fn a_rewrite_of_many_keys_splits_its_puts_into_records_of_about_64_kib() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".keys");
        let keys: Vec<[u8; 8]> = (0..20_000u64).map(u64::to_le_bytes).collect();
        let puts = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (&k[..], seg_loc(i as u64, 0, i as u64 * 50, 30)));
        IndexLog::rewrite(&path, puts, false).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let mut at = HEADER_LEN;
        let mut puts_records = 0;
        while let Framed::Record(record, len) = read_framed(&bytes[at..]) {
            if let Record::Puts(p) = record {
                assert!(p.entries.len() < PUTS_BODY_BYTES + 64);
                puts_records += 1;
            }
            at += len;
        }
        assert_eq!(at, bytes.len());
        assert!(puts_records > 1, "{puts_records} Puts records");
        let r = replay(&bytes);
        assert_eq!((r.entries.len(), r.records), (20_000, 20_001));
    }

    #[test]
    fn malformed_puts_bodies_are_refused() {
        let framed = |body: &[u8]| {
            let mut out = vec![0; FRAME_LEN];
            out.extend_from_slice(body);
            finish_frame(&mut out, 0, FRAME_LEN);
            out
        };
        // No entries; fewer entries than counted; bytes after the last entry; a segment id
        // past u32.
        let one_entry = [1, b'k', 2, 3, 3, 0];
        let cases: [Vec<u8>; 4] = [
            vec![TAG_PUTS, 0],
            [&[TAG_PUTS, 2][..], &one_entry].concat(),
            [&[TAG_PUTS, 1][..], &one_entry, &[0]].concat(),
            vec![
                TAG_PUTS, 1, 1, b'k', 2, 3, 3, 0x81, 0x80, 0x80, 0x80, 0x10, 0,
            ],
        ];
        for body in cases {
            assert_eq!(
                read_framed(&framed(&body)),
                Framed::Invalid("record is malformed"),
                "{body:?}"
            );
        }
        let good = framed(&[&[TAG_PUTS, 1][..], &one_entry].concat());
        let good = read_framed(&good);
        assert!(
            matches!(good, Framed::Record(Record::Puts(_), _)),
            "{good:?}"
        );
    }

    #[test]
    fn foreign_and_future_headers_are_told_apart() {
        assert_eq!(check_header(b"nonsense-nonsense"), Err(None));
        let mut future = header_bytes();
        future[8] = 9;
        assert_eq!(check_header(&future), Err(Some(9)));
        let mut old = header_bytes();
        old[8] = 1;
        assert_eq!(check_header(&old), Ok(1));
    }

    #[test]
    fn append_and_rewrite_round_trip_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".keys");
        let sizes = file_loc(4, 4);
        let mut log = IndexLog::rewrite(&path, [(&b"k1"[..], sizes)].into_iter(), true).unwrap();
        log.append(&Record::Remove { key: b"k1" }).unwrap();
        log.append(&Record::Put {
            key: b"k2",
            loc: file_loc(4, 4),
        })
        .unwrap();
        log.sync().unwrap();
        assert_eq!(log.records(), 4);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, log.len_bytes());
        let r = replay(&bytes);
        let keys: Vec<&[u8]> = r.entries.iter().map(|e| e.0.of(&bytes)).collect();
        assert_eq!(keys, vec![&b"k2"[..]]);
        // A torn tail is cut off when the log is reopened for appending.
        let mut torn = bytes.clone();
        torn.extend_from_slice(&[1, 2, 3]);
        std::fs::write(&path, &torn).unwrap();
        let r = replay(&torn);
        assert!(r.torn_tail.is_some());
        IndexLog::open_append(&path, r.valid_len, r.records).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }
}
