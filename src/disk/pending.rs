//! A value file being written in pieces: streamed (`append`) or filled in place through a
//! writable memory map (`map_payload`). It lives under a temporary name unique to it, so
//! nothing else ever opens, truncates or replaces it; it becomes a value file only through
//! [`DiskTier::commit_value`](super::DiskTier::commit_value), and a pending value dropped
//! before that deletes its temporary file.

// Without the `ndarray` feature nothing builds values in pieces yet.
#![cfg_attr(not(feature = "ndarray"), allow(dead_code))]

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use memmap2::MmapMut;

use crate::disk::{io, mapped, value_file};
use crate::error::{Error, Result};

/// Pieces at least this long are checksummed on a second thread while they are written.
const PARALLEL_HASH_BYTES: usize = 1 << 20;

/// A value file under construction.
pub(crate) struct PendingValue {
    pub(crate) key: Vec<u8>,
    tmp: PathBuf,
    pub(crate) dest: PathBuf,
    pub(crate) dir: PathBuf,
    file: File,
    payload_offset: u64,
    payload_len: u64,
    flags: u16,
    hasher: xxhash_rust::xxh3::Xxh3,
    /// Set once the file was renamed into place (or handed on), so Drop leaves it alone.
    committed: bool,
}

impl PendingValue {
    /// Creates the temporary file `tmp`, positioned at the payload.
    pub(crate) fn create(
        key: &[u8],
        tmp: PathBuf,
        dest: PathBuf,
        dir: PathBuf,
        flags: u16,
    ) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| Error::io(&tmp, "create file", e))?;
        let payload_offset = value_file::payload_offset(key.len());
        let mut pending = PendingValue {
            key: key.to_vec(),
            tmp,
            dest,
            dir,
            file,
            payload_offset,
            payload_len: 0,
            flags,
            hasher: xxhash_rust::xxh3::Xxh3::new(),
            committed: false,
        };
        pending
            .file
            .set_len(payload_offset)
            .map_err(|e| Error::io(&pending.tmp, "size file", e))?;
        std::io::Seek::seek(&mut pending.file, std::io::SeekFrom::Start(payload_offset))
            .map_err(|e| Error::io(&pending.tmp, "seek file", e))?;
        Ok(pending)
    }

    /// The temporary file's path.
    pub(crate) fn tmp_path(&self) -> &Path {
        &self.tmp
    }

    /// Appends payload bytes. Large pieces are checksummed on a second thread while the
    /// kernel copies them into the page cache, so the checksum costs no wall time.
    pub(crate) fn append(&mut self, bytes: &[u8]) -> Result<()> {
        let (file, hasher) = (&mut self.file, &mut self.hasher);
        let written = if bytes.len() >= PARALLEL_HASH_BYTES {
            std::thread::scope(|s| {
                let hashing = s.spawn(|| hasher.update(bytes));
                let written = file.write_all(bytes);
                if let Err(panic) = hashing.join() {
                    std::panic::resume_unwind(panic);
                }
                written
            })
        } else {
            hasher.update(bytes);
            file.write_all(bytes)
        };
        written.map_err(|e| Error::io(&self.tmp, "write file", e))?;
        self.payload_len += bytes.len() as u64;
        Ok(())
    }

    /// Sizes the file for a payload of `payload_len` bytes (zeros) and maps it whole,
    /// writable. The payload is `map[payload_offset()..]`. Call [`finish_mapped`] with the map.
    pub(crate) fn map_payload(&mut self, payload_len: u64) -> Result<MmapMut> {
        let total = self
            .payload_offset
            .checked_add(payload_len)
            .ok_or_else(|| Error::InvalidConfig {
                reason: format!("a payload of {payload_len} bytes is too large"),
            })?;
        self.file
            .set_len(total)
            .map_err(|e| Error::io(&self.tmp, "size file", e))?;
        self.payload_len = payload_len;
        mapped::map_write(&self.file).map_err(|e| Error::io(&self.tmp, "map file", e))
    }

    /// Where the payload starts in the file.
    pub(crate) fn payload_offset(&self) -> usize {
        self.payload_offset as usize
    }

    /// Checksums a payload filled through `map` and unmaps it. Dirty pages stay in the page
    /// cache and reach the disk with the file's fsync (at flush for a persistent chest).
    pub(crate) fn finish_mapped(&mut self, map: MmapMut) {
        let start = self.payload_offset as usize;
        self.hasher = xxhash_rust::xxh3::Xxh3::new();
        self.hasher.update(&map[start..]);
        drop(map);
    }

    /// Writes the header and key in front of the payload, as write number `seq`. Returns the
    /// payload length.
    pub(crate) fn write_prefix(&mut self, seq: u64) -> Result<u64> {
        let prefix = value_file::encode_prefix_parts(
            &self.key,
            self.payload_len,
            self.payload_len,
            self.flags,
            self.hasher.digest(),
            seq,
        );
        io::hook(io::Op::Write)
            .and_then(|()| self.file.write_all_at(&prefix, 0))
            .map_err(|e| Error::io(&self.tmp, "write file", e))?;
        Ok(self.payload_len)
    }

    /// Renames the file into place; from then on Drop leaves it alone.
    pub(crate) fn rename_into_place(&mut self) -> Result<()> {
        io::hook(io::Op::Rename)
            .and_then(|()| std::fs::rename(&self.tmp, &self.dest))
            .map_err(|e| Error::io(&self.dest, "rename file into place", e))?;
        self.committed = true;
        Ok(())
    }
}

impl std::fmt::Debug for PendingValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingValue")
            .field("tmp", &self.tmp)
            .field("payload_len", &self.payload_len)
            .finish_non_exhaustive()
    }
}

impl Drop for PendingValue {
    fn drop(&mut self) {
        if !self.committed {
            let _ = io::remove_file(&self.tmp);
        }
    }
}
