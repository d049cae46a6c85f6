//! Looking inside a closed chest whatever its key and value types, as the `spillchest`
//! command-line tool does: [`ChestInfo`] (what it holds, how big it is, each entry, a full
//! check) and [`compact_path`] (reclaim the dead bytes of its segments and index).
//!
//! Keys are shown as the codec encoded them; a tool that knows the key type (see
//! [`ChestSummary::key_type`]) can decode them with the recorded codec.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::disk::{
    DiskLoc, DiskMode, DiskOptions, DiskTier, KeyDigest, MetaCheck, OpenReport, Place,
    check_is_chest, meta,
};
use crate::error::Result;
use crate::verify::{Damage, VerifyReport};

/// Options for tools: the chest's own sizes are not recorded, so the defaults are used for the
/// records tools write (compaction copies).
fn tool_options() -> DiskOptions {
    DiskOptions {
        small_value_bytes: crate::chest::DEFAULT_SMALL_VALUE_BYTES,
        max_segment_bytes: crate::chest::DEFAULT_SEGMENT_BYTES,
        rebuild_index: false,
    }
}

/// What a chest holds and how much room it takes, from [`ChestInfo::summary`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChestSummary {
    /// The chest format version (of the `meta` file and the layout).
    pub format_version: u16,
    /// The codec's name, e.g. `bincode-2-standard`.
    pub codec: String,
    /// The key type's name as `std::any::type_name` gave it, e.g. `alloc::string::String`.
    pub key_type: String,
    /// The value type's name.
    pub value_type: String,
    /// When the chest was created, in ms since the Unix epoch.
    pub created_unix_ms: u64,
    /// When the chest was last flushed (the index's last Commit record), in ms since the Unix
    /// epoch; `None` when the index holds no Commit or could not be replayed.
    pub last_flush_unix_ms: Option<u64>,
    /// Entries with a stored value.
    pub entries: u64,
    /// Bytes of the live values as encoded (before compression).
    pub value_bytes: u64,
    /// Bytes of the live values as stored (after compression).
    pub stored_bytes: u64,
    /// Entries stored LZ4-compressed.
    pub compressed_entries: u64,
    /// Bytes of value files and segment files.
    pub disk_bytes: u64,
    /// Bytes of value files and of the segment records some entry refers to.
    pub live_disk_bytes: u64,
    /// Bytes of segment records no entry refers to (overwritten or removed values, removals'
    /// tombstones, torn tails): what [`compact_path`] reclaims.
    pub dead_bytes: u64,
    /// Bytes of value files.
    pub value_file_bytes: u64,
    /// Bytes of segment files.
    pub segment_bytes: u64,
    /// Bytes of the index log.
    pub index_bytes: u64,
    /// Value files (one per large value).
    pub value_files: u64,
    /// Segment files.
    pub segments: u64,
}

/// Where one entry's value is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EntryPlace {
    /// In its own value file.
    File {
        /// The value file.
        path: PathBuf,
    },
    /// In a record of a segment file.
    Segment {
        /// The segment file.
        path: PathBuf,
        /// The segment's id.
        id: u32,
        /// The record's byte offset in the segment.
        offset: u64,
    },
}

/// One entry of a chest, from [`ChestInfo::entries`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EntryInfo<'a> {
    /// The key as the chest's codec encoded it.
    pub key: &'a [u8],
    /// The key's digest, which names its value file.
    pub digest: KeyDigest,
    /// Bytes of the value as encoded.
    pub raw_len: u64,
    /// Bytes of the value as stored (after compression).
    pub stored_len: u64,
    /// Bytes the value takes on disk: its whole value file or segment record, headers
    /// included.
    pub disk_bytes: u64,
    /// True when the value is stored LZ4-compressed.
    pub compressed: bool,
    /// The sequence number of the write that stored it (higher is newer).
    pub seq: u64,
    /// Where it is stored.
    pub place: EntryPlace,
}

/// A closed chest opened for inspection with a shared lock, whatever its key and value types.
/// It reads and changes nothing; the lock is released when it is dropped or
/// [closed](ChestInfo::close).
pub struct ChestInfo {
    disk: DiskTier,
    summary: ChestSummary,
    entries: Vec<(Vec<u8>, DiskLoc)>,
    report: OpenReport,
}

impl fmt::Debug for ChestInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChestInfo")
            .field("path", &self.disk.root())
            .field("summary", &self.summary)
            .finish_non_exhaustive()
    }
}

impl ChestInfo {
    /// Opens the chest at `path` read-only, replaying its index and reconciling it with the
    /// files in memory (as a read-only handle does). It takes no lock, so it also opens a chest
    /// a process is writing: it then shows the chest as the writer had put it on disk (values
    /// spilled or flushed) when the index was read.
    ///
    /// # Errors
    /// [`Error::NotAChest`](crate::Error::NotAChest) when `path` is not a chest's directory
    /// (or does not exist); [`Error::UnsupportedFormat`](crate::Error::UnsupportedFormat);
    /// [`Error::Corrupt`](crate::Error::Corrupt) for damaged metadata;
    /// [`Error::Io`](crate::Error::Io).
    pub fn open(path: impl AsRef<Path>) -> Result<ChestInfo> {
        let (disk, found, report) = DiskTier::open(
            path.as_ref(),
            DiskMode::ReadOnly,
            MetaCheck::Any,
            Duration::ZERO,
            tool_options(),
        )?;
        let meta = disk.meta()?;
        let entries: Vec<(Vec<u8>, DiskLoc)> =
            found.iter().map(|(k, loc)| (k.to_vec(), loc)).collect();
        let summary = ChestSummary {
            format_version: meta::FORMAT_VERSION,
            codec: meta.codec,
            key_type: meta.key_type,
            value_type: meta.value_type,
            created_unix_ms: meta.created_unix_ms,
            last_flush_unix_ms: disk.last_commit_ms(),
            entries: entries.len() as u64,
            value_bytes: entries.iter().map(|(_, l)| l.raw_len).sum(),
            stored_bytes: entries.iter().map(|(_, l)| l.stored_len).sum(),
            compressed_entries: entries.iter().filter(|(_, l)| is_compressed(l)).count() as u64,
            disk_bytes: disk.disk_bytes(),
            live_disk_bytes: disk.live_disk_bytes(),
            value_file_bytes: disk.value_file_bytes(),
            segment_bytes: disk.disk_bytes() - disk.value_file_bytes(),
            dead_bytes: (disk.disk_bytes() - disk.live_disk_bytes())
                .saturating_sub(disk.segment_header_bytes()),
            index_bytes: disk.index_file_bytes(),
            value_files: disk.own_files(),
            segments: disk.segment_count(),
        };
        Ok(ChestInfo {
            disk,
            summary,
            entries,
            report,
        })
    }

    /// The chest's directory.
    pub fn path(&self) -> &Path {
        self.disk.root()
    }

    /// What the chest holds and how much room it takes.
    pub fn summary(&self) -> &ChestSummary {
        &self.summary
    }

    /// Every entry with a stored value, in no particular order.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = EntryInfo<'_>> + '_ {
        self.entries.iter().map(|(key, loc)| EntryInfo {
            key,
            digest: KeyDigest::of(key),
            raw_len: loc.raw_len,
            stored_len: loc.stored_len,
            disk_bytes: DiskTier::stored_bytes(key.len(), loc),
            compressed: is_compressed(loc),
            seq: loc.seq,
            place: match loc.place {
                Place::File => EntryPlace::File {
                    path: self.disk.path_of(key, loc),
                },
                Place::Segment(p) => EntryPlace::Segment {
                    path: self.disk.path_of(key, loc),
                    id: p.segment,
                    offset: p.offset,
                },
            },
        })
    }

    /// What is wrong with the index, if anything: replay stopped early (a torn or truncated
    /// tail: entries recorded after it are not seen, except value files, which are adopted), or
    /// the index is missing or not an index (the entries were rebuilt from the files in
    /// memory). A writer's open mends either; [`repair`](crate::repair) rebuilds the index from
    /// every file.
    pub fn index_problem(&self) -> Option<String> {
        if let Some(why) = &self.report.torn_index_tail {
            return Some(format!("index replay stopped early: {why}"));
        }
        self.report
            .rebuilt_index
            .then(|| "index is missing or is not an index log".to_string())
    }

    /// Values that opening found damaged, stale or missing and left out, file by file.
    pub fn damage_on_open(&self) -> Vec<Damage> {
        let damage = self.report.damage.iter();
        damage
            .map(|(path, reason)| Damage {
                path: path.clone(),
                key: None,
                reason: reason.clone(),
            })
            .collect()
    }

    /// The number of steps [`verify`](ChestInfo::verify) reports progress in: one per entry
    /// and one per segment.
    pub fn verify_steps(&self) -> u64 {
        self.entries.len() as u64 + self.summary.segments
    }

    /// Reads back every entry's stored value through the same checks as a read and walks
    /// every segment record by record, as [`verify_path`](crate::verify_path) does; also
    /// reports what opening left out and a damaged index (see
    /// [`index_problem`](ChestInfo::index_problem)). Calls `progress` with the steps done
    /// after each entry and each segment (see [`verify_steps`](ChestInfo::verify_steps)).
    pub fn verify(&self, mut progress: impl FnMut(u64)) -> VerifyReport {
        let mut done = 0;
        let mut report = self.disk.verify_with_progress(&self.entries, &mut || {
            done += 1;
            progress(done);
        });
        report.discarded_on_open = self.report.discarded_damaged + self.report.dropped_missing;
        report.damaged.extend(self.damage_on_open());
        if let Some(problem) = self.index_problem() {
            report.damaged.push(Damage {
                path: self.path().join(".keys"),
                key: None,
                reason: problem,
            });
        }
        report
    }

    /// Closes the chest (a read-only open holds no lock; this is kept for symmetry).
    ///
    /// # Errors
    /// None today; [`Error::Io`](crate::Error::Io) is reserved for errors closing files.
    pub fn close(mut self) -> Result<()> {
        self.disk.release()
    }
}

fn is_compressed(loc: &DiskLoc) -> bool {
    // A value is stored compressed only when that makes it smaller.
    loc.stored_len < loc.raw_len
}

/// What [`compact_path`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompactReport {
    /// Bytes of value files, segments and the index before compacting (after opening mended
    /// anything a crash left).
    pub bytes_before: u64,
    /// The same bytes after compacting.
    pub bytes_after: u64,
    /// Segments whose live records were copied out before the file was deleted.
    pub segments_rewritten: u64,
    /// Segments deleted because no entry referred to any of their records.
    pub segments_deleted: u64,
    /// Records copied.
    pub records_moved: u64,
    /// Entries in the chest.
    pub entries: u64,
}

/// Reclaims the dead bytes of the closed chest at `path`, whatever its types, holding the
/// exclusive lock: every segment holding bytes no entry refers to (overwritten or removed
/// values, torn tails) is rewritten, its live records copied with their sequence numbers, the
/// copies synced before the old file is deleted; then the index is rewritten with one record
/// per entry. A crash at any point leaves every entry readable.
///
/// Read-only handles may stay open meanwhile: they follow the moves and read the new index.
///
/// # Errors
/// [`Error::Locked`](crate::Error::Locked) while a writer has the chest open;
/// [`Error::NotAChest`](crate::Error::NotAChest) (nothing is created);
/// [`Error::UnsupportedFormat`](crate::Error::UnsupportedFormat);
/// [`Error::Corrupt`](crate::Error::Corrupt) naming the segment when a record to copy is damaged
/// (segments rewritten before it stay rewritten, the rest are untouched: run
/// [`repair`](crate::repair)); [`Error::Io`](crate::Error::Io) and
/// [`Error::DiskFull`](crate::Error::DiskFull).
pub fn compact_path(path: impl AsRef<Path>) -> Result<CompactReport> {
    let path = path.as_ref();
    check_is_chest(path)?;
    let (mut disk, found, _) = DiskTier::open(
        path,
        DiskMode::Persistent,
        MetaCheck::Any,
        Duration::ZERO,
        tool_options(),
    )?;
    let mut entries: Vec<(Vec<u8>, DiskLoc)> =
        found.iter().map(|(k, loc)| (k.to_vec(), loc)).collect();
    let bytes_before = disk.disk_bytes() + disk.index_bytes();
    let outcome = disk.compact_all(&mut entries);
    let bytes_after = disk.disk_bytes() + disk.index_bytes();
    let released = disk.release();
    let outcome = outcome?;
    released?;
    Ok(CompactReport {
        bytes_before,
        bytes_after,
        segments_rewritten: outcome.segments_rewritten,
        segments_deleted: outcome.segments_deleted,
        records_moved: outcome.records_moved,
        entries: entries.len() as u64,
    })
}
