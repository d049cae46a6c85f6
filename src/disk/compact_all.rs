//! Full compaction of a closed chest, at the disk-tier level and without knowing its types
//! (`spillchest compact`): every segment holding dead bytes is rewritten, and the index is
//! rewritten with one Put per entry.
//!
//! Each segment is handled as the chest's own compaction handles one (`State::compact`): the
//! records the index names are copied, with their sequence numbers, into a fresh active
//! segment; the copies and their Put records are committed and synced; only then is the old
//! file deleted. A crash at any point leaves either the old record or a synced copy named by
//! the index, so disk use stays under the live bytes plus one segment being rewritten.

use crate::disk::segment::FILE_HEADER_LEN;
use crate::disk::{DiskLoc, DiskTier};
use crate::error::Result;

/// What [`DiskTier::compact_all`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CompactOutcome {
    /// Segments rewritten (their live records copied, the file deleted).
    pub(crate) segments_rewritten: u64,
    /// Segments deleted without copying anything (no live record).
    pub(crate) segments_deleted: u64,
    /// Records copied.
    pub(crate) records_moved: u64,
}

impl DiskTier {
    /// Rewrites every segment holding dead bytes (including the one that was active) and then
    /// the index. `entries` are every key's stored value, as opening found them; moved entries
    /// are updated in place.
    ///
    /// # Errors
    /// [`Error::ReadOnly`](crate::Error::ReadOnly) on a read-only tier; a damaged record is
    /// [`Error::Corrupt`](crate::Error::Corrupt) naming its segment, and stops the compaction
    /// with every segment rewritten so far done and the rest untouched; I/O errors.
    pub(crate) fn compact_all(
        &mut self,
        entries: &mut [(Vec<u8>, DiskLoc)],
    ) -> Result<CompactOutcome> {
        self.refuse_if_read_only()?;
        let mut outcome = CompactOutcome::default();
        // Copies must not land in a segment that is itself being rewritten.
        self.segments.seal()?;
        for (id, len, live) in self.segments.usage() {
            if live + FILE_HEADER_LEN >= len {
                continue;
            }
            let movers: Vec<usize> = (0..entries.len())
                .filter(|&i| DiskTier::is_in_segment(&entries[i].1, id))
                .collect();
            let mut moved: Vec<(usize, DiskLoc)> = Vec::with_capacity(movers.len());
            for i in movers {
                match self.copy_record(&entries[i].0, entries[i].1) {
                    Ok(loc) => moved.push((i, loc)),
                    Err(e) => {
                        self.discard_staged();
                        return Err(e);
                    }
                }
            }
            // On error, commit_staged forgets what was staged and the old segment stays.
            self.commit_staged()?;
            if moved.is_empty() {
                outcome.segments_deleted += 1;
            } else {
                outcome.segments_rewritten += 1;
            }
            outcome.records_moved += moved.len() as u64;
            for (i, loc) in moved {
                entries[i].1 = loc;
            }
            // The old segment may hold the only durable copy: sync the copies and their index
            // records before it goes.
            self.sync(None)?;
            self.remove_segment(id)?;
        }
        let puts: Vec<(Vec<u8>, DiskLoc)> = entries.to_vec();
        self.sync(Some(&puts))?;
        Ok(outcome)
    }
}
