//! A pipeline that spills numeric arrays eight times its memory budget and reads them back
//! through zero-copy memory-mapped views.
//!
//! ```text
//! cargo run --release --features ndarray --example arrays
//! ```
//!
//! Stage 1 produces 16 arrays of 2000 x 1000 f64 (16 MB each, 256 MB in all) under a 32 MiB
//! budget with `insert_array`. Stage 2 fills one more array of the same total size in place
//! with `create_array`. Stage 3 reopens the chest and reduces every array through
//! `get_array` views, which map the files instead of reading them into the heap.

use spillchest::ndarray::{Array2, Axis, Ix2};
use spillchest::{Chest, Result};

const BUDGET_BYTES: u64 = 32 << 20;
const ROWS: usize = 2000;
const COLS: usize = 1000;
const BATCHES: usize = 16;

fn rss_anon_mib() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("RssAnon:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn main() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| spillchest::Error::Io {
        path: std::env::temp_dir(),
        action: "create temporary directory",
        source: e,
    })?;
    let path = dir.path().join("pipeline.chest");
    {
        let chest: Chest<String, String> =
            Chest::builder().path(&path).budget(BUDGET_BYTES).open()?;

        // Stage 1: each batch is computed, spilled, and dropped from the heap.
        for b in 0..BATCHES {
            let batch = Array2::from_shape_fn((ROWS, COLS), |(r, c)| (b * r + c) as f64);
            // A transposed view goes in as well as a standard one: the layout on disk is
            // standard either way.
            if b % 2 == 0 {
                chest.insert_array(format!("batch-{b}"), &batch)?;
            } else {
                let transposed = batch.t();
                chest.insert_array(format!("batch-{b}-t"), &transposed)?;
            }
        }

        // Stage 2: an array filled in place in a mapped file, never in the heap.
        let mut writer = chest.create_array::<f64, Ix2>("total".into(), (ROWS, COLS))?;
        for (i, mut row) in writer.as_array_mut().axis_iter_mut(Axis(0)).enumerate() {
            row.fill(i as f64);
        }
        writer.commit()?;

        // Ordinary serialized values live beside the arrays.
        chest.insert("note".into(), "16 batches and a total".into())?;
        let stats = chest.stats();
        println!(
            "stored {} entries, {} MB on disk, {} bytes of values in memory (budget {} MiB), RssAnon {}",
            stats.entries,
            stats.disk_bytes / 1_000_000,
            stats.memory_bytes,
            BUDGET_BYTES >> 20,
            rss_anon_mib()
        );
        chest.close()?;
    }

    // Stage 3: reopen and reduce through views.
    let chest: Chest<String, String> = Chest::builder().path(&path).budget(BUDGET_BYTES).open()?;
    let mut keys = chest.keys();
    keys.sort();
    for key in keys {
        if key == "note" {
            println!("{key}: {}", chest.get(&key)?.as_deref().map_or("", |s| s));
            continue;
        }
        let Some(array) = chest.get_array::<f64, Ix2>(&key)? else {
            continue;
        };
        let view = array.view();
        let column_means = view.mean_axis(Axis(0)).unwrap_or_default();
        println!(
            "{key}: shape {:?}, sum {:.3e}, first column mean {:.1}",
            array.shape(),
            view.sum(),
            column_means.first().copied().unwrap_or(0.0)
        );
    }
    // Reading an array as a serialized value is an error, not garbage.
    if let Err(e) = chest.get(&"total".to_string()) {
        println!("get of an array: {e}");
    }
    println!("after reading everything back: RssAnon {}", rss_anon_mib());
    Ok(())
}
