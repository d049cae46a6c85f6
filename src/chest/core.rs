//! What a chest's handle and its background writer share: the sharded memory tier (each shard
//! holding its keys' slots and its part of the disk index), the queue of disk work, and the
//! rules that move values between memory and disk.
//!
//! Locks, and the order they are taken in (never the other way round):
//! `engine` (the disk tier; held by a drainer to take, place and commit a batch) → a shard →
//! `queue` or `files` (the segment handles). A caller holds one shard lock at a time
//! and never while encoding or decoding a value it reads, nor during disk I/O. A drainer (the
//! writer thread, a caller held back by the in-flight allowance, or a caller spilling
//! synchronously) encodes and writes a batch with `engine` released; only a caller that needs
//! everything queued before it on disk first (`drain_locked`: flush, a value heavier than the
//! budget) holds `engine` through disk I/O. Readers never need `engine`.
//!
//! Every change to what the disk holds goes through the queue as a job ([`Job`]). Jobs are
//! taken in batches in queue order, and batches commit in the order they were taken however
//! their writes interleave, so the disk sees each key's changes in the order memory made
//! them. A job carries the version of the value it writes; when the slot no longer
//! holds that version (overwritten or removed meanwhile) an eviction write is skipped, so a
//! cancelled write never becomes the current value.

#[cfg(feature = "ndarray")]
mod arrays;
mod follow;
mod jobs;

use std::collections::HashMap;
use std::fs::File;
use std::hash::{BuildHasher, Hash};
use std::path::PathBuf;
use std::time::Duration;

use crossbeam::utils::CachePadded;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{Codec, Compression};
use crate::disk::{
    DiskLoc, DiskMode, DiskTier, Fetched, KeyDigest, OpenReport, PackedLoc, Payload, Place, Reader,
    RecordBatch, Recovered,
};
use crate::error::{Error, Result};
use crate::hash::Map;
use crate::memo::once::{Claim, InFlight};
use crate::memory::{Held, MemoryTier, Policy, ReadFrom, Slot, Stored, Victim, shared_weak};
use crate::stats::Stats;
use crate::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use crate::sync::{Arc, Condvar, Mutex, RandomState, RwLock, thread};
use jobs::{Job, Queue};

/// A user function giving a value's weight in bytes.
pub(crate) type Weigher<V> = Arc<dyn Fn(&V) -> u64 + Send + Sync>;

/// Counters reported by [`Stats`].
#[derive(Debug, Default)]
struct Counters {
    spills: AtomicU64,
    spill_bytes: AtomicU64,
    loads: AtomicU64,
    load_bytes: AtomicU64,
    memory_hits: AtomicU64,
    shared_hits: AtomicU64,
    failed_spills: AtomicU64,
    mended_on_open: AtomicU64,
    compactions: AtomicU64,
    failed_compactions: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// The segment files readers use, as of the disk tier's `generation` of them.
struct Files {
    handles: HashMap<u32, Arc<File>>,
    generation: u64,
}

/// The disk tier, the drainers' scratch space and the order in which their batches commit.
pub(crate) struct Engine {
    disk: DiskTier,
    scratch: Vec<u8>,
    /// Batches ever taken from the queue; a batch's ticket is this count before it was taken.
    issued: u64,
    /// Batches committed (or failed): they commit in ticket order, so the batch whose ticket
    /// equals this count is next.
    committed: u64,
    /// Callers waiting for every taken batch to commit (see `drain_locked`): meanwhile no
    /// drainer takes a new batch.
    quiescing: u32,
}

/// The options the core is built with.
pub(crate) struct CoreOptions<V, C> {
    pub(crate) budget_bytes: u64,
    pub(crate) policy: Policy,
    pub(crate) compression: Compression,
    pub(crate) weigher: Option<Weigher<V>>,
    pub(crate) codec: C,
    pub(crate) background: bool,
    pub(crate) in_flight_bytes: Option<u64>,
    pub(crate) shards: usize,
}

/// Everything behind a chest.
pub(crate) struct Core<K: Hash + Eq, V, C> {
    shards: Box<[Mutex<MemoryTier<K, V>>]>,
    hasher: RandomState,
    files: RwLock<Files>,
    /// The disk tier, which the drainer changes on every job: on cache lines of its own, so
    /// that those writes do not take the queue's line from the inserting threads.
    engine: CachePadded<Mutex<Engine>>,
    /// The jobs, pushed by every evicting caller; on a cache line of its own, as above.
    queue: CachePadded<Mutex<Queue<K, V>>>,
    /// Signalled when a job is queued or the writer must stop.
    work: Condvar,
    /// Signalled when jobs are done (in-flight bytes fell, errors may be waiting).
    progress: Condvar,
    /// Waited on with `engine`: signalled when a batch commits or a quiescing caller is done.
    turn: Condvar,
    /// Record batches' buffers, reused by the drainers.
    batches: Mutex<Vec<RecordBatch>>,
    /// Bytes of values in memory plus room reserved for values about to enter it. Written by
    /// callers on every insert; on a cache line of its own, so that the writer's updates of
    /// `in_flight` (and of anything else) do not take the line from them.
    memory_bytes: CachePadded<AtomicU64>,
    /// Bytes of evicted values queued or being written; its own cache line, as above.
    in_flight: CachePadded<AtomicU64>,
    /// The last batch failed: spill synchronously until one succeeds.
    failing: AtomicBool,
    /// The queue holds an error for the next operation (for good once `broken` is set).
    has_deferred: AtomicBool,
    /// What a drainer's panic said: from then on every change and flush fails with
    /// [`Error::WriterPanicked`] and nothing more is written.
    broken: std::sync::OnceLock<String>,
    policy: Policy,
    versions: AtomicU64,
    budget: u64,
    allowance: u64,
    background: bool,
    mode: DiskMode,
    root: PathBuf,
    reader: Reader,
    codec: C,
    compression: Compression,
    weigher: Option<Weigher<V>>,
    counters: Counters,
    computing: InFlight<K>,
}

/// Victims [`Core::evict`] takes between releases of the memory they freed.
const EVICT_CHUNK: usize = 64;

/// Entries from which opening builds its tables on two threads.
const PARALLEL_OPEN_FROM: usize = 100_000;

/// How often a read retries when the stored copy moved under it (compaction, overwrite).
const READ_ATTEMPTS: usize = 3;

impl<K, V, C> Core<K, V, C>
where
    K: Serialize + DeserializeOwned + Hash + Eq + Clone + 'static,
    V: Serialize + DeserializeOwned + 'static,
    C: Codec,
{
    /// Builds the core from an opened disk tier and the entries it found.
    pub(crate) fn recover(
        disk: DiskTier,
        found: Recovered,
        report: &OpenReport,
        options: CoreOptions<V, C>,
    ) -> Result<Self>
    where
        K: Send + Sync,
    {
        let shard_count = options.shards.max(1);
        let hasher = RandomState::default();
        let reader = disk.reader();
        // Decodes `take` entries from `skip` on and sorts them to their shards: each key goes
        // to its shard's index of stored copies; nothing is in memory yet, so no key has a
        // slot.
        let decode = |skip: usize, take: usize| -> Result<Vec<Vec<(K, DiskLoc)>>> {
            let count = found.len().saturating_sub(skip).min(take);
            let mut parts: Vec<Vec<(K, DiskLoc)>> = (0..shard_count)
                .map(|_| Vec::with_capacity(count / shard_count + 16))
                .collect();
            for (key, loc) in found.iter().skip(skip).take(take) {
                let key: K = options.codec.decode(key).map_err(|source| Error::Decode {
                    path: reader.path_of(key, &loc),
                    source,
                })?;
                parts[(hasher.hash_one(&key) as usize) % shard_count].push((key, loc));
            }
            Ok(parts)
        };
        // The shards' tables from two decoders' lists of entries, shard by shard.
        let fill = |first: Vec<Vec<(K, DiskLoc)>>, second: Vec<Vec<(K, DiskLoc)>>| {
            first
                .into_iter()
                .zip(second)
                .map(|(a, b)| {
                    let mut stored: Map<K, PackedLoc> =
                        Map::with_capacity_and_hasher(a.len() + b.len(), Default::default());
                    stored.extend(a.into_iter().chain(b).map(|(key, loc)| (key, loc.into())));
                    stored
                })
                .collect::<Vec<_>>()
        };
        // Decoding the keys and filling the tables are most of reopening a million keys
        // after the replay: a large chest decodes half of the keys, then fills half of the
        // shards' tables, on a second thread. Not under shuttle, whose tests open small
        // chests only.
        let parallel = found.len() >= PARALLEL_OPEN_FROM && !cfg!(shuttle) && shard_count > 1;
        let (mut first, mut second) = if parallel {
            let half = found.len() / 2;
            std::thread::scope(|scope| -> Result<_> {
                let other = scope.spawn(|| decode(half, usize::MAX));
                let first = decode(0, half)?;
                Ok((first, other.join().expect("decoding keys does not panic")?))
            })?
        } else {
            (decode(0, usize::MAX)?, Vec::new())
        };
        // The recovered entries (the index's bytes and the replay's list) go before the
        // tables grow.
        drop(found);
        second.resize_with(shard_count, Vec::new);
        let tables = if parallel {
            let upper = (
                first.split_off(shard_count / 2),
                second.split_off(shard_count / 2),
            );
            std::thread::scope(|scope| {
                let other = scope.spawn(move || fill(upper.0, upper.1));
                let mut tables = fill(first, second);
                tables.extend(other.join().expect("filling a table does not panic"));
                tables
            })
        } else {
            fill(first, second)
        };
        let shards = tables
            .into_iter()
            .map(|stored| MemoryTier::with_stored(options.policy, stored));
        let mended = report.dropped_missing + report.adopted_orphans + report.discarded_damaged;
        let budget = options.budget_bytes;
        let allowance = options.in_flight_bytes.unwrap_or(budget / 8);
        let core = Core {
            shards: shards.map(Mutex::new).collect(),
            hasher,
            files: RwLock::new(Files {
                handles: HashMap::new(),
                generation: u64::MAX,
            }),
            reader,
            mode: disk.mode(),
            root: disk.root().to_path_buf(),
            engine: CachePadded::new(Mutex::new(Engine {
                disk,
                scratch: Vec::new(),
                issued: 0,
                committed: 0,
                quiescing: 0,
            })),
            queue: CachePadded::new(Mutex::new(Queue::default())),
            work: Condvar::new(),
            progress: Condvar::new(),
            turn: Condvar::new(),
            batches: Mutex::new(Vec::new()),
            memory_bytes: CachePadded::new(AtomicU64::new(0)),
            in_flight: CachePadded::new(AtomicU64::new(0)),
            failing: AtomicBool::new(false),
            has_deferred: AtomicBool::new(false),
            broken: std::sync::OnceLock::new(),
            policy: options.policy,
            versions: AtomicU64::new(1),
            budget,
            allowance,
            background: options.background,
            codec: options.codec,
            compression: options.compression,
            weigher: options.weigher,
            counters: Counters::default(),
            computing: InFlight::default(),
        };
        core.counters
            .mended_on_open
            .store(mended, Ordering::Relaxed);
        core.refresh_files(&core.engine.lock().disk);
        Ok(core)
    }

    /// True when a background writer thread should run for this chest.
    pub(crate) fn wants_writer(&self) -> bool {
        self.background && self.mode != DiskMode::ReadOnly
    }

    fn shard_of(&self, key: &K) -> usize {
        (self.hasher.hash_one(key) as usize) % self.shards.len()
    }

    fn next_version(&self) -> u64 {
        self.versions.fetch_add(1, Ordering::Relaxed)
    }

    fn encode_key(&self, key: &K) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.encode_key_into(key, &mut out)?;
        Ok(out)
    }

    /// Encodes `key` into `out`, replacing what it held.
    fn encode_key_into(&self, key: &K, out: &mut Vec<u8>) -> Result<()> {
        out.clear();
        self.codec.encode(key, out).map_err(Self::key_error)
    }

    fn key_error(source: crate::CodecError) -> Error {
        Error::Encode {
            what: "key".into(),
            source,
        }
    }

    fn encode_error(key_bytes: &[u8], source: crate::CodecError) -> Error {
        Error::Encode {
            what: format!("value of key {}", KeyDigest::of(key_bytes)),
            source,
        }
    }

    /// `key`'s value's weight: the user's weigher, or its encoded length (counted, not
    /// written; the key's bytes are made only for an error).
    fn weigh(&self, key: &K, value: &V) -> Result<u64> {
        match &self.weigher {
            Some(weigher) => Ok(weigher(value)),
            None => match self.codec.encoded_len(value) {
                Ok(len) => Ok(len),
                Err(source) => Err(Self::encode_error(&self.encode_key(key)?, source)),
            },
        }
    }

    fn refuse_if_read_only(&self) -> Result<()> {
        if self.mode == DiskMode::ReadOnly {
            return Err(Error::ReadOnly {
                path: self.root.clone(),
            });
        }
        Ok(())
    }

    /// Returns (and forgets) the error of a background write that failed since the last call.
    fn take_deferred(&self) -> Result<()> {
        // Every operation asks: an atomic answers the common case without the queue's lock.
        if !self.has_deferred.load(Ordering::Acquire) {
            return Ok(());
        }
        if let Some(message) = self.broken.get() {
            return Err(Error::WriterPanicked {
                path: self.root.clone(),
                message: message.clone(),
            });
        }
        let mut queue = self.queue.lock();
        self.has_deferred.store(false, Ordering::Release);
        match queue.deferred.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// True when spills must be waited for: synchronous spilling was asked for, or the last
    /// background write failed (so errors reach the operation that caused them).
    fn spills_synchronously(&self) -> bool {
        !self.background || self.failing.load(Ordering::Acquire)
    }

    /// Queues `job` (callers hold the shard lock of its key, which orders each key's jobs).
    fn enqueue(&self, job: Job<K, V>) -> u64 {
        let id = {
            let mut queue = self.queue.lock();
            queue.jobs.push_back(job);
            queue.enqueued += 1;
            queue.enqueued
        };
        self.work.notify_one();
        id
    }

    /// Returns once job `id` and every job queued before it are done.
    fn settle(&self, id: u64) {
        if self.background {
            let mut queue = self.queue.lock();
            while queue.done < id {
                self.progress.wait(&mut queue);
            }
        } else {
            while self.queue.lock().done < id {
                if !self.drain_batch() {
                    // Another drainer has the jobs left: wait for its batch to commit.
                    let mut queue = self.queue.lock();
                    if queue.done < id && queue.jobs.is_empty() {
                        self.progress.wait(&mut queue);
                    }
                }
            }
        }
    }

    /// Makes queued jobs progress: writes a batch itself when one is waiting (drainers work
    /// side by side, so a caller held back by the in-flight allowance uses the time to write
    /// rather than idle while the writer thread does it alone), else waits a little for the
    /// batches being written.
    fn wait_for_progress(&self) {
        if self.background {
            if self.drain_batch() {
                return;
            }
            let mut queue = self.queue.lock();
            if queue.done < queue.enqueued && queue.deferred.is_none() {
                self.progress
                    .wait_for(&mut queue, Duration::from_millis(20));
            }
        } else if !self.drain_batch() {
            // Another thread holds the room for a moment (a reservation about to be filled).
            // Shuttle's yield under `--cfg shuttle`: its schedulers must see this spin, or
            // one that favours the spinning thread never lets the holder go on.
            thread::yield_now();
        }
    }

    /// Makes room for `weight` more bytes in memory and reserves it: victims leave memory in
    /// policy order (a slack below the budget, so the next operations need no eviction), the
    /// dirty ones queued for writing. Waits while the in-flight allowance is used up.
    /// Returns the id of the last job queued (0 for none).
    fn reserve(&self, weight: u64) -> Result<u64> {
        let mut last = 0;
        loop {
            if self.reserve_now(weight) {
                return Ok(last);
            }
            let (freed, id) = self.evict(self.room_needed(weight));
            last = last.max(id);
            if !self.background {
                // The victims were written (or failed) already: a failure ends this operation.
                self.take_deferred()?;
            }
            if freed == 0 {
                self.take_deferred()?;
                self.wait_for_progress();
            }
        }
    }

    /// Like [`reserve`](Self::reserve) but gives up instead of waiting.
    fn try_reserve(&self, weight: u64) -> bool {
        for _ in 0..4 {
            if self.reserve_now(weight) {
                return true;
            }
            if self.evict(self.room_needed(weight)).0 == 0 {
                return false;
            }
        }
        false
    }

    /// Bytes to evict so that `weight` more fit, going a slack below the budget (a sixteenth
    /// of it, at most 8 MiB) so that the next operations need no eviction.
    fn room_needed(&self, weight: u64) -> u64 {
        let held = self.memory_bytes.load(Ordering::Acquire);
        let slack = (self.budget / 16).min(8 << 20);
        (held + weight + slack).saturating_sub(self.budget)
    }

    fn release(&self, weight: u64) {
        if weight > 0 {
            self.memory_bytes.fetch_sub(weight, Ordering::AcqRel);
        }
    }

    /// Takes victims out of memory, chest-wide in policy order, until `need` bytes left it or
    /// nothing more can leave now. Returns the bytes freed and the last job id queued.
    ///
    /// The shared counters are not updated once per victim: in-flight room is taken ahead for
    /// what is still needed (the unused part given back at the end), and freed memory is
    /// released every [`EVICT_CHUNK`] victims. Each such update takes a cache line the writer
    /// thread also uses, and cost more than choosing the victim. Both counters only ever
    /// over-count meanwhile, so the bounds hold. Each job is still queued under its key's
    /// shard lock, so a slot marked as being written always has its job in the queue (which
    /// `flush` relies on).
    fn evict(&self, need: u64) -> (u64, u64) {
        let mut tops: Vec<Option<u64>> = self
            .shards
            .iter()
            .map(|s| s.lock().peek_priority())
            .collect();
        let (mut freed, mut last) = (0, 0);
        // In-flight room taken and not yet used; memory freed and not yet released.
        let (mut credit, mut unreleased) = (0u64, 0u64);
        let mut taken = 0;
        while freed < need {
            let Some(best) = (0..tops.len())
                .filter(|&i| tops[i].is_some())
                .max_by_key(|&i| tops[i])
            else {
                break;
            };
            let mut shard = self.shards[best].lock();
            let Some((weight, dirty)) = shard.peek_victim() else {
                tops[best] = None;
                continue;
            };
            if dirty && credit < weight {
                match self.take_in_flight(weight - credit, need - freed) {
                    Some(got) => credit += got,
                    None => break,
                }
            }
            match shard.take_victim() {
                Some(Victim::Clean { weight }) => {
                    unreleased += weight;
                    freed += weight;
                }
                Some(Victim::Dirty {
                    key,
                    value,
                    weight,
                    version,
                }) => {
                    // Room was taken for the victim peeked; should the one taken weigh more
                    // (or have been peeked clean), it is counted all the same.
                    if weight > credit {
                        self.in_flight.fetch_add(weight - credit, Ordering::AcqRel);
                        credit = weight;
                    }
                    credit -= weight;
                    unreleased += weight;
                    freed += weight;
                    last = self.enqueue(Job::Put {
                        key,
                        value,
                        weight,
                        version,
                        evicted: true,
                    });
                }
                None => {}
            }
            tops[best] = shard.peek_priority();
            drop(shard);
            taken += 1;
            if taken % EVICT_CHUNK == 0 {
                self.release(std::mem::take(&mut unreleased));
            }
        }
        self.release(unreleased);
        if credit > 0 {
            self.in_flight.fetch_sub(credit, Ordering::AcqRel);
        }
        if !self.background && last > 0 {
            // Synchronous spilling: the caller writes what it evicted before going on.
            self.settle(last);
        }
        (freed, last)
    }

    /// Takes in-flight room for evicted values: at least `min` bytes and up to `want`, as far as
    /// the allowance has room, or `min` alone when nothing is in flight (so that one value
    /// larger than the allowance can still go). Returns the bytes taken, or `None` when not
    /// even `min` fits now.
    fn take_in_flight(&self, min: u64, want: u64) -> Option<u64> {
        let mut current = self.in_flight.load(Ordering::Acquire);
        loop {
            let room = self.allowance.saturating_sub(current);
            let grant = if room >= min {
                want.max(min).min(room)
            } else if current == 0 {
                min
            } else {
                return None;
            };
            match self.in_flight.compare_exchange(
                current,
                current + grant,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(grant),
                Err(now) => current = now,
            }
        }
    }

    /// Counts `weight` more bytes in flight if the allowance has room (or nothing is in
    /// flight, so one value larger than the allowance can still go).
    fn admit_in_flight(&self, weight: u64) -> bool {
        self.take_in_flight(weight, weight).is_some()
    }

    /// Under `Largest`, a value at least as heavy as every value that would have to leave for
    /// it goes straight to disk.
    fn largest_goes_to_disk(&self, weight: u64) -> bool {
        if self.policy != Policy::Largest
            || self.memory_bytes.load(Ordering::Acquire) + weight <= self.budget
        {
            return false;
        }
        let heaviest = self
            .shards
            .iter()
            .filter_map(|s| {
                let s = s.lock();
                s.peek_victim().map(|(w, _)| w)
            })
            .max();
        heaviest.is_some_and(|top| weight >= top)
    }

    pub(crate) fn insert(&self, key: K, value: V) -> Result<()> {
        self.insert_arc(key, Arc::new(value))
    }

    fn insert_arc(&self, key: K, value: Arc<V>) -> Result<()> {
        self.refuse_if_read_only()?;
        self.take_deferred()?;
        // The key must encode (checked by counting its bytes: no allocation); its bytes are
        // made only when needed, for a direct write or an error message.
        self.codec.encoded_len(&key).map_err(Self::key_error)?;
        let weight = self.weigh(&key, &value)?;
        if weight > self.budget || self.largest_goes_to_disk(weight) {
            let key_bytes = self.encode_key(&key)?;
            return self.store_direct(key, &key_bytes, value);
        }
        let synchronous = self.spills_synchronously();
        let last = self.reserve(weight)?;
        if synchronous && last > 0 {
            self.settle(last);
            if let Err(e) = self.take_deferred() {
                self.release(weight);
                return Err(e);
            }
        }
        let version = self.next_version();
        let shard = self.shard_of(&key);
        let old = self.shards[shard].lock().replace(key, |stored| Slot {
            held: Held::Memory { value, weight },
            stored,
            version,
        });
        if let Some(old) = old {
            self.release(old.memory_weight());
        }
        Ok(())
    }

    /// Sets `key`'s slot in `shard` (its shard, locked) and releases the weight of what the
    /// slot held in memory before.
    fn put_slot(&self, shard: &mut MemoryTier<K, V>, key: K, slot: Slot<V>) {
        if let Some(old) = shard.put(key, slot) {
            self.release(old.memory_weight());
        }
    }

    /// Writes `value` as `key`'s value at once and holds it on disk only (values heavier than
    /// the budget). Queued jobs go first, so the disk sees the key's changes in order.
    fn store_direct(&self, key: K, key_bytes: &[u8], value: Arc<V>) -> Result<()> {
        let mut engine = self.engine.lock();
        self.drain_locked(&mut engine);
        self.take_deferred()?;
        let previous = self.stored_at(&key);
        let written = self.encode_into(&mut engine.scratch, key_bytes, &value);
        let Engine { disk, scratch, .. } = &mut *engine;
        let loc = written.and_then(|()| {
            let loc = disk.write_value(key_bytes, scratch, self.compression, previous)?;
            disk.commit_staged().map(|()| loc)
        });
        let loc = match loc {
            Ok(loc) => loc,
            Err(e) => {
                disk.discard_staged();
                bump(&self.counters.failed_spills, 1);
                return Err(e);
            }
        };
        bump(&self.counters.spills, 1);
        bump(&self.counters.spill_bytes, loc.raw_len);
        // The segment's handle is published before any place names it.
        self.refresh_files(disk);
        let version = self.next_version();
        let mut shard = self.shards[self.shard_of(&key)].lock();
        shard.set_stored(&key, Some(loc));
        // Shared with later gets while the caller holds it (get_or_insert_with's callers do).
        if let Some(old) = shard.now_on_disk(key, version, shared_weak(&value, 1)) {
            self.release(old.memory_weight());
        }
        drop(shard);
        self.compact_quietly(&mut engine);
        Ok(())
    }

    /// Encodes `value` into `out`; a panicking `Serialize` becomes an error.
    fn encode_into(&self, out: &mut Vec<u8>, key_bytes: &[u8], value: &V) -> Result<()> {
        out.clear();
        self.encode_append(out, key_bytes, value)
    }

    /// Appends `value`'s encoding to `out`; a panicking `Serialize` becomes an error (what it
    /// appended before failing stays: callers cut it off).
    fn encode_append(&self, out: &mut Vec<u8>, key_bytes: &[u8], value: &V) -> Result<()> {
        let encoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.codec.encode(value, out)
        }));
        match encoded {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(Self::encode_error(key_bytes, source)),
            Err(_) => Err(Self::encode_error(
                key_bytes,
                "the value's Serialize implementation panicked".into(),
            )),
        }
    }

    /// Where `key`'s stored copy is, with the segment file to read it from.
    fn locate(&self, key: &K) -> Option<(DiskLoc, Option<Arc<File>>)> {
        let shard = self.shards[self.shard_of(key)].lock();
        let loc = shard.stored_at(key)?;
        // Under the shard lock: a segment's handle is published before any place names it.
        let file = match loc.place {
            Place::Segment(p) => self.files.read().handles.get(&p.segment).cloned(),
            Place::File => None,
        };
        Some((loc, file))
    }

    /// Where `key`'s stored copy is.
    fn stored_at(&self, key: &K) -> Option<DiskLoc> {
        self.shards[self.shard_of(key)].lock().stored_at(key)
    }

    /// Decodes `key`'s value read from disk at `loc`.
    fn decode_payload(&self, payload: &Payload, key_bytes: &[u8], loc: &DiskLoc) -> Result<V> {
        let value: V = self
            .codec
            .decode(payload.raw())
            .map_err(|source| Error::Decode {
                path: payload
                    .path
                    .clone()
                    .unwrap_or_else(|| self.reader.path_of(key_bytes, loc)),
                source,
            })?;
        bump(&self.counters.loads, 1);
        bump(&self.counters.load_bytes, payload.raw().len() as u64);
        Ok(value)
    }

    /// Reads `key`'s stored value from disk, retrying when the stored copy moved meanwhile
    /// (compaction, an overwrite; in a read-only chest, anything the followed writer did since
    /// the last refresh). `None` when the key has no stored copy (it was removed meanwhile).
    /// Returns the value with the write it was read from.
    fn load_current(&self, key: &K, key_bytes: &[u8]) -> Result<Option<(V, DiskLoc)>> {
        let Some((mut loc, mut file)) = self.locate(key) else {
            return Ok(None);
        };
        for attempt in 1..=READ_ATTEMPTS {
            let last = attempt == READ_ATTEMPTS;
            let (gone, e) = match self.reader.fetch(file.as_deref(), key_bytes, &loc) {
                Ok(Fetched::Value(payload, read)) => {
                    let value = self.decode_payload(&payload, key_bytes, &read)?;
                    if read != loc {
                        self.saw_newer(key, read);
                    }
                    return Ok(Some((value, read)));
                }
                // Only a read-only chest tells these apart from damage.
                Ok(Fetched::Moved(e)) => (false, e),
                Ok(Fetched::Gone(e)) => (true, e),
                // The copy moved meanwhile (this chest's writer): read it again.
                Err(e) => match self.locate(key) {
                    None if !last => return Ok(None),
                    Some(found) if found.0 != loc && !last => {
                        (loc, file) = found;
                        continue;
                    }
                    _ => return Err(e),
                },
            };
            if last {
                return Err(e);
            }
            if !self.after_move(key, loc, gone, e)? {
                return Ok(None);
            }
            match self.locate(key) {
                Some(found) => (loc, file) = found,
                None => return Ok(None),
            }
        }
        Ok(None)
    }

    pub(crate) fn get(&self, key: &K) -> Result<Option<Arc<V>>> {
        let home = self.shard_of(key);
        if self.mode == DiskMode::ReadOnly && !self.shards[home].lock().exists(key) {
            // A read-only chest looks for a key the writer may have stored since.
            self.refresh()?;
        }
        for _ in 0..READ_ATTEMPTS {
            // What the value is read for: the key's slot or its stored copy.
            let from = {
                let mut shard = self.shards[home].lock();
                match shard.get(key).map(|slot| &slot.held) {
                    Some(Held::Memory { value, .. }) => {
                        let value = value.clone();
                        shard.touch(key);
                        bump(&self.counters.memory_hits, 1);
                        return Ok(Some(value));
                    }
                    Some(Held::Writing { value, .. }) => {
                        bump(&self.counters.memory_hits, 1);
                        return Ok(Some(value.clone()));
                    }
                    Some(Held::Disk { weak }) => {
                        if let Some(value) = weak.upgrade() {
                            bump(&self.counters.shared_hits, 1);
                            return Ok(Some(value));
                        }
                        // Nobody holds it any more: the key is on disk only again.
                        shard.drop_dead_weak(key);
                    }
                    Some(Held::Removed) | None => {}
                }
                match shard.read_from(key) {
                    Some(from) => from,
                    None => return Ok(None),
                }
            };
            let key_bytes = self.encode_key(key)?;
            let Some((value, loc)) = self.load_current(key, &key_bytes)? else {
                // Removed (and maybe inserted again) meanwhile: look again.
                continue;
            };
            let value = Arc::new(value);
            let weight = match &self.weigher {
                Some(weigher) => weigher(&value),
                None => loc.raw_len,
            };
            // Keep the value in memory when room can be made without waiting (and without
            // more writes while they fail).
            let kept = weight <= self.budget
                && !self.failing.load(Ordering::Acquire)
                && self.try_reserve(weight);
            let (from, fresh) = (from.read(loc.seq), self.next_version());
            let mut shard = self.shards[home].lock();
            if !(kept && shard.promote(key, from, fresh, value.clone(), weight)) {
                if kept {
                    self.release(weight);
                }
                shard.share(key, from, fresh, &value);
            }
            return Ok(Some(value));
        }
        Err(Error::corrupt(
            &self.root,
            "the key's stored copy kept moving",
        ))
    }

    /// An owned copy of `value` made by encoding and decoding it, so `V` need not be `Clone`.
    fn clone_via_codec(&self, key_bytes: &[u8], value: &V) -> Result<V> {
        let mut raw = Vec::new();
        self.encode_into(&mut raw, key_bytes, value)?;
        self.codec
            .decode(&raw)
            .map_err(|source| Self::encode_error(key_bytes, source))
    }

    /// Applies `f` to `key`'s value, atomically with respect to every other operation on the
    /// key: `f` runs under the key's shard lock, on a value of its own (the in-memory one when
    /// nobody shares it, else a copy made beforehand without the lock).
    pub(crate) fn update<F: FnOnce(&mut V)>(&self, key: &K, f: F) -> Result<bool> {
        self.refuse_if_read_only()?;
        self.take_deferred()?;
        let key_bytes = self.encode_key(key)?;
        let home = self.shard_of(key);
        // A copy made without the lock, and what it was made from.
        let mut copy: Option<(ReadFrom, V)> = None;
        loop {
            let mut shard = self.shards[home].lock();
            let Some(from) = shard.read_from(key) else {
                return Ok(false);
            };
            let unique = matches!(
                shard.get(key).map(|slot| &slot.held),
                Some(Held::Memory { value, .. }) if Arc::strong_count(value) == 1
            );
            let (mut private, taken) = match copy.take() {
                Some((made_from, private)) if made_from == from => (private, None),
                _ if unique => {
                    let Some(old) = shard.remove(key) else {
                        return Ok(false);
                    };
                    let Held::Memory { value, weight } = old.held else {
                        unreachable!("checked to be in memory")
                    };
                    self.release(weight);
                    match Arc::try_unwrap(value) {
                        Ok(owned) => (owned, Some((old.stored, weight, old.version))),
                        Err(_) => unreachable!("checked to be unique under the lock"),
                    }
                }
                _ => {
                    let live = shard.get(key).and_then(Slot::live_value);
                    drop(shard);
                    copy = Some(match live {
                        Some(value) => (from, self.clone_via_codec(&key_bytes, &value)?),
                        // Read from the stored copy: valid while the key's state is unchanged
                        // (with no slot, while its stored copy is the write read).
                        None => match self.load_current(key, &key_bytes)? {
                            Some((value, read)) => (from.read(read.seq), value),
                            None => continue,
                        },
                    });
                    continue;
                }
            };
            // `f` and the weigher are the user's code: if either panics, the entry keeps its
            // old value (or, when `f` had the only copy, the value as `f` left it).
            let weighed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                f(&mut private);
                self.weigh(key, &private)
            }));
            let weighed = match weighed {
                Ok(Ok(weight)) => Ok(weight),
                Ok(Err(e)) => Err(Ok(e)),
                Err(panic) => Err(Err(panic)),
            };
            let weight = match weighed {
                Ok(weight) => weight,
                Err(failure) => {
                    if let Some((stored, weight, version)) = taken {
                        self.put_back(&mut shard, key, private, weight, stored, version);
                    }
                    match failure {
                        Ok(e) => return Err(e),
                        Err(panic) => std::panic::resume_unwind(panic),
                    }
                }
            };
            let stored = match taken {
                Some((Stored::Nothing, ..)) if shard.stored_at(key).is_none() => Stored::Nothing,
                Some(_) => Stored::Stale,
                None => shard.stored_after_replace(key),
            };
            let value = Arc::new(private);
            let new_version = self.next_version();
            // Room is made without waiting (the shard is locked); when there is none, the new
            // value leaves memory at once through the queue, like an evicted one.
            let in_memory = weight <= self.budget && self.reserve_now(weight);
            let held = if in_memory {
                Held::Memory {
                    value: value.clone(),
                    weight,
                }
            } else {
                // Over the allowance only when other writes are in flight: one value per
                // updating thread at most, and waited for below.
                if !self.admit_in_flight(weight) {
                    self.in_flight.fetch_add(weight, Ordering::AcqRel);
                }
                Held::Writing {
                    value: value.clone(),
                    weight,
                }
            };
            let slot = Slot {
                held,
                stored,
                version: new_version,
            };
            self.put_slot(&mut shard, key.clone(), slot);
            let last = if in_memory {
                0
            } else {
                self.enqueue(Job::Put {
                    key: key.clone(),
                    value,
                    weight,
                    version: new_version,
                    evicted: true,
                })
            };
            drop(shard);
            if last > 0 && self.spills_synchronously() {
                self.settle(last);
                self.take_deferred()?;
            } else if last > 0 {
                // Backpressure: wait until the writer is back under the allowance.
                while self.in_flight.load(Ordering::Acquire) > self.allowance {
                    self.take_deferred()?;
                    self.wait_for_progress();
                }
            }
            return Ok(true);
        }
    }

    /// Reserves `weight` bytes if they fit under the budget right now.
    fn reserve_now(&self, weight: u64) -> bool {
        let mut held = self.memory_bytes.load(Ordering::Acquire);
        while held + weight <= self.budget {
            match self.memory_bytes.compare_exchange(
                held,
                held + weight,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => held = now,
            }
        }
        false
    }

    /// Puts a value taken out for `update` back, over budget if need be.
    fn put_back(
        &self,
        shard: &mut MemoryTier<K, V>,
        key: &K,
        value: V,
        weight: u64,
        stored: Stored,
        version: u64,
    ) {
        self.memory_bytes.fetch_add(weight, Ordering::AcqRel);
        shard.put(
            key.clone(),
            Slot {
                held: Held::Memory {
                    value: Arc::new(value),
                    weight,
                },
                stored,
                version,
            },
        );
    }

    pub(crate) fn remove(&self, key: &K) -> Result<bool> {
        self.refuse_if_read_only()?;
        self.take_deferred()?;
        let id = {
            let mut shard = self.shards[self.shard_of(key)].lock();
            if !shard.exists(key) {
                return Ok(false);
            }
            if shard.stored_after_replace(key) == Stored::Nothing {
                // Never written: the removal is memory's alone.
                if let Some(old) = shard.remove(key) {
                    self.release(old.memory_weight());
                }
                return Ok(true);
            }
            // A tombstone stands in for the stored copy until its removal is done.
            let version = self.next_version();
            let old = shard.put(key.clone(), Slot::removed(version));
            let restore = old.and_then(|old| {
                self.release(old.memory_weight());
                match old.held {
                    Held::Memory { value, weight } | Held::Writing { value, weight } => {
                        Some((value, weight, old.stored))
                    }
                    Held::Disk { .. } | Held::Removed => None,
                }
            });
            self.enqueue(Job::Remove {
                key: key.clone(),
                restore,
                version,
            })
        };
        if self.spills_synchronously() {
            self.settle(id);
            self.take_deferred()?;
        }
        Ok(true)
    }

    /// The value of `key`, computed by `f` and inserted when absent. Concurrent callers for
    /// the same missing key run one `f` between them and all get its value.
    pub(crate) fn get_or_try_insert_with<E, F>(
        &self,
        key: K,
        f: F,
    ) -> std::result::Result<Arc<V>, E>
    where
        E: From<Error>,
        F: FnOnce() -> std::result::Result<V, E>,
    {
        let mut f = Some(f);
        loop {
            if let Some(value) = self.get(&key)? {
                return Ok(value);
            }
            match self.computing.claim(&key) {
                Claim::Lead(_leader) => {
                    if let Some(value) = self.get(&key)? {
                        return Ok(value);
                    }
                    let compute = f
                        .take()
                        .expect("f runs at most once: only a leader runs it");
                    let value = Arc::new(compute()?);
                    self.insert_arc(key, value.clone())?;
                    return Ok(value);
                }
                Claim::Wait(slot) => slot.wait(),
            }
        }
    }

    pub(crate) fn contains_key(&self, key: &K) -> bool {
        self.shards[self.shard_of(key)].lock().exists(key)
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    pub(crate) fn keys(&self) -> Vec<K> {
        let mut keys = Vec::new();
        for shard in self.shards.iter() {
            keys.extend(shard.lock().keys().cloned());
        }
        keys
    }

    /// Writes every value without a current disk copy (keeping it in memory), waits for every
    /// queued write, compacts, then makes the disk tier durable. Only reports errors for
    /// temporary and read-only chests.
    pub(crate) fn flush(&self) -> Result<()> {
        self.take_deferred()?;
        match self.mode {
            DiskMode::ReadOnly => return Ok(()),
            DiskMode::Temp => {
                // Nothing to make durable; the queued writes are waited for.
                let last = self.queue.lock().enqueued;
                self.settle(last);
                return self.take_deferred();
            }
            DiskMode::Persistent => {}
        }
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            let mut queued = Vec::new();
            for (key, slot) in shard.iter() {
                if let Held::Memory { value, weight } = &slot.held
                    && slot.stored != Stored::Current
                {
                    self.enqueue(Job::Put {
                        key: key.clone(),
                        value: value.clone(),
                        weight: *weight,
                        version: slot.version,
                        evicted: false,
                    });
                    if slot.stored == Stored::Nothing {
                        queued.push(key.clone());
                    }
                }
            }
            for key in &queued {
                shard.note_disk_may_hold(key);
            }
        }
        let last = self.queue.lock().enqueued;
        self.settle(last);
        self.take_deferred()?;
        let mut engine = self.engine.lock();
        self.compact(&mut engine)?;
        if !engine.disk.needs_sync() {
            return Ok(());
        }
        let live: u64 = self
            .shards
            .iter()
            .map(|s| s.lock().stored_count() as u64)
            .sum();
        if engine.disk.index_is_bloated(live) {
            let puts = self.stored_copies()?;
            engine.disk.sync(Some(&puts))
        } else {
            engine.disk.sync(None)
        }
    }

    /// Checks every stored copy and segment.
    pub(crate) fn verify(&self) -> Result<crate::VerifyReport> {
        let engine = self.engine.lock();
        let copies = self.stored_copies()?;
        Ok(engine.disk.verify(&copies))
    }

    /// Every key's stored copy, for an index rewrite or a check.
    fn stored_copies(&self) -> Result<Vec<(Vec<u8>, DiskLoc)>> {
        let mut puts = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock();
            puts.reserve(shard.stored_count());
            for (key, loc) in shard.stored() {
                puts.push((self.encode_key(key)?, loc));
            }
        }
        Ok(puts)
    }

    /// Compacts segments after a write; a failure leaves everything as it was and is counted
    /// (flush retries and reports it).
    fn compact_quietly(&self, engine: &mut Engine) {
        if self.compact(engine).is_err() {
            bump(&self.counters.failed_compactions, 1);
        }
    }

    /// Rewrites every sealed segment whose live bytes fell under half: the records that some
    /// key's stored copy still is are copied into the active segment, the copies are made
    /// durable (one sync for all of them), and the old files removed. Readers holding an old
    /// file keep reading it.
    fn compact(&self, engine: &mut Engine) -> Result<()> {
        let candidates = engine.disk.compaction_candidates();
        if candidates.is_empty() {
            return Ok(());
        }
        // One pass over the stored places finds the records of every candidate.
        let mut movers: Vec<(K, DiskLoc)> = Vec::new();
        for shard in self.shards.iter() {
            movers.extend(
                shard
                    .lock()
                    .stored()
                    .filter(|(_, loc)| matches!(loc.place, Place::Segment(p) if candidates.contains(&p.segment)))
                    .map(|(k, loc)| (k.clone(), loc)),
            );
        }
        let mut moved = Vec::with_capacity(movers.len());
        let mut key_bytes = Vec::new();
        let staged = (|| {
            for (key, loc) in &movers {
                self.encode_key_into(key, &mut key_bytes)?;
                moved.push((key.clone(), engine.disk.copy_record(&key_bytes, *loc)?));
            }
            engine.disk.commit_staged()
        })();
        if let Err(e) = staged {
            engine.disk.discard_staged();
            return Err(e);
        }
        // Readers get the new segments' handles before any place names them.
        self.refresh_files(&engine.disk);
        // Under `engine` no job changes a stored copy meanwhile.
        for (key, loc) in moved {
            self.shards[self.shard_of(&key)]
                .lock()
                .set_stored(&key, Some(loc));
        }
        // The old segments may hold the only durable copy of flushed values: sync the new
        // copies and their index records before they go.
        engine.disk.sync(None)?;
        for id in candidates {
            engine.disk.remove_segment(id)?;
            bump(&self.counters.compactions, 1);
        }
        self.refresh_files(&engine.disk);
        Ok(())
    }

    /// Brings the readers' segment handles up to date with the disk tier.
    fn refresh_files(&self, disk: &DiskTier) {
        let generation = disk.segment_generation();
        if self.files.read().generation == generation {
            return;
        }
        let mut files = self.files.write();
        files.handles = disk.segment_handles().into_iter().collect();
        files.generation = generation;
    }

    /// Releases the disk tier's lock.
    pub(crate) fn release_lock(&self) -> Result<()> {
        self.engine.lock().disk.release()
    }

    pub(crate) fn is_writable_persistent(&self) -> bool {
        self.mode == DiskMode::Persistent
    }

    pub(crate) fn stats(&self) -> Stats {
        let (mut entries, mut in_memory, mut on_disk) = (0, 0, 0);
        for shard in self.shards.iter() {
            let shard = shard.lock();
            entries += shard.len() as u64;
            in_memory += shard.in_memory() as u64;
            on_disk += shard.on_disk();
        }
        // The chest-wide count (shards summed one after the other would not be a snapshot).
        let memory_bytes = self.memory_bytes.load(Ordering::Acquire);
        let engine = self.engine.lock();
        let disk = &engine.disk;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            entries,
            in_memory,
            on_disk,
            memory_bytes,
            budget_bytes: self.budget,
            in_flight_bytes: self.in_flight.load(Ordering::Acquire),
            disk_bytes: disk.disk_bytes(),
            live_disk_bytes: disk.live_disk_bytes(),
            index_bytes: disk.index_bytes(),
            files: disk.own_files(),
            segments: disk.segment_count(),
            spills: get(&self.counters.spills),
            spill_bytes: get(&self.counters.spill_bytes),
            loads: get(&self.counters.loads),
            load_bytes: get(&self.counters.load_bytes),
            memory_hits: get(&self.counters.memory_hits),
            shared_hits: get(&self.counters.shared_hits),
            failed_spills: get(&self.counters.failed_spills),
            compactions: get(&self.counters.compactions),
            failed_compactions: get(&self.counters.failed_compactions),
            mended_on_open: get(&self.counters.mended_on_open),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::Chest;

    /// Slots held over all shards (keys on disk only have none).
    fn slots(chest: &Chest<u32, Vec<u8>>) -> usize {
        chest
            .core
            .shards
            .iter()
            .map(|s| s.lock().iter().count())
            .sum()
    }

    #[test]
    fn in_flight_room_is_granted_up_to_the_allowance_and_one_value_may_exceed_it_alone() {
        use std::sync::atomic::Ordering;
        let chest: Chest<u32, Vec<u8>> = Chest::builder()
            .budget(1 << 20)
            .in_flight_bytes(1000)
            .open()
            .unwrap();
        let core = &chest.core;
        // Nothing in flight: as much as is wanted, up to the allowance.
        assert_eq!(core.take_in_flight(100, 600), Some(600));
        assert_eq!(
            core.take_in_flight(100, 600),
            Some(400),
            "the rest of the allowance"
        );
        assert_eq!(core.take_in_flight(1, 1), None, "full");
        core.in_flight.fetch_sub(1000, Ordering::AcqRel);
        // A value heavier than the allowance goes alone, and only alone.
        assert_eq!(core.take_in_flight(5000, 9000), Some(5000));
        assert_eq!(core.take_in_flight(1, 1), None);
        core.in_flight.fetch_sub(5000, Ordering::AcqRel);
        assert_eq!(core.take_in_flight(10, 5), Some(10), "at least the minimum");
        assert!(!core.admit_in_flight(991));
        assert!(core.admit_in_flight(990));
        core.in_flight.fetch_sub(1000, Ordering::AcqRel);
    }

    #[test]
    fn eviction_gives_back_the_in_flight_room_it_took_ahead() {
        let chest: Chest<u32, Vec<u8>> = Chest::builder()
            .budget(64 << 10)
            .in_flight_bytes(16 << 10)
            .open()
            .unwrap();
        for k in 0..2000 {
            chest.insert(k, vec![k as u8; 200]).unwrap();
            let s = chest.stats();
            assert!(s.memory_bytes <= s.budget_bytes, "{s:?}");
            assert!(s.in_flight_bytes <= 16 << 10, "{s:?}");
        }
        chest.flush().unwrap();
        assert_eq!(
            chest.stats().in_flight_bytes,
            0,
            "every byte taken came back"
        );
        for k in 0..2000 {
            assert_eq!(chest.get(&k).unwrap().unwrap()[0], k as u8);
        }
    }

    #[test]
    fn keys_on_disk_only_keep_no_slot_and_a_tombstone_lasts_until_its_removal_is_written() {
        let chest: Chest<u32, Vec<u8>> = Chest::builder()
            .budget(4096)
            .synchronous_spill(true)
            .open()
            .unwrap();
        // Each value weighs about 100 bytes: at most about 41 fit in memory.
        for k in 0..500 {
            chest.insert(k, vec![k as u8; 100]).unwrap();
        }
        assert!(slots(&chest) <= 41, "{} slots", slots(&chest));
        assert_eq!(chest.len(), 500);
        assert_eq!(chest.stats().on_disk as usize, 500 - slots(&chest));
        for k in (0..500).rev() {
            assert_eq!(chest.get(&k).unwrap().unwrap()[0], k as u8);
        }
        assert!(
            slots(&chest) <= 41,
            "reading brings no slot beyond the budget"
        );
        // Overwrites and removals of keys on disk only.
        for k in 0..100 {
            assert!(chest.update(&k, |v| v[0] = 7).unwrap());
            assert!(chest.remove(&(k + 100)).unwrap());
            assert!(!chest.contains_key(&(k + 100)));
        }
        assert_eq!(chest.len(), 400);
        chest.flush().unwrap();
        for k in 200..500 {
            assert!(chest.remove(&k).unwrap());
        }
        chest.flush().unwrap();
        let s = chest.stats();
        assert_eq!((chest.len(), s.entries), (100, 100));
        assert!(
            slots(&chest) <= 41,
            "tombstones go once their removal is written"
        );
        for k in 0..100 {
            assert_eq!(chest.get(&k).unwrap().unwrap()[0], 7);
        }
        let mut keys = chest.keys();
        keys.sort_unstable();
        assert_eq!(keys, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn a_chest_large_enough_to_open_on_two_threads_reopens_every_key_in_its_shard() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c");
        let n = super::PARALLEL_OPEN_FROM as u32 + 1234;
        let chest: Chest<u32, Vec<u8>> =
            Chest::builder().path(&path).budget(1 << 16).open().unwrap();
        for k in 0..n {
            chest.insert(k, vec![k as u8; 4]).unwrap();
        }
        chest.remove(&7).unwrap();
        chest.close().unwrap();
        let chest: Chest<u32, Vec<u8>> =
            Chest::builder().path(&path).budget(1 << 16).open().unwrap();
        assert_eq!(chest.len(), n as usize - 1);
        assert_eq!(slots(&chest), 0, "nothing is in memory after opening");
        // Every key is found through its own shard.
        for k in (0..n).filter(|k| *k != 7) {
            assert!(chest.contains_key(&k), "{k}");
        }
        assert!(!chest.contains_key(&7));
        for k in [0, 1, n / 2, n - 1] {
            assert_eq!(*chest.get(&k).unwrap().unwrap(), vec![k as u8; 4]);
        }
    }
}
