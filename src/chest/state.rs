//! The state behind a chest's lock: the memory tier, the disk tier, and the rules that move
//! values between them.
//!
//! The budget rule: before a value enters memory, room is made for it by spilling victims in
//! eviction order. A value heavier than the budget goes straight to disk. So `memory_bytes`
//! never exceeds the budget, and a failed spill leaves the operation undone.

#[cfg(feature = "ndarray")]
mod arrays;

use std::hash::Hash;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{Codec, Compression};
use crate::disk::{DiskMode, DiskTier, KeyDigest, OpenReport, PutSizes, RecoveredEntry};
use crate::error::{Error, Result};
use crate::memory::{DiskCopy, Entry, Held, MemoryTier, Policy};
use crate::stats::Stats;

/// A user function giving a value's weight in bytes.
pub(crate) type Weigher<V> = Arc<dyn Fn(&V) -> u64 + Send + Sync>;

/// Counters reported by [`Stats`].
#[derive(Debug, Default)]
struct Counters {
    spills: u64,
    spill_bytes: u64,
    loads: u64,
    load_bytes: u64,
    memory_hits: u64,
    shared_hits: u64,
    failed_spills: u64,
    mended_on_open: u64,
}

/// Everything a chest's mutex guards.
pub(crate) struct State<K: Hash + Eq, V, C> {
    memory: MemoryTier<K, V>,
    disk: DiskTier,
    codec: C,
    compression: Compression,
    weigher: Option<Weigher<V>>,
    counters: Counters,
    scratch: Vec<u8>,
}

impl<K, V, C> State<K, V, C>
where
    K: Serialize + DeserializeOwned + Hash + Eq + Clone,
    V: Serialize + DeserializeOwned,
    C: Codec,
{
    /// Builds the state from an opened disk tier and the entries it found.
    pub(crate) fn recover(
        disk: DiskTier,
        found: Vec<RecoveredEntry>,
        report: &OpenReport,
        options: StateOptions<V, C>,
    ) -> Result<Self> {
        let mut memory = MemoryTier::new(options.policy, options.budget_bytes);
        for RecoveredEntry { key, sizes } in found {
            let decoded: K = options.codec.decode(&key).map_err(|source| Error::Decode {
                path: disk.value_path(&key),
                source,
            })?;
            memory.put(
                decoded,
                Entry {
                    held: Held::Disk {
                        weak: std::sync::Weak::new(),
                    },
                    disk: Some(DiskCopy {
                        sizes,
                        current: true,
                    }),
                },
            );
        }
        let mended = report.dropped_missing + report.adopted_orphans + report.discarded_damaged;
        Ok(State {
            memory,
            disk,
            codec: options.codec,
            compression: options.compression,
            weigher: options.weigher,
            counters: Counters {
                mended_on_open: mended,
                ..Counters::default()
            },
            scratch: Vec::new(),
        })
    }

    fn encode_key(&self, key: &K) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.codec
            .encode(key, &mut out)
            .map_err(|source| Error::Encode {
                what: "key".into(),
                source,
            })?;
        Ok(out)
    }

    fn encode_error(key_bytes: &[u8], source: crate::CodecError) -> Error {
        Error::Encode {
            what: format!("value of key {}", KeyDigest::of(key_bytes)),
            source,
        }
    }

    /// A value's weight: the user's weigher, or its encoded length.
    fn weigh(&self, key_bytes: &[u8], value: &V) -> Result<u64> {
        match &self.weigher {
            Some(weigher) => Ok(weigher(value)),
            None => self
                .codec
                .encoded_len(value)
                .map_err(|source| Self::encode_error(key_bytes, source)),
        }
    }

    /// Encodes `value` and writes it as `key`'s value file.
    fn write_to_disk(
        &mut self,
        key_bytes: &[u8],
        value: &V,
        previous: Option<PutSizes>,
    ) -> Result<PutSizes> {
        let mut raw = std::mem::take(&mut self.scratch);
        raw.clear();
        let result = match self.codec.encode(value, &mut raw) {
            Ok(()) => self
                .disk
                .write_value(key_bytes, &raw, self.compression, previous),
            Err(source) => Err(Self::encode_error(key_bytes, source)),
        };
        self.scratch = raw;
        match result {
            Ok(sizes) => {
                self.counters.spills += 1;
                self.counters.spill_bytes += sizes.raw_len;
                Ok(sizes)
            }
            Err(e) => {
                self.counters.failed_spills += 1;
                Err(e)
            }
        }
    }

    /// Moves the value of `key` out of memory, writing it first unless its disk copy is current.
    fn spill(&mut self, key: &K) -> Result<()> {
        let Some(entry) = self.memory.entry(key) else {
            return Ok(());
        };
        if !entry.disk_is_current() {
            let (Held::Memory { value, .. }, previous) = (&entry.held, entry.disk.map(|d| d.sizes))
            else {
                return Ok(());
            };
            let value = value.clone();
            let key_bytes = self.encode_key(key)?;
            let sizes = self.write_to_disk(&key_bytes, &value, previous)?;
            self.memory.set_disk_current(key, sizes);
        }
        self.memory.demote(key);
        Ok(())
    }

    /// Spills victims until `incoming` more bytes fit in the budget. `incoming` must be at most
    /// the budget.
    fn make_room(&mut self, incoming: u64) -> Result<()> {
        while self.memory.memory_bytes() + incoming > self.memory.budget_bytes() {
            let Some(victim) = self.memory.next_victim().cloned() else {
                break;
            };
            self.spill(&victim)?;
        }
        Ok(())
    }

    /// True when the value being stored should go to disk rather than memory: it is heavier
    /// than the budget, or the policy is `Largest` and it is at least as heavy as every value
    /// that would otherwise have to leave.
    fn belongs_on_disk(&self, weight: u64) -> bool {
        if weight > self.memory.budget_bytes() {
            return true;
        }
        let overflow = self.memory.memory_bytes() + weight > self.memory.budget_bytes();
        overflow
            && self.memory.policy() == Policy::Largest
            && self
                .memory
                .next_victim()
                .and_then(|k| self.memory.memory_weight(k))
                .is_some_and(|top| weight >= top)
    }

    /// Stores `value` as `key`'s value. `previous` is the value file the key has. On error
    /// `rollback` is put back, so the chest is unchanged; with no rollback and
    /// `keep_on_failure`, the value is kept in memory over budget (a failed spill).
    #[allow(clippy::too_many_arguments)]
    fn store(
        &mut self,
        key: K,
        key_bytes: &[u8],
        value: Arc<V>,
        weight: u64,
        previous: Option<PutSizes>,
        rollback: Option<Entry<V>>,
        keep_on_failure: bool,
    ) -> Result<()> {
        let result = if self.belongs_on_disk(weight) {
            self.write_to_disk(key_bytes, &value, previous)
                .map(|sizes| Entry {
                    held: Held::Disk {
                        weak: Arc::downgrade(&value),
                    },
                    disk: Some(DiskCopy {
                        sizes,
                        current: true,
                    }),
                })
        } else {
            self.make_room(weight).map(|()| Entry {
                held: Held::Memory {
                    value: value.clone(),
                    weight,
                },
                disk: stale(previous),
            })
        };
        match (result, rollback) {
            (Ok(entry), _) => {
                self.memory.put(key, entry);
                Ok(())
            }
            (Err(e), Some(old)) => self.restore(&key, old, e),
            (Err(e), None) if keep_on_failure => {
                let kept = Entry {
                    held: Held::Memory { value, weight },
                    disk: stale(previous),
                };
                self.restore(&key, kept, e)
            }
            (Err(e), None) => Err(e),
        }
    }

    pub(crate) fn insert(&mut self, key: K, value: V) -> Result<()> {
        self.refuse_if_read_only()?;
        let key_bytes = self.encode_key(&key)?;
        let weight = self.weigh(&key_bytes, &value)?;
        let old = self.memory.remove(&key);
        let previous = old.as_ref().and_then(|e| e.disk.map(|d| d.sizes));
        self.store(
            key,
            &key_bytes,
            Arc::new(value),
            weight,
            previous,
            old,
            false,
        )
    }

    /// Reads `key`'s value from disk and decodes it.
    fn load(&mut self, key: &K) -> Result<(V, PutSizes)> {
        let key_bytes = self.encode_key(key)?;
        let payload = self.disk.read_value(&key_bytes)?;
        let value: V = self
            .codec
            .decode(payload.raw())
            .map_err(|source| Error::Decode {
                path: payload.path.clone(),
                source,
            })?;
        self.counters.loads += 1;
        self.counters.load_bytes += payload.sizes.raw_len;
        Ok((value, payload.sizes))
    }

    pub(crate) fn get(&mut self, key: &K) -> Result<Option<Arc<V>>> {
        let Some(entry) = self.memory.entry(key) else {
            return Ok(None);
        };
        match &entry.held {
            Held::Memory { value, .. } => {
                let value = value.clone();
                self.counters.memory_hits += 1;
                self.memory.touch(key);
                return Ok(Some(value));
            }
            Held::Disk { weak } => {
                if let Some(value) = weak.upgrade() {
                    self.counters.shared_hits += 1;
                    return Ok(Some(value));
                }
            }
        }
        let (value, sizes) = self.load(key)?;
        let value = Arc::new(value);
        let weight = match &self.weigher {
            Some(weigher) => weigher(&value),
            None => sizes.raw_len,
        };
        // Keep the loaded value in memory when room can be made; a failed spill here only means
        // it is not kept, which is not the reader's error.
        let keep = !self.belongs_on_disk(weight) && self.make_room(weight).is_ok();
        let held = if keep {
            Held::Memory {
                value: value.clone(),
                weight,
            }
        } else {
            Held::Disk {
                weak: Arc::downgrade(&value),
            }
        };
        self.memory.put(
            key.clone(),
            Entry {
                held,
                disk: Some(DiskCopy {
                    sizes,
                    current: true,
                }),
            },
        );
        Ok(Some(value))
    }

    /// Applies `f` to `key`'s value. The closure gets a value of its own: the in-memory one
    /// when no caller shares it, else a copy decoded from disk or made through the codec.
    pub(crate) fn update<F: FnOnce(&mut V)>(&mut self, key: &K, f: F) -> Result<bool> {
        self.refuse_if_read_only()?;
        let Some(old) = self.memory.remove(key) else {
            return Ok(false);
        };
        let key_bytes = match self.encode_key(key) {
            Ok(bytes) => bytes,
            Err(e) => return self.restore(key, old, e),
        };
        let old_disk = old.disk;
        let previous = old_disk.map(|d| d.sizes);
        // `rollback` is the entry to put back if storing the result fails. Mutating the only
        // Arc in place leaves nothing to put back but the disk copy, when that is current.
        let (mut private, rollback, old_weight) = match old.held {
            Held::Memory { value, weight } => match Arc::try_unwrap(value) {
                Ok(owned) => {
                    let on_disk = old_disk.filter(|d| d.current).map(|d| Entry {
                        held: Held::Disk {
                            weak: std::sync::Weak::new(),
                        },
                        disk: Some(d),
                    });
                    (owned, on_disk, weight)
                }
                Err(shared) => {
                    let copy = self.clone_via_codec(&key_bytes, &shared);
                    let old = Entry {
                        held: Held::Memory {
                            value: shared,
                            weight,
                        },
                        disk: old_disk,
                    };
                    match copy {
                        Ok(copy) => (copy, Some(old), weight),
                        Err(e) => return self.restore(key, old, e),
                    }
                }
            },
            Held::Disk { weak } => {
                let copy = match weak.upgrade() {
                    Some(shared) => self.clone_via_codec(&key_bytes, &shared),
                    None => self.load(key).map(|(value, _)| value),
                };
                let old = Entry {
                    held: Held::Disk { weak },
                    disk: old_disk,
                };
                match copy {
                    Ok(copy) => (copy, Some(old), 0),
                    Err(e) => return self.restore(key, old, e),
                }
            }
        };
        f(&mut private);
        let weight = match self.weigh(&key_bytes, &private) {
            Ok(weight) => weight,
            Err(e) => {
                let fallback = rollback.unwrap_or_else(|| Entry {
                    held: Held::Memory {
                        value: Arc::new(private),
                        weight: old_weight,
                    },
                    disk: stale(previous),
                });
                return self.restore(key, fallback, e);
            }
        };
        let keep_on_failure = rollback.is_none();
        self.store(
            key.clone(),
            &key_bytes,
            Arc::new(private),
            weight,
            previous,
            rollback,
            keep_on_failure,
        )?;
        Ok(true)
    }

    /// Puts `entry` back as `key`'s entry and returns `error`.
    fn restore<T>(&mut self, key: &K, entry: Entry<V>, error: Error) -> Result<T> {
        self.memory.put(key.clone(), entry);
        Err(error)
    }

    /// A copy of `value` made by encoding and decoding it, so `V` need not be `Clone`.
    fn clone_via_codec(&mut self, key_bytes: &[u8], value: &V) -> Result<V> {
        let mut raw = std::mem::take(&mut self.scratch);
        raw.clear();
        let result = self
            .codec
            .encode(value, &mut raw)
            .map_err(|source| Self::encode_error(key_bytes, source))
            .and_then(|()| {
                self.codec
                    .decode(&raw)
                    .map_err(|source| Self::encode_error(key_bytes, source))
            });
        self.scratch = raw;
        result
    }

    pub(crate) fn remove(&mut self, key: &K) -> Result<bool> {
        self.refuse_if_read_only()?;
        let Some(old) = self.memory.remove(key) else {
            return Ok(false);
        };
        if let Some(copy) = old.disk {
            let removed = self
                .encode_key(key)
                .and_then(|key_bytes| self.disk.remove_value(&key_bytes, copy.sizes));
            if let Err(e) = removed {
                self.memory.put(key.clone(), old);
                return Err(e);
            }
        }
        Ok(true)
    }

    pub(crate) fn contains_key(&self, key: &K) -> bool {
        self.memory.contains(key)
    }

    pub(crate) fn len(&self) -> usize {
        self.memory.len()
    }

    pub(crate) fn keys(&self) -> Vec<K> {
        self.memory.keys().cloned().collect()
    }

    /// Writes every value without a current disk copy (keeping it in memory), then makes the
    /// disk tier durable. A no-op for temporary and read-only chests.
    pub(crate) fn flush(&mut self) -> Result<()> {
        if self.disk.mode() != DiskMode::Persistent {
            return Ok(());
        }
        let dirty: Vec<K> = self
            .memory
            .iter()
            .filter(|(_, e)| !e.disk_is_current())
            .map(|(k, _)| k.clone())
            .collect();
        for key in dirty {
            let Some(entry) = self.memory.entry(&key) else {
                continue;
            };
            let (Some(value), previous) = (entry.live_value(), entry.disk.map(|d| d.sizes)) else {
                continue;
            };
            let key_bytes = self.encode_key(&key)?;
            let sizes = self.write_to_disk(&key_bytes, &value, previous)?;
            self.memory.set_disk_current(&key, sizes);
        }
        if !self.disk.needs_sync() {
            return Ok(());
        }
        if self.disk.index_is_bloated() {
            let mut puts = Vec::with_capacity(self.memory.len());
            for (key, entry) in self.memory.iter() {
                if let Some(copy) = entry.disk {
                    puts.push((self.encode_key(key)?, copy.sizes));
                }
            }
            self.disk
                .sync(Some(Box::new(puts.iter().map(|(k, s)| (&k[..], *s)))))
        } else {
            self.disk.sync(None)
        }
    }

    /// Releases the disk tier's lock.
    pub(crate) fn release(&mut self) -> Result<()> {
        self.disk.release()
    }

    pub(crate) fn is_writable_persistent(&self) -> bool {
        self.disk.mode() == DiskMode::Persistent
    }

    fn refuse_if_read_only(&self) -> Result<()> {
        if self.disk.mode() == DiskMode::ReadOnly {
            return Err(Error::ReadOnly {
                path: self.disk.root().to_path_buf(),
            });
        }
        Ok(())
    }

    pub(crate) fn stats(&self) -> Stats {
        Stats {
            entries: self.memory.len() as u64,
            in_memory: self.memory.in_memory() as u64,
            on_disk: self.memory.on_disk(),
            memory_bytes: self.memory.memory_bytes(),
            budget_bytes: self.memory.budget_bytes(),
            disk_bytes: self.disk.disk_bytes(),
            index_bytes: self.disk.index_bytes(),
            files: self.disk.live_files(),
            spills: self.counters.spills,
            spill_bytes: self.counters.spill_bytes,
            loads: self.counters.loads,
            load_bytes: self.counters.load_bytes,
            memory_hits: self.counters.memory_hits,
            shared_hits: self.counters.shared_hits,
            failed_spills: self.counters.failed_spills,
            mended_on_open: self.counters.mended_on_open,
        }
    }
}

/// A disk copy that no longer holds the current value.
fn stale(sizes: Option<PutSizes>) -> Option<DiskCopy> {
    sizes.map(|sizes| DiskCopy {
        sizes,
        current: false,
    })
}

/// The options the state is built with.
pub(crate) struct StateOptions<V, C> {
    pub(crate) budget_bytes: u64,
    pub(crate) policy: Policy,
    pub(crate) compression: Compression,
    pub(crate) weigher: Option<Weigher<V>>,
    pub(crate) codec: C,
}
