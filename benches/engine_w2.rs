//! W2 from PRODUCT.md, many small values, against the storage-engine targets: 1,000,000
//! values of 100 bytes under a 16 MiB budget; inserts/s, random gets/s served from disk (warm
//! page cache), files, disk bytes against live encoded bytes, reopen time, and index memory
//! per entry (RssAnon after reopen). Each phase is run 5 times in fresh chests and the median
//! reported. `cargo bench --bench engine_w2 [-- N]` (N values, default 1,000,000).

use std::time::Instant;

use spillchest::Chest;

fn rss_anon_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("RssAnon:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let n: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let budget = 16u64 << 20;
    let (mut inserts, mut gets, mut reopens, mut per_entry) = (vec![], vec![], vec![], vec![]);
    let mut last = None;
    for run in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w2.chest");
        let chest: Chest<u64, Vec<u8>> =
            Chest::builder().path(&path).budget(budget).open().unwrap();
        let start = Instant::now();
        for k in 0..n {
            chest.insert(k, vec![(k % 251) as u8; 100]).unwrap();
        }
        inserts.push(n as f64 / start.elapsed().as_secs_f64());
        // Random gets of values on disk (not in memory): an LCG over the key space.
        let gets_n = n.min(300_000);
        let mut x = 12345u64;
        let start = Instant::now();
        for _ in 0..gets_n {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let k = (x >> 11) % n;
            let v = chest.get(&k).unwrap().unwrap();
            assert_eq!(v[0], (k % 251) as u8);
        }
        gets.push(gets_n as f64 / start.elapsed().as_secs_f64());
        let s = chest.stats();
        chest.close().unwrap();
        let files = std::fs::read_dir(path.join("segments")).map_or(0, |d| d.count())
            + std::fs::read_dir(path.join("values")).map_or(0, |d| d.count());
        let before = rss_anon_kib();
        let start = Instant::now();
        let chest: Chest<u64, Vec<u8>> =
            Chest::builder().path(&path).budget(budget).open().unwrap();
        let one = chest.get(&(n / 2)).unwrap().unwrap();
        reopens.push(start.elapsed().as_secs_f64());
        assert_eq!(one.len(), 100);
        per_entry.push((rss_anon_kib().saturating_sub(before)) as f64 * 1024.0 / n as f64);
        if run == 4 {
            last = Some((s, files));
        }
    }
    let (s, files) = last.unwrap();
    let live_encoded = n * 101; // bincode: 1-byte length prefix + 100 bytes
    println!("W2: {n} values of 100 bytes, budget 16 MiB (median of 5)");
    println!("  inserts/s            {:>12.0}", median(inserts));
    println!("  random gets/s (disk) {:>12.0}", median(gets));
    println!("  reopen + one get     {:>12.3} s", median(reopens));
    println!(
        "  index memory/entry   {:>12.0} bytes (RssAnon growth over reopen)",
        median(per_entry)
    );
    println!("  files (segments + fan-out dirs) {files}");
    println!(
        "  disk bytes {} = {:.2}x encoded live bytes {}",
        s.disk_bytes,
        s.disk_bytes as f64 / live_encoded as f64,
        live_encoded
    );
    println!("  stats after the run: {s:?}");
}
