//! Checking and mending a chest's files: [`Chest::verify`](crate::Chest::verify) on an open
//! chest, [`verify_path`] on a closed one, and [`repair`], which rebuilds the index from the
//! value files' and segments' own records.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::disk::{
    DiskLoc, DiskMode, DiskOptions, DiskTier, Fetched, KeyDigest, MetaCheck, OpenReport, Place,
};
use crate::error::{Error, Result};

/// One damaged thing found by a check.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Damage {
    /// The damaged file.
    pub path: PathBuf,
    /// The key whose value is damaged, when the damage is one key's value.
    pub key: Option<KeyDigest>,
    /// What check failed.
    pub reason: String,
}

/// What [`Chest::verify`](crate::Chest::verify) or [`verify_path`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Entries whose stored value was read back and checked.
    pub entries_checked: u64,
    /// Segment files walked record by record.
    pub segments_checked: u64,
    /// Value files checked.
    pub files_checked: u64,
    /// Bytes read.
    pub bytes_checked: u64,
    /// Values that opening found damaged or missing and left out (a crash's torn writes are
    /// expected here; see `damaged` for details).
    pub discarded_on_open: u64,
    /// Everything damaged.
    pub damaged: Vec<Damage>,
}

impl VerifyReport {
    /// True when nothing is damaged.
    pub fn is_healthy(&self) -> bool {
        self.damaged.is_empty()
    }
}

/// What [`repair`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RepairReport {
    /// Entries recovered from the files and written into the new index.
    pub recovered: u64,
    /// Damaged files or unreadable runs of records that could not be recovered.
    pub unrecoverable: Vec<Damage>,
}

fn tool_options(rebuild_index: bool) -> DiskOptions {
    DiskOptions {
        small_value_bytes: crate::chest::DEFAULT_SMALL_VALUE_BYTES,
        max_segment_bytes: crate::chest::DEFAULT_SEGMENT_BYTES,
        rebuild_index,
    }
}

fn damage_of(report: &OpenReport) -> Vec<Damage> {
    report
        .damage
        .iter()
        .map(|(path, reason)| Damage {
            path: path.clone(),
            key: None,
            reason: reason.clone(),
        })
        .collect()
}

/// Checks every value and record of the chest at `path`, whatever its types. It reads, and
/// changes nothing; it takes no lock, so it also runs beside a process writing the chest (it
/// then checks the chest as its open found it: values the writer moved or removed during the
/// check are skipped, not reported).
///
/// # Errors
/// [`Error::NotAChest`],
/// [`Error::UnsupportedFormat`], [`Error::Corrupt`] (damaged metadata), [`Error::Io`].
pub fn verify_path(path: impl AsRef<Path>) -> Result<VerifyReport> {
    let (disk, found, open_report) = DiskTier::open(
        path.as_ref(),
        DiskMode::ReadOnly,
        MetaCheck::Any,
        Duration::ZERO,
        tool_options(false),
    )?;
    let entries: Vec<(Vec<u8>, DiskLoc)> = found.iter().map(|(k, loc)| (k.to_vec(), loc)).collect();
    let mut report = disk.verify(&entries);
    report.discarded_on_open = open_report.discarded_damaged + open_report.dropped_missing;
    report.damaged.extend(damage_of(&open_report));
    Ok(report)
}

/// Rebuilds the index of the closed chest at `path` from the value files' and segments' own
/// records (for each key the newest write wins, and a removal's tombstone removes it), holding
/// the exclusive lock. Damaged files are removed; what could not be recovered is reported.
///
/// A value removed before its segment was compacted can come back: the tombstone that recorded
/// its removal is not kept by compaction.
///
/// # Errors
/// As [`verify_path`], and [`Error::Locked`] while a writer has the chest open. Read-only
/// handles open beside it reload the rebuilt index when they next refresh.
pub fn repair(path: impl AsRef<Path>) -> Result<RepairReport> {
    crate::disk::check_is_chest(path.as_ref())?;
    let (mut disk, found, open_report) = DiskTier::open(
        path.as_ref(),
        DiskMode::Persistent,
        MetaCheck::Any,
        Duration::ZERO,
        tool_options(true),
    )?;
    disk.release()?;
    Ok(RepairReport {
        recovered: found.len() as u64,
        unrecoverable: damage_of(&open_report),
    })
}

impl DiskTier {
    /// Reads back every entry's stored value and walks every segment, reporting what is
    /// damaged.
    pub(crate) fn verify(&self, entries: &[(Vec<u8>, DiskLoc)]) -> VerifyReport {
        self.verify_with_progress(entries, &mut || {})
    }

    /// As [`verify`](Self::verify), calling `progress` after each entry and each segment.
    pub(crate) fn verify_with_progress(
        &self,
        entries: &[(Vec<u8>, DiskLoc)],
        progress: &mut dyn FnMut(),
    ) -> VerifyReport {
        let mut report = VerifyReport::default();
        for (key, loc) in entries {
            report.entries_checked += 1;
            if loc.place == Place::File {
                report.files_checked += 1;
            }
            match self.fetch_value(key, loc) {
                Ok(Fetched::Value(payload, _)) => {
                    report.bytes_checked += payload.raw().len() as u64
                }
                // Read-only beside a writer: the writer moved or removed it since the open;
                // where it is now is checked by the next verify.
                Ok(Fetched::Moved(_) | Fetched::Gone(_)) => {}
                Err(e) => report.damaged.push(Damage {
                    path: match &e {
                        Error::Corrupt { path, .. } | Error::Io { path, .. } => path.clone(),
                        _ => self.path_of(key, loc),
                    },
                    key: Some(KeyDigest::of(key)),
                    reason: e.to_string(),
                }),
            }
            progress();
        }
        for id in self.segment_ids() {
            let (path, outcome) = self.walk_segment(id);
            report.segments_checked += 1;
            match outcome {
                Ok(bytes) => report.bytes_checked += bytes,
                Err(reason) => report.damaged.push(Damage {
                    path,
                    key: None,
                    reason,
                }),
            }
            progress();
        }
        report
    }
}
