//! Raw numeric arrays: zero-copy views backed by memory maps, and arrays filled in place.
//!
//! Available with the `ndarray` cargo feature. See [`Chest::insert_array`](crate::Chest::insert_array),
//! [`Chest::get_array`](crate::Chest::get_array) and
//! [`Chest::create_array`](crate::Chest::create_array), and the crate docs for what is checked
//! when and what a user must not do while a view is alive.

#[cfg(target_endian = "big")]
compile_error!(
    "spillchest's `ndarray` feature maps little-endian elements directly and needs a \
     little-endian target"
);

use std::marker::PhantomData;
use std::path::Path;

use memmap2::MmapMut;
use ndarray::{ArrayView, ArrayViewMut, Dimension};

use crate::disk::array_file::{self, ArrayHeader};
use crate::disk::mapped::{self, PlainBytes};
use crate::disk::{MappedValue, PendingValue};
use crate::error::{Error, Result};

/// A numeric element type that can be stored raw: `f32`, `f64`, `i8` to `i64`, `u8` to `u64`.
///
/// The trait is sealed: it cannot be implemented outside this crate, because a view
/// reinterprets file bytes as these types.
pub trait Element: PlainBytes {
    /// The element type code recorded in the array header.
    const CODE: u8;
    /// The type's name, for error messages.
    const NAME: &'static str;
}

macro_rules! element {
    ($($t:ty => $code:expr),*) => {$(
        impl Element for $t {
            const CODE: u8 = $code;
            const NAME: &'static str = stringify!($t);
        }
    )*};
}
element!(f32 => 1, f64 => 2, i8 => 3, i16 => 4, i32 => 5, i64 => 6, u8 => 7, u16 => 8, u32 => 9, u64 => 10);

/// What `T, D` ask for, for error messages: "f64 array of 2 dimensions".
fn describe_request<T: Element, D: Dimension>() -> String {
    match D::NDIM {
        Some(n) => format!("{} array of {n} dimensions", T::NAME),
        None => format!("{} array of any dimensions", T::NAME),
    }
}

/// The dimension of `D` for `shape`, or `None` when the number of axes does not fit `D` or an
/// axis does not fit `usize`.
fn dimension<D: Dimension>(shape: &[u64]) -> Option<D> {
    if D::NDIM.is_some_and(|n| n != shape.len()) {
        return None;
    }
    let mut dim = D::zeros(shape.len());
    for (axis, &n) in dim.slice_mut().iter_mut().zip(shape) {
        *axis = usize::try_from(n).ok()?;
    }
    Some(dim)
}

/// A read-only array backed by a memory map of its value file: no copy is made, and the
/// elements are paged in from the page cache as they are read, so it can be larger than RAM.
///
/// Its pages are file-backed, not anonymous: they do not count against the chest's budget, and
/// the kernel can drop them under memory pressure. The view stays valid and unchanged when the
/// entry is removed or overwritten (the chest unlinks or renames over the file; the map keeps
/// the old file alive until the view is dropped).
///
/// On every [`get_array`](crate::Chest::get_array) the value file's header, its key, the array
/// header (with its own checksum), the element type, the number of dimensions and every length
/// are checked; the elements' checksum is verified by [`verify`](MappedArray::verify), not on
/// every map (see the crate docs).
pub struct MappedArray<T: Element, D: Dimension> {
    mapped: MappedValue,
    /// Where the elements start in the map.
    data_start: usize,
    dim: D,
    _element: PhantomData<T>,
}

impl<T: Element, D: Dimension> MappedArray<T, D> {
    /// Checks the array header of `mapped` against `T` and `D`.
    pub(crate) fn new(mapped: MappedValue) -> Result<Self> {
        let header: ArrayHeader = array_file::parse_header(mapped.payload())
            .map_err(|reason| Error::corrupt(&mapped.path, reason))?;
        let mismatch = |found: String| Error::KindMismatch {
            path: mapped.path.clone(),
            expected: describe_request::<T, D>(),
            found,
        };
        if header.element_code != T::CODE {
            return Err(mismatch(header.describe()));
        }
        let Some(dim) = dimension::<D>(&header.shape) else {
            return Err(mismatch(header.describe()));
        };
        let data_start = mapped.payload_offset + header.data_offset;
        let data = &mapped.map[data_start..];
        // Both checks are what `view` relies on; they hold for every file this crate writes.
        if mapped::cast_slice::<T>(data).is_none() {
            return Err(Error::corrupt(
                &mapped.path,
                "array elements are misaligned",
            ));
        }
        if Some(data.len() / size_of::<T>()) != dim.size_checked() {
            return Err(Error::corrupt(
                &mapped.path,
                "array shape does not fit its data",
            ));
        }
        let this = MappedArray {
            mapped,
            data_start,
            dim,
            _element: PhantomData,
        };
        if ArrayView::from_shape(this.dim.clone(), this.as_slice()).is_err() {
            return Err(Error::corrupt(
                &this.mapped.path,
                "array shape is too large for this platform",
            ));
        }
        Ok(this)
    }

    /// The elements in standard (row-major) order, straight from the map.
    pub fn as_slice(&self) -> &[T] {
        // `new` checked that these bytes cast to T; the map never changes length.
        mapped::cast_slice(&self.mapped.map[self.data_start..]).unwrap_or(&[])
    }

    /// A view of the array, borrowing the map. No element is copied.
    pub fn view(&self) -> ArrayView<'_, T, D> {
        match ArrayView::from_shape(self.dim.clone(), self.as_slice()) {
            Ok(view) => view,
            // `new` checked that the shape fits the slice, so this arm is never taken; it
            // yields an empty view rather than a panic.
            Err(_) => ArrayView::from_shape(D::zeros(self.dim.ndim()), &[])
                .unwrap_or_else(|_| unreachable!("an all-zero shape fits an empty slice")),
        }
    }

    /// The shape, outermost axis first.
    pub fn shape(&self) -> &[usize] {
        self.dim.slice()
    }

    /// The dimension (shape) as `D`.
    pub fn dim(&self) -> D {
        self.dim.clone()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// True when the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value file the view maps.
    pub fn path(&self) -> &Path {
        &self.mapped.path
    }

    /// Reads every byte of the payload (array header and elements) and checks it against the
    /// checksum the value file records. Reads the whole array from the page cache or the disk.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming the file when the checksum does not match.
    pub fn verify(&self) -> Result<()> {
        if crate::disk::payload_checksum(self.mapped.payload()) != self.mapped.payload_checksum {
            return Err(Error::corrupt(
                &self.mapped.path,
                "array payload checksum mismatch",
            ));
        }
        Ok(())
    }
}

impl<T: Element, D: Dimension> std::fmt::Debug for MappedArray<T, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedArray")
            .field("element", &T::NAME)
            .field("shape", &self.shape())
            .field("path", &self.mapped.path)
            .finish()
    }
}

/// The function that makes a filled array an entry of its chest.
pub(crate) type CommitArray<'c> = Box<dyn FnOnce(&mut PendingValue) -> Result<()> + 'c>;

/// A writable array backed by a memory map of a temporary file, from
/// [`Chest::create_array`](crate::Chest::create_array). Fill it through
/// [`as_array_mut`](ArrayWriter::as_array_mut) (it starts zeroed), then
/// [`commit`](ArrayWriter::commit) it to make it the key's entry. Dropped without a commit, it
/// deletes its temporary file and leaves the chest as it was.
///
/// Its pages are file-backed: filling it does not grow the process's anonymous memory, so it can
/// be larger than RAM. The chest stays usable while a writer is open.
pub struct ArrayWriter<'c, T: Element, D: Dimension> {
    map: Option<MmapMut>,
    data_start: usize,
    dim: D,
    pending: PendingValue,
    commit: Option<CommitArray<'c>>,
    _element: PhantomData<T>,
}

impl<'c, T: Element, D: Dimension> ArrayWriter<'c, T, D> {
    /// Sizes and maps `pending` for an array of `dim`, writing its array header.
    pub(crate) fn new(mut pending: PendingValue, dim: D, commit: CommitArray<'c>) -> Result<Self> {
        let shape: Vec<u64> = dim.slice().iter().map(|&n| n as u64).collect();
        let header = array_file::encode_header(T::CODE, &shape);
        let too_large = || Error::InvalidConfig {
            reason: format!("an array of shape {shape:?} is too large"),
        };
        let data_len = array_file::data_len(&shape, size_of::<T>()).ok_or_else(too_large)?;
        if dim.size_checked().is_none() || usize::try_from(data_len).is_err() {
            return Err(too_large());
        }
        let payload_len = data_len
            .checked_add(header.len() as u64)
            .ok_or_else(too_large)?;
        let mut map = pending.map_payload(payload_len)?;
        let start = pending.payload_offset();
        map[start..start + header.len()].copy_from_slice(&header);
        Ok(ArrayWriter {
            map: Some(map),
            data_start: start + header.len(),
            dim,
            pending,
            commit: Some(commit),
            _element: PhantomData,
        })
    }

    /// The elements in standard (row-major) order, writable in place.
    pub fn as_slice_mut(&mut self) -> &mut [T] {
        match &mut self.map {
            // The payload was sized for exactly the elements and starts 64-byte aligned.
            Some(map) => mapped::cast_slice_mut(&mut map[self.data_start..]).unwrap_or(&mut []),
            None => &mut [],
        }
    }

    /// A writable view of the array, in standard order.
    pub fn as_array_mut(&mut self) -> ArrayViewMut<'_, T, D> {
        let dim = self.dim.clone();
        let ndim = dim.ndim();
        match ArrayViewMut::from_shape(dim, self.as_slice_mut()) {
            Ok(view) => view,
            // The map holds exactly `dim.size()` elements, so this arm is never taken.
            Err(_) => ArrayViewMut::from_shape(D::zeros(ndim), &mut [])
                .unwrap_or_else(|_| unreachable!("an all-zero shape fits an empty slice")),
        }
    }

    /// The shape, outermost axis first.
    pub fn shape(&self) -> &[usize] {
        self.dim.slice()
    }

    /// Checksums the array, renames its file into place and makes it the key's entry,
    /// replacing what the key had (views of an old array stay valid).
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::DiskFull`] writing the header, renaming or appending to the
    /// index; [`Error::ReadOnly`]. On error the temporary file is deleted and the key keeps
    /// what it had.
    pub fn commit(mut self) -> Result<()> {
        if let Some(map) = self.map.take() {
            self.pending.finish_mapped(map);
        }
        match self.commit.take() {
            Some(commit) => commit(&mut self.pending),
            None => Ok(()),
        }
    }
}

impl<T: Element, D: Dimension> std::fmt::Debug for ArrayWriter<'_, T, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArrayWriter")
            .field("element", &T::NAME)
            .field("shape", &self.shape())
            .field("tmp", &self.pending.tmp_path())
            .finish()
    }
}
