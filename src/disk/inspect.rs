//! What tools ask of a chest's directory without knowing its types: its metadata, the time of
//! its last flush, the bytes each stored value takes, and a walk of one segment's records.
//! Used by `crate::inspect` (the command-line tool's library side) and `crate::verify`.

use std::path::{Path, PathBuf};

use crate::disk::{
    DiskLoc, DiskMode, DiskTier, Meta, Place, file_bytes, layout::Layout, read_meta, segment,
};
use crate::error::{Error, Result};

/// Refuses, without creating anything, a path that is not the directory of an existing chest
/// (tools that open for writing would otherwise create one).
///
/// # Errors
/// [`Error::NotAChest`] when `root` is not a directory holding a `meta` file.
pub(crate) fn check_is_chest(root: &Path) -> Result<()> {
    let layout = Layout::new(root);
    if root.is_dir() && layout.meta().is_file() {
        Ok(())
    } else {
        Err(Error::NotAChest {
            path: root.to_path_buf(),
        })
    }
}

impl DiskTier {
    /// The chest's metadata, read again from its file.
    pub(crate) fn meta(&self) -> Result<Meta> {
        read_meta(&self.layout)
    }

    /// The time of the last Commit record of the index replayed on open (the last flush), if
    /// the index was replayed and held one.
    pub(crate) fn last_commit_ms(&self) -> Option<u64> {
        self.last_commit_ms
    }

    /// Bytes on disk of the value stored at `loc` for a key of `key_len` bytes: its segment
    /// record, or its whole value file (header, key, padding and payload).
    pub(crate) fn stored_bytes(key_len: usize, loc: &DiskLoc) -> u64 {
        match loc.place {
            Place::File => file_bytes(key_len, loc.stored_len),
            Place::Segment(_) => segment::record_len(key_len, loc.stored_len),
        }
    }

    /// Bytes of value files.
    pub(crate) fn value_file_bytes(&self) -> u64 {
        self.own_file_bytes
    }

    /// Bytes of segment file headers (kept by compaction).
    pub(crate) fn segment_header_bytes(&self) -> u64 {
        self.segments.count() as u64 * segment::FILE_HEADER_LEN
    }

    /// Bytes of the index file, also when it is not open for appending (read-only).
    pub(crate) fn index_file_bytes(&self) -> u64 {
        match &self.index {
            Some(index) => index.len_bytes(),
            None => std::fs::metadata(self.layout.index()).map_or(0, |m| m.len()),
        }
    }

    /// The ids of every segment.
    pub(crate) fn segment_ids(&self) -> Vec<u32> {
        self.segments.ids()
    }

    /// Walks segment `id` record by record: its path, and its length or why the walk stopped
    /// early. Read-only beside a writer, a segment deleted since the open counts as walked
    /// (nothing read), and a walk that stops early in a segment that grew meanwhile (a write
    /// under way at its end) is walked again, a few times at most.
    pub(crate) fn walk_segment(&self, id: u32) -> (PathBuf, Result<u64, String>) {
        let path = self.segments.path_of(id);
        let following = self.mode == DiskMode::ReadOnly;
        let mut attempts = 0;
        let outcome = loop {
            attempts += 1;
            let bytes = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) if following && e.kind() == std::io::ErrorKind::NotFound => break Ok(0),
                Err(e) => break Err(e.to_string()),
            };
            match crate::format::check_segment(&bytes) {
                Ok(summary) => match summary.stopped {
                    None => break Ok(bytes.len() as u64),
                    Some(_)
                        if following
                            && attempts < 3
                            && std::fs::metadata(&path)
                                .is_ok_and(|m| m.len() > bytes.len() as u64) => {}
                    Some((at, why)) => {
                        break Err(format!("records from offset {at} unreadable: {why}"));
                    }
                },
                Err(why) => break Err(why),
            }
        };
        (path, outcome)
    }
}
