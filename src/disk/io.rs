//! Small file helpers that attach paths to every error.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::Path;

use memmap2::Mmap;

use crate::error::{Error, Result};

/// A file's device and inode: what tells that a path now names another file (a segment
/// deleted and its number reused, an index renamed over).
pub(crate) fn identity(meta: &fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

/// True when `path` names the file of `identity` (false when it names none).
pub(crate) fn path_names(path: &Path, identity: (u64, u64)) -> bool {
    fs::metadata(path).is_ok_and(|meta| self::identity(&meta) == identity)
}

/// The kinds of operation a test can make fail.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Op {
    Write,
    Sync,
    Rename,
}

/// Called before every write, fsync and rename on the chest's files: with the
/// `fault-injection` feature a test can make it fail; otherwise it compiles to nothing.
#[inline]
pub(crate) fn hook(op: Op) -> std::io::Result<()> {
    #[cfg(feature = "fault-injection")]
    {
        let kind = match op {
            Op::Write => crate::faults::FaultKind::Write,
            Op::Sync => crate::faults::FaultKind::Sync,
            Op::Rename => crate::faults::FaultKind::Rename,
        };
        crate::faults::check(kind)
    }
    #[cfg(not(feature = "fault-injection"))]
    {
        let _ = op;
        Ok(())
    }
}

/// Writes `parts` to `tmp`, optionally fsyncs it, and renames it to `dest`. A crash leaves
/// either the old `dest` or the new one, never a partial file under the final name.
pub(crate) fn write_then_rename(
    tmp: &Path,
    dest: &Path,
    parts: &[&[u8]],
    sync: bool,
) -> Result<()> {
    let result = (|| {
        let mut file = hook(Op::Write)
            .and_then(|()| File::create(tmp))
            .map_err(|e| Error::io(tmp, "create file", e))?;
        for part in parts {
            hook(Op::Write)
                .and_then(|()| file.write_all(part))
                .map_err(|e| Error::io(tmp, "write file", e))?;
        }
        if sync {
            hook(Op::Sync)
                .and_then(|()| file.sync_all())
                .map_err(|e| Error::io(tmp, "fsync file", e))?;
        }
        hook(Op::Rename)
            .and_then(|()| fs::rename(tmp, dest))
            .map_err(|e| Error::io(dest, "rename file into place", e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(tmp);
    }
    result
}

/// Files at least this long are memory-mapped rather than read into a buffer.
pub(crate) const MAP_THRESHOLD_BYTES: u64 = 1 << 20;

/// A whole file's bytes: read into a buffer when small, memory-mapped when large.
#[derive(Debug)]
pub(crate) enum FileBytes {
    /// Read into memory.
    Owned(Vec<u8>),
    /// Mapped read-only; the pages come from the page cache, not the heap.
    Mapped(Mmap),
}

impl std::ops::Deref for FileBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Owned(bytes) => bytes,
            FileBytes::Mapped(map) => map,
        }
    }
}

/// Reads a whole file, mapping it when it is at least [`MAP_THRESHOLD_BYTES`] long.
pub(crate) fn read_file(path: &Path) -> std::io::Result<FileBytes> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    if len >= MAP_THRESHOLD_BYTES {
        return crate::disk::mapped::map_read(&file).map(FileBytes::Mapped);
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.read_to_end(&mut bytes)?;
    Ok(FileBytes::Owned(bytes))
}

/// Fsyncs a file that was written and closed earlier.
pub(crate) fn sync_file(path: &Path) -> Result<()> {
    hook(Op::Sync)
        .and_then(|()| File::open(path))
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(path, "fsync file", e))
}

/// Fsyncs a directory so that names created or removed in it are durable.
pub(crate) fn sync_dir(path: &Path) -> Result<()> {
    hook(Op::Sync)
        .and_then(|()| File::open(path))
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(path, "fsync directory", e))
}

/// Creates `path` and its parents if absent.
pub(crate) fn create_dir(path: &Path) -> Result<()> {
    fs::create_dir_all(path).map_err(|e| Error::io(path, "create directory", e))
}

/// Removes a file; a file that is already gone is not an error.
pub(crate) fn remove_file(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, "remove file", e)),
    }
}

/// Little-endian field readers over a byte slice that never panic: each returns `None` when the
/// slice is too short.
pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes, pos: 0 }
    }

    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let out = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.take(2)
            .and_then(|b| b.try_into().ok())
            .map(u16::from_le_bytes)
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    }

    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    }

    /// An unsigned LEB128 varint of at most ten bytes that fits in a `u64`.
    pub(crate) fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                return None;
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }
}

/// Appends `value` as an unsigned LEB128 varint (one to ten bytes).
pub(crate) fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// The difference `to - from` as a zigzag-coded varint value: small either way.
pub(crate) fn zigzag_delta(from: u64, to: u64) -> u64 {
    let d = to.wrapping_sub(from) as i64;
    ((d << 1) ^ (d >> 63)) as u64
}

/// The inverse of [`zigzag_delta`]: `to` from `from` and the coded difference.
pub(crate) fn apply_zigzag(from: u64, coded: u64) -> u64 {
    let d = ((coded >> 1) as i64) ^ -((coded & 1) as i64);
    from.wrapping_add(d as u64)
}

/// The 64-bit checksum used for every record and payload.
pub(crate) fn checksum(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_returns_none_past_the_end() {
        let mut c = Cursor::new(&[1, 0, 2]);
        assert_eq!(c.u16(), Some(1));
        assert_eq!(c.u16(), None);
        assert_eq!(c.u8(), Some(2));
        assert_eq!(c.take(usize::MAX), None);
        assert_eq!(c.remaining(), 0);
    }

    #[test]
    fn varints_and_zigzag_deltas_round_trip_at_the_edges() {
        let values = [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX - 1, u64::MAX];
        for &v in &values {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert!(out.len() <= 10);
            let mut c = Cursor::new(&out);
            assert_eq!(c.varint(), Some(v));
            assert_eq!(c.remaining(), 0);
            for &from in &values {
                assert_eq!(apply_zigzag(from, zigzag_delta(from, v)), v);
            }
        }
        let mut small = Vec::new();
        put_varint(&mut small, zigzag_delta(1000, 997));
        assert_eq!(small.len(), 1, "a small step back is one byte");
        // Eleven continuation bytes, a tenth byte that overflows, and a cut varint are refused.
        assert_eq!(Cursor::new(&[0x80; 11]).varint(), None);
        let mut over = vec![0xff; 9];
        over.push(0x02);
        assert_eq!(Cursor::new(&over).varint(), None);
        assert_eq!(Cursor::new(&[0x80]).varint(), None);
    }

    #[test]
    fn write_then_rename_replaces_atomically_and_cleans_up_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        let tmp = dir.path().join("f.tmp");
        write_then_rename(&tmp, &dest, &[b"ab", b"cd"], true).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"abcd");
        assert!(!tmp.exists());
        let bad_tmp = dir.path().join("missing-dir").join("f.tmp");
        assert!(write_then_rename(&bad_tmp, &dest, &[b"x"], false).is_err());
        assert_eq!(fs::read(&dest).unwrap(), b"abcd");
    }
}
