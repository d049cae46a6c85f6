//! The benchmarks of issue 6: workloads W1 to W5 of PRODUCT.md, run against spillchest and,
//! in the same run, the machine's limits and the peers a user would otherwise pick (an
//! in-memory `HashMap`, a one-file-per-key store, foyer's `HybridCache`, redb, moka); and T1,
//! the concurrency issue's targets: W1's inserts from one and from two threads through one
//! chest, and the latency of in-memory gets while another thread spills (`workloads/threads.rs`).
//!
//! A `harness = false` program. The parent runs every (workload, system) pair in a child
//! process of its own (the same binary with `--child`), so each peak of anonymous memory
//! belongs to one system, then prints markdown tables (also written to `--out PATH`).
//!
//! ```text
//! cargo bench --bench workloads                 # full size (slow: see BENCHMARKS.md)
//! cargo bench --bench workloads -- --quick      # 1% scale, the CI smoke run
//! SPILLCHEST_BENCH_SCALE=0.1 cargo bench --bench workloads
//! ```
//!
//! Options: `--quick` (scale 0.01), `--scale X`, `--timebox SECONDS` (per phase, default 300),
//! `--dir PATH` (where files go, default a fresh directory under the system temp dir),
//! `--only W1,T1` (workloads to run; `limits` is always run), `--out PATH`.

#[path = "workloads/common.rs"]
mod common;
#[path = "workloads/drivers.rs"]
mod drivers;
#[path = "workloads/limits.rs"]
mod limits;
#[path = "workloads/reference.rs"]
mod reference;
#[path = "workloads/report.rs"]
mod report;
#[path = "workloads/stores.rs"]
mod stores;
#[path = "workloads/threads.rs"]
mod threads;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{PeakAnon, Report, RunConfig, proc_status_bytes};
use report::{ChildResult, RunResults};
use spillchest::Policy;
use stores::{BenchResult, FileStore, FoyerStore, KvStore, MapStore, RedbStore, SpillStore};

/// What `--help` prints.
const USAGE: &str = "usage: cargo bench --bench workloads -- [--quick] [--scale X] \
[--timebox SECONDS] [--dir PATH] [--only W1,W2,...] [--out PATH]
  --quick      1% of every size (the CI smoke run)
  --scale X    fraction of PRODUCT.md's sizes (default 1, or SPILLCHEST_BENCH_SCALE)
  --timebox S  most seconds one phase may take before it stops early (default 300)
  --dir PATH   where files go (default a fresh directory in the temp dir, or SPILLCHEST_BENCH_DIR)
  --only LIST  workloads to run: W1-W5, T1 (threads) (the limits always run; W4 brings W2)
  --out PATH   also write the markdown report there";

/// Which systems run on which workload, in run order. W4 reopens the directories W2 left.
/// `spillchest` runs the default eviction policy, `spillchest-lru` [`Policy::Lru`] (see
/// [`spill_policy`] for the other names a child takes).
const PLAN: &[(&str, &[&str])] = &[
    ("limits", &["machine"]),
    (
        "W1",
        &[
            "spillchest",
            "spillchest-lru",
            "hashmap",
            "files",
            "foyer",
            "foyer-queue",
        ],
    ),
    ("W2", &["spillchest", "hashmap", "files", "redb", "foyer"]),
    ("W4", &["spillchest", "redb"]),
    ("W3", &["spillchest", "hashmap", "files"]),
    (
        "W5",
        &["spillchest", "spillchest-lru", "hashmap", "foyer", "moka"],
    ),
    ("T1", &["spillchest", "spillchest-lru", "spillchest-sync"]),
];

/// Command-line options of the parent (and the part a child inherits).
#[derive(Debug)]
struct Options {
    scale: f64,
    timebox_secs: u64,
    dir: Option<PathBuf>,
    only: Option<Vec<String>>,
    out: Option<PathBuf>,
    child: Option<(String, String, PathBuf)>,
}

fn parse_options() -> Result<Options, String> {
    let mut o = Options {
        scale: std::env::var("SPILLCHEST_BENCH_SCALE")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1.0),
        timebox_secs: 300,
        dir: std::env::var_os("SPILLCHEST_BENCH_DIR").map(PathBuf::from),
        only: None,
        out: None,
        child: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--quick" => o.scale = 0.01,
            "--scale" => o.scale = value("--scale")?.parse().map_err(|e| format!("{e}"))?,
            "--timebox" => {
                o.timebox_secs = value("--timebox")?.parse().map_err(|e| format!("{e}"))?
            }
            "--dir" => o.dir = Some(value("--dir")?.into()),
            "--out" => o.out = Some(value("--out")?.into()),
            "--only" => o.only = Some(value("--only")?.split(',').map(str::to_string).collect()),
            "--child" => {
                let wl = value("--child")?;
                let sys = value("--child")?;
                let dir = value("--child")?;
                o.child = Some((wl, sys, dir.into()));
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            // `cargo bench` passes `--bench`.
            "--bench" => {}
            other if other.starts_with('-') => {
                return Err(format!("unknown option {other}\n{USAGE}"));
            }
            // Positional filters (as libtest takes) mean nothing here.
            _ => {}
        }
    }
    Ok(o)
}

fn main() {
    let opts = match parse_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("workloads: {e}");
            std::process::exit(2);
        }
    };
    if let Some((wl, sys, dir)) = &opts.child {
        let cfg = RunConfig {
            scale: opts.scale,
            dir: dir.clone(),
            timebox: Duration::from_secs(opts.timebox_secs),
        };
        if let Err(e) = run_child(wl, sys, &cfg) {
            eprintln!("{wl}/{sys}: {e}");
            std::process::exit(1);
        }
        return;
    }
    std::process::exit(run_parent(&opts));
}

/// Runs one (workload, system) in this process and prints its `@` lines.
fn run_child(wl: &str, sys: &str, cfg: &RunConfig) -> BenchResult<()> {
    let r = Report;
    let baseline = proc_status_bytes("RssAnon");
    let peak = PeakAnon::start();
    match (wl, sys) {
        ("limits", _) => limits::run(cfg, &r)?,
        ("W1", _) => {
            let budget = drivers::w1_budget(cfg);
            let (n, len) = drivers::w1_sizes(cfg);
            let mut store = kv_bytes(sys, cfg, budget, n * len, 1_000)?;
            drivers::w1(store.as_mut(), cfg, &r)?;
        }
        ("W2", _) => {
            let (n, _, budget) = drivers::w2_sizes(cfg);
            // foyer's block engine stores each small entry in 4 KiB pages: size its device so it
            // could hold all of them.
            let mut store = kv_bytes(sys, cfg, budget, n * 4096 * 5 / 8, 10_000)?;
            drivers::w2(store.as_mut(), cfg, &r)?;
        }
        ("W4", _) => {
            let (n, _, budget) = drivers::w2_sizes(cfg);
            let dir = cfg.dir.clone();
            let mut open = || -> BenchResult<Box<dyn KvStore<Vec<u8>>>> {
                Ok(match sys {
                    "spillchest" => Box::new(SpillStore::<Vec<u8>>::open_existing(
                        &dir,
                        budget,
                        Policy::default(),
                    )?),
                    "redb" => Box::new(RedbStore::open(&dir.join("redb.db"), budget as usize)?),
                    _ => return Err(format!("no W4 for {sys}").into()),
                })
            };
            drivers::w4(&mut open, n, &r)?;
        }
        ("W3", _) => {
            let (_, _, budget) = drivers::w3_sizes(cfg);
            let mut store: Box<dyn KvStore<Vec<f64>>> = match sys {
                "spillchest" => Box::new(SpillStore::create(&cfg.dir, budget, Policy::default())?),
                "hashmap" => Box::new(MapStore::new()),
                "files" => Box::new(FileStore::create(&cfg.dir, cfg.timebox)?),
                _ => return Err(format!("no W3 for {sys}").into()),
            };
            drivers::w3(store.as_mut(), cfg, &r)?;
        }
        ("W5", "moka") => drivers::w5_moka(cfg, &r)?,
        ("T1", _) => {
            let policy = spill_policy(sys).ok_or(format!("no T1 for {sys}"))?;
            threads::run(cfg, &r, policy, sys == "spillchest-sync")?
        }
        ("W5", _) => {
            let budget = drivers::w5_budget(cfg);
            let (n, len) = drivers::w1_sizes(cfg);
            let mut store = kv_bytes(sys, cfg, budget, n * len, 1_000)?;
            drivers::w5(store.as_mut(), cfg, &r)?;
        }
        _ => return Err(format!("unknown workload {wl}").into()),
    }
    r.metric("baseline_anon", baseline as f64);
    r.metric("peak_anon", peak.finish() as f64);
    r.metric("vm_hwm", proc_status_bytes("VmHWM") as f64);
    Ok(())
}

/// The eviction policy of a spillchest system: `spillchest` runs the default, and
/// `spillchest-lru`, `spillchest-s3fifo` and `spillchest-largest` the one named.
fn spill_policy(sys: &str) -> Option<Policy> {
    Some(match sys {
        "spillchest" => Policy::default(),
        "spillchest-lru" => Policy::Lru,
        "spillchest-sync" => Policy::default(),
        "spillchest-s3fifo" => Policy::S3Fifo,
        "spillchest-largest" => Policy::Largest,
        _ => return None,
    })
}

/// A byte-valued store of system `sys`; `data_bytes` sizes foyer's device (twice the data) and
/// `redb_batch` is how many inserts redb commits at once.
fn kv_bytes(
    sys: &str,
    cfg: &RunConfig,
    budget: u64,
    data_bytes: usize,
    redb_batch: usize,
) -> BenchResult<Box<dyn KvStore<Vec<u8>>>> {
    if let Some(policy) = spill_policy(sys) {
        return Ok(Box::new(SpillStore::create(&cfg.dir, budget, policy)?));
    }
    Ok(match sys {
        "hashmap" => Box::new(MapStore::new()),
        "files" => Box::new(FileStore::create(&cfg.dir, cfg.timebox)?),
        "redb" => Box::new(RedbStore::create(&cfg.dir, budget as usize, redb_batch)?),
        "foyer" => Box::new(FoyerStore::create(
            &cfg.dir,
            budget as usize,
            2 * data_bytes,
            None,
        )?),
        "foyer-queue" => Box::new(FoyerStore::create(
            &cfg.dir,
            budget as usize,
            2 * data_bytes,
            Some(2 * data_bytes),
        )?),
        _ => return Err(format!("unknown system {sys}").into()),
    })
}

/// Runs the plan, one child per pair, and prints the report; returns the exit code.
fn run_parent(opts: &Options) -> i32 {
    let base = opts.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("spillchest-bench-{}", std::process::id()))
    });
    if let Err(e) = std::fs::create_dir_all(&base) {
        eprintln!("cannot create {}: {e}", base.display());
        return 2;
    }
    let cfg = RunConfig {
        scale: opts.scale,
        dir: base.clone(),
        timebox: Duration::from_secs(opts.timebox_secs),
    };
    let mut results = RunResults::default();
    results
        .budgets
        .insert("W1".into(), drivers::w1_budget(&cfg));
    results
        .budgets
        .insert("W2".into(), drivers::w2_sizes(&cfg).2);
    results
        .budgets
        .insert("W4".into(), drivers::w2_sizes(&cfg).2);
    results
        .budgets
        .insert("W3".into(), drivers::w3_sizes(&cfg).2);
    results
        .budgets
        .insert("W5".into(), drivers::w5_budget(&cfg));
    results
        .budgets
        .insert("T1".into(), drivers::w1_budget(&cfg));
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("cannot find this program: {e}");
            return 2;
        }
    };
    let started = Instant::now();
    eprintln!(
        "spillchest workloads: scale {}, time box {} s per phase, files under {}",
        opts.scale,
        opts.timebox_secs,
        base.display()
    );
    let mut failures = 0;
    for &(wl, systems) in PLAN {
        let wanted = wl == "limits"
            || opts.only.as_ref().is_none_or(|o| o.iter().any(|w| w == wl))
            // W4 reopens W2's directories.
            || (wl == "W2" && opts.only.as_ref().is_some_and(|o| o.iter().any(|w| w == "W4")));
        if !wanted {
            continue;
        }
        for &sys in systems {
            // W4 reuses the directory W2 left for the same system.
            let dir = if wl == "W4" {
                base.join(format!("W2-{sys}"))
            } else {
                base.join(format!("{wl}-{sys}"))
            };
            let _ = std::fs::create_dir_all(&dir);
            eprint!("  {wl:<6} {sys:<11} ");
            let t = Instant::now();
            let output = Command::new(&exe)
                .arg("--child")
                .arg(wl)
                .arg(sys)
                .arg(&dir)
                .arg("--scale")
                .arg(opts.scale.to_string())
                .arg("--timebox")
                .arg(opts.timebox_secs.to_string())
                .output();
            let mut child = match &output {
                Ok(out) => ChildResult::parse(wl, sys, &String::from_utf8_lossy(&out.stdout)),
                Err(_) => ChildResult::parse(wl, sys, ""),
            };
            child.wall_secs = t.elapsed().as_secs_f64();
            match output {
                Ok(out) if out.status.success() => eprintln!("{:.1} s", child.wall_secs),
                Ok(out) => {
                    let err = String::from_utf8_lossy(&out.stderr);
                    let last: Vec<&str> = err.lines().rev().take(3).collect();
                    child.error = Some(format!(
                        "{}: {}",
                        out.status,
                        last.into_iter().rev().collect::<Vec<_>>().join(" / ")
                    ));
                    eprintln!("FAILED {}", child.error.as_deref().unwrap_or(""));
                    failures += 1;
                }
                Err(e) => {
                    child.error = Some(format!("could not start: {e}"));
                    eprintln!("FAILED to start: {e}");
                    failures += 1;
                }
            }
            results.children.push(child);
            if wl != "W2" && wl != "W4" {
                remove_dir(&dir);
            }
        }
        if wl == "W4" {
            for &sys in PLAN
                .iter()
                .find(|p| p.0 == "W2")
                .map(|p| p.1)
                .unwrap_or(&[])
            {
                remove_dir(&base.join(format!("W2-{sys}")));
            }
        }
    }
    // W2 directories are kept for W4; anything left goes now.
    for &sys in PLAN
        .iter()
        .find(|p| p.0 == "W2")
        .map(|p| p.1)
        .unwrap_or(&[])
    {
        remove_dir(&base.join(format!("W2-{sys}")));
    }
    if opts.dir.is_none() {
        remove_dir(&base);
    }
    let md = format!(
        "Scale {} (1 = PRODUCT.md's sizes), time box {} s per phase, total {:.0} s.\n\n{}",
        opts.scale,
        opts.timebox_secs,
        started.elapsed().as_secs_f64(),
        results.markdown()
    );
    println!("{md}");
    if let Some(out) = &opts.out
        && let Err(e) = std::fs::write(out, &md)
    {
        eprintln!("cannot write {}: {e}", out.display());
        return 2;
    }
    if failures > 0 {
        eprintln!("{failures} benchmark children failed");
        1
    } else {
        0
    }
}

fn remove_dir(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}
