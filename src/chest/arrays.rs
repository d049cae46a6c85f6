//! The array methods of [`Chest`] (cargo feature `ndarray`).

use std::hash::Hash;

use ndarray::{ArrayBase, Data, Dimension, IntoDimension};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Chest;
use crate::array::{ArrayWriter, Element, MappedArray};
use crate::codec::Codec;
use crate::disk::array_file;
use crate::disk::mapped::as_bytes;
use crate::error::Result;

/// Elements converted per write when an array is not in standard layout.
const CHUNK_ELEMENTS: usize = 1 << 16;

impl<K, V, C> Chest<K, V, C>
where
    K: Serialize + DeserializeOwned + Hash + Eq + Clone + Send + Sync + 'static,
    V: Serialize + DeserializeOwned + Send + Sync + 'static,
    C: Codec,
{
    /// Stores `array` under `key` in the raw array layout (element type, shape, then the
    /// elements little-endian in standard order; not serialized, not compressed), replacing
    /// what the key had. Any memory order is accepted (transposed, sliced, strided); a
    /// standard-layout array is written with a single copy into the page cache.
    ///
    /// The array goes straight to disk and never counts against the budget. Read it back with
    /// [`get_array`](Chest::get_array); [`get`](Chest::get) of it is an
    /// [`Error::KindMismatch`](crate::Error::KindMismatch).
    ///
    /// # Errors
    /// [`Error::Encode`](crate::Error::Encode) for the key; [`Error::DiskFull`](crate::Error::DiskFull)
    /// or [`Error::Io`](crate::Error::Io) writing the file or the index;
    /// [`Error::ReadOnly`](crate::Error::ReadOnly). On error the key keeps what it had.
    pub fn insert_array<T, S, D>(&self, key: K, array: &ArrayBase<S, D>) -> Result<()>
    where
        T: Element,
        S: Data<Elem = T>,
        D: Dimension,
    {
        let mut pending = self.core.begin_array(&key)?;
        // The payload is written without holding the chest's lock.
        let shape: Vec<u64> = array.shape().iter().map(|&n| n as u64).collect();
        pending.append(&array_file::encode_header(T::CODE, &shape))?;
        match array.as_slice() {
            Some(elements) => pending.append(as_bytes(elements))?,
            None => {
                let mut chunk = Vec::with_capacity(CHUNK_ELEMENTS.min(array.len()));
                for &x in array.iter() {
                    chunk.push(x);
                    if chunk.len() == CHUNK_ELEMENTS {
                        pending.append(as_bytes(&chunk))?;
                        chunk.clear();
                    }
                }
                pending.append(as_bytes(&chunk))?;
            }
        }
        self.core.commit_array(key, &mut pending)
    }

    /// A read-only view of `key`'s array, backed by a memory map of its value file: no copy,
    /// usable for arrays larger than RAM, and not counted against the budget. `None` when the
    /// key is absent. The view stays valid if the entry is later removed or overwritten.
    ///
    /// Checked on every call: the value file's header and key, the array header's checksum,
    /// and that the element type is `T`, the number of dimensions fits `D` and the lengths
    /// agree. The elements' checksum is checked by [`MappedArray::verify`].
    ///
    /// # Errors
    /// [`Error::KindMismatch`](crate::Error::KindMismatch) when the entry is not an array, or
    /// is an array of another element type or number of dimensions (nothing is
    /// reinterpreted); [`Error::Corrupt`](crate::Error::Corrupt) naming the file when a check
    /// fails; [`Error::Io`](crate::Error::Io).
    pub fn get_array<T: Element, D: Dimension>(
        &self,
        key: &K,
    ) -> Result<Option<MappedArray<T, D>>> {
        let mapped = self.core.map_array(key)?;
        mapped.map(MappedArray::new).transpose()
    }

    /// A zeroed array of `shape` stored as `key`'s value once filled and committed: the
    /// returned writer maps a temporary file read-write, so an array larger than RAM can be
    /// produced in place. [`ArrayWriter::commit`] makes it the key's entry; dropping the
    /// writer without a commit deletes the file and leaves the key as it was.
    ///
    /// # Errors
    /// [`Error::Encode`](crate::Error::Encode) for the key;
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) for a shape whose size overflows;
    /// [`Error::DiskFull`](crate::Error::DiskFull) or [`Error::Io`](crate::Error::Io) creating,
    /// sizing or mapping the file; [`Error::ReadOnly`](crate::Error::ReadOnly).
    pub fn create_array<T: Element, D: Dimension>(
        &self,
        key: K,
        shape: impl IntoDimension<Dim = D>,
    ) -> Result<ArrayWriter<'_, T, D>> {
        let pending = self.core.begin_array(&key)?;
        let commit = Box::new(move |pending: &mut crate::disk::PendingValue| {
            self.core.commit_array(key, pending)
        });
        ArrayWriter::new(pending, shape.into_dimension(), commit)
    }
}
