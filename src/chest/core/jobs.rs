//! The queue of disk work and its drainer: the background writer thread, or with synchronous
//! spilling the caller that needs its work done.
//!
//! Jobs are taken in batches, in queue order, by one drainer at a time (holding `engine`).
//! Values are encoded and staged, the batch is committed with one write per file, the disk
//! index is updated, and only then do the slots learn the outcome: an evicted value becomes
//! `Disk`, or goes back to memory when its write failed; the error is kept for the next
//! operation.

use std::collections::VecDeque;
use std::hash::Hash;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Core, Engine, bump};
use crate::codec::{Bincode, Codec};
use crate::disk::{DiskLoc, Place};
use crate::error::{Error, Result, panic_text};
use crate::hash::Map;
use crate::memory::{Held, MemoryTier, Slot, Stored};
use crate::sync::Arc;
use crate::sync::atomic::Ordering;

/// One change for the disk.
pub(crate) enum Job<K, V> {
    /// Write `value` (version `version` of `key`). An `evicted` value left memory and is
    /// skipped when the slot moved on to another version; a flush's write (`evicted: false`)
    /// is skipped only when a newer value of the key is already written.
    Put {
        key: K,
        value: Arc<V>,
        weight: u64,
        version: u64,
        evicted: bool,
    },
    /// Remove `key`'s stored copy (its slot is the tombstone `version` meanwhile). If that
    /// fails, the entry comes back: `restore` is its value when it was in memory (with weight
    /// and what the disk held), `None` when it was on disk.
    Remove {
        key: K,
        restore: Option<(Arc<V>, u64, Stored)>,
        version: u64,
    },
}

impl<K, V> Job<K, V> {
    fn key(&self) -> &K {
        match self {
            Job::Put { key, .. } | Job::Remove { key, .. } => key,
        }
    }

    fn weight(&self) -> u64 {
        match self {
            Job::Put { weight, .. } => *weight,
            Job::Remove { .. } => 64,
        }
    }
}

/// The queue and what its drainer reports back.
pub(crate) struct Queue<K, V> {
    pub(crate) jobs: VecDeque<Job<K, V>>,
    /// Jobs ever queued; a job's id is this count just after it was queued.
    pub(crate) enqueued: u64,
    /// Jobs done (they are done in queue order).
    pub(crate) done: u64,
    /// The first error since the last operation that reported one.
    pub(crate) deferred: Option<Error>,
    /// The writer thread should stop once the queue is empty.
    pub(crate) stop: bool,
}

impl<K, V> Default for Queue<K, V> {
    fn default() -> Self {
        Queue {
            jobs: VecDeque::new(),
            enqueued: 0,
            done: 0,
            deferred: None,
            stop: false,
        }
    }
}

/// The most a batch takes: jobs, and bytes of values.
const BATCH_JOBS: usize = 4096;
const BATCH_BYTES: u64 = 8 << 20;

/// What happened to one job of a batch.
#[derive(Clone, Copy)]
enum Outcome {
    Written,
    Skipped,
    Failed,
}

impl<K, V, C> Core<K, V, C>
where
    K: Serialize + DeserializeOwned + Hash + Eq + Clone + 'static,
    V: Serialize + DeserializeOwned + 'static,
    C: Codec,
{
    /// The writer thread's loop: drain until told to stop with nothing left.
    pub(crate) fn run_writer(&self) {
        loop {
            {
                let mut queue = self.queue.lock();
                while queue.jobs.is_empty() {
                    if queue.stop {
                        return;
                    }
                    self.work.wait(&mut queue);
                }
            }
            self.drain_batch();
        }
    }

    /// Tells the writer thread to finish the queue and stop.
    pub(crate) fn stop_writer(&self) {
        self.queue.lock().stop = true;
        self.work.notify_all();
    }

    /// Processes one batch; false when the queue was empty.
    pub(crate) fn drain_batch(&self) -> bool {
        let mut engine = self.engine.lock();
        self.drain_one(&mut engine)
    }

    /// Processes every queued job (the caller holds `engine`).
    pub(crate) fn drain_locked(&self, engine: &mut Engine) {
        while self.drain_one(engine) {}
    }

    fn drain_one(&self, engine: &mut Engine) -> bool {
        let jobs: Vec<Job<K, V>> = {
            let mut queue = self.queue.lock();
            let (mut n, mut bytes) = (0, 0);
            while n < queue.jobs.len() && n < BATCH_JOBS && bytes < BATCH_BYTES {
                bytes += queue.jobs[n].weight();
                n += 1;
            }
            queue.jobs.drain(..n).collect()
        };
        if jobs.is_empty() {
            return false;
        }
        let count = jobs.len() as u64;
        let result = if self.broken.get().is_some() {
            // A drainer panicked before, maybe half-way through a batch: nothing more is
            // written. The jobs' values stay in their slots, in memory.
            Ok(())
        } else {
            let processed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.process(engine, jobs)
            }));
            processed.unwrap_or_else(|panic| {
                let message = panic_text(panic.as_ref()).unwrap_or("a panic without a message");
                let _ = self.broken.set(message.to_string());
                self.has_deferred.store(true, Ordering::Release);
                Ok(())
            })
        };
        {
            let mut queue = self.queue.lock();
            queue.done += count;
            match result {
                Ok(()) => self.failing.store(false, Ordering::Release),
                Err(e) => {
                    self.failing.store(true, Ordering::Release);
                    queue.deferred.get_or_insert(e);
                    self.has_deferred.store(true, Ordering::Release);
                }
            }
        }
        self.progress.notify_all();
        true
    }

    /// True when a write of `key`'s `version` is still wanted, judged on its locked shard: an
    /// evicted value's when its slot holds that version; a flush's unless a newer value of the
    /// key is already written.
    fn wanted(shard: &MemoryTier<K, V>, key: &K, version: u64, evicted: bool) -> bool {
        match shard.get(key) {
            Some(slot) if slot.version == version => true,
            Some(slot) => !evicted && slot.stored != Stored::Current,
            None => false,
        }
    }

    /// True when the codec is the built-in [`Bincode`], which only ever appends to the buffer
    /// it is given, so values may be encoded straight into the segment batch. Another codec
    /// gets a buffer of its own: one that broke the contract (cleared the buffer, say) must
    /// not reach other keys' records.
    fn codec_appends_only(&self) -> bool {
        std::any::TypeId::of::<C>() == std::any::TypeId::of::<Bincode>()
    }

    /// The jobs' positions grouped by shard, in batch order within each shard, so that a batch
    /// locks each shard once (`shard`, job index) rather than once or more per job: every lock
    /// the writer takes moves the shard's cache line away from the inserting threads.
    fn by_shard(&self, jobs: &[Job<K, V>]) -> Vec<(usize, usize)> {
        let mut order: Vec<(usize, usize)> = jobs
            .iter()
            .enumerate()
            .map(|(i, job)| (self.shard_of(job.key()), i))
            .collect();
        order.sort_unstable();
        order
    }

    /// What each job starts from, read with one lock of each shard: for a put, `None` when its
    /// write is no longer wanted; otherwise the key's stored copy. Only the drainer (holding
    /// `engine`, as now) changes stored copies, so they hold for the whole batch.
    fn look_up(
        &self,
        jobs: &[Job<K, V>],
        order: &[(usize, usize)],
    ) -> Vec<Option<Option<DiskLoc>>> {
        let mut found = vec![None; jobs.len()];
        for run in order.chunk_by(|a, b| a.0 == b.0) {
            let shard = self.shards[run[0].0].lock();
            for &(_, i) in run {
                found[i] = match &jobs[i] {
                    Job::Put {
                        key,
                        version,
                        evicted,
                        ..
                    } => {
                        Self::wanted(&shard, key, *version, *evicted).then(|| shard.stored_at(key))
                    }
                    Job::Remove { key, .. } => Some(shard.stored_at(key)),
                };
            }
        }
        found
    }

    /// Stages and commits a batch, then tells the slots. The first error is returned; the
    /// values whose writes failed are back in memory.
    fn process(&self, engine: &mut Engine, jobs: Vec<Job<K, V>>) -> Result<()> {
        let mut outcomes = vec![Outcome::Skipped; jobs.len()];
        let mut locs: Vec<Option<DiskLoc>> = vec![None; jobs.len()];
        // The stored copy of each key touched by this batch, as the batch leaves it.
        let mut latest: Map<&K, Option<DiskLoc>> =
            Map::with_capacity_and_hasher(jobs.len(), Default::default());
        // Each key's bytes, encoded into one buffer reused across the batch.
        let mut key_bytes = Vec::new();
        let mut first_error: Option<Error> = None;
        let order = self.by_shard(&jobs);
        let before = self.look_up(&jobs, &order);
        // A key's stored copy as the batch so far leaves it.
        let stored_before = |latest: &Map<&K, Option<DiskLoc>>, key: &K, i: usize| {
            latest
                .get(key)
                .copied()
                .unwrap_or_else(|| before[i].flatten())
        };
        let staged: Result<()> = (|| {
            for (i, job) in jobs.iter().enumerate() {
                match job {
                    Job::Put { key, value, .. } => {
                        if before[i].is_none() {
                            continue;
                        }
                        self.encode_key_into(key, &mut key_bytes)?;
                        let mut raw = std::mem::take(&mut engine.scratch);
                        let previous = stored_before(&latest, key, i);
                        let written = engine.disk.write_encoded(
                            &key_bytes,
                            self.compression,
                            previous,
                            &mut raw,
                            self.codec_appends_only(),
                            |out| self.encode_append(out, &key_bytes, value),
                        );
                        engine.scratch = raw;
                        match written {
                            Ok(loc) => {
                                latest.insert(key, Some(loc));
                                locs[i] = Some(loc);
                                outcomes[i] = Outcome::Written;
                            }
                            // A value that cannot be encoded fails alone.
                            Err(e @ Error::Encode { .. }) => {
                                bump(&self.counters.failed_spills, 1);
                                outcomes[i] = Outcome::Failed;
                                first_error.get_or_insert(e);
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    Job::Remove { key, .. } => {
                        let previous = stored_before(&latest, key, i);
                        if let Some(previous) = previous {
                            let key_bytes = self.encode_key(key)?;
                            engine.disk.remove_value(&key_bytes, previous)?;
                        }
                        latest.insert(key, None);
                        outcomes[i] = Outcome::Written;
                    }
                }
            }
            engine.disk.commit_staged()
        })();
        if let Err(e) = staged {
            engine.disk.discard_staged();
            bump(&self.counters.failed_spills, 1);
            if self.batch_failed(&jobs, engine) {
                return Err(e);
            }
            // Every job took effect anyway (removals whose files are gone): nothing to report.
            return Ok(());
        }
        // Readers get the handles of segments begun by this batch before any place names them.
        self.refresh_files(&engine.disk);
        // Each key's stored copy is recorded (at its first job here) under the same shard lock
        // as the slot learns the outcome: a slot that goes leaves the key on disk only. Each
        // shard is locked once, for its jobs in batch order.
        let (mut landed, mut spills, mut spill_bytes) = (0, 0, 0);
        for run in order.chunk_by(|a, b| a.0 == b.0) {
            let mut back = 0;
            let mut shard = self.shards[run[0].0].lock();
            for &(_, i) in run {
                let stored = latest.remove(jobs[i].key());
                match &jobs[i] {
                    Job::Put {
                        key,
                        weight,
                        version,
                        evicted,
                        ..
                    } => {
                        if let (Outcome::Written, Some(loc)) = (outcomes[i], locs[i]) {
                            spills += 1;
                            spill_bytes += loc.raw_len;
                        }
                        back += Self::finish_put_in(
                            &mut shard,
                            key,
                            stored,
                            *version,
                            *evicted,
                            outcomes[i],
                        );
                        if *evicted {
                            landed += weight;
                        }
                    }
                    Job::Remove { key, version, .. } => {
                        Self::finish_remove_in(&mut shard, key, stored, *version);
                    }
                }
            }
            drop(shard);
            if back > 0 {
                self.memory_bytes.fetch_add(back, Ordering::AcqRel);
            }
        }
        bump(&self.counters.spills, spills);
        bump(&self.counters.spill_bytes, spill_bytes);
        if landed > 0 {
            self.in_flight.fetch_sub(landed, Ordering::AcqRel);
        }
        self.compact_quietly(engine);
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Tells `key`'s slot how the write of its `version` ended, first recording `stored`
    /// (when given) as where the disk now holds the key's stored copy. Returns the in-flight
    /// bytes the job held (an evicted value's weight), which the caller gives back.
    fn finish_put(
        &self,
        key: &K,
        stored: Option<Option<DiskLoc>>,
        version: u64,
        weight: u64,
        evicted: bool,
        outcome: Outcome,
    ) -> u64 {
        let mut shard = self.shards[self.shard_of(key)].lock();
        let back = Self::finish_put_in(&mut shard, key, stored, version, evicted, outcome);
        drop(shard);
        if back > 0 {
            self.memory_bytes.fetch_add(back, Ordering::AcqRel);
        }
        if evicted { weight } else { 0 }
    }

    /// [`finish_put`](Self::finish_put) on `key`'s locked shard. Returns the bytes that came
    /// back to memory (a failed write of an evicted value), for the caller to count.
    fn finish_put_in(
        shard: &mut MemoryTier<K, V>,
        key: &K,
        stored: Option<Option<DiskLoc>>,
        version: u64,
        evicted: bool,
        outcome: Outcome,
    ) -> u64 {
        if let Some(loc) = stored {
            shard.set_stored(key, loc);
        }
        if evicted {
            // A failed (not a skipped) write puts the value back in memory.
            let ok = !matches!(outcome, Outcome::Failed);
            return shard.write_done(key, version, ok);
        }
        if matches!(outcome, Outcome::Written) {
            shard.mark_written(key, version);
        }
        0
    }

    /// A removal of `key` (its tombstone `version`) took effect: records `stored` (when given)
    /// as what the disk now holds for the key, and drops the tombstone.
    fn finish_remove(&self, key: &K, stored: Option<Option<DiskLoc>>, version: u64) {
        let mut shard = self.shards[self.shard_of(key)].lock();
        Self::finish_remove_in(&mut shard, key, stored, version);
    }

    /// [`finish_remove`](Self::finish_remove) on `key`'s locked shard.
    fn finish_remove_in(
        shard: &mut MemoryTier<K, V>,
        key: &K,
        stored: Option<Option<DiskLoc>>,
        version: u64,
    ) {
        if let Some(loc) = stored {
            shard.set_stored(key, loc);
        }
        shard.removal_done(key, version);
    }

    /// A batch failed as a whole: evicted values go back to memory, removed entries come back
    /// (unless their value file is already gone, which is the removal taking effect). True
    /// when some job did not take effect.
    fn batch_failed(&self, jobs: &[Job<K, V>], engine: &mut Engine) -> bool {
        let mut undone = false;
        let mut landed = 0;
        for job in jobs {
            match job {
                Job::Put {
                    key,
                    version,
                    weight,
                    evicted,
                    ..
                } => {
                    undone = true;
                    landed +=
                        self.finish_put(key, None, *version, *weight, *evicted, Outcome::Failed);
                }
                Job::Remove {
                    key,
                    restore,
                    version,
                } => {
                    let stored = self.stored_at(key);
                    if let Some(loc) = stored
                        && loc.place == Place::File
                        && let Ok(key_bytes) = self.encode_key(key)
                        && !engine.disk.path_of(&key_bytes, &loc).exists()
                    {
                        self.finish_remove(key, Some(None), *version);
                        continue;
                    }
                    undone = true;
                    self.restore_removed(key, restore.clone(), *version, stored.is_some());
                }
            }
        }
        if landed > 0 {
            self.in_flight.fetch_sub(landed, Ordering::AcqRel);
        }
        undone
    }

    /// Puts back an entry whose removal failed (its tombstone `version`), unless the key has
    /// a newer slot.
    fn restore_removed(
        &self,
        key: &K,
        restore: Option<(Arc<V>, u64, Stored)>,
        version: u64,
        stored: bool,
    ) {
        let mut shard = self.shards[self.shard_of(key)].lock();
        let ours = shard
            .get(key)
            .is_some_and(|s| s.version == version && matches!(s.held, Held::Removed));
        if !ours {
            // A newer value: the disk still has the old record, so removing it later must
            // reach the disk.
            if stored {
                shard.note_disk_may_hold(key);
            }
            return;
        }
        match restore {
            Some((value, weight, was)) => {
                self.memory_bytes.fetch_add(weight, Ordering::AcqRel);
                let slot = Slot {
                    held: Held::Memory { value, weight },
                    stored: if was == Stored::Current && stored {
                        Stored::Current
                    } else if stored {
                        Stored::Stale
                    } else {
                        Stored::Nothing
                    },
                    version: self.next_version(),
                };
                shard.put(key.clone(), slot);
            }
            // Its stored copy (if any) is the entry again.
            None => {
                shard.remove(key);
            }
        }
    }
}
