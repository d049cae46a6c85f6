//! The state's part in following a writer (read-only chests): apply what the disk tier's
//! refresh found to the memory tier, and read a value again when the writer moved it. The
//! logic of following lives in the disk tier (`disk/follow.rs`); this is the glue.

use std::collections::HashSet;
use std::hash::Hash;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::State;
use crate::codec::Codec;
use crate::disk::{DiskLoc, Fetched, Refreshed};
use crate::error::{Error, Result};

/// Reads of one value a read-only chest tries, refreshing between them, when the writer
/// changed its place (a compacted segment, a removed value file).
const READ_ATTEMPTS: u32 = 4;

impl<K, V, C> State<K, V, C>
where
    K: Serialize + DeserializeOwned + Hash + Eq + Clone,
    V: Serialize + DeserializeOwned,
    C: Codec,
{
    /// Read-only chests: applies what the writer appended to the index since the last refresh
    /// (keys put, moved or removed), or every key when the index was replaced. Values held in
    /// memory stay when their key still names the same write. A no-op for writable chests.
    pub(crate) fn refresh(&mut self) -> Result<()> {
        match self.disk.refresh()? {
            Refreshed::Changes(changes) => {
                for key in &changes.removes {
                    let key = self.decode_key(key)?;
                    self.memory.remove(&key);
                }
                for (key, loc) in changes.puts {
                    let key = self.decode_key(&key)?;
                    self.follow_put(key, loc);
                }
            }
            Refreshed::Reloaded(found) => {
                let mut present = HashSet::with_capacity(found.len());
                for (key, loc) in found.iter() {
                    let key = self.decode_key(key)?;
                    present.insert(key.clone());
                    self.follow_put(key, loc);
                }
                let gone: Vec<K> = self
                    .memory
                    .keys()
                    .filter(|k| !present.contains(*k))
                    .cloned()
                    .collect();
                for key in gone {
                    self.memory.remove(&key);
                }
            }
        }
        Ok(())
    }

    /// `key`'s value is now stored at `loc`: the same write moved (compaction keeps its
    /// sequence number, and a value held in memory stays), or a new one (the entry starts over,
    /// held on disk). An older write than the entry names is ignored: the entry already names
    /// a value file renamed into place before its index record (see `load_following`), and
    /// going back to the older write would show a reader an older value after a newer one.
    fn follow_put(&mut self, key: K, loc: DiskLoc) {
        let known = self
            .memory
            .entry(&key)
            .and_then(|e| e.disk)
            .map(|d| d.loc.seq);
        match known {
            Some(seq) if seq > loc.seq => {}
            Some(seq) if seq == loc.seq => self.memory.relocate(&key, loc),
            _ => {
                self.memory.remove(&key);
                self.memory.put_recovered(key, loc);
            }
        }
    }

    /// Reads and decodes `key`'s value stored at `loc`. In a read-only chest, when the writer
    /// has moved it since the last refresh, refreshes and reads it where it is now; `None` when
    /// the key turned out to be removed. Returns the value and where it was read.
    pub(super) fn load_following(
        &mut self,
        key: &K,
        mut loc: DiskLoc,
    ) -> Result<Option<(V, DiskLoc)>> {
        let key_bytes = self.encode_key(key)?;
        let mut attempt = 1;
        loop {
            let (error, gone) = match self.disk.fetch_value(&key_bytes, &loc)? {
                Fetched::Value(payload, read) => {
                    let value: V =
                        self.codec
                            .decode(payload.raw())
                            .map_err(|source| Error::Decode {
                                path: payload.path.clone(),
                                source,
                            })?;
                    self.counters.loads += 1;
                    self.counters.load_bytes += payload.raw().len() as u64;
                    if read != loc {
                        // A newer value file than the index named: remember that write.
                        self.memory.relocate(key, read);
                    }
                    return Ok(Some((value, read)));
                }
                Fetched::Moved(e) => (e, false),
                Fetched::Gone(e) => (e, true),
            };
            if attempt == READ_ATTEMPTS {
                return Err(error);
            }
            attempt += 1;
            self.refresh()?;
            match self.memory.entry(key).map(|e| e.disk) {
                None => return Ok(None),
                Some(Some(copy)) if copy.loc != loc => loc = copy.loc,
                // Still named there: a value file is deleted before its removal is recorded,
                // so the key is being removed; a segment is deleted only after its records'
                // moves are recorded, so a segment still named is damage.
                Some(_) if gone => {
                    self.memory.remove(key);
                    return Ok(None);
                }
                Some(_) => return Err(error),
            }
        }
    }

    /// Decodes an encoded key read from the index.
    fn decode_key(&self, key: &[u8]) -> Result<K> {
        self.codec.decode(key).map_err(|source| Error::Decode {
            path: self.disk.root().join(".keys"),
            source,
        })
    }
}
