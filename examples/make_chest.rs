//! Makes a small persistent chest to try the `spillchest` command-line tool on: 200 runs of
//! measurements keyed by name, most of them small (packed into a segment), a few large (a
//! file each), LZ4 compression where it helps, some values updated and some removed, so there
//! is dead space.
//!
//! `cargo run --example make_chest [DIR]` (default: `demo.chest`).

use spillchest::{Chest, Compression};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "demo.chest".into());
    let chest: Chest<String, Vec<f64>> = Chest::builder()
        .path(&path)
        .budget(64 << 10)
        .compression(Compression::Lz4)
        .open()?;
    for run in 0..200u32 {
        // Runs divisible by 50 are large (100,000 values, repetitive enough to compress); the
        // rest hold 100 values that do not compress.
        let value: Vec<f64> = if run % 50 == 0 {
            (0..100_000).map(|i| f64::from(run + i % 1000)).collect()
        } else {
            (0..100)
                .map(|i| (f64::from(run) + f64::from(i) * 0.618).sin())
                .collect()
        };
        chest.insert(format!("run-{run:03}"), value)?;
    }
    for run in 0..40u32 {
        chest.update(&format!("run-{run:03}"), |v| v.push(-1.0))?;
    }
    for run in 190..200u32 {
        chest.remove(&format!("run-{run:03}"))?;
    }
    let entries = chest.len();
    chest.close()?;
    println!("made {path} with {entries} entries");
    Ok(())
}
