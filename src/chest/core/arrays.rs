//! The core's part in raw arrays: an array entry is held on disk only, as a value file whose
//! payload is a raw array, with no typed value in memory (so it never counts against the
//! budget). Reading the file is how every other operation learns that an entry is an array:
//! `get` and `update` of one fail with [`Error::KindMismatch`], while `remove`, `len`, `keys`,
//! `flush` and reopening treat it as any entry with a current disk copy.

use std::hash::Hash;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Core, bump};
use crate::codec::Codec;
use crate::disk::{DiskMode, MappedValue, PendingValue, Place};
use crate::error::{Error, Result};
use crate::memory::Stored;

impl<K, V, C> Core<K, V, C>
where
    K: Serialize + DeserializeOwned + Hash + Eq + Clone + 'static,
    V: Serialize + DeserializeOwned + 'static,
    C: Codec,
{
    /// Starts the value file of an array for `key`, under a temporary name of its own.
    pub(crate) fn begin_array(&self, key: &K) -> Result<PendingValue> {
        self.refuse_if_read_only()?;
        self.take_deferred()?;
        let key_bytes = self.encode_key(key)?;
        self.engine.lock().disk.begin_value(&key_bytes, true)
    }

    /// Puts a finished array file in place as `key`'s value, replacing what the key had.
    /// Callers holding the old value (an `Arc`, or a view of an old array) keep it. Queued
    /// jobs go first, so the disk sees the key's changes in order.
    pub(crate) fn commit_array(&self, key: K, pending: &mut PendingValue) -> Result<()> {
        self.refuse_if_read_only()?;
        let mut engine = self.engine.lock();
        self.drain_locked(&mut engine);
        self.take_deferred()?;
        let previous = self.stored_at(&key);
        let loc = engine.disk.commit_value(pending, previous)?;
        bump(&self.counters.spills, 1);
        bump(&self.counters.spill_bytes, loc.raw_len);
        let version = self.next_version();
        let mut shard = self.shards[self.shard_of(&key)].lock();
        shard.set_stored(&key, Some(loc));
        if let Some(old) = shard.now_on_disk(key, version, std::sync::Weak::new()) {
            self.release(old.memory_weight());
        }
        Ok(())
    }

    /// Maps `key`'s array file, checking its header and key; `None` when the key is absent.
    /// A read-only chest follows the writer as [`get`](Core::get) does.
    pub(crate) fn map_array(&self, key: &K) -> Result<Option<MappedValue>> {
        if self.mode == DiskMode::ReadOnly {
            return self.map_array_following(key, |core| core.map_array_once(key));
        }
        self.map_array_once(key)
    }

    fn map_array_once(&self, key: &K) -> Result<Option<MappedValue>> {
        let key_bytes = self.encode_key(key)?;
        let (typed_value, loc) = {
            let shard = self.shards[self.shard_of(key)].lock();
            if !shard.exists(key) {
                return Ok(None);
            }
            // Arrays always have a value file of their own and nothing in memory (no slot).
            let typed = shard
                .get(key)
                .is_some_and(|slot| slot.stored != Stored::Current || slot.live_value().is_some());
            (typed, shard.stored_at(key))
        };
        if typed_value || loc.is_none_or(|l| l.place != Place::File) {
            return Err(Error::KindMismatch {
                path: loc.map_or_else(
                    || self.root.clone(),
                    |loc| self.reader.path_of(&key_bytes, &loc),
                ),
                expected: "an array".into(),
                found: "a serialized value".into(),
            });
        }
        let mapped = self.engine.lock().disk.map_value(&key_bytes)?;
        if !mapped.array {
            return Err(Error::KindMismatch {
                path: mapped.path,
                expected: "an array".into(),
                found: "a serialized value".into(),
            });
        }
        bump(&self.counters.loads, 1);
        bump(&self.counters.load_bytes, mapped.payload().len() as u64);
        Ok(Some(mapped))
    }
}
