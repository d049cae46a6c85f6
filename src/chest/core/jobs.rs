//! The queue of disk work and its drainers: the background writer thread, callers held back
//! by the in-flight allowance, and with synchronous spilling the callers that need their work
//! done.
//!
//! Jobs are taken in batches, in queue order. A drainer takes a batch and its ticket under
//! `engine`, encodes it and writes its records with `engine` released (so drainers work side
//! by side), and commits it under `engine` once every batch taken before it has committed:
//! the disk index is updated, and only then do the slots learn the outcome: an evicted value
//! becomes `Disk`, or goes back to memory when its write failed; the error is kept for the
//! next operation. `docs/design.md` ("Threads and background spilling") has the steps.

use std::collections::VecDeque;
use std::hash::Hash;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Core, Engine, bump};
use crate::codec::{Bincode, Codec, Compression};
use crate::disk::{DiskLoc, Place, RecordBatch, Reservation, segment};
use crate::error::{Error, Result, panic_text};
use crate::hash::Map;
use crate::memory::{Held, MemoryTier, Slot, Stored};
use crate::sync::atomic::Ordering;
use crate::sync::{Arc, MutexGuard};

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
const BATCH_BYTES: u64 = 1 << 20;

/// What happened to one job of a batch.
#[derive(Clone, Copy)]
enum Outcome {
    Written,
    Skipped,
    Failed,
}

/// What encoding made of each job of a batch, for its commit.
enum Item {
    /// A put no longer wanted (its slot moved on).
    Skip,
    /// A put whose value could not be encoded.
    Failed,
    /// A put encoded as record number `record` of the batch.
    Record { record: usize, raw_len: u64 },
    /// A put of a large value, for a file of its own: the encoded key and the payload.
    File {
        key: Vec<u8>,
        payload: Vec<u8>,
        raw_len: u64,
        compressed: bool,
    },
    /// A removal (done at the commit, which knows the stored copy).
    Remove,
}

/// A batch's jobs as encoding left them.
struct Prepared {
    items: Vec<Item>,
    /// The first value that could not be encoded.
    first_error: Option<Error>,
}

/// Runs `f` with `engine` released when `unlock`, else holding it.
fn unlocked_if<T>(engine: &mut MutexGuard<'_, Engine>, unlock: bool, f: impl FnOnce() -> T) -> T {
    if unlock {
        MutexGuard::unlocked(engine, f)
    } else {
        f()
    }
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

    /// Processes one batch; false when the queue was empty. The batch is encoded and written
    /// without `engine` held, so several drainers (the writer thread and callers spilling
    /// synchronously) work side by side; only placing the records and committing them takes
    /// the lock, and batches commit in the order they were taken.
    pub(crate) fn drain_batch(&self) -> bool {
        let mut engine = self.engine.lock();
        while engine.quiescing > 0 {
            self.turn.wait(&mut engine);
        }
        self.drain_one(&mut engine, true)
    }

    /// Processes every queued job, holding `engine` throughout (its caller holds it). Batches
    /// other drainers took commit first: on return nothing is queued or being written, so
    /// the caller's own disk work comes after every change queued before.
    pub(crate) fn drain_locked(&self, engine: &mut MutexGuard<'_, Engine>) {
        engine.quiescing += 1;
        while engine.committed < engine.issued {
            self.turn.wait(engine);
        }
        engine.quiescing -= 1;
        self.turn.notify_all();
        while self.drain_one(engine, false) {}
    }

    /// Takes the next batch and processes it; with `parallel`, `engine` is released while the
    /// batch is encoded and written. False when the queue was empty.
    fn drain_one(&self, engine: &mut MutexGuard<'_, Engine>, parallel: bool) -> bool {
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
        let ticket = engine.issued;
        engine.issued += 1;
        // Sequence numbers in queue order, whichever batch is written first.
        let first_seq = engine.disk.take_seqs(count);
        let result = if self.broken.get().is_some() {
            // A drainer panicked before, maybe half-way through a batch: nothing more is
            // written. The jobs' values stay in their slots, in memory.
            Ok(())
        } else {
            let processed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.process(engine, &jobs, ticket, first_seq, parallel)
            }));
            processed.unwrap_or_else(|panic| {
                let message = panic_text(panic.as_ref()).unwrap_or("a panic without a message");
                let _ = self.broken.set(message.to_string());
                self.has_deferred.store(true, Ordering::Release);
                Ok(())
            })
        };
        // A batch that panicked before its turn still ends in its turn.
        self.wait_for_turn(engine, ticket);
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
        engine.committed = ticket + 1;
        self.turn.notify_all();
        self.progress.notify_all();
        true
    }

    /// Waits (releasing `engine` meanwhile) until every batch taken before `ticket` committed.
    fn wait_for_turn(&self, engine: &mut MutexGuard<'_, Engine>, ticket: u64) {
        while engine.committed < ticket {
            self.turn.wait(engine);
        }
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

    /// Which jobs are still wanted, read with one lock of each shard: a put whose slot moved
    /// on to another version is not (see [`wanted`](Self::wanted)); a removal always is.
    fn still_wanted(&self, jobs: &[Job<K, V>], order: &[(usize, usize)]) -> Vec<bool> {
        let mut wanted = vec![true; jobs.len()];
        for run in order.chunk_by(|a, b| a.0 == b.0) {
            let shard = self.shards[run[0].0].lock();
            for &(_, i) in run {
                if let Job::Put {
                    key,
                    version,
                    evicted,
                    ..
                } = &jobs[i]
                {
                    wanted[i] = Self::wanted(&shard, key, *version, *evicted);
                }
            }
        }
        wanted
    }

    /// Each job's key's stored copy, read with one lock of each shard. Only the drainer whose
    /// turn it is to commit (holding `engine`) changes stored copies, so they hold for its
    /// whole commit.
    fn stored_now(&self, jobs: &[Job<K, V>], order: &[(usize, usize)]) -> Vec<Option<DiskLoc>> {
        let mut found = vec![None; jobs.len()];
        for run in order.chunk_by(|a, b| a.0 == b.0) {
            let shard = self.shards[run[0].0].lock();
            for &(_, i) in run {
                found[i] = shard.stored_at(jobs[i].key());
            }
        }
        found
    }

    /// Encodes the wanted puts of a batch (job `i` as sequence number `first_seq + i`), needing
    /// no lock but shard locks: small values become records of `batch`, large ones payloads
    /// for files of their own. An error means the batch as a whole fails; a value that cannot
    /// be encoded fails alone.
    fn prepare(
        &self,
        jobs: &[Job<K, V>],
        order: &[(usize, usize)],
        first_seq: u64,
        small_value_bytes: u64,
        batch: &mut RecordBatch,
    ) -> Result<Prepared> {
        let wanted = self.still_wanted(jobs, order);
        let mut items = Vec::with_capacity(jobs.len());
        let mut first_error = None;
        let mut key_bytes = Vec::new();
        let (mut raw, mut packed) = (Vec::new(), Vec::new());
        let below = usize::try_from(small_value_bytes).unwrap_or(usize::MAX);
        let in_place = self.codec_appends_only() && self.compression == Compression::None;
        for (i, job) in jobs.iter().enumerate() {
            let Job::Put { key, value, .. } = job else {
                items.push(Item::Remove);
                continue;
            };
            if !wanted[i] {
                items.push(Item::Skip);
                continue;
            }
            let seq = first_seq + i as u64;
            self.encode_key_into(key, &mut key_bytes)?;
            let encode = |out: &mut Vec<u8>| self.encode_append(out, &key_bytes, value);
            let encoded = if in_place && key_bytes.len() <= segment::MAX_KEY_LEN {
                match batch.push_encoded(&key_bytes, seq, below, &mut raw, encode) {
                    Ok(Some((record, raw_len))) => Ok(Some(Item::Record { record, raw_len })),
                    Ok(None) => Ok(None),
                    Err(e) => Err(e),
                }
            } else {
                raw.clear();
                encode(&mut raw).map(|()| None)
            };
            let item = match encoded {
                Ok(Some(item)) => item,
                Ok(None) => {
                    // Encoded into `raw`: compressed when that helps, then a record if small.
                    let compressed = self.compression.compress(&raw, &mut packed);
                    let payload = if compressed { &packed } else { &raw };
                    let raw_len = raw.len() as u64;
                    if segment::holds(key_bytes.len(), raw.len(), small_value_bytes) {
                        let record = batch.push(
                            segment::KIND_VALUE,
                            &key_bytes,
                            seq,
                            payload,
                            raw_len,
                            compressed,
                        );
                        Item::Record { record, raw_len }
                    } else {
                        let payload = if compressed {
                            std::mem::take(&mut packed)
                        } else {
                            std::mem::take(&mut raw)
                        };
                        Item::File {
                            key: key_bytes.clone(),
                            payload,
                            raw_len,
                            compressed,
                        }
                    }
                }
                Err(e @ Error::Encode { .. }) => {
                    bump(&self.counters.failed_spills, 1);
                    first_error.get_or_insert(e);
                    Item::Failed
                }
                Err(e) => return Err(e),
            };
            items.push(item);
        }
        Ok(Prepared { items, first_error })
    }

    /// Encodes, places, writes and commits a batch, then tells the slots. Encoding and writing
    /// run with `engine` released when `parallel`; the commit waits for the batch's turn
    /// (`ticket`). The first error is returned; the values whose writes failed are back in
    /// memory.
    fn process(
        &self,
        engine: &mut MutexGuard<'_, Engine>,
        jobs: &[Job<K, V>],
        ticket: u64,
        first_seq: u64,
        parallel: bool,
    ) -> Result<()> {
        let order = self.by_shard(jobs);
        let mut batch = self.batches.lock().pop().unwrap_or_default();
        batch.clear();
        let small = engine.disk.small_value_bytes();
        let prepared = unlocked_if(engine, parallel, || {
            self.prepare(jobs, &order, first_seq, small, &mut batch)
        });
        let reserved = prepared.and_then(|p| {
            let r = if batch.len() > 0 {
                Some(engine.disk.reserve(&batch)?)
            } else {
                None
            };
            Ok((p, r))
        });
        let written = match &reserved {
            Ok((_, Some(r))) => unlocked_if(engine, parallel, || r.write(&batch)),
            _ => Ok(()),
        };
        self.wait_for_turn(engine, ticket);
        let mut committed_any = false;
        let result = match (reserved, written) {
            (Err(e), _) => self.fail_batch(jobs, engine, e),
            (Ok((_, reservation)), Err(e)) => {
                // Nothing is staged yet: records are staged only at the commit.
                if let Some(r) = &reservation {
                    engine.disk.end_reservation(r, &batch, false);
                }
                self.fail_batch(jobs, engine, e)
            }
            (Ok((prepared, reservation)), Ok(())) => {
                let committed = self.commit(
                    engine,
                    jobs,
                    &order,
                    first_seq,
                    &batch,
                    prepared,
                    reservation.as_ref(),
                );
                if committed.is_err() {
                    // Staged records come after the reserved ones: cut them off first.
                    engine.disk.discard_staged();
                }
                if let Some(r) = &reservation {
                    engine.disk.end_reservation(r, &batch, committed.is_ok());
                }
                committed_any = committed.is_ok();
                match committed {
                    Ok(None) => Ok(()),
                    Ok(Some(value_error)) => Err(value_error),
                    Err(e) => self.fail_batch(jobs, engine, e),
                }
            }
        };
        self.batches.lock().push(batch);
        if committed_any {
            // Still this batch's turn: compaction changes stored copies too.
            self.compact_quietly(engine);
        }
        result
    }

    /// A batch failed as a whole with `e`, with nothing of it staged (a failed commit's
    /// staged records are discarded by the caller first): its values go back to memory (see
    /// [`batch_failed`](Self::batch_failed)). `e` is the batch's result unless every job
    /// took effect anyway.
    fn fail_batch(&self, jobs: &[Job<K, V>], engine: &mut Engine, e: Error) -> Result<()> {
        bump(&self.counters.failed_spills, 1);
        if self.batch_failed(jobs, engine) {
            return Err(e);
        }
        Ok(())
    }

    /// Commits a batch whose records are written: stages each job's index record (and writes
    /// large values' files, and tombstones), commits them, then tells the slots. Returns the
    /// first error of a value that could not be encoded (the rest of the batch took effect),
    /// or why the batch as a whole failed: then nothing of it was committed.
    #[allow(clippy::too_many_arguments)]
    fn commit(
        &self,
        engine: &mut Engine,
        jobs: &[Job<K, V>],
        order: &[(usize, usize)],
        first_seq: u64,
        batch: &RecordBatch,
        prepared: Prepared,
        reservation: Option<&Reservation>,
    ) -> Result<Option<Error>> {
        let Prepared { items, first_error } = prepared;
        let mut outcomes = vec![Outcome::Skipped; jobs.len()];
        let mut locs: Vec<Option<DiskLoc>> = vec![None; jobs.len()];
        // The stored copy of each key touched by this batch, as the batch leaves it.
        let mut latest: Map<&K, Option<DiskLoc>> =
            Map::with_capacity_and_hasher(jobs.len(), Default::default());
        let before = self.stored_now(jobs, order);
        // A key's stored copy as the batch so far leaves it.
        let stored_before = |latest: &Map<&K, Option<DiskLoc>>, key: &K, i: usize| {
            latest.get(key).copied().unwrap_or(before[i])
        };
        let staged: Result<()> = (|| {
            for (i, (job, item)) in jobs.iter().zip(&items).enumerate() {
                let key = job.key();
                let seq = first_seq + i as u64;
                let previous = stored_before(&latest, key, i);
                let loc = match item {
                    Item::Skip => continue,
                    Item::Failed => {
                        outcomes[i] = Outcome::Failed;
                        continue;
                    }
                    Item::Record { record, raw_len } => {
                        let place = reservation
                            .and_then(|r| r.places.get(*record))
                            .ok_or_else(|| Error::corrupt(&self.root, "record without a place"))?;
                        let key_bytes = batch.key(*record);
                        let header = segment::RECORD_HEADER_LEN + key_bytes.len();
                        let record_len = batch.record_len(*record);
                        let loc = DiskLoc {
                            place: Place::Segment(*place),
                            seq,
                            raw_len: *raw_len,
                            stored_len: (record_len - header) as u64,
                        };
                        engine.disk.adopt(key_bytes, loc, previous);
                        Some(loc)
                    }
                    Item::File {
                        key: key_bytes,
                        payload,
                        raw_len,
                        compressed,
                    } => {
                        let disk = &mut engine.disk;
                        Some(disk.store_file(
                            key_bytes,
                            payload,
                            *raw_len,
                            *compressed,
                            seq,
                            previous,
                        )?)
                    }
                    Item::Remove => {
                        if let Some(previous) = previous {
                            let key_bytes = self.encode_key(key)?;
                            engine.disk.remove_value(&key_bytes, previous, seq)?;
                        }
                        None
                    }
                };
                latest.insert(key, loc);
                locs[i] = loc;
                outcomes[i] = Outcome::Written;
            }
            engine.disk.commit_staged()
        })();
        staged?;
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
        Ok(first_error)
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
