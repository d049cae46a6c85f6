//! The workloads W1 to W5 of PRODUCT.md, written once against [`KvStore`].

use std::time::Instant;

use crate::common::{Report, RunConfig, SplitMix, TIMEBOX_STRIDE, ValuePool, Zipf, secs};
use crate::stores::{BenchResult, KvStore, MokaStore, encode};

/// How a workload makes and checks its values.
pub trait ValueGen<V> {
    /// Value number `i`.
    fn make(&self, i: u64) -> V;
    /// True when `v` is value number `i`.
    fn check(&self, i: u64, v: &V) -> bool;
}

impl ValueGen<Vec<u8>> for ValuePool {
    fn make(&self, i: u64) -> Vec<u8> {
        self.value(i)
    }
    fn check(&self, i: u64, v: &Vec<u8>) -> bool {
        ValuePool::check(self, i, v)
    }
}

/// `Vec<f64>` arrays: one random base array, value `i` has `i` as its first element.
#[derive(Debug)]
pub struct ArrayGen {
    base: Vec<f64>,
}

impl ArrayGen {
    /// Arrays of `len` floats.
    pub fn new(len: usize) -> Self {
        let mut rng = SplitMix::new(3);
        ArrayGen {
            base: (0..len.max(1)).map(|_| rng.unit()).collect(),
        }
    }
}

impl ValueGen<Vec<f64>> for ArrayGen {
    fn make(&self, i: u64) -> Vec<f64> {
        let mut v = self.base.clone();
        v[0] = i as f64;
        v
    }
    fn check(&self, i: u64, v: &Vec<f64>) -> bool {
        v.len() == self.base.len() && v[0] == i as f64 && v[1..] == self.base[1..]
    }
}

/// Inserts keys `0..n` in order, within the time box; returns how many went in.
fn insert_all<V>(
    store: &mut dyn KvStore<V>,
    values: &dyn ValueGen<V>,
    n: usize,
    value_bytes: u64,
    cfg: &RunConfig,
    r: &Report,
) -> BenchResult<usize> {
    let t = Instant::now();
    let mut done = n;
    for i in 0..n {
        if i % TIMEBOX_STRIDE == 0 && t.elapsed() > cfg.timebox {
            done = i;
            r.note(&format!(
                "insert stopped by the {} s time box after {i} of {n} values",
                cfg.timebox.as_secs()
            ));
            r.metric("capped_at", i as f64);
            break;
        }
        store.insert(i as u64, values.make(i as u64))?;
    }
    let insert_secs = secs(t);
    r.phase(
        "insert",
        done as u64,
        done as u64 * value_bytes,
        insert_secs,
    );
    if !store.durable() {
        return Ok(done);
    }
    let t = Instant::now();
    store.flush()?;
    let flush_secs = secs(t);
    r.phase("flush", 1, 0, flush_secs);
    r.phase(
        "insert_durable",
        done as u64,
        done as u64 * value_bytes,
        insert_secs + flush_secs,
    );
    Ok(done)
}

/// Gets each key of `keys` and checks it; counts the keys found.
fn read_keys<V>(
    store: &mut dyn KvStore<V>,
    values: &dyn ValueGen<V>,
    keys: &[usize],
    value_bytes: u64,
    phase: &str,
    cfg: &RunConfig,
    r: &Report,
) -> BenchResult<u64> {
    let before = store.served_from_memory();
    let t = Instant::now();
    let mut found = 0u64;
    let mut wrong = 0u64;
    let mut done = keys.len();
    for (n, &k) in keys.iter().enumerate() {
        if n % TIMEBOX_STRIDE == 0 && t.elapsed() > cfg.timebox {
            done = n;
            r.note(&format!(
                "{phase} stopped by the {} s time box after {n} of {} gets",
                cfg.timebox.as_secs(),
                keys.len()
            ));
            break;
        }
        let hit = store.get_with(k as u64, &mut |v| {
            if !values.check(k as u64, v) {
                wrong += 1;
            }
        })?;
        found += hit as u64;
    }
    r.phase(phase, done as u64, found * value_bytes, secs(t));
    r.metric(&format!("{phase}_found"), found as f64);
    if done as u64 > found {
        r.metric(&format!("{phase}_missing"), (done as u64 - found) as f64);
    }
    if wrong > 0 {
        r.metric(&format!("{phase}_wrong"), wrong as f64);
        r.note(&format!("{phase}: {wrong} values came back different"));
    }
    if let (Some(a), Some(b)) = (before, store.served_from_memory()) {
        r.metric(
            &format!("{phase}_memory_share"),
            (b - a) as f64 / done.max(1) as f64,
        );
    }
    Ok(found)
}

/// The encoded size of value 0 (every value of a workload has the same size).
fn encoded_len<V: serde::Serialize + 'static>(values: &dyn ValueGen<V>) -> BenchResult<u64> {
    Ok(encode(&values.make(0))?.len() as u64)
}

/// Sizes of W1 (and W5, over the same keys).
pub fn w1_sizes(cfg: &RunConfig) -> (usize, usize) {
    (cfg.scaled(20_000, 200), 16 << 10)
}

/// W1 spill stream: insert all, read all in random order, re-read a hot 10% five times.
pub fn w1(store: &mut dyn KvStore<Vec<u8>>, cfg: &RunConfig, r: &Report) -> BenchResult<()> {
    let (n, len) = w1_sizes(cfg);
    let values = ValuePool::new(len, 1);
    let bytes = encoded_len(&values)?;
    let n = insert_all(store, &values, n, bytes, cfg, r)?;
    let mut rng = SplitMix::new(11);
    let order = rng.permutation(n);
    read_keys(store, &values, &order, bytes, "read_all", cfg, r)?;
    let hot: Vec<usize> = rng.permutation(n)[..(n / 10).max(1)].to_vec();
    let mut reads = Vec::with_capacity(hot.len() * 5);
    for _ in 0..5 {
        for i in rng.permutation(hot.len()) {
            reads.push(hot[i]);
        }
    }
    read_keys(store, &values, &reads, bytes, "hot_reread", cfg, r)?;
    store.report(r);
    Ok(())
}

/// W1's budget: a quarter of the values' bytes.
pub fn w1_budget(cfg: &RunConfig) -> u64 {
    let (n, len) = w1_sizes(cfg);
    (n * len / 4) as u64
}

/// Sizes of W2: values, value length, budget.
pub fn w2_sizes(cfg: &RunConfig) -> (usize, usize, u64) {
    let n = cfg.scaled(1_000_000, 1_000);
    let budget = ((16u64 << 20) as f64 * cfg.scale).max(16.0 * 1024.0) as u64;
    (n, 100, budget)
}

/// W2 many small: insert, random gets, reopen (and get one value).
pub fn w2(store: &mut dyn KvStore<Vec<u8>>, cfg: &RunConfig, r: &Report) -> BenchResult<()> {
    let (n, len, _) = w2_sizes(cfg);
    let values = ValuePool::new(len, 2);
    let bytes = encoded_len(&values)?;
    let n = insert_all(store, &values, n, bytes, cfg, r)?;
    let key_bytes = encode(&(n as u64 / 2))?.len() as u64;
    r.metric(
        "live_encoded_bytes",
        (n as u64 * (bytes + key_bytes)) as f64,
    );
    r.metric("live_entries", n as f64);
    store.report(r);
    let mut rng = SplitMix::new(12);
    let gets: Vec<usize> = (0..n).map(|_| rng.below(n)).collect();
    // One untimed pass warms the page cache, then the timed pass.
    read_keys(
        store,
        &values,
        &gets[..gets.len() / 2],
        bytes,
        "warmup_get",
        cfg,
        r,
    )?;
    read_keys(store, &values, &gets, bytes, "random_get", cfg, r)?;
    if let Some(open_secs) = store.reopen()? {
        let k = (n / 2) as u64;
        let t = Instant::now();
        let mut ok = false;
        let found = store.get_with(k, &mut |v| ok = values.check(k, v))?;
        r.phase("reopen_get", 1, 0, open_secs + secs(t));
        r.metric("reopen_found_correct", (found && ok) as u64 as f64);
    }
    Ok(())
}

/// W4 reopen: opens `store` (already built and flushed by W2) and reads one value.
pub fn w4(
    open: &mut dyn FnMut() -> BenchResult<Box<dyn KvStore<Vec<u8>>>>,
    n: usize,
    r: &Report,
) -> BenchResult<()> {
    let values = ValuePool::new(w2_sizes_len(), 2);
    let t = Instant::now();
    let mut store = open()?;
    let open_secs = secs(t);
    let k = (n / 2) as u64;
    let mut ok = false;
    let found = store.get_with(k, &mut |v| ok = values.check(k, v))?;
    r.phase("open", 1, 0, open_secs);
    r.phase("open_get", 1, 0, secs(t));
    r.metric("found_correct", (found && ok) as u64 as f64);
    store.report(r);
    Ok(())
}

fn w2_sizes_len() -> usize {
    100
}

/// Sizes of W3: arrays, floats per array, budget.
pub fn w3_sizes(cfg: &RunConfig) -> (usize, usize, u64) {
    let n = cfg.scaled(64, 4);
    let floats = (8 << 20) / 8;
    (n, floats, (n * (8 << 20) / 4) as u64)
}

/// W3 arrays: insert all, read all (random order).
pub fn w3(store: &mut dyn KvStore<Vec<f64>>, cfg: &RunConfig, r: &Report) -> BenchResult<()> {
    let (n, floats, _) = w3_sizes(cfg);
    let values = ArrayGen::new(floats);
    let bytes = encoded_len(&values)?;
    let n = insert_all(store, &values, n, bytes, cfg, r)?;
    let order = SplitMix::new(13).permutation(n);
    read_keys(store, &values, &order, bytes, "read_all", cfg, r)?;
    store.report(r);
    Ok(())
}

/// W5's gets: Zipf(1.0) ranks over W1's keys, ranks mapped to keys by a random permutation.
pub fn w5_gets(cfg: &RunConfig) -> Vec<usize> {
    let (n, _) = w1_sizes(cfg);
    let gets = cfg.scaled(200_000, 2_000);
    let zipf = Zipf::new(n, 1.0);
    let mut rng = SplitMix::new(15);
    let key_of_rank = rng.permutation(n);
    (0..gets)
        .map(|_| key_of_rank[zipf.sample(&mut rng)])
        .collect()
}

/// W5's budget: 10% of W1's bytes.
pub fn w5_budget(cfg: &RunConfig) -> u64 {
    let (n, len) = w1_sizes(cfg);
    (n * len / 10) as u64
}

/// W5 skewed reads through a store holding W1's values: share from memory and throughput.
pub fn w5(store: &mut dyn KvStore<Vec<u8>>, cfg: &RunConfig, r: &Report) -> BenchResult<()> {
    let (n, len) = w1_sizes(cfg);
    let values = ValuePool::new(len, 1);
    let bytes = encoded_len(&values)?;
    let n = insert_all(store, &values, n, bytes, cfg, r)?;
    let gets: Vec<usize> = w5_gets(cfg).into_iter().filter(|&k| k < n).collect();
    read_keys(store, &values, &gets, bytes, "zipf_get", cfg, r)?;
    store.report(r);
    Ok(())
}

/// W5 through moka: a read-through memory cache with the same budget; a miss regenerates the
/// value (standing in for a load from a source) and inserts it.
pub fn w5_moka(cfg: &RunConfig, r: &Report) -> BenchResult<()> {
    let (_, len) = w1_sizes(cfg);
    let values = ValuePool::new(len, 1);
    let bytes = encoded_len(&values)?;
    let moka: MokaStore<Vec<u8>> = MokaStore::new(w5_budget(cfg), |v| v.len() as u32);
    let gets = w5_gets(cfg);
    let t = Instant::now();
    let mut hits = 0u64;
    for &k in &gets {
        let v = match moka.cache.get(&(k as u64)) {
            Some(v) => {
                hits += 1;
                v
            }
            None => {
                let v = std::sync::Arc::new(values.make(k as u64));
                moka.cache.insert(k as u64, v.clone());
                v
            }
        };
        std::hint::black_box(&v);
    }
    r.phase(
        "zipf_get",
        gets.len() as u64,
        gets.len() as u64 * bytes,
        secs(t),
    );
    r.metric("zipf_get_memory_share", hits as f64 / gets.len() as f64);
    moka.cache.run_pending_tasks();
    r.metric("weighted_size", moka.cache.weighted_size() as f64);
    r.metric("disk_bytes", 0.0);
    r.metric("files", 0.0);
    Ok(())
}
