//! Shared pieces of the workloads: scale, deterministic values, samplers, timing, the
//! peak-memory sampler and the line protocol a child process reports with.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What every child gets from the parent: how big to make the workload and where to put files.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// 1.0 is the size PRODUCT.md gives; the smoke run uses 0.01.
    pub scale: f64,
    /// A directory of this child's own, removed by the parent afterwards.
    pub dir: PathBuf,
    /// The most seconds one phase may take before it stops early and says so.
    pub timebox: Duration,
}

impl RunConfig {
    /// `full` scaled, never below `min`.
    pub fn scaled(&self, full: usize, min: usize) -> usize {
        ((full as f64 * self.scale).round() as usize).max(min)
    }
}

/// SplitMix64: a small, fast generator; the workloads need speed and repeatability, not crypto.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform index below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// A uniform float in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(n);
        out
    }

    /// The indices `0..n` in random order.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.below(i + 1);
            p.swap(i, j);
        }
        p
    }
}

/// Random byte values made from a small pool of random blocks, so the harness holds a few
/// blocks instead of the whole data set: value `i` is block `i % pool` with `i` written over
/// its first 8 bytes. The bytes stay incompressible.
#[derive(Debug)]
pub struct ValuePool {
    blocks: Vec<Vec<u8>>,
}

impl ValuePool {
    /// A pool of 64 blocks of `len` random bytes (at least 8).
    pub fn new(len: usize, seed: u64) -> Self {
        let mut rng = SplitMix::new(seed);
        let blocks = (0..64).map(|_| rng.bytes(len.max(8))).collect();
        ValuePool { blocks }
    }

    /// Value number `i` (a fresh copy, as a producer would hand over).
    pub fn value(&self, i: u64) -> Vec<u8> {
        let mut v = self.blocks[(i % self.blocks.len() as u64) as usize].clone();
        v[..8].copy_from_slice(&i.to_le_bytes());
        v
    }

    /// True when `v` is value number `i`.
    pub fn check(&self, i: u64, v: &[u8]) -> bool {
        let b = &self.blocks[(i % self.blocks.len() as u64) as usize];
        v.len() == b.len() && v[..8] == i.to_le_bytes() && v[8..] == b[8..]
    }
}

/// Zipf(s) ranks over `0..n` by inverse CDF.
#[derive(Debug)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// The distribution P(rank k) proportional to 1 / (k + 1)^s.
    pub fn new(n: usize, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for k in 0..n {
            total += 1.0 / ((k + 1) as f64).powf(s);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Zipf { cdf }
    }

    /// One rank.
    pub fn sample(&self, rng: &mut SplitMix) -> usize {
        let u = rng.unit();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

/// Samples `RssAnon` every few milliseconds on a thread and keeps the highest value.
#[derive(Debug)]
pub struct PeakAnon {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// A field of `/proc/self/status` in bytes (the file gives kB); 0 when absent.
pub fn proc_status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix(field)?.strip_prefix(':')?;
            let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            Some(kb * 1024)
        })
        .unwrap_or(0)
}

/// User plus system CPU seconds from the text of a `/proc/.../stat` file (the kernel's 100 Hz
/// ticks): the command name (field 2) may hold spaces, so fields are counted from the closing
/// parenthesis, after which field 3 comes first and utime (14) and stime (15) are the 12th and
/// 13th.
fn stat_cpu_secs(stat: &str) -> f64 {
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    ticks as f64 / 100.0
}

/// CPU seconds this process has used so far, every thread (live or exited) counted; 0 when
/// `/proc/self/stat` cannot be read.
pub fn process_cpu_secs() -> f64 {
    stat_cpu_secs(&std::fs::read_to_string("/proc/self/stat").unwrap_or_default())
}

/// Seconds the calling thread has run on a CPU and waited for one (in a run queue), from
/// `/proc/thread-self/schedstat` (nanoseconds, unlike the 10 ms ticks of `stat`); zeros when
/// it cannot be read.
pub fn thread_sched_secs() -> (f64, f64) {
    sched_secs(&std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default())
}

/// Seconds run on a CPU, from `schedstat`, by this process's live threads whose name starts
/// with `prefix` (the kernel keeps the first 15 bytes of a thread's name); 0 when there is
/// none.
pub fn threads_run_secs(prefix: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm")).is_ok_and(|c| c.starts_with(prefix))
        })
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .map(|s| sched_secs(&s).0)
        .sum()
}

/// (run, wait) seconds from the text of a `schedstat` file: nanoseconds on a CPU, nanoseconds
/// waiting in a run queue, time slices.
fn sched_secs(text: &str) -> (f64, f64) {
    let mut fields = text
        .split_whitespace()
        .map(|f| f.parse::<f64>().unwrap_or(0.0) / 1e9);
    (fields.next().unwrap_or(0.0), fields.next().unwrap_or(0.0))
}

impl PeakAnon {
    /// Starts sampling.
    pub fn start() -> Self {
        let peak = Arc::new(AtomicU64::new(proc_status_bytes("RssAnon")));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(proc_status_bytes("RssAnon"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        PeakAnon {
            peak,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling and returns the highest `RssAnon` seen, in bytes.
    pub fn finish(mut self) -> u64 {
        self.peak
            .fetch_max(proc_status_bytes("RssAnon"), Ordering::Relaxed);
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

/// What a child reports: timed phases, plain numbers, and notes. Printed as lines the parent
/// parses (`@phase name ops bytes secs`, `@metric name value`, `@note text`).
#[derive(Debug, Default)]
pub struct Report;

impl Report {
    /// A timed phase: `ops` operations moving `bytes` bytes in `secs` seconds.
    pub fn phase(&self, name: &str, ops: u64, bytes: u64, secs: f64) {
        println!("@phase {name} {ops} {bytes} {secs:.9}");
    }

    /// A number (bytes, files, a ratio, a count).
    pub fn metric(&self, name: &str, value: f64) {
        println!("@metric {name} {value}");
    }

    /// A sentence for the report.
    pub fn note(&self, text: &str) {
        println!("@note {}", text.replace('\n', " "));
    }
}

/// Seconds since `t`.
pub fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

/// Bytes and files under `dir`, recursively (regular files only).
pub fn dir_usage(dir: &std::path::Path) -> (u64, u64) {
    let mut bytes = 0;
    let mut files = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(e.path());
            } else if meta.is_file() {
                bytes += meta.len();
                files += 1;
            }
        }
    }
    (bytes, files)
}

/// Phases check the clock every this many operations to honour the time box.
pub const TIMEBOX_STRIDE: usize = 256;
