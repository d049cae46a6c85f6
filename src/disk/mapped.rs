//! Memory maps and byte casts: the only module of the crate with `unsafe` code.
//!
//! Every block carries a `// SAFETY:` comment. What the crate relies on, and what a user must
//! therefore not do while a map is alive:
//! - a value file is never truncated or rewritten in place by the chest: values are written to
//!   a fresh temporary file and renamed into place, and removal unlinks the file, so a live map
//!   keeps the old inode and its bytes;
//! - nobody else truncates, rewrites or edits a chest's files while a map of them is alive
//!   (another program doing so can change the bytes of a live view or kill the process with
//!   `SIGBUS`; the docs of the crate say so).

#![allow(unsafe_code)]
// Without the `ndarray` feature only `map_read` is used.
#![cfg_attr(not(feature = "ndarray"), allow(dead_code))]

use std::fs::File;

use memmap2::{Mmap, MmapMut};

/// Maps `file` read-only.
pub(crate) fn map_read(file: &File) -> std::io::Result<Mmap> {
    // SAFETY: the chest never modifies a value file once renamed into place (writes go to a new
    // temporary file and a rename; removal unlinks), so the mapped bytes do not change under
    // the map as far as the chest is concerned. Files changed by other programs are outside
    // the contract, as the crate docs state.
    unsafe { Mmap::map(file) }
}

/// Maps `file` read-write, shared, so writes reach the file.
pub(crate) fn map_write(file: &File) -> std::io::Result<MmapMut> {
    // SAFETY: `file` is a temporary file with a unique name that only this process's writer
    // opened; nobody else truncates or writes it while the map is alive.
    unsafe { MmapMut::map_mut(file) }
}

/// Plain numbers: every bit pattern of `size_of::<Self>()` bytes is a valid value, there is no
/// padding, and the alignment is at most the size.
///
/// # Safety
/// Implement only for types for which the above holds.
pub unsafe trait PlainBytes: Copy + Send + Sync + 'static {}

macro_rules! plain {
    ($($t:ty),*) => {$(
        // SAFETY: a primitive integer or float: no padding, every bit pattern valid, align <= size.
        unsafe impl PlainBytes for $t {}
    )*};
}
plain!(f32, f64, i8, i16, i32, i64, u8, u16, u32, u64);

/// `bytes` seen as a slice of `T`, or `None` when the length is not a whole number of `T` or the
/// start is not aligned for `T`.
pub(crate) fn cast_slice<T: PlainBytes>(bytes: &[u8]) -> Option<&[T]> {
    let size = size_of::<T>();
    if !bytes.len().is_multiple_of(size)
        || !(bytes.as_ptr() as usize).is_multiple_of(align_of::<T>())
    {
        return None;
    }
    // SAFETY: the pointer is aligned for T (checked), the length covers exactly len/size
    // elements within `bytes` (checked), T: PlainBytes accepts any bit pattern, and the
    // lifetime and shared borrow are those of `bytes`.
    Some(unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<T>(), bytes.len() / size) })
}

/// As [`cast_slice`], for writing.
pub(crate) fn cast_slice_mut<T: PlainBytes>(bytes: &mut [u8]) -> Option<&mut [T]> {
    let size = size_of::<T>();
    if !bytes.len().is_multiple_of(size)
        || !(bytes.as_ptr() as usize).is_multiple_of(align_of::<T>())
    {
        return None;
    }
    // SAFETY: as in `cast_slice`; the exclusive borrow of `bytes` becomes the exclusive borrow
    // of the result, and any T written leaves valid bytes behind.
    Some(unsafe {
        std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<T>(), bytes.len() / size)
    })
}

/// The bytes of a slice of plain numbers, in the host's byte order.
pub(crate) fn as_bytes<T: PlainBytes>(values: &[T]) -> &[u8] {
    // SAFETY: T has no padding (PlainBytes), so every byte of the slice is initialized; u8 has
    // alignment 1; the length in bytes is exactly that of the slice.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), size_of_val(values)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn casts_check_length_and_alignment() {
        let words = [1u64, 2, 3];
        let bytes = as_bytes(&words);
        assert_eq!(bytes.len(), 24);
        assert_eq!(cast_slice::<u64>(bytes), Some(&words[..]));
        assert_eq!(cast_slice::<u64>(&bytes[..23]), None);
        assert_eq!(cast_slice::<u64>(&bytes[1..9]), None);
    }

    #[test]
    fn a_writable_map_reaches_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.set_len(64).unwrap();
        let mut map = map_write(&file).unwrap();
        cast_slice_mut::<u32>(&mut map[..]).unwrap()[1] = 0x0403_0201;
        drop(map);
        let map = map_read(&file).unwrap();
        assert_eq!(&map[4..8], &0x0403_0201u32.to_ne_bytes());
        assert_eq!(cast_slice::<u32>(&map[..]).map(|w| w[1]), Some(0x0403_0201));
    }
}
