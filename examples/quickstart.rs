//! Pushes a data set several times the memory budget through a chest, reads it all back,
//! and prints the chest's stats and the throughput.
//!
//! `cargo run --release --example quickstart [total MiB] [budget MiB]` (defaults: 512 and 64).

use std::time::Instant;

use spillchest::Chest;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let total_mib: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(512);
    let budget_mib: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(64);
    let value_len = 64 * 1024 / 8; // 64 KiB of f64 per value
    let count = total_mib * 1024 * 1024 / (value_len as u64 * 8);

    let chest: Chest<u64, Vec<f64>> = Chest::with_budget(budget_mib << 20)?;
    println!(
        "pushing {count} values of 64 KiB ({total_mib} MiB) through a {budget_mib} MiB budget in {}",
        chest.path().display()
    );

    let start = Instant::now();
    for i in 0..count {
        let value: Vec<f64> = (0..value_len).map(|j| (i * 31 + j as u64) as f64).collect();
        chest.insert(i, value)?;
    }
    let insert_secs = start.elapsed().as_secs_f64();

    let start = Instant::now();
    let mut checked = 0u64;
    for i in 0..count {
        let value = chest.get(&i)?.ok_or("a value went missing")?;
        if value.len() != value_len || value[7] != (i * 31 + 7) as f64 {
            return Err(format!("value {i} came back wrong").into());
        }
        checked += 1;
    }
    let read_secs = start.elapsed().as_secs_f64();

    let stats = chest.stats();
    let mib = total_mib as f64;
    println!(
        "insert: {:.0} MiB/s ({:.0} values/s)",
        mib / insert_secs,
        count as f64 / insert_secs
    );
    println!(
        "read back and checked {checked} values: {:.0} MiB/s ({:.0} values/s)",
        mib / read_secs,
        count as f64 / read_secs
    );
    println!("{stats:#?}");
    assert!(stats.memory_bytes <= stats.budget_bytes);
    Ok(())
}
