//! The core's part in following a writer (read-only chests): apply what the disk tier's
//! refresh found to the shards and the index of stored copies, and read a value again when the
//! writer moved it. The logic of following the index lives in the disk tier
//! (`disk/follow.rs`); this is the glue.
//!
//! A refresh holds the engine lock (one refresh at a time) and takes shard locks one key at a
//! time under it, as every other writer of those does. Reads of other threads go
//! on meanwhile: a read that raced a refresh either sees the old place (still readable, or
//! found moved and retried) or the new one.

use std::collections::HashSet;
use std::hash::Hash;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Core;
use crate::codec::Codec;
use crate::disk::{DiskLoc, DiskMode, Refreshed};
#[cfg(feature = "ndarray")]
use crate::disk::{MappedValue, Place};
use crate::error::{Error, Result};

impl<K, V, C> Core<K, V, C>
where
    K: Serialize + DeserializeOwned + Hash + Eq + Clone + 'static,
    V: Serialize + DeserializeOwned + 'static,
    C: Codec,
{
    /// Read-only chests: applies what the writer appended to the index since the last refresh
    /// (keys put, moved or removed), or every key when the index was replaced. Values held in
    /// memory stay when their key still names the same write. A no-op for other chests.
    pub(crate) fn refresh(&self) -> Result<()> {
        if self.mode != DiskMode::ReadOnly {
            return Ok(());
        }
        let mut engine = self.engine.lock();
        let refreshed = engine.disk.refresh()?;
        // The segments the new places name are open now: readers get their handles before
        // any place names them (a handle of a segment deleted since goes too; a read that
        // still names it finds it moved, refreshes, and reads where it is now).
        self.refresh_files(&engine.disk);
        match refreshed {
            Refreshed::Changes(changes) => {
                for key in &changes.removes {
                    let key = self.decode_index_key(key)?;
                    self.forget(&key);
                }
                for (key, loc) in changes.puts {
                    let key = self.decode_index_key(&key)?;
                    self.follow_put(key, loc);
                }
            }
            Refreshed::Reloaded(found) => {
                let mut present = HashSet::with_capacity(found.len());
                for (key, loc) in found.iter() {
                    let key = self.decode_index_key(key)?;
                    present.insert(key.clone());
                    self.follow_put(key, loc);
                }
                let gone: Vec<K> = self
                    .keys()
                    .into_iter()
                    .filter(|k| !present.contains(k))
                    .collect();
                for key in gone {
                    self.forget(&key);
                }
            }
        }
        Ok(())
    }

    /// `key`'s value is now stored at `loc`: the same write moved (compaction keeps its
    /// sequence number, and a value held in memory stays), or a new one (the key starts over,
    /// held on disk). An older write than the one known is ignored: the key already names a
    /// value file renamed into place before its index record (see
    /// [`load_current`](Core::load_current)), and going back to the older write would show a
    /// newer value and then an older one.
    fn follow_put(&self, key: K, loc: DiskLoc) {
        let mut shard = self.shards[self.shard_of(&key)].lock();
        // The check and the change under one lock: a read may record a newer write meanwhile
        // (`saw_newer`), which must not be replaced by this older one.
        match shard.stored_at(&key).map(|l| l.seq) {
            Some(seq) if seq > loc.seq => {}
            Some(seq) if seq == loc.seq => shard.set_stored(&key, Some(loc)),
            _ => {
                // A new write: the key starts over, on disk only.
                shard.set_stored(&key, Some(loc));
                if let Some(old) = shard.remove(&key) {
                    self.release(old.memory_weight());
                }
            }
        }
    }

    /// Drops `key` from a read-only chest: the writer removed it.
    fn forget(&self, key: &K) {
        let mut shard = self.shards[self.shard_of(key)].lock();
        if let Some(old) = shard.remove(key) {
            self.release(old.memory_weight());
        }
        shard.set_stored(key, None);
    }

    /// A followed writer changed the place `loc` of `key`'s value (`gone`: its value file is
    /// missing): refreshes, and returns whether to look again (false: the key turned out to
    /// be removed), or `error` when the index still names a place that should be there.
    pub(super) fn after_move(
        &self,
        key: &K,
        loc: DiskLoc,
        gone: bool,
        error: Error,
    ) -> Result<bool> {
        self.refresh()?;
        let _engine = self.engine.lock();
        // Read first: `forget` below takes the shard lock.
        let named = self.stored_at(key);
        match named {
            None => Ok(false),
            Some(now) if now != loc => Ok(true),
            // Still named there: a value file is deleted before its removal is recorded, so
            // the key is being removed; a segment is deleted only after its records' moves are
            // recorded, so a segment still named is damage.
            Some(_) if gone => {
                self.forget(key);
                Ok(false)
            }
            Some(_) => Err(error),
        }
    }

    /// Remembers that `key`'s value was read from a newer write (`read`) than its entry named:
    /// a value file renamed into place before its index record was read. Whatever the entry
    /// names now (a refresh may have moved it to a write between the two), a later read must
    /// not return an older write than this one.
    pub(super) fn saw_newer(&self, key: &K, read: DiskLoc) {
        let mut shard = self.shards[self.shard_of(key)].lock();
        if shard
            .stored_at(key)
            .is_some_and(|known| read.seq > known.seq)
        {
            shard.set_stored(key, Some(read));
        }
    }

    /// Read-only chests: before mapping `key`'s array, refreshes on a miss, and again when the
    /// file its entry names is gone (the writer removed or replaced the entry since); if the
    /// entry still names it then, the key is being removed and is treated as absent.
    #[cfg(feature = "ndarray")]
    pub(super) fn map_array_following(
        &self,
        key: &K,
        map_once: impl Fn(&Self) -> Result<Option<MappedValue>>,
    ) -> Result<Option<MappedValue>> {
        if !self.contains_key(key) {
            self.refresh()?;
        }
        let named = |core: &Self| core.stored_at(key);
        let before = named(self);
        match map_once(self) {
            Err(e @ Error::Corrupt { .. }) if before.is_some_and(|l| l.place == Place::File) => {
                let key_bytes = self.encode_key(key)?;
                if let Some(loc) = before
                    && self.reader.path_of(&key_bytes, &loc).exists()
                {
                    return Err(e);
                }
                self.refresh()?;
                if named(self) == before {
                    self.forget(key);
                    return Ok(None);
                }
                map_once(self)
            }
            mapped => mapped,
        }
    }

    /// Decodes an encoded key read from the index.
    fn decode_index_key(&self, key: &[u8]) -> Result<K> {
        self.codec.decode(key).map_err(|source| Error::Decode {
            path: self.root.join(".keys"),
            source,
        })
    }
}
