//! An array eight times the budget, 2 GiB, produced in place through `create_array`, read back
//! after a reopen through `get_array`, with the process's anonymous memory watched throughout.
//! It is its own test binary so that its RssAnon is not shared with other tests.
#![cfg(feature = "ndarray")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use spillchest::Chest;
use spillchest::ndarray::{Axis, Ix2};

const ROWS: usize = 16_384;
const COLS: usize = 16_384; // 16384 * 16384 * 8 bytes = 2 GiB of f64
const BUDGET_BYTES: u64 = 64 << 20;
const RSS_ANON_LIMIT_BYTES: u64 = 256 << 20;

/// The process's anonymous resident memory, from /proc/self/status.
fn rss_anon_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The element at flat index `i`: integers, so every sum is exact in any order.
fn pattern(i: usize) -> f64 {
    (i % 1000) as f64
}

#[test]
fn a_2_gib_array_is_created_filled_reopened_and_summed_within_256_mib_of_anonymous_memory() {
    if !std::path::Path::new("/proc/self/status").exists() {
        eprintln!("skipped: needs /proc/self/status");
        return;
    }
    let peak = Arc::new(AtomicU64::new(rss_anon_bytes()));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_anon_bytes(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("large.chest");
    let n = ROWS * COLS;
    let expected: f64 = {
        let full = (n / 1000) as f64 * (999.0 * 1000.0 / 2.0);
        full + (0..n % 1000).map(|i| i as f64).sum::<f64>()
    };

    let started = Instant::now();
    {
        let chest: Chest<String, Vec<u8>> = Chest::builder()
            .path(&path)
            .budget(BUDGET_BYTES)
            .open()
            .unwrap();
        let mut writer = chest
            .create_array::<f64, Ix2>("big".to_string(), (ROWS, COLS))
            .unwrap();
        for (i, x) in writer.as_slice_mut().iter_mut().enumerate() {
            *x = pattern(i);
        }
        writer.commit().unwrap();
        assert_eq!(chest.stats().memory_bytes, 0);
        chest.close().unwrap();
    }
    let written = started.elapsed();

    let chest: Chest<String, Vec<u8>> = Chest::builder()
        .path(&path)
        .budget(BUDGET_BYTES)
        .open()
        .unwrap();
    let array = chest
        .get_array::<f64, Ix2>(&"big".to_string())
        .unwrap()
        .unwrap();
    assert_eq!(array.shape(), &[ROWS, COLS]);
    // Streaming: one row at a time through the view.
    let sum: f64 = array.view().axis_iter(Axis(0)).map(|row| row.sum()).sum();
    assert_eq!(sum, expected);
    assert_eq!(array.view()[(ROWS - 1, COLS - 1)], pattern(n - 1));
    array.verify().unwrap();
    drop(array);
    drop(chest);

    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let peak = peak.load(Ordering::Relaxed).max(rss_anon_bytes());
    eprintln!(
        "2 GiB array: created and flushed in {written:?}, total {:?}, peak RssAnon {} KiB",
        started.elapsed(),
        peak >> 10
    );
    assert!(peak > 0, "RssAnon was never read");
    assert!(
        peak < RSS_ANON_LIMIT_BYTES,
        "peak RssAnon {} MiB is over {} MiB",
        peak >> 20,
        RSS_ANON_LIMIT_BYTES >> 20
    );
}
