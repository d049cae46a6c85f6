//! The state behind a chest's lock: the memory tier, the disk tier, and the rules that move
//! values between them.
//!
//! The budget rule: before a value enters memory, room is made for it by spilling victims in
//! eviction order. A value heavier than the budget goes straight to disk. So `memory_bytes`
//! never exceeds the budget, and a failed spill leaves the operation undone.
//!
//! Spilling is batched: when room is needed, victims are taken until memory is a little below
//! the budget (the slack: a sixteenth of it, at most 8 MiB), their writes are staged in the
//! disk tier and committed with one write per file, and only then do they leave memory. A
//! failed commit puts every victim back in its place.

#[cfg(feature = "ndarray")]
mod arrays;
mod follow;

use std::hash::Hash;
use std::sync::{Arc, Weak};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{Codec, Compression};
use crate::disk::{DiskLoc, DiskMode, DiskTier, KeyDigest, OpenReport, Recovered};
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
    compactions: u64,
    failed_compactions: u64,
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

/// The options the state is built with.
pub(crate) struct StateOptions<V, C> {
    pub(crate) budget_bytes: u64,
    pub(crate) policy: Policy,
    pub(crate) compression: Compression,
    pub(crate) weigher: Option<Weigher<V>>,
    pub(crate) codec: C,
}

/// A disk copy that no longer holds the current value.
fn stale(loc: Option<DiskLoc>) -> Option<DiskCopy> {
    loc.map(|loc| DiskCopy {
        loc,
        current: false,
    })
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
        found: Recovered,
        report: &OpenReport,
        options: StateOptions<V, C>,
    ) -> Result<Self> {
        let mut memory = MemoryTier::new(options.policy, options.budget_bytes, found.len());
        for (key, loc) in found.iter() {
            let decoded: K = options.codec.decode(key).map_err(|source| Error::Decode {
                path: disk.path_of(key, &loc),
                source,
            })?;
            memory.put_recovered(decoded, loc);
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

    /// Encodes `value` and stages it as `key`'s stored value.
    fn stage_value(
        &mut self,
        key_bytes: &[u8],
        value: &V,
        previous: Option<DiskLoc>,
    ) -> Result<DiskLoc> {
        let mut raw = std::mem::take(&mut self.scratch);
        raw.clear();
        let result = match self.codec.encode(value, &mut raw) {
            Ok(()) => self
                .disk
                .write_value(key_bytes, &raw, self.compression, previous),
            Err(source) => Err(Self::encode_error(key_bytes, source)),
        };
        self.scratch = raw;
        result
    }

    /// Stages the values of `keys` that have no current disk copy.
    fn stage_dirty(&mut self, keys: impl Iterator<Item = K>) -> Result<Vec<(K, DiskLoc)>> {
        let mut written = Vec::new();
        for key in keys {
            let Some(entry) = self.memory.entry(&key) else {
                continue;
            };
            if entry.disk_is_current() {
                continue;
            }
            let (Some(value), previous) = (entry.live_value(), entry.disk.map(|d| d.loc)) else {
                continue;
            };
            let key_bytes = self.encode_key(&key)?;
            let loc = self.stage_value(&key_bytes, &value, previous)?;
            written.push((key, loc));
        }
        Ok(written)
    }

    /// [`stage_dirty`](Self::stage_dirty), but if encoding panics (a user's `Serialize`), the
    /// staged writes are forgotten and `victims` put back in the eviction order before the
    /// panic continues, so the chest stays consistent.
    fn stage_guarded(
        &mut self,
        keys: impl Iterator<Item = K>,
        victims: &[(K, u64)],
    ) -> Result<Vec<(K, DiskLoc)>> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.stage_dirty(keys))) {
            Ok(staged) => staged,
            Err(panic) => {
                self.disk.discard_staged();
                for (key, priority) in victims {
                    self.memory.restore_victim(key.clone(), *priority);
                }
                std::panic::resume_unwind(panic);
            }
        }
    }

    /// Commits what is staged; the writes named in `written` count as spills. On error
    /// everything staged is forgotten.
    fn commit(&mut self, written: Result<Vec<(K, DiskLoc)>>) -> Result<Vec<(K, DiskLoc)>> {
        let result = written.and_then(|w| self.disk.commit_staged().map(|()| w));
        match result {
            Ok(written) => {
                self.counters.spills += written.len() as u64;
                self.counters.spill_bytes += written.iter().map(|(_, l)| l.raw_len).sum::<u64>();
                Ok(written)
            }
            Err(e) => {
                self.disk.discard_staged();
                self.counters.failed_spills += 1;
                Err(e)
            }
        }
    }

    /// Spills `victims` (taken out of the eviction order) in one batch: stage, commit, then
    /// drop them from memory. On error every victim is put back and the error returned.
    fn evict(&mut self, victims: Vec<(K, u64)>) -> Result<()> {
        let staged = self.stage_guarded(victims.iter().map(|(k, _)| k.clone()), &victims);
        match self.commit(staged) {
            Ok(written) => {
                // `written` follows the victims' order, skipping those whose copy was current.
                let mut written = written.into_iter().peekable();
                for (key, _) in &victims {
                    let loc = written.next_if(|(k, _)| k == key).map(|(_, loc)| loc);
                    self.memory.spilled(key, loc);
                }
                Ok(())
            }
            Err(e) => {
                for (key, priority) in victims {
                    self.memory.restore_victim(key, priority);
                }
                Err(e)
            }
        }
    }

    /// Spills victims until `incoming` more bytes fit in the budget, going a slack below it so
    /// that the next operations need no spill. `incoming` must be at most the budget.
    fn make_room(&mut self, incoming: u64) -> Result<()> {
        let budget = self.memory.budget_bytes();
        let held = self.memory.memory_bytes();
        if held + incoming <= budget {
            return Ok(());
        }
        let slack = (budget / 16).min(8 << 20);
        let target = budget.saturating_sub(incoming).saturating_sub(slack);
        let victims = self.memory.take_victims(held.saturating_sub(target));
        self.evict(victims)
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

    /// Stores `value` as `key`'s value. `previous` is the stored copy the key has. On error
    /// `rollback` is put back, so the chest is unchanged; with no rollback and
    /// `keep_on_failure`, the value is kept in memory over budget (a failed spill).
    #[allow(clippy::too_many_arguments)]
    fn store(
        &mut self,
        key: K,
        key_bytes: &[u8],
        value: Arc<V>,
        weight: u64,
        previous: Option<DiskLoc>,
        rollback: Option<Entry<V>>,
        keep_on_failure: bool,
    ) -> Result<()> {
        let result = if self.belongs_on_disk(weight) {
            let staged = self
                .stage_value(key_bytes, &value, previous)
                .map(|loc| vec![(key.clone(), loc)]);
            self.commit(staged).map(|written| Entry {
                held: Held::Disk {
                    weak: Arc::downgrade(&value),
                },
                disk: written.first().map(|(_, loc)| DiskCopy {
                    loc: *loc,
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
                self.memory.put_absent(key, entry);
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

    /// Puts `entry` back as `key`'s entry and returns `error`.
    fn restore<T>(&mut self, key: &K, entry: Entry<V>, error: Error) -> Result<T> {
        self.memory.put(key.clone(), entry);
        Err(error)
    }

    pub(crate) fn insert(&mut self, key: K, value: V) -> Result<()> {
        self.refuse_if_read_only()?;
        let key_bytes = self.encode_key(&key)?;
        let weight = self.weigh(&key_bytes, &value)?;
        let old = self.memory.remove(&key);
        let previous = old.as_ref().and_then(|e| e.disk.map(|d| d.loc));
        self.store(
            key,
            &key_bytes,
            Arc::new(value),
            weight,
            previous,
            old,
            false,
        )?;
        self.compact_quietly();
        Ok(())
    }

    /// Reads `key`'s value stored at `loc` and decodes it.
    fn load(&mut self, key: &K, loc: &DiskLoc) -> Result<V> {
        let key_bytes = self.encode_key(key)?;
        let payload = self.disk.read_value(&key_bytes, loc)?;
        let value: V = self
            .codec
            .decode(payload.raw())
            .map_err(|source| Error::Decode {
                path: payload.path.clone(),
                source,
            })?;
        self.counters.loads += 1;
        self.counters.load_bytes += payload.raw().len() as u64;
        Ok(value)
    }

    pub(crate) fn get(&mut self, key: &K) -> Result<Option<Arc<V>>> {
        if self.disk.mode() == DiskMode::ReadOnly && !self.memory.contains(key) {
            // A read-only chest looks for a key the writer may have stored since.
            self.refresh()?;
        }
        let Some(entry) = self.memory.entry(key) else {
            return Ok(None);
        };
        let loc = match (&entry.held, entry.disk) {
            (Held::Memory { value, .. }, _) => {
                let value = value.clone();
                self.counters.memory_hits += 1;
                self.memory.touch(key);
                return Ok(Some(value));
            }
            (Held::Disk { weak }, disk) => {
                if let Some(value) = weak.upgrade() {
                    self.counters.shared_hits += 1;
                    return Ok(Some(value));
                }
                match disk {
                    Some(copy) => copy.loc,
                    None => {
                        return Err(Error::corrupt(self.disk.root(), "entry has no stored copy"));
                    }
                }
            }
        };
        // Read-only, the writer may have moved the value since the last refresh.
        let Some((value, loc)) = self.load_following(key, loc)? else {
            return Ok(None);
        };
        let value = Arc::new(value);
        let weight = match &self.weigher {
            Some(weigher) => weigher(&value),
            None => loc.raw_len,
        };
        // Keep the loaded value in memory when room can be made; a failed spill here only means
        // it is not kept, which is not the reader's error.
        if !self.belongs_on_disk(weight) && self.make_room(weight).is_ok() {
            self.memory.promote(key, value.clone(), weight);
        } else {
            self.memory.share(key, &value);
        }
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
        let previous = old_disk.map(|d| d.loc);
        // `rollback` is the entry to put back if storing the result fails. Mutating the only
        // Arc in place leaves nothing to put back but the disk copy, when that is current.
        let (mut private, rollback, old_weight) = match old.held {
            Held::Memory { value, weight } => match Arc::try_unwrap(value) {
                Ok(owned) => {
                    let on_disk = old_disk.filter(|d| d.current).map(|d| Entry {
                        held: Held::Disk { weak: Weak::new() },
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
                let copy = match (weak.upgrade(), previous) {
                    (Some(shared), _) => self.clone_via_codec(&key_bytes, &shared),
                    (None, Some(loc)) => self.load(key, &loc),
                    (None, None) => {
                        Err(Error::corrupt(self.disk.root(), "entry has no stored copy"))
                    }
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
        // The closure and the weigher are the user's code: if either panics, the entry is put
        // back (the old value, or the partly changed one when there is nothing else) before
        // the panic goes on.
        let weighed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            f(&mut private);
            self.weigh(&key_bytes, &private)
        }));
        let fallback = |rollback: Option<Entry<V>>, private: V| {
            rollback.unwrap_or_else(|| Entry {
                held: Held::Memory {
                    value: Arc::new(private),
                    weight: old_weight,
                },
                disk: stale(previous),
            })
        };
        let weight = match weighed {
            Ok(Ok(weight)) => weight,
            Ok(Err(e)) => return self.restore(key, fallback(rollback, private), e),
            Err(panic) => {
                self.memory.put(key.clone(), fallback(rollback, private));
                std::panic::resume_unwind(panic);
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
        self.compact_quietly();
        Ok(true)
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
        let Some(copy) = old.disk else {
            return Ok(true);
        };
        let key_bytes = match self.encode_key(key) {
            Ok(bytes) => bytes,
            Err(e) => return self.restore(key, old, e),
        };
        let removed = self
            .disk
            .remove_value(&key_bytes, copy.loc)
            .and_then(|()| self.disk.commit_staged());
        if let Err(e) = removed {
            self.disk.discard_staged();
            if copy.loc.place == crate::disk::Place::File
                && !self.disk.path_of(&key_bytes, &copy.loc).exists()
            {
                // The file is gone: the removal took effect, only its index record was lost,
                // and open drops an index entry whose file is missing.
                return Ok(true);
            }
            return self.restore(key, old, e);
        }
        self.compact_quietly();
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

    /// Writes every value without a current disk copy (keeping it in memory), compacts, then
    /// makes the disk tier durable. A no-op for temporary and read-only chests.
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
        let staged = self.stage_guarded(dirty.into_iter(), &[]);
        for (key, loc) in self.commit(staged)? {
            self.memory.set_disk_current(&key, loc);
        }
        self.compact()?;
        if !self.disk.needs_sync() {
            return Ok(());
        }
        if self.disk.index_is_bloated(self.memory.len() as u64) {
            let puts = self.stored_copies()?;
            self.disk.sync(Some(&puts))
        } else {
            self.disk.sync(None)
        }
    }

    /// Checks every stored copy and segment.
    pub(crate) fn verify(&mut self) -> Result<crate::VerifyReport> {
        let copies = self.stored_copies()?;
        Ok(self.disk.verify(&copies))
    }

    /// Every key's stored copy, for an index rewrite.
    fn stored_copies(&self) -> Result<Vec<(Vec<u8>, DiskLoc)>> {
        let mut puts = Vec::with_capacity(self.memory.len());
        for (key, entry) in self.memory.iter() {
            if let Some(copy) = entry.disk {
                puts.push((self.encode_key(key)?, copy.loc));
            }
        }
        Ok(puts)
    }

    /// Compacts segments after a write; a failure leaves everything as it was and is counted
    /// (flush retries and reports it).
    fn compact_quietly(&mut self) {
        if self.compact().is_err() {
            self.counters.failed_compactions += 1;
        }
    }

    /// Rewrites every sealed segment whose live bytes fell under half: its records that some
    /// key still refers to (current or stale copies alike, since the index names them) are
    /// copied into the active segment, the copies are made durable, and the old file removed.
    fn compact(&mut self) -> Result<()> {
        for id in self.disk.compaction_candidates() {
            let movers: Vec<(K, DiskLoc)> = self
                .memory
                .iter()
                .filter_map(|(k, e)| e.disk.map(|d| (k, d.loc)))
                .filter(|(_, loc)| DiskTier::is_in_segment(loc, id))
                .map(|(k, loc)| (k.clone(), loc))
                .collect();
            let mut moved = Vec::with_capacity(movers.len());
            let staged = (|| {
                for (key, loc) in &movers {
                    let key_bytes = self.encode_key(key)?;
                    moved.push((key.clone(), self.disk.copy_record(&key_bytes, *loc)?));
                }
                self.disk.commit_staged()
            })();
            if let Err(e) = staged {
                self.disk.discard_staged();
                return Err(e);
            }
            for (key, loc) in moved {
                self.memory.relocate(&key, loc);
            }
            // The old segment may hold the only durable copy of flushed values: sync the new
            // copies and their index records before it goes.
            self.disk.sync(None)?;
            self.disk.remove_segment(id)?;
            self.counters.compactions += 1;
        }
        Ok(())
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
            live_disk_bytes: self.disk.live_disk_bytes(),
            index_bytes: self.disk.index_bytes(),
            files: self.disk.own_files(),
            segments: self.disk.segment_count(),
            spills: self.counters.spills,
            spill_bytes: self.counters.spill_bytes,
            loads: self.counters.loads,
            load_bytes: self.counters.load_bytes,
            memory_hits: self.counters.memory_hits,
            shared_hits: self.counters.shared_hits,
            failed_spills: self.counters.failed_spills,
            compactions: self.counters.compactions,
            failed_compactions: self.counters.failed_compactions,
            mended_on_open: self.counters.mended_on_open,
        }
    }
}
