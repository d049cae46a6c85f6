//! The state's part in raw arrays: an array entry is held on disk only, as a value file whose
//! payload is a raw array, with no typed value in memory (so it never counts against the
//! budget). Reading the file is how every other operation learns that an entry is an array:
//! `get` and `update` of one fail with [`Error::KindMismatch`], while `remove`, `len`, `keys`,
//! `flush` and reopening treat it as any entry with a current disk copy.

use std::hash::Hash;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::State;
use crate::codec::Codec;
use crate::disk::{DiskMode, MappedValue, PendingValue, Place};
use crate::error::{Error, Result};
use crate::memory::{DiskCopy, Entry, Held};

impl<K, V, C> State<K, V, C>
where
    K: Serialize + DeserializeOwned + Hash + Eq + Clone,
    V: Serialize + DeserializeOwned,
    C: Codec,
{
    /// Starts the value file of an array for `key`, under a temporary name of its own.
    pub(crate) fn begin_array(&mut self, key: &K) -> Result<PendingValue> {
        self.refuse_if_read_only()?;
        let key_bytes = self.encode_key(key)?;
        self.disk.begin_value(&key_bytes, true)
    }

    /// Puts a finished array file in place as `key`'s value, replacing what the key had.
    /// Callers holding the old value (an `Arc`, or a view of an old array) keep it.
    pub(crate) fn commit_array(&mut self, key: K, pending: &mut PendingValue) -> Result<()> {
        self.refuse_if_read_only()?;
        let previous = self.memory.entry(&key).and_then(|e| e.disk.map(|d| d.loc));
        let loc = self.disk.commit_value(pending, previous)?;
        self.counters.spills += 1;
        self.counters.spill_bytes += loc.raw_len;
        self.memory.put(
            key,
            Entry {
                held: Held::Disk {
                    weak: std::sync::Weak::new(),
                },
                disk: Some(DiskCopy { loc, current: true }),
            },
        );
        Ok(())
    }

    /// Maps `key`'s array file, checking its header and key; `None` when the key is absent.
    /// A read-only chest refreshes on a miss, and again when the file its entry names is gone
    /// (the writer removed or replaced the entry since): if the entry still names it then, the
    /// key is being removed and is treated as absent.
    pub(crate) fn map_array(&mut self, key: &K) -> Result<Option<MappedValue>> {
        if self.disk.mode() != DiskMode::ReadOnly {
            return self.map_array_once(key);
        }
        if !self.memory.contains(key) {
            self.refresh()?;
        }
        let named = |state: &Self| state.memory.entry(key).and_then(|e| e.disk).map(|d| d.loc);
        let before = named(self);
        match self.map_array_once(key) {
            Err(e @ Error::Corrupt { .. }) if before.is_some_and(|l| l.place == Place::File) => {
                let key_bytes = self.encode_key(key)?;
                if self.disk.value_file_path(&key_bytes).exists() {
                    return Err(e);
                }
                self.refresh()?;
                if named(self) == before {
                    self.memory.remove(key);
                    return Ok(None);
                }
                self.map_array_once(key)
            }
            mapped => mapped,
        }
    }

    fn map_array_once(&mut self, key: &K) -> Result<Option<MappedValue>> {
        let Some(entry) = self.memory.entry(key) else {
            return Ok(None);
        };
        let key_bytes = self.encode_key(key)?;
        // Arrays always have a value file of their own and nothing in memory.
        let typed_value = !entry.disk_is_current()
            || entry.live_value().is_some()
            || entry.disk.is_some_and(|d| d.loc.place != Place::File);
        if typed_value {
            let loc = entry.disk.map(|d| d.loc);
            return Err(Error::KindMismatch {
                path: loc.map_or_else(
                    || self.disk.root().to_path_buf(),
                    |loc| self.disk.path_of(&key_bytes, &loc),
                ),
                expected: "an array".into(),
                found: "a serialized value".into(),
            });
        }
        let mapped = self.disk.map_value(&key_bytes)?;
        if !mapped.array {
            return Err(Error::KindMismatch {
                path: mapped.path,
                expected: "an array".into(),
                found: "a serialized value".into(),
            });
        }
        self.counters.loads += 1;
        self.counters.load_bytes += mapped.payload().len() as u64;
        Ok(Some(mapped))
    }
}
