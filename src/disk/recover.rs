//! Opening a chest directory after anything, a clean close or a crash: replay the index, list
//! the files, and reconcile the two. When the index is missing or unreadable, rebuild it from
//! the files' own records, the highest sequence number of each key winning. The rules and why
//! they make a crash harmless are in `docs/design.md`.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::disk::follow::Follower;
use crate::disk::index_log::{self, IndexLog, KeyAt, Replay};
use crate::disk::layout::{self, DigestSet, KeyDigest};
use crate::disk::segment::{self, RecordPlace};
use crate::disk::{DiskLoc, DiskMode, DiskTier, Place, io, value_file};
use crate::error::{Error, Result};

/// What opening found and mended.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct OpenReport {
    /// Why the index replay stopped early (a torn tail), if it did.
    pub(crate) torn_index_tail: Option<String>,
    /// Index entries dropped because their value file or record was missing.
    pub(crate) dropped_missing: u64,
    /// Values found without an index entry (or newer than it), verified and adopted.
    pub(crate) adopted_orphans: u64,
    /// Values that failed verification on open and were discarded.
    pub(crate) discarded_damaged: u64,
    /// The index was missing or unreadable and was rebuilt from the files.
    pub(crate) rebuilt_index: bool,
    /// What was damaged, file by file.
    pub(crate) damage: Vec<(PathBuf, String)>,
}

/// The keys found on disk when opening, with where their values are. The encoded keys live in
/// one buffer (the index's bytes, plus keys adopted from files) rather than one allocation each,
/// and the entries are the replay's own list, filtered in place (the third field, the replay's
/// record number, means nothing here).
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    arena: Vec<u8>,
    entries: Vec<index_log::ListEntry>,
}

impl Recovered {
    /// Adds an entry, copying its key into the arena.
    fn push(&mut self, key: &[u8], loc: DiskLoc) {
        let at = KeyAt {
            at: self.arena.len(),
            len: key.len(),
        };
        self.arena.extend_from_slice(key);
        self.entries.push((at, loc.into(), 0));
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Every entry: the encoded key and where its value is.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], DiskLoc)> {
        self.entries
            .iter()
            .map(|(k, loc, _)| (k.of(&self.arena), DiskLoc::from(loc)))
    }
}

impl DiskTier {
    /// Replays the index, scans the files, reconciles them, and opens the index for appending
    /// (rewriting it when anything was mended).
    pub(super) fn recover(&mut self) -> Result<(Recovered, OpenReport)> {
        let mut report = OpenReport::default();
        if self.mode == DiskMode::Temp {
            return Ok((Recovered::default(), report));
        }
        let writable = self.mode == DiskMode::Persistent;
        let index_path = self.layout.index();
        // A read-only tier keeps the index file open to follow the writer's appends; it is read
        // before the files are listed, so every file its records name was written before.
        let read = if writable {
            match std::fs::read(&index_path) {
                Ok(bytes) => Some(bytes),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(Error::io(&index_path, "read index", e)),
            }
        } else {
            match Follower::open(&index_path)? {
                Some((follower, bytes)) => {
                    self.follower = Some(follower);
                    Some(bytes)
                }
                None => {
                    self.follower = None;
                    None
                }
            }
        };
        let replay = match read {
            Some(_) if self.options.rebuild_index => None,
            Some(bytes) => match index_log::check_header(&bytes) {
                Ok(_) => Some((index_log::replay(&bytes), bytes)),
                Err(Some(version)) => {
                    return Err(Error::UnsupportedFormat {
                        path: index_path,
                        version: version.into(),
                    });
                }
                Err(None) => None,
            },
            None => None,
        };
        if let Some(follower) = &mut self.follower {
            match &replay {
                Some((r, bytes)) => follower.replayed(
                    bytes,
                    true,
                    r.valid_len,
                    r.last_record_at,
                    r.torn_tail.is_some(),
                ),
                None => follower.replayed(&[], false, 0, None, false),
            }
        }
        let present = self.scan_value_files(writable)?;
        let found_segments = self.scan_segment_files(writable)?;
        self.segments = segment::SegmentStore::open(
            &self.layout.segments(),
            &found_segments,
            self.options.max_segment_bytes,
            writable,
        )?;
        let old_format = replay
            .as_ref()
            .is_some_and(|(r, _)| r.version < index_log::VERSION);
        let (records, valid_len, mut to_sync, entries) = match replay {
            Some((replay, bytes)) => {
                let (records, valid_len) = (replay.records, replay.valid_len);
                report.torn_index_tail = replay.torn_tail.clone();
                self.last_commit_ms = replay.last_commit_ms;
                let (entries, to_sync) =
                    self.reconcile(replay, bytes, present, writable, &mut report)?;
                (records, valid_len, to_sync, entries)
            }
            None => {
                report.rebuilt_index = true;
                let (entries, to_sync) = self.rebuild(present, writable, &mut report)?;
                (0, 0, to_sync, entries)
            }
        };
        // Each segment's live bytes and the end of its last live record. Entries come mostly
        // in the order they were written, so they are summed in runs of one segment.
        let mut live_end: HashMap<u32, u64> = HashMap::new();
        let mut live: HashMap<u32, u64> = HashMap::new();
        let mut run: Option<(u32, u64, u64)> = None;
        let mut end_run = |run: Option<(u32, u64, u64)>| {
            if let Some((id, bytes, end)) = run {
                *live.entry(id).or_default() += bytes;
                let last = live_end.entry(id).or_default();
                *last = (*last).max(end);
            }
        };
        for (key, loc) in entries.iter() {
            if let Place::Segment(p) = loc.place {
                let len = segment::record_len(key.len(), loc.stored_len);
                match &mut run {
                    Some((id, bytes, end)) if *id == p.segment => {
                        *bytes += len;
                        *end = (*end).max(p.offset + len);
                    }
                    _ => end_run(run.replace((p.segment, len, p.offset + len))),
                }
            }
        }
        end_run(run);
        for (id, bytes) in live {
            self.segments.add_live(id, bytes);
        }
        if !writable {
            return Ok((entries, report));
        }
        self.segments.resume_last(&live_end)?;
        let mended = report != OpenReport::default();
        let bloated = records > 2 * entries.len() as u64 + 1024;
        // An index of an older format is rewritten before anything is appended to it, so
        // that it never holds records its header's version does not have.
        if mended || bloated || old_format || !to_sync.is_empty() {
            // The rewritten index ends with a Commit, so every file it names must be durable.
            to_sync.sort();
            to_sync.dedup();
            for path in to_sync {
                io::sync_file(&path)?;
            }
            self.unsynced_dirs.insert(self.layout.values());
            self.sync_dirs()?;
            self.index = Some(IndexLog::rewrite(&index_path, entries.iter(), true)?);
            io::sync_dir(self.layout.root())?;
        } else {
            self.index = Some(IndexLog::open_append(&index_path, valid_len, records)?);
        }
        Ok((entries, report))
    }

    /// Applies the reconciliation rules to a replayed index. Returns the entries and the files
    /// whose verified contents must be synced before the index vouches for them.
    fn reconcile(
        &mut self,
        mut replay: Replay,
        index_bytes: Vec<u8>,
        mut present: DigestSet,
        writable: bool,
        report: &mut OpenReport,
    ) -> Result<(Recovered, Vec<PathBuf>)> {
        let mut to_sync = Vec::new();
        let mut list = std::mem::take(&mut replay.entries).into_list();
        let mut failure = None;
        list.retain_mut(|entry| {
            if failure.is_some() || index_log::Entries::is_removed(entry) {
                return false;
            }
            let key = entry.0.of(&index_bytes);
            let unflushed = replay.is_unflushed(entry.2);
            let chosen = self.reconcile_entry(
                key,
                DiskLoc::from(&entry.1),
                unflushed,
                &mut present,
                writable,
                report,
                &mut to_sync,
            );
            match chosen {
                Ok(Some(loc)) => {
                    entry.1 = loc.into();
                    true
                }
                Ok(None) => false,
                Err(e) => {
                    failure = Some(e);
                    false
                }
            }
        });
        if let Some(e) = failure {
            return Err(e);
        }
        let mut entries = Recovered {
            arena: index_bytes,
            entries: list,
        };
        for digest in present {
            match self.check_file(digest) {
                Ok((key, loc)) if KeyDigest::of(&key) == digest => {
                    report.adopted_orphans += 1;
                    to_sync.push(self.layout.value_file(digest));
                    entries.push(&key, loc);
                }
                _ => self.discard_file(digest, writable, report)?,
            }
        }
        Ok((entries, to_sync))
    }

    /// The reconciliation rules for one replayed entry: what `key`'s stored copy is, given
    /// that the index names `loc` (written after the last Commit when `unflushed`) and the
    /// value files still `present` (the key's is taken out of them).
    #[allow(clippy::too_many_arguments)]
    fn reconcile_entry(
        &self,
        key: &[u8],
        loc: DiskLoc,
        unflushed: bool,
        present: &mut DigestSet,
        writable: bool,
        report: &mut OpenReport,
        to_sync: &mut Vec<PathBuf>,
    ) -> Result<Option<DiskLoc>> {
        // The digest names a value file; only needed when there are any.
        let digest = || KeyDigest::of(key);
        let has_file = !present.is_empty() && present.remove(&digest());
        let mut chosen = match loc.place {
            Place::File if !has_file => {
                report.dropped_missing += 1;
                None
            }
            Place::File if unflushed => match self.check_file(digest()) {
                Ok((file_key, file_loc)) if file_key == key => {
                    to_sync.push(self.layout.value_file(digest()));
                    Some(file_loc)
                }
                _ => {
                    self.discard_file(digest(), writable, report)?;
                    None
                }
            },
            Place::File => Some(loc),
            Place::Segment(place) => {
                let len = segment::record_len(key.len(), loc.stored_len);
                if !self.segments.contains(place, len) {
                    report.dropped_missing += 1;
                    None
                } else if unflushed && !self.record_is_sound(key, place, len, loc.seq) {
                    report.discarded_damaged += 1;
                    None
                } else {
                    if unflushed {
                        to_sync.push(self.segments.path_of(place.segment));
                    }
                    Some(loc)
                }
            }
        };
        if has_file && loc.place != Place::File {
            // A value file beside a segment record: a spill to a file whose Put record was
            // lost, or an older file whose delete was lost. The higher sequence wins.
            match self.check_file(digest()) {
                Ok((file_key, file_loc))
                    if file_key == key && chosen.is_none_or(|c| file_loc.seq > c.seq) =>
                {
                    report.adopted_orphans += 1;
                    to_sync.push(self.layout.value_file(digest()));
                    chosen = Some(file_loc);
                }
                _ => self.discard_file(digest(), writable, report)?,
            }
        }
        Ok(chosen)
    }

    /// Rebuilds the entries from every segment record and value file: for each key the record
    /// with the highest sequence number wins, and a tombstone means the key was removed.
    pub(super) fn rebuild(
        &mut self,
        present: DigestSet,
        writable: bool,
        report: &mut OpenReport,
    ) -> Result<(Recovered, Vec<PathBuf>)> {
        let mut best: HashMap<Vec<u8>, (u64, Option<DiskLoc>)> = HashMap::new();
        let mut offer = |key: &[u8], seq: u64, loc: Option<DiskLoc>| {
            let slot = best.entry(key.to_vec()).or_insert((0, None));
            if seq >= slot.0 {
                *slot = (seq, loc);
            }
        };
        let mut to_sync = Vec::new();
        for id in self.segments.ids() {
            let path = self.segments.path_of(id);
            let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, "read segment", e))?;
            let walked = segment::scan(&bytes, |offset, record| {
                let h = &record.header;
                let loc = (h.kind == segment::KIND_VALUE).then_some(DiskLoc {
                    place: Place::Segment(RecordPlace {
                        segment: id,
                        offset,
                    }),
                    seq: h.seq,
                    raw_len: h.raw_len,
                    stored_len: h.stored_len,
                });
                offer(record.key, h.seq, loc);
            });
            match walked {
                Ok(damaged) => {
                    // The records after a damaged run were offered all the same.
                    for run in damaged {
                        report.discarded_damaged += 1;
                        report.damage.push((path.clone(), run.describe()));
                    }
                }
                Err(why) => {
                    report.discarded_damaged += 1;
                    report.damage.push((path.clone(), why));
                }
            }
            to_sync.push(path);
        }
        for digest in present {
            match self.check_file(digest) {
                Ok((key, loc)) if KeyDigest::of(&key) == digest => {
                    to_sync.push(self.layout.value_file(digest));
                    offer(&key, loc.seq, Some(loc));
                }
                _ => self.discard_file(digest, writable, report)?,
            }
        }
        let mut entries = Recovered::default();
        for (key, (_, loc)) in best {
            if let Some(loc) = loc {
                entries.push(&key, loc);
            }
        }
        report.adopted_orphans += entries.len() as u64;
        Ok((entries, to_sync))
    }

    /// Lists the value files present, deleting leftover temporary files when writable.
    fn scan_value_files(&mut self, writable: bool) -> Result<DigestSet> {
        let mut present = DigestSet::default();
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

    /// Lists the segment files present, with their lengths. A file shorter than a segment
    /// header is a segment whose creation a crash interrupted (its header goes out with its
    /// first records, in one write), so nothing can refer to it: it is deleted when writable
    /// and ignored otherwise.
    pub(super) fn scan_segment_files(&self, writable: bool) -> Result<Vec<(u32, u64)>> {
        let dir = self.layout.segments();
        let listing = match std::fs::read_dir(&dir) {
            Ok(listing) => listing,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&dir, "list directory", e)),
        };
        let mut out = Vec::new();
        for entry in listing {
            let entry = entry.map_err(|e| Error::io(&dir, "list directory", e))?;
            let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(segment::parse_file_name)
            else {
                continue;
            };
            let len = match entry.metadata() {
                Ok(meta) => meta.len(),
                // Deleted since it was listed (a reader beside a compacting writer).
                Err(e) if !writable && e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(entry.path(), "stat segment", e)),
            };
            if len < segment::FILE_HEADER_LEN {
                if writable {
                    io::remove_file(&entry.path())?;
                }
                continue;
            }
            out.push((id, len));
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Reads and verifies the value file of `digest` in full.
    fn check_file(&self, digest: KeyDigest) -> Result<(Vec<u8>, DiskLoc), String> {
        let path = self.layout.value_file(digest);
        let bytes = io::read_file(&path).map_err(|e| e.to_string())?;
        let parsed = value_file::parse(&bytes)?;
        let h = &parsed.header;
        Ok((
            parsed.key.to_vec(),
            DiskLoc {
                place: Place::File,
                seq: h.seq,
                raw_len: h.raw_len,
                stored_len: h.payload_len,
            },
        ))
    }

    /// True when the segment record at `place` is whole and is `key`'s write `seq`.
    fn record_is_sound(&self, key: &[u8], place: RecordPlace, len: u64, seq: u64) -> bool {
        self.segments.read(place, len).is_ok_and(|bytes| {
            segment::parse_record(&bytes).is_ok_and(|r| {
                r.key == key && r.header.seq == seq && r.header.kind == segment::KIND_VALUE
            })
        })
    }

    /// Counts a damaged or stale value file and deletes it when writable. A file that is no
    /// longer there (a reader beside a writer that deleted it after it was listed) counts as
    /// missing, not damaged.
    fn discard_file(
        &self,
        digest: KeyDigest,
        writable: bool,
        report: &mut OpenReport,
    ) -> Result<()> {
        let path = self.layout.value_file(digest);
        if !path.exists() {
            report.dropped_missing += 1;
            return Ok(());
        }
        report.discarded_damaged += 1;
        let why = match self.check_file(digest) {
            Ok(_) => "an older copy than the one the index names".to_string(),
            Err(why) => why,
        };
        report.damage.push((path.clone(), why));
        if writable {
            io::remove_file(&path)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::Chest;
    use crate::disk::index_log::{self, MAGIC, Record};

    /// The index of a chest written by a build that knew only format 1 (single Put records):
    /// every key reads back, and the index is rewritten in the current format at open, before
    /// a record of that format is appended to it.
    #[test]
    fn an_index_of_format_1_is_read_and_rewritten_in_the_current_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chest");
        let open = || -> Chest<u64, Vec<u8>> {
            Chest::builder()
                .path(&path)
                .budget(1 << 10)
                .weigher(|v: &Vec<u8>| v.len() as u64)
                .open()
                .unwrap()
        };
        let chest = open();
        for k in 0..50u64 {
            chest.insert(k, vec![k as u8; 100]).unwrap();
        }
        chest.close().unwrap();

        let keys = path.join(".keys");
        let bytes = std::fs::read(&keys).unwrap();
        let replayed = index_log::replay(&bytes);
        assert_eq!(replayed.entries.len(), 50);
        let mut v1 = MAGIC.to_vec();
        v1.extend_from_slice(&1u16.to_le_bytes());
        v1.extend_from_slice(&[0; 6]);
        for (at, loc, _) in replayed.entries.iter() {
            Record::Put {
                key: at.of(&bytes),
                loc,
            }
            .encode(&mut v1);
        }
        Record::Commit { unix_ms: 1 }.encode(&mut v1);
        std::fs::write(&keys, &v1).unwrap();

        let chest = open();
        for k in 0..50u64 {
            assert_eq!(*chest.get(&k).unwrap().unwrap(), vec![k as u8; 100]);
        }
        let now = std::fs::read(&keys).unwrap();
        assert_eq!(index_log::check_header(&now), Ok(index_log::VERSION));
        assert!(now.len() < v1.len(), "rewritten with packed puts");
        chest.insert(50, vec![50; 100]).unwrap();
        chest.close().unwrap();
        let chest = open();
        assert_eq!(chest.len(), 51);
        assert!(chest.verify().unwrap().is_healthy());
    }
}
