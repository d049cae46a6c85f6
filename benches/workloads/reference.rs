//! T1's reference stores: the least a store with a global memory budget must do for W1's
//! inserts, run beside the chest's insert runs so that both meet the machine in the same state.
//!
//! A reference store keeps values in 16 shards of `Mutex<HashMap>` (keys by hash, as the chest
//! does) under one budget counted by an atomic; an insert over the budget takes the oldest
//! values out down to a sixteenth of the budget below it (the chest's slack) and appends
//! each, with an xxh3 checksum, to a 1 MiB buffer written to the inserting thread's own file
//! (the chest's batch size). Nothing else: no index, no versions, no record headers, no
//! cancellation, no ordering of writes between threads. Two variants differ in one thing:
//!
//! - **global order**: one FIFO of every key, under a mutex: the oldest value in the store
//!   leaves first, whichever thread inserted it (the chest's eviction order is chest-wide
//!   like this);
//! - **own order**: each thread keeps a FIFO of the keys it inserted and evicts only those:
//!   threads never read or free each other's values, only the shards and the budget are
//!   shared.
//!
//! The gap between the two is what a chest-wide order costs by itself on this machine.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::Instant;

use crate::common::ValuePool;
use crate::stores::BenchResult;

/// Shards of the value map, as the chest's default.
const SHARDS: usize = 16;

/// Bytes gathered before a write, as the chest's batch.
const WRITE_BYTES: usize = 1 << 20;

/// Which values an evicting thread takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// The oldest in the store.
    Global,
    /// The oldest the thread inserted itself.
    Own,
}

impl Order {
    /// The name used in metric and table labels.
    pub fn name(self) -> &'static str {
        match self {
            Order::Global => "global order",
            Order::Own => "own order",
        }
    }

    /// The metric prefix.
    pub fn tag(self) -> &'static str {
        match self {
            Order::Global => "ref_global",
            Order::Own => "ref_own",
        }
    }
}

type Shard = Mutex<HashMap<u64, Vec<u8>, foldhash::fast::RandomState>>;

/// The state the inserting threads share.
struct Store {
    shards: Vec<Shard>,
    /// Bytes of the values held.
    held: AtomicU64,
    budget: u64,
    /// The FIFO of every key, for [`Order::Global`].
    fifo: Mutex<VecDeque<u64>>,
}

/// One inserting thread's own state.
struct Writer {
    file: File,
    buf: Vec<u8>,
    /// The keys this thread inserted, oldest first, for [`Order::Own`].
    fifo: VecDeque<u64>,
}

impl Store {
    fn shard(&self, key: u64) -> &Shard {
        // The top four bits of a multiplicative hash: one of 16 shards.
        &self.shards[(key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 60) as usize]
    }

    fn insert(&self, order: Order, w: &mut Writer, key: u64, value: Vec<u8>) -> BenchResult<()> {
        let weight = value.len() as u64;
        self.shard(key)
            .lock()
            .map_err(|_| "poisoned")?
            .insert(key, value);
        match order {
            Order::Global => self.fifo.lock().map_err(|_| "poisoned")?.push_back(key),
            Order::Own => w.fifo.push_back(key),
        }
        let held = self.held.fetch_add(weight, Ordering::AcqRel) + weight;
        if held > self.budget {
            let slack = (self.budget / 16).min(8 << 20);
            self.evict(order, w, held + slack - self.budget)?;
        }
        Ok(())
    }

    /// Takes at least `need` bytes of the oldest values out and writes them.
    fn evict(&self, order: Order, w: &mut Writer, need: u64) -> BenchResult<()> {
        let mut freed = 0;
        while freed < need {
            let key = match order {
                Order::Global => self.fifo.lock().map_err(|_| "poisoned")?.pop_front(),
                Order::Own => w.fifo.pop_front(),
            };
            let Some(key) = key else { break };
            let Some(value) = self.shard(key).lock().map_err(|_| "poisoned")?.remove(&key) else {
                continue;
            };
            freed += value.len() as u64;
            let sum = xxhash_rust::xxh3::xxh3_64(&value);
            w.buf.extend_from_slice(&sum.to_le_bytes());
            w.buf.extend_from_slice(&value);
            if w.buf.len() >= WRITE_BYTES {
                w.file.write_all(&w.buf)?;
                w.buf.clear();
            }
        }
        w.file.write_all(&w.buf)?;
        w.buf.clear();
        self.held.fetch_sub(freed, Ordering::AcqRel);
        Ok(())
    }
}

/// Inserts W1's keys `0..n` (thread `t` the keys equal to `t` modulo `threads`) into a fresh
/// reference store in `dir`; returns the seconds from the start signal until every thread's
/// last insert returned.
pub fn insert_run(
    values: &ValuePool,
    n: usize,
    budget: u64,
    dir: &Path,
    threads: usize,
    order: Order,
) -> BenchResult<f64> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let store = Store {
        shards: (0..SHARDS)
            .map(|_| Mutex::new(HashMap::with_hasher(Default::default())))
            .collect(),
        held: AtomicU64::new(0),
        budget,
        fifo: Mutex::new(VecDeque::new()),
    };
    let start = Barrier::new(threads + 1);
    let secs = std::thread::scope(|s| -> BenchResult<f64> {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (store, start) = (&store, &start);
                let file = File::create(dir.join(format!("thread-{t}")));
                s.spawn(move || -> BenchResult<()> {
                    let mut w = Writer {
                        file: file?,
                        buf: Vec::with_capacity(2 * WRITE_BYTES),
                        fifo: VecDeque::new(),
                    };
                    start.wait();
                    for i in (t..n).step_by(threads) {
                        store.insert(order, &mut w, i as u64, values.value(i as u64))?;
                    }
                    Ok(())
                })
            })
            .collect();
        start.wait();
        let t = Instant::now();
        for w in workers {
            w.join().map_err(|_| "a reference thread panicked")??;
        }
        Ok(t.elapsed().as_secs_f64())
    })?;
    let held: usize = store
        .shards
        .iter()
        .map(|s| s.lock().map_or(0, |m| m.len()))
        .sum();
    let written: u64 = (0..threads)
        .map(|t| std::fs::metadata(dir.join(format!("thread-{t}"))).map_or(0, |m| m.len()))
        .sum();
    let written_values = written / (values.value(0).len() as u64 + 8);
    if held as u64 + written_values != n as u64 {
        return Err(format!(
            "reference store ({}) lost values: {held} held, {written_values} written of {n}",
            order.name()
        )
        .into());
    }
    drop(store);
    let _ = std::fs::remove_dir_all(dir);
    Ok(secs)
}
