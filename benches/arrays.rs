//! W3 (PRODUCT.md): 64 arrays of 8 MiB of f64 with a 128 MiB budget: insert them all, then
//! read them all back through mapped views (warm page cache), with the process's anonymous
//! memory sampled throughout. Printed beside the machine's limits (memory copy, plain file
//! writes and reads of the same bytes) and beside Python's `chest` with pickle protocol 5
//! (benches/chest_w3.py), all in one run.
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target-arrays cargo bench --features ndarray --bench arrays
//! ```
//! Environment: `W3_ROUNDS` (default 5; each figure is the median), `TMPDIR` (where the
//! chests and files live; Python's chest uses it too), `W3_PYTHON` (default `python3`; set
//! to `none` to skip the peer).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use spillchest::Chest;
use spillchest::ndarray::{Array1, Ix1};

const ARRAYS: usize = 64;
const ELEMENTS: usize = 1 << 20; // 8 MiB of f64
const BUDGET_BYTES: u64 = 128 << 20;
const TOTAL_BYTES: f64 = (ARRAYS * ELEMENTS * 8) as f64;

fn rss_anon_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn gbps(elapsed: Duration) -> f64 {
    TOTAL_BYTES / elapsed.as_secs_f64() / 1e9
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One round of W3 in a fresh chest: (insert GB/s, read-all GB/s).
fn spillchest_round(source: &mut Array1<f64>) -> (f64, f64) {
    // A temporary chest (no fsync, as Python's chest does none), in $TMPDIR like the rest.
    let chest: Chest<u64, Vec<u8>> = Chest::builder()
        .temp()
        .budget(BUDGET_BYTES)
        .open()
        .expect("open chest");
    // A pipeline produces one array at a time; one buffer, changed per array, stands in.
    let started = Instant::now();
    for i in 0..ARRAYS {
        source[0] = i as f64;
        chest
            .insert_array(i as u64, &*source)
            .expect("insert_array");
    }
    let insert = started.elapsed();
    assert_eq!(chest.stats().memory_bytes, 0);
    let started = Instant::now();
    let mut total = 0.0;
    for i in 0..ARRAYS {
        let view = chest
            .get_array::<f64, Ix1>(&(i as u64))
            .expect("get_array")
            .expect("present");
        total += view.view().sum();
    }
    let read = started.elapsed();
    assert!(total > 0.0);
    drop(chest);
    (gbps(insert), gbps(read))
}

/// W3's last part: one array twice the budget (256 MiB) created in place through
/// `create_array`, then read through `get_array`: (create+commit GB/s, read GB/s).
fn large_array_round() -> (f64, f64) {
    const LARGE_ELEMENTS: usize = 32 << 20; // 256 MiB of f64
    let bytes = (LARGE_ELEMENTS * 8) as f64;
    let chest: Chest<u64, Vec<u8>> = Chest::builder()
        .temp()
        .budget(BUDGET_BYTES)
        .open()
        .expect("open chest");
    let started = Instant::now();
    let mut writer = chest
        .create_array::<f64, Ix1>(0, LARGE_ELEMENTS)
        .expect("create_array");
    for (i, x) in writer.as_slice_mut().iter_mut().enumerate() {
        *x = (i & 1023) as f64;
    }
    writer.commit().expect("commit");
    let create = started.elapsed();
    let started = Instant::now();
    let view = chest
        .get_array::<f64, Ix1>(&0)
        .expect("get_array")
        .expect("present");
    let sum = view.view().sum();
    let read = started.elapsed();
    assert!(sum > 0.0);
    drop(view);
    drop(chest);
    (
        bytes / create.as_secs_f64() / 1e9,
        bytes / read.as_secs_f64() / 1e9,
    )
}

/// The same bytes through plain `std::fs::write` and `std::fs::read`, and a memory copy.
fn machine_round(dir: &Path, source: &Array1<f64>) -> (f64, f64, f64) {
    let bytes: Vec<u8> = source.iter().flat_map(|x| x.to_le_bytes()).collect();
    let plain = dir.join("plain");
    std::fs::create_dir_all(&plain).expect("mkdir");
    let started = Instant::now();
    for i in 0..ARRAYS {
        std::fs::write(plain.join(i.to_string()), &bytes).expect("write");
    }
    let write = started.elapsed();
    let started = Instant::now();
    let mut n = 0;
    for i in 0..ARRAYS {
        n += std::fs::read(plain.join(i.to_string()))
            .expect("read")
            .len();
    }
    let read = started.elapsed();
    assert_eq!(n as f64, TOTAL_BYTES);
    std::fs::remove_dir_all(&plain).expect("clean up");
    let mut dest = vec![0u8; bytes.len()];
    let started = Instant::now();
    for i in 0..ARRAYS {
        dest.copy_from_slice(&bytes);
        dest[0] = i as u8;
        std::hint::black_box(&dest);
    }
    (gbps(write), gbps(read), gbps(started.elapsed()))
}

fn python_peer(rounds: usize) -> Option<(f64, f64, f64)> {
    let python = std::env::var("W3_PYTHON").unwrap_or_else(|_| "python3".into());
    if python == "none" {
        return None;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/chest_w3.py");
    let out = std::process::Command::new(&python)
        .arg(script)
        .arg(rounds.to_string())
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "python chest peer failed (pip install chest numpy): {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<f64> = text
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    (v.len() == 3).then(|| (v[0], v[1], v[2]))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list; there is nothing to list.
    }
    let rounds: usize = std::env::var("W3_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir().expect("temporary directory");

    let mut source = Array1::from_iter((0..ELEMENTS).map(|i| i as f64));
    let baseline_anon = rss_anon_bytes();
    let peak = Arc::new(AtomicU64::new(baseline_anon));
    let done = Arc::new(AtomicBool::new(false));
    // Sampled only while spillchest runs: the machine rounds hold a copy of the source.
    let sampling = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done, sampling) = (peak.clone(), done.clone(), sampling.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if sampling.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_anon_bytes(), Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    // Rounds interleave spillchest, the machine's limits and the peer, so that the page
    // cache's writeback state (shared with whatever else runs) weighs on each alike.
    let (mut ins, mut read) = (Vec::new(), Vec::new());
    let (mut mw, mut mr, mut mc) = (Vec::new(), Vec::new(), Vec::new());
    let (mut pi, mut pr, mut prss) = (Vec::new(), Vec::new(), 0.0f64);
    let (mut lc, mut lr) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        sampling.store(true, Ordering::Relaxed);
        let (i, r) = spillchest_round(&mut source);
        let (c, l) = large_array_round();
        sampling.store(false, Ordering::Relaxed);
        lc.push(c);
        lr.push(l);
        ins.push(i);
        read.push(r);
        let (w, r, c) = machine_round(dir.path(), &source);
        mw.push(w);
        mr.push(r);
        mc.push(c);
        if let Some((i, r, rss)) = python_peer(1) {
            pi.push(i);
            pr.push(r);
            prss = prss.max(rss);
        }
    }
    done.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    let peak_anon = peak.load(Ordering::Relaxed);
    let peer = (!pi.is_empty()).then(|| (median(pi), median(pr), prss));

    let (ins, read) = (median(ins), median(read));
    println!(
        "W3: {ARRAYS} arrays x 8 MiB f64, budget 128 MiB, median of {rounds} rounds, GB/s = 1e9 bytes/s"
    );
    println!("{:<44} {:>10} {:>12}", "", "insert", "read-all");
    println!(
        "{:<44} {:>10.2} {:>12.2}",
        "spillchest insert_array / get_array+sum", ins, read
    );
    match peer {
        Some((pi, pr, rss)) => {
            println!(
                "{:<44} {:>10.2} {:>12.2}",
                "python chest, pickle 5 (set+flush / get+sum)", pi, pr
            );
            println!(
                "{:<44} {:>10.2}x {:>11.2}x   (python peak RSS {rss:.0} MiB)",
                "spillchest / python chest",
                ins / pi,
                read / pr
            );
        }
        None => println!("python chest: not measured"),
    }
    println!(
        "{:<44} {:>10.2} {:>12.2}",
        "machine: std::fs::write / std::fs::read",
        median(mw),
        median(mr)
    );
    println!(
        "{:<44} {:>10.2}",
        "machine: memcpy of 8 MiB buffers",
        median(mc)
    );
    println!(
        "{:<44} {:>10.2} {:>12.2}",
        "spillchest 256 MiB array: create_array / get+sum",
        median(lc),
        median(lr)
    );
    println!(
        "spillchest RssAnon: baseline {} MiB (incl. the 8 MiB source), peak {} MiB, budget+64 MiB = {} MiB",
        baseline_anon >> 20,
        peak_anon >> 20,
        (BUDGET_BYTES >> 20) + 64
    );
}
