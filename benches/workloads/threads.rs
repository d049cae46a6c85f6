//! T1, the targets of the concurrency issue, in one child process per eviction policy (the
//! system `spillchest` runs the default policy, `spillchest-lru` LRU; `spillchest-sync` runs
//! the default policy with synchronous spilling, and only the insert runs: there every insert
//! writes what it evicts itself, so the runs show how the chest's own locking scales, without
//! the background writer taking a share of the two cores):
//!
//! - **Insert scaling**: W1's inserts (same values, same budget) into one shared chest from one
//!   thread and from two threads (keys split between them), repeated with the two kinds
//!   interleaved (1, 2, 2, 1, 1, 2, ...) so that noise from other work on the machine hits both;
//!   the parent reports medians and their ratio. CPU use comes from each thread's
//!   `schedstat` (nanoseconds): the inserting threads' time on a CPU and waiting for one, and
//!   the background writer's. The synchronous system also runs the two reference stores of
//!   `reference.rs` right after each of its runs, with as many threads: what a store with a
//!   global budget and a global (or a per-thread) eviction order gets from the same machine
//!   at the same moment.
//! - **Get latency while spilling**: one thread inserts W1's keys over and over (four times the
//!   budget per pass, so it spills continuously) while this thread gets a small hot set of
//!   values held in memory and times every get; the same without the spilling thread for
//!   reference. Gets run back to back ("loop") and paced by a short sleep ("paced", so the
//!   samples fall at times independent of what the other threads are doing). The hot set is
//!   kept in use while the spilling thread gets over the budget, so the policy keeps it in
//!   memory (LRU: used more recently than anything else; S3-FIFO: used again, so in the main
//!   queue and going round again).
//!   One more scenario leaves it unused meanwhile, so it is evicted before the timed gets: it
//!   shows whether gets bring hot values back into memory while another thread spills.

use std::path::Path;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use spillchest::{Chest, Policy, Stats};

use crate::common::{
    Report, RunConfig, ValuePool, process_cpu_secs, secs, thread_sched_secs, threads_run_secs,
};
use crate::drivers::{w1_budget, w1_sizes};
use crate::reference::{self, Order};
use crate::stores::{BenchResult, SpillStore, encode};

/// The chest T1 measures: the one W1 uses.
type ByteChest = Chest<u64, Vec<u8>>;

/// The start of the name of the chest's background writer thread, as `/proc` shows it.
const WRITER_THREAD: &str = "spillchest-wri";

/// Thread counts compared by the insert runs.
const THREAD_COUNTS: [usize; 2] = [1, 2];

/// Hot keys live above every key the spilling thread writes.
const HOT_KEY_BASE: u64 = 1 << 40;

/// The most hot keys (64 of W1's 16 KiB values: 1 MiB, 1.3% of the budget).
const HOT_KEYS_MAX: usize = 64;

/// What the paced getter sleeps between gets (with the kernel's rounding, a get every 100-130 µs).
const PACE: Duration = Duration::from_micros(20);

/// Runs T1 in `cfg.dir`, every chest with `policy`, spilling synchronously when `synchronous`
/// (then only the insert runs).
pub fn run(cfg: &RunConfig, r: &Report, policy: Policy, synchronous: bool) -> BenchResult<()> {
    let (n, len) = w1_sizes(cfg);
    let budget = w1_budget(cfg);
    let values = ValuePool::new(len, 1);
    let bytes = encode(&values.value(0))?.len() as u64;
    r.metric("values", n as f64);
    r.metric("value_bytes", bytes as f64);
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg")
        && let Some(one_minute) = load.split_whitespace().next()
    {
        r.note(&format!(
            "load average (1 min) when T1 started: {one_minute}"
        ));
    }
    let setup = Setup {
        cfg,
        values,
        n,
        bytes,
        budget,
        policy,
        synchronous,
    };
    insert_scaling(&setup, r)?;
    if synchronous {
        return Ok(());
    }
    for scenario in &SCENARIOS {
        get_latency(&setup, r, scenario)?;
    }
    Ok(())
}

/// What every part of T1 works with: W1's values and sizes, the chest's budget and policy.
struct Setup<'a> {
    cfg: &'a RunConfig,
    values: ValuePool,
    /// Values in W1.
    n: usize,
    /// Encoded bytes of one value.
    bytes: u64,
    budget: u64,
    policy: Policy,
    /// Evicting threads write what they evict themselves (no background writer).
    synchronous: bool,
}

impl Setup<'_> {
    /// A fresh chest at `dir` as this setup asks for.
    fn open(&self, dir: &Path) -> BenchResult<ByteChest> {
        Ok(
            SpillStore::<Vec<u8>>::chest_builder(dir, self.budget, self.policy)
                .synchronous_spill(self.synchronous)
                .open()?,
        )
    }
}

/// One way of timing gets of the hot set.
struct Scenario {
    /// Prefix of the metrics it reports.
    name: &'static str,
    /// Another thread inserts far over the budget throughout.
    spilling: bool,
    /// A short sleep after each get.
    paced: bool,
    /// The hot set is used while the spilling thread gets over the budget (else it is evicted
    /// before the timed gets begin).
    kept_warm: bool,
}

/// The scenarios, in run order (the parent's table follows the same names).
const SCENARIOS: [Scenario; 5] = [
    Scenario {
        name: "lat_alone_loop",
        spilling: false,
        paced: false,
        kept_warm: true,
    },
    Scenario {
        name: "lat_spill_loop",
        spilling: true,
        paced: false,
        kept_warm: true,
    },
    Scenario {
        name: "lat_alone_paced",
        spilling: false,
        paced: true,
        kept_warm: true,
    },
    Scenario {
        name: "lat_spill_paced",
        spilling: true,
        paced: true,
        kept_warm: true,
    },
    Scenario {
        name: "lat_spill_evicted",
        spilling: true,
        paced: false,
        kept_warm: false,
    },
];

/// The insert runs: a warm-up, then `reps` runs of each thread count, interleaved.
fn insert_scaling(setup: &Setup, r: &Report) -> BenchResult<()> {
    let Setup { cfg, n, bytes, .. } = *setup;
    let reps = if cfg.scale < 0.1 { 2 } else { 5 };
    r.metric("insert_reps", reps as f64);
    let dir = cfg.dir.join("inserts");
    // Page cache, allocator and file system warm up on a run nobody reports.
    insert_run(setup, &dir, 1)?;
    for rep in 0..reps {
        let order: Vec<usize> = if rep % 2 == 0 {
            THREAD_COUNTS.to_vec()
        } else {
            THREAD_COUNTS.iter().rev().copied().collect()
        };
        for threads in order {
            let run = insert_run(setup, &dir, threads)?;
            let ops = n as u64;
            r.phase(
                &format!("insert_{threads}t_{rep}"),
                ops,
                ops * bytes,
                run.insert_secs,
            );
            r.phase(
                &format!("durable_{threads}t_{rep}"),
                ops,
                ops * bytes,
                run.insert_secs + run.flush_secs,
            );
            let wall = run.insert_secs.max(1e-9);
            r.metric(
                &format!("cores_insert_{threads}t_{rep}"),
                (run.callers_run_secs + run.writer_run_secs) / wall,
            );
            r.metric(
                &format!("callers_busy_{threads}t_{rep}"),
                run.callers_run_secs / (threads as f64 * wall),
            );
            r.metric(
                &format!("callers_cpu_wait_{threads}t_{rep}"),
                run.callers_wait_secs / (threads as f64 * wall),
            );
            r.metric(
                &format!("cores_flush_{threads}t_{rep}"),
                run.flush_cpu_secs / run.flush_secs.max(1e-9),
            );
            r.metric(
                &format!("writer_insert_{threads}t_{rep}"),
                run.writer_run_secs / wall,
            );
            r.metric(&format!("spills_{threads}t_{rep}"), run.spills as f64);
            if setup.synchronous {
                // The reference stores, right after the chest's run with as many threads.
                for order in [Order::Global, Order::Own] {
                    let secs = reference::insert_run(
                        &setup.values,
                        n,
                        setup.budget,
                        &cfg.dir.join("reference"),
                        threads,
                        order,
                    )?;
                    let tag = order.tag();
                    r.phase(&format!("{tag}_{threads}t_{rep}"), ops, ops * bytes, secs);
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Seconds an inserting thread ran on a CPU and waited for one.
type RunWait = (f64, f64);

/// What one insert run measured.
struct InsertRun {
    /// From the start signal until every inserting thread's last `insert` returned.
    insert_secs: f64,
    /// The `flush` after that (queued writes, the values still only in memory, fsyncs).
    flush_secs: f64,
    /// Seconds the inserting threads (together) ran on a CPU while inserting, and waited for
    /// one in a run queue (from `schedstat`, in nanoseconds).
    callers_run_secs: f64,
    callers_wait_secs: f64,
    /// Seconds the background writer thread ran on a CPU meanwhile.
    writer_run_secs: f64,
    /// CPU seconds the process used in the flush (every thread; 10 ms ticks).
    flush_cpu_secs: f64,
    /// Values the chest wrote to disk, counted after the flush.
    spills: u64,
}

/// Inserts W1's keys `0..n` into a fresh chest from `threads` threads (thread `t` takes the
/// keys equal to `t` modulo `threads`), then flushes.
fn insert_run(setup: &Setup, dir: &Path, threads: usize) -> BenchResult<InsertRun> {
    let Setup { ref values, n, .. } = *setup;
    let _ = std::fs::remove_dir_all(dir);
    let chest = setup.open(dir)?;
    let start = Barrier::new(threads + 1);
    let (insert_secs, callers, writer_run_secs) =
        std::thread::scope(|s| -> BenchResult<(f64, Vec<RunWait>, f64)> {
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    let (chest, start) = (&chest, &start);
                    s.spawn(move || -> BenchResult<RunWait> {
                        start.wait();
                        let (run, wait) = thread_sched_secs();
                        for i in (t..n).step_by(threads) {
                            chest.insert(i as u64, values.value(i as u64))?;
                        }
                        let (run_end, wait_end) = thread_sched_secs();
                        Ok((run_end - run, wait_end - wait))
                    })
                })
                .collect();
            let writer = threads_run_secs(WRITER_THREAD);
            start.wait();
            let t = Instant::now();
            let mut callers = Vec::new();
            for w in workers {
                callers.push(w.join().map_err(|_| "an inserting thread panicked")??);
            }
            Ok((secs(t), callers, threads_run_secs(WRITER_THREAD) - writer))
        })?;
    let cpu = process_cpu_secs();
    let t = Instant::now();
    chest.flush()?;
    let flush_secs = secs(t);
    let flush_cpu_secs = process_cpu_secs() - cpu;
    let stats = chest.stats();
    if stats.entries != n as u64 {
        return Err(format!(
            "{threads} threads inserted {n} keys, the chest has {}",
            stats.entries
        )
        .into());
    }
    chest.close()?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(InsertRun {
        insert_secs,
        flush_secs,
        callers_run_secs: callers.iter().map(|c| c.0).sum(),
        callers_wait_secs: callers.iter().map(|c| c.1).sum(),
        writer_run_secs,
        flush_cpu_secs,
        spills: stats.spills,
    })
}

/// Latencies in nanoseconds, counted in buckets 1/32 of a power of two wide (about 3%), exact
/// below 64 ns; the largest is kept exactly.
struct LatencyHistogram {
    buckets: Vec<u64>,
    count: u64,
    max_ns: u64,
}

/// Sub-buckets per power of two, as a shift.
const SUB_BITS: u32 = 5;

impl LatencyHistogram {
    fn new() -> Self {
        LatencyHistogram {
            buckets: vec![0; Self::index(u64::MAX) + 1],
            count: 0,
            max_ns: 0,
        }
    }

    /// The bucket of `ns`: values below 64 have their own; above, each power of two is split
    /// into 32 by the five bits after the leading one.
    fn index(ns: u64) -> usize {
        if ns < 1 << (SUB_BITS + 1) {
            return ns as usize;
        }
        let exp = 63 - ns.leading_zeros();
        let top = ns >> (exp - SUB_BITS);
        (1 << (SUB_BITS + 1))
            + ((exp - SUB_BITS - 1) as usize) * (1 << SUB_BITS)
            + (top as usize - (1 << SUB_BITS))
    }

    /// The largest value that falls in bucket `index`.
    fn upper_bound(index: usize) -> u64 {
        let direct = 1usize << (SUB_BITS + 1);
        if index < direct {
            return index as u64;
        }
        let exp = (index - direct) as u32 / (1 << SUB_BITS) + SUB_BITS + 1;
        let top = ((index - direct) % (1 << SUB_BITS) + (1 << SUB_BITS)) as u64;
        // In u128: the last bucket's bound is u64::MAX, one below 2^64.
        (((u128::from(top) + 1) << (exp - SUB_BITS)) - 1) as u64
    }

    fn record(&mut self, ns: u64) {
        self.buckets[Self::index(ns)] += 1;
        self.count += 1;
        self.max_ns = self.max_ns.max(ns);
    }

    /// The smallest bucket bound that at least a fraction `q` of the samples are under (never
    /// above the largest sample).
    fn quantile_ns(&self, q: f64) -> u64 {
        let rank = ((q * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.buckets.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::upper_bound(i).min(self.max_ns);
            }
        }
        self.max_ns
    }
}

/// One latency measurement: a fresh chest with a hot set in memory, optionally a thread
/// spilling beside it, and `window` of timed gets of the hot set from this thread.
///
/// The chest's counters are read before the spilling thread starts and after the window, never
/// in between: `stats` waits for the disk tier, which the writer holds through a compaction's
/// fsync, and a getter stuck there would leave the hot set unused. So the share of gets from
/// memory and the disk loads cover the ramp-up's gets as well as the timed ones.
fn get_latency(setup: &Setup, r: &Report, scenario: &Scenario) -> BenchResult<()> {
    let Setup {
        cfg,
        ref values,
        n,
        bytes,
        budget,
        ..
    } = *setup;
    let Scenario {
        name,
        spilling,
        paced,
        kept_warm,
    } = *scenario;
    let window = Duration::from_secs_f64((5.0 * cfg.scale).max(0.25));
    let dir = cfg.dir.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    let chest = setup.open(&dir)?;
    // The hot set: a sixteenth of what the budget holds at most, kept in memory by being used
    // far more often than the spilling thread's values (each of which is used once).
    let hot_count = ((budget / bytes / 16) as usize).clamp(1, HOT_KEYS_MAX);
    let hot: Vec<u64> = (0..hot_count as u64).map(|i| HOT_KEY_BASE + i).collect();
    for &k in &hot {
        chest.insert(k, values.value(k))?;
    }
    for &k in &hot {
        let v = chest.get(&k)?.ok_or("a hot key is missing")?;
        if !values.check(k, &v) {
            return Err("a hot value came back different".into());
        }
    }
    let before = chest.stats();
    let stop = AtomicBool::new(false);
    let inserted = AtomicU64::new(0);
    // The spilling thread has inserted 1.25 budgets' worth before gets are timed.
    let over_budget = (budget / bytes) * 5 / 4;
    let result = std::thread::scope(|s| -> BenchResult<Measured> {
        let spiller = spilling.then(|| {
            let (chest, stop, inserted) = (&chest, &stop, &inserted);
            s.spawn(move || -> BenchResult<()> {
                'passes: loop {
                    for i in 0..n as u64 {
                        if stop.load(Ordering::Relaxed) {
                            break 'passes;
                        }
                        chest.insert(i, values.value(i))?;
                        inserted.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(())
            })
        });
        let measured = (|| {
            let mut warm_gets = 0;
            if spilling {
                let t = Instant::now();
                while inserted.load(Ordering::Relaxed) < over_budget {
                    if spiller.as_ref().is_some_and(|h| h.is_finished()) {
                        return Err("the spilling thread stopped early".into());
                    }
                    if t.elapsed() > cfg.timebox {
                        return Err("the spilling thread did not get over the budget".into());
                    }
                    if kept_warm {
                        // Untimed uses, every millisecond, keep the hot set in memory.
                        for &k in &hot {
                            chest.get(&k)?;
                        }
                        warm_gets += hot.len() as u64;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            let mut m = timed_gets(&chest, &hot, values, window, paced, &inserted)?;
            m.warm_gets = warm_gets;
            Ok(m)
        })();
        let after = chest.stats();
        stop.store(true, Ordering::Relaxed);
        if let Some(h) = spiller {
            h.join().map_err(|_| "the spilling thread panicked")??;
        }
        measured.map(|m| Measured { after, ..m })
    });
    let m = result?;
    let h = &m.histogram;
    r.metric(&format!("{name}_gets"), h.count as f64);
    r.metric(&format!("{name}_secs"), m.secs);
    r.metric(&format!("{name}_hot_keys"), hot_count as f64);
    for (label, q) in [("p50", 0.5), ("p99", 0.99), ("p999", 0.999)] {
        r.metric(&format!("{name}_{label}_ns"), h.quantile_ns(q) as f64);
    }
    r.metric(&format!("{name}_max_ns"), h.max_ns as f64);
    r.metric(&format!("{name}_max_gap_ns"), m.max_gap_ns as f64);
    r.metric(&format!("{name}_warm_gets"), m.warm_gets as f64);
    let all_gets = (h.count + m.warm_gets).max(1) as f64;
    r.metric(
        &format!("{name}_memory_share"),
        (m.after.memory_hits - before.memory_hits) as f64 / all_gets,
    );
    r.metric(
        &format!("{name}_loads"),
        (m.after.loads - before.loads) as f64,
    );
    r.metric(
        &format!("{name}_spills"),
        (m.after.spills - before.spills) as f64,
    );
    r.metric(&format!("{name}_spiller_inserts"), m.spiller_inserts as f64);
    r.metric(&format!("{name}_wrong"), m.wrong as f64);
    chest.close()?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// What a window of timed gets saw.
struct Measured {
    histogram: LatencyHistogram,
    secs: f64,
    /// The longest time from the start of one get to the start of the next: how long the hot
    /// set went unused (a getter the scheduler left waiting longer than values stay in memory
    /// lets the policy evict the hot set legitimately).
    max_gap_ns: u64,
    /// Untimed gets of the ramp-up (counted in the chest's counters too).
    warm_gets: u64,
    /// The chest's counters after the window.
    after: Stats,
    /// Inserts the spilling thread made during the window.
    spiller_inserts: u64,
    /// Gets that returned no value or a different one (checked outside the timing).
    wrong: u64,
}

/// Gets the hot keys in turn for `window`, timing each `get` alone (the value's check and its
/// release happen after the second clock read).
fn timed_gets(
    chest: &ByteChest,
    hot: &[u64],
    values: &ValuePool,
    window: Duration,
    paced: bool,
    inserted: &AtomicU64,
) -> BenchResult<Measured> {
    let mut histogram = LatencyHistogram::new();
    let mut wrong = 0;
    let mut max_gap_ns = 0;
    let inserted_before = inserted.load(Ordering::Relaxed);
    let value_len = values.value(0).len();
    let start = Instant::now();
    let mut previous = start;
    let mut i = 0usize;
    loop {
        let key = hot[i % hot.len()];
        let t = Instant::now();
        let got = chest.get(&key);
        let done = Instant::now();
        histogram.record((done - t).as_nanos() as u64);
        max_gap_ns = max_gap_ns.max((t - previous).as_nanos() as u64);
        previous = t;
        // A full comparison of every value would dominate the loop: the first round checks
        // every byte, later ones the length and the key written into the first bytes.
        let ok = match &got {
            Ok(Some(v)) if i < hot.len() => values.check(key, v),
            Ok(Some(v)) => v.len() == value_len && v[..8] == key.to_le_bytes(),
            Ok(None) => false,
            Err(_) => false,
        };
        wrong += u64::from(!ok);
        got?;
        i += 1;
        if done - start >= window {
            break;
        }
        if paced {
            std::thread::sleep(PACE);
        }
    }
    Ok(Measured {
        histogram,
        secs: secs(start),
        max_gap_ns,
        warm_gets: 0,
        after: Stats::default(),
        spiller_inserts: inserted.load(Ordering::Relaxed) - inserted_before,
        wrong,
    })
}
