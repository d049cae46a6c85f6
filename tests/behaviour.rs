//! Behaviour tests of the core chest through its public API (and, for damage, its files).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use spillchest::{Chest, Compression, Error, Policy};

fn value_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(fans) = fs::read_dir(root.join("values")) else {
        return out;
    };
    for fan in fans {
        for file in fs::read_dir(fan.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            if path.extension().is_some_and(|e| e == "val") {
                out.push(path);
            }
        }
    }
    out
}

/// Every file under `root`, recursively.
fn all_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

#[test]
fn awkward_keys_are_distinct_stay_inside_and_survive_reopen() {
    let outer = tempfile::tempdir().unwrap();
    let path = outer.path().join("keys.chest");
    let keys: Vec<String> = vec![
        "1".into(),
        "01".into(),
        "1.0".into(),
        String::new(),
        "../x".into(),
        "/etc/passwd".into(),
        "k".repeat(10_000),
        "nul\0byte".into(),
    ];
    {
        // A budget of zero sends every value to disk, each in a file of its own: the file names
        // are where a key could try to escape the directory.
        let chest: Chest<String, String> = Chest::builder()
            .path(&path)
            .budget(0)
            .small_value_bytes(0)
            .open()
            .unwrap();
        for (i, k) in keys.iter().enumerate() {
            chest.insert(k.clone(), format!("value {i}")).unwrap();
        }
        assert_eq!(chest.len(), keys.len());
        assert_eq!(chest.stats().files, keys.len() as u64);
        chest.close().unwrap();
    }
    // Nothing was written outside the chest's directory.
    let outside: Vec<_> = fs::read_dir(outer.path()).unwrap().collect();
    assert_eq!(outside.len(), 1);
    for file in all_files(&path) {
        assert!(file.starts_with(&path), "{}", file.display());
    }
    let chest: Chest<String, String> = Chest::open(&path).unwrap();
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(
            chest.get(k).unwrap().as_deref(),
            Some(&format!("value {i}"))
        );
    }
    assert!(!chest.contains_key(&"x".to_string()));
}

#[test]
fn a_value_heavier_than_the_budget_goes_straight_to_disk_and_is_not_kept() {
    let chest: Chest<u32, Vec<u8>> = Chest::with_budget(1000).unwrap();
    chest.insert(1, vec![7; 100]).unwrap();
    chest.insert(2, vec![9; 5000]).unwrap();
    let s = chest.stats();
    assert_eq!((s.in_memory, s.on_disk, s.spills), (1, 1, 1));
    let big = chest.get(&2).unwrap().unwrap();
    assert_eq!(*big, vec![9; 5000]);
    let s = chest.stats();
    assert_eq!(s.in_memory, 1, "the big value must not be kept in memory");
    assert!(s.memory_bytes <= 1000);
    drop(big);
    assert_eq!(*chest.get(&1).unwrap().unwrap(), vec![7; 100]);
}

#[test]
fn a_spilled_value_still_held_by_a_caller_comes_back_as_the_same_arc() {
    let chest: Chest<u32, Vec<u8>> = Chest::builder()
        .budget(300)
        .synchronous_spill(true)
        .open()
        .unwrap();
    chest.insert(1, vec![1; 200]).unwrap();
    let held = chest.get(&1).unwrap().unwrap();
    chest.insert(2, vec![2; 200]).unwrap(); // evicts key 1
    assert_eq!(chest.stats().spills, 1);
    let again = chest.get(&1).unwrap().unwrap();
    assert!(Arc::ptr_eq(&held, &again));
    let s = chest.stats();
    assert_eq!((s.loads, s.shared_hits), (0, 1));
}

#[test]
fn evicting_an_unchanged_loaded_value_writes_nothing_and_an_overwrite_does() {
    let chest: Chest<u32, Vec<u8>> = Chest::builder()
        .budget(300)
        .synchronous_spill(true)
        .open()
        .unwrap();
    chest.insert(1, vec![1; 200]).unwrap();
    chest.insert(2, vec![2; 200]).unwrap(); // spills 1
    assert_eq!(chest.stats().spills, 1);
    chest.get(&1).unwrap(); // loads 1, spills 2
    assert_eq!((chest.stats().loads, chest.stats().spills), (1, 2));
    chest.get(&2).unwrap(); // loads 2, evicts 1 without writing it
    assert_eq!((chest.stats().loads, chest.stats().spills), (2, 2));
    chest.insert(2, vec![3; 200]).unwrap(); // makes 2's disk copy stale
    chest.get(&1).unwrap(); // evicts 2, which must be written again
    assert_eq!(chest.stats().spills, 3);
    assert_eq!(*chest.get(&2).unwrap().unwrap(), vec![3; 200]);
}

#[test]
fn lru_keeps_what_was_read_and_largest_evicts_the_biggest() {
    let lru: Chest<u32, Vec<u8>> = Chest::builder()
        .budget(700)
        .policy(Policy::Lru)
        .synchronous_spill(true)
        .open()
        .unwrap();
    for k in 0..3 {
        lru.insert(k, vec![k as u8; 200]).unwrap();
    }
    lru.get(&0).unwrap(); // 0 is now the most recently used
    lru.insert(3, vec![3; 200]).unwrap(); // evicts 1, the coldest
    let loads = lru.stats().loads;
    lru.get(&0).unwrap();
    assert_eq!(lru.stats().loads, loads, "key 0 should still be in memory");
    lru.get(&1).unwrap();
    assert_eq!(
        lru.stats().loads,
        loads + 1,
        "key 1 should have been evicted"
    );

    let largest: Chest<u32, Vec<u8>> = Chest::builder()
        .budget(700)
        .policy(Policy::Largest)
        .synchronous_spill(true)
        .open()
        .unwrap();
    largest.insert(0, vec![0; 400]).unwrap();
    largest.insert(1, vec![1; 100]).unwrap();
    largest.insert(2, vec![2; 100]).unwrap();
    largest.insert(3, vec![3; 150]).unwrap(); // over budget: the 400-byte value leaves
    let s = largest.stats();
    assert_eq!((s.in_memory, s.on_disk), (3, 1));
    largest.get(&1).unwrap();
    assert_eq!(largest.stats().loads, 0);
}

#[test]
fn under_s3fifo_a_hot_value_survives_a_scan_that_pushes_it_out_under_lru() {
    // Room for about nine 100-byte values. 100 cold values go to disk first; then a hot value
    // is read a few times; then every cold value is read once (a scan: each is loaded and
    // held, pushing others out); then the hot value is read again. Returns that last read's
    // memory hits and loads.
    let run = |policy| {
        let chest: Chest<u32, Vec<u8>> = Chest::builder()
            .budget(1010)
            .policy(policy)
            .synchronous_spill(true)
            .open()
            .unwrap();
        for k in 1..=100 {
            chest.insert(k, vec![k as u8; 100]).unwrap();
        }
        chest.insert(0, vec![0; 100]).unwrap();
        for _ in 0..3 {
            assert_eq!(chest.get(&0).unwrap().unwrap()[0], 0);
        }
        for k in 1..=100 {
            assert_eq!(*chest.get(&k).unwrap().unwrap(), vec![k as u8; 100]);
        }
        let before = chest.stats();
        assert!(before.loads >= 100, "the scan read from disk");
        assert_eq!(*chest.get(&0).unwrap().unwrap(), vec![0; 100]);
        let after = chest.stats();
        assert!(after.memory_bytes <= after.budget_bytes);
        (
            after.memory_hits - before.memory_hits,
            after.loads - before.loads,
        )
    };
    assert_eq!(run(Policy::S3Fifo), (1, 0), "S3-FIFO: still in memory");
    assert_eq!(run(Policy::Lru), (0, 1), "LRU: loaded from disk again");
}

#[test]
fn updates_work_in_memory_and_on_disk_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("upd.chest");
    {
        let chest: Chest<u32, Vec<f64>> = Chest::builder()
            .path(&path)
            .budget(4096)
            .synchronous_spill(true)
            .open()
            .unwrap();
        for k in 0..20 {
            chest.insert(k, vec![k as f64; 100]).unwrap();
        }
        assert!(chest.stats().on_disk >= 15);
        for k in 0..20 {
            assert!(chest.update(&k, |v| v.push(-1.0)).unwrap());
        }
        assert!(!chest.update(&99, |v| v.push(0.0)).unwrap());
        let held = chest.get(&3).unwrap().unwrap();
        chest.update(&3, |v| v.push(-2.0)).unwrap();
        assert_eq!(held.len(), 101, "a caller's Arc keeps the old value");
        chest.close().unwrap();
    }
    let chest: Chest<u32, Vec<f64>> = Chest::open(&path).unwrap();
    for k in 0..20 {
        let v = chest.get(&k).unwrap().unwrap();
        let extra = if k == 3 { 2 } else { 1 };
        assert_eq!(v.len(), 100 + extra, "key {k}");
        assert_eq!(v[100], -1.0);
    }
}

/// A value whose `Serialize` fails when asked to.
#[derive(Debug, PartialEq, Deserialize)]
struct Fragile {
    fail: bool,
    data: Vec<u8>,
}

impl Serialize for Fragile {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.fail {
            return Err(serde::ser::Error::custom(
                "this value refuses to be encoded",
            ));
        }
        #[derive(Serialize)]
        struct Plain<'a> {
            fail: bool,
            data: &'a [u8],
        }
        Plain {
            fail: false,
            data: &self.data,
        }
        .serialize(s)
    }
}

#[test]
fn a_value_that_fails_to_serialize_is_refused_and_changes_nothing() {
    let chest: Chest<u32, Fragile> = Chest::with_budget(1 << 20).unwrap();
    chest
        .insert(
            1,
            Fragile {
                fail: false,
                data: vec![1; 10],
            },
        )
        .unwrap();
    let err = chest
        .insert(
            1,
            Fragile {
                fail: true,
                data: vec![],
            },
        )
        .unwrap_err();
    assert!(matches!(err, Error::Encode { .. }), "{err}");
    assert!(err.to_string().contains("refuses"), "{err}");
    assert_eq!(chest.get(&1).unwrap().unwrap().data, vec![1; 10]);
    assert_eq!(chest.len(), 1);
}

#[test]
fn with_a_weigher_an_unencodable_value_is_reported_at_spill_and_stays_in_memory() {
    let chest: Chest<u32, Fragile> = Chest::builder()
        .budget(100)
        .weigher(|v: &Fragile| 60 + v.data.len() as u64)
        .synchronous_spill(true)
        .open()
        .unwrap();
    chest
        .insert(
            1,
            Fragile {
                fail: true,
                data: vec![],
            },
        )
        .unwrap();
    // Making room for key 2 needs key 1 to spill, which cannot be encoded.
    let err = chest
        .insert(
            2,
            Fragile {
                fail: false,
                data: vec![2; 5],
            },
        )
        .unwrap_err();
    assert!(matches!(err, Error::Encode { .. }), "{err}");
    let s = chest.stats();
    assert_eq!((s.entries, s.failed_spills), (1, 1));
    assert!(s.memory_bytes <= s.budget_bytes);
    assert!(chest.get(&1).unwrap().unwrap().fail);
    // Once the bad value is gone, the same insert succeeds.
    assert!(chest.remove(&1).unwrap());
    chest
        .insert(
            2,
            Fragile {
                fail: false,
                data: vec![2; 5],
            },
        )
        .unwrap();
    assert_eq!(chest.get(&2).unwrap().unwrap().data, vec![2; 5]);
}

#[test]
fn a_flipped_byte_in_a_value_file_is_an_error_for_that_key_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flip.chest");
    let chest: Chest<u32, Vec<u8>> = Chest::builder()
        .path(&path)
        .budget(0)
        .small_value_bytes(0)
        .open()
        .unwrap();
    for k in 0..10 {
        chest.insert(k, vec![k as u8; 1000]).unwrap();
    }
    chest.close().unwrap();
    let files = value_files(&path);
    assert_eq!(files.len(), 10);
    let victim = &files[4];
    let mut bytes = fs::read(victim).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    fs::write(victim, &bytes).unwrap();

    let chest: Chest<u32, Vec<u8>> = Chest::open(&path).unwrap();
    let mut damaged = 0;
    for k in 0..10 {
        match chest.get(&k) {
            Ok(v) => assert_eq!(*v.unwrap(), vec![k as u8; 1000]),
            Err(Error::Corrupt { path: p, reason }) => {
                assert_eq!(&p, victim);
                assert!(reason.contains("checksum"), "{reason}");
                damaged += 1;
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(damaged, 1);
}

#[test]
fn opening_with_other_types_or_an_unknown_format_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typed.chest");
    Chest::<u64, String>::open(&path).unwrap().close().unwrap();
    let err = Chest::<u64, Vec<u8>>::open(&path).unwrap_err();
    assert!(matches!(err, Error::TypeMismatch { .. }), "{err}");
    assert!(err.to_string().contains("Vec<u8>"), "{err}");
    let err = Chest::<String, String>::open(&path).unwrap_err();
    assert!(matches!(err, Error::TypeMismatch { .. }), "{err}");
    // The right types still open.
    Chest::<u64, String>::open(&path).unwrap().close().unwrap();

    let meta = path.join("meta");
    let mut bytes = fs::read(&meta).unwrap();
    bytes[8] = 99;
    fs::write(&meta, &bytes).unwrap();
    let err = Chest::<u64, String>::open(&path).unwrap_err();
    assert!(
        matches!(err, Error::UnsupportedFormat { version: 99, .. }),
        "{err}"
    );
}

#[test]
fn a_directory_that_is_not_a_chest_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let err = Chest::<u64, String>::open(dir.path()).unwrap_err();
    assert!(matches!(err, Error::NotAChest { .. }), "{err}");
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    let missing = dir.path().join("absent");
    let err = Chest::<u64, String>::builder()
        .path(&missing)
        .read_only()
        .open()
        .unwrap_err();
    assert!(matches!(err, Error::NotAChest { .. }), "{err}");
}

#[test]
fn a_second_writer_is_refused_and_read_only_handles_refuse_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("locked.chest");
    let writer: Chest<u32, u32> = Chest::open(&path).unwrap();
    writer.insert(1, 10).unwrap();
    let err = Chest::<u32, u32>::open(&path).unwrap_err();
    match &err {
        Error::Locked { path: lock } => assert!(lock.ends_with("lock")),
        other => panic!("expected Locked, got {other}"),
    }
    writer.close().unwrap();
    let reader: Chest<u32, u32> = Chest::builder().path(&path).read_only().open().unwrap();
    assert_eq!(reader.get(&1).unwrap().as_deref(), Some(&10));
    assert!(matches!(reader.insert(2, 2), Err(Error::ReadOnly { .. })));
    assert!(matches!(reader.remove(&1), Err(Error::ReadOnly { .. })));
    assert!(matches!(
        reader.update(&1, |v| *v += 1),
        Err(Error::ReadOnly { .. })
    ));
    reader.flush().unwrap();
}

#[test]
fn a_torn_index_tail_and_a_lost_index_are_both_recovered_from() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("torn.chest");
    {
        let chest: Chest<u32, Vec<u8>> = Chest::builder().path(&path).budget(0).open().unwrap();
        for k in 0..50 {
            chest.insert(k, vec![k as u8; 64]).unwrap();
        }
        chest.remove(&7).unwrap();
        chest.close().unwrap();
    }
    let index = path.join(".keys");
    let mut bytes = fs::read(&index).unwrap();
    bytes.extend_from_slice(&[0xff, 0, 0, 0, 1, 2, 3]);
    fs::write(&index, &bytes).unwrap();
    {
        let chest: Chest<u32, Vec<u8>> = Chest::open(&path).unwrap();
        assert_eq!(chest.len(), 49);
        assert_eq!(*chest.get(&8).unwrap().unwrap(), vec![8; 64]);
    }
    fs::remove_file(&index).unwrap();
    let chest: Chest<u32, Vec<u8>> = Chest::open(&path).unwrap();
    assert_eq!(chest.len(), 49, "rebuilt from the value files' headers");
    assert!(!chest.contains_key(&7));
    for k in (0..50).filter(|k| *k != 7) {
        assert_eq!(*chest.get(&k).unwrap().unwrap(), vec![k as u8; 64]);
    }
    assert!(chest.stats().mended_on_open >= 49);
}

#[test]
fn compression_shrinks_compressible_values_and_round_trips() {
    let plain: Chest<u32, Vec<u8>> = Chest::with_budget(0).unwrap();
    let packed: Chest<u32, Vec<u8>> = Chest::builder()
        .budget(0)
        .compression(Compression::Lz4)
        .open()
        .unwrap();
    for k in 0..10 {
        plain.insert(k, vec![k as u8; 50_000]).unwrap();
        packed.insert(k, vec![k as u8; 50_000]).unwrap();
    }
    assert!(packed.stats().disk_bytes * 10 < plain.stats().disk_bytes);
    for k in 0..10 {
        assert_eq!(*packed.get(&k).unwrap().unwrap(), vec![k as u8; 50_000]);
    }
}

#[test]
fn a_temporary_chest_removes_its_directory_on_drop() {
    let chest: Chest<u32, Vec<u8>> = Chest::with_budget(10).unwrap();
    chest.insert(1, vec![0; 100]).unwrap();
    let path = chest.path().to_path_buf();
    assert!(path.join("segments").is_dir());
    drop(chest);
    assert!(!path.exists());
}

#[test]
fn threads_share_one_chest() {
    let chest: Arc<Chest<(u32, u32), Vec<u32>>> = Arc::new(Chest::with_budget(20_000).unwrap());
    let handles: Vec<_> = (0..4u32)
        .map(|t| {
            let chest = Arc::clone(&chest);
            std::thread::spawn(move || {
                for i in 0..300u32 {
                    chest.insert((t, i), vec![t * 1000 + i; 50]).unwrap();
                    if i % 3 == 0 {
                        chest.update(&(t, i), |v| v.push(7)).unwrap();
                    }
                    if i % 5 == 0 {
                        let back = chest.get(&(t, i / 2)).unwrap().unwrap();
                        assert_eq!(back[0], t * 1000 + i / 2);
                    }
                    let s = chest.stats();
                    assert!(s.memory_bytes <= s.budget_bytes);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(chest.len(), 1200);
    for t in 0..4u32 {
        for i in 0..300u32 {
            let v = chest.get(&(t, i)).unwrap().unwrap();
            assert_eq!(v.len(), if i % 3 == 0 { 51 } else { 50 });
            assert_eq!(v[0], t * 1000 + i);
        }
    }
    chest.flush().unwrap(); // waits for the background writes
    assert!(chest.stats().on_disk > 0);
}

#[test]
fn a_bloated_index_is_rewritten_by_flush_and_still_replays() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bloat.chest");
    let chest: Chest<u32, u32> = Chest::builder().path(&path).budget(0).open().unwrap();
    for k in 0..100 {
        chest.insert(k, 0).unwrap();
    }
    chest.flush().unwrap();
    let small = chest.stats().index_bytes;
    for round in 1..=20 {
        for k in 0..100 {
            chest.insert(k, round).unwrap();
        }
    }
    let bloated = chest.stats().index_bytes;
    assert!(bloated > 15 * small, "{bloated} vs {small}");
    chest.flush().unwrap();
    let rewritten = chest.stats().index_bytes;
    assert!(rewritten < 2 * small, "{rewritten} vs {small}");
    chest.close().unwrap();
    let chest: Chest<u32, u32> = Chest::open(&path).unwrap();
    assert_eq!(chest.len(), 100);
    for k in 0..100 {
        assert_eq!(chest.get(&k).unwrap().as_deref(), Some(&20));
    }
}

#[test]
fn dropping_a_persistent_chest_flushes_what_was_only_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drop.chest");
    {
        let chest: Chest<u32, String> = Chest::open(&path).unwrap();
        chest.insert(1, "kept".into()).unwrap();
        assert_eq!(chest.stats().on_disk, 0);
    }
    let chest: Chest<u32, String> = Chest::open(&path).unwrap();
    assert_eq!(
        chest.get(&1).unwrap().as_deref().map(String::as_str),
        Some("kept")
    );
}

#[test]
fn chest_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Chest<String, Vec<f64>>>();
    assert_send_sync::<Chest<u64, Vec<u8>, spillchest::Bincode>>();
}

#[test]
fn a_flipped_byte_in_a_segment_is_an_error_for_that_key_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flipseg.chest");
    let chest: Chest<u32, Vec<u8>> = Chest::builder().path(&path).budget(0).open().unwrap();
    for k in 0..10 {
        chest.insert(k, vec![k as u8; 1000]).unwrap();
    }
    let stats = chest.stats();
    assert_eq!(
        (stats.files, stats.segments),
        (0, 1),
        "small values share one segment"
    );
    chest.close().unwrap();
    let segment = fs::read_dir(path.join("segments"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = fs::read(&segment).unwrap();
    // The fifth record's payload: 16-byte file header, then records of 28 + key + payload.
    let record = 28 + 1 + 1002;
    let at = 16 + 4 * record + 28 + 1 + 500;
    bytes[at] ^= 0x20;
    fs::write(&segment, &bytes).unwrap();

    let chest: Chest<u32, Vec<u8>> = Chest::open(&path).unwrap();
    let mut damaged = Vec::new();
    for k in 0..10 {
        match chest.get(&k) {
            Ok(v) => assert_eq!(*v.unwrap(), vec![k as u8; 1000]),
            Err(Error::Corrupt { path: p, reason }) => {
                assert_eq!(p, segment);
                assert!(reason.contains("checksum"), "{reason}");
                damaged.push(k);
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(damaged.len(), 1);
}

#[test]
fn overwrites_and_removals_are_compacted_to_under_twice_the_live_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("compact.chest");
    let chest: Chest<u32, Vec<u8>> = Chest::builder()
        .path(&path)
        .budget(0)
        .segment_bytes(64 << 10)
        .open()
        .unwrap();
    for round in 0..30u8 {
        for k in 0..100u32 {
            chest.insert(k, vec![round; 500]).unwrap();
        }
        for k in (0..100u32).step_by(7) {
            chest.remove(&k).unwrap();
        }
        let s = chest.stats();
        assert!(
            s.disk_bytes <= 2 * s.live_disk_bytes + (64 << 10),
            "round {round}: {} on disk for {} live",
            s.disk_bytes,
            s.live_disk_bytes
        );
    }
    let s = chest.stats();
    assert!(s.compactions > 0);
    assert_eq!(s.failed_compactions, 0);
    chest.close().unwrap();
    let chest: Chest<u32, Vec<u8>> = Chest::open(&path).unwrap();
    for k in 0..100u32 {
        let expected = (k % 7 != 0).then(|| vec![29u8; 500]);
        assert_eq!(
            chest.get(&k).unwrap().as_deref(),
            expected.as_ref(),
            "key {k}"
        );
    }
}

#[test]
fn many_small_values_need_a_handful_of_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small.chest");
    let chest: Chest<u64, Vec<u8>> = Chest::builder().path(&path).budget(1 << 16).open().unwrap();
    for k in 0..20_000u64 {
        chest.insert(k, vec![(k % 251) as u8; 100]).unwrap();
    }
    chest.close().unwrap();
    assert!(
        all_files(&path).len() < 10,
        "{} files",
        all_files(&path).len()
    );
    let chest: Chest<u64, Vec<u8>> = Chest::open(&path).unwrap();
    assert_eq!(chest.len(), 20_000);
    for k in (0..20_000u64).step_by(97) {
        assert_eq!(*chest.get(&k).unwrap().unwrap(), vec![(k % 251) as u8; 100]);
    }
}

/// A codec of the user's own: bincode with fixed-width integers, under another name.
#[derive(Debug, Clone, Copy)]
struct FixedWidth;

impl spillchest::Codec for FixedWidth {
    const NAME: &'static str = "test-bincode-fixed-width";

    fn encode<T: Serialize + 'static>(
        &self,
        value: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), spillchest::CodecError> {
        let config = bincode::config::standard().with_fixed_int_encoding();
        out.extend(bincode::serde::encode_to_vec(value, config)?);
        Ok(())
    }

    fn decode<T: serde::de::DeserializeOwned + 'static>(
        &self,
        bytes: &[u8],
    ) -> Result<T, spillchest::CodecError> {
        let config = bincode::config::standard().with_fixed_int_encoding();
        let (value, used) = bincode::serde::decode_from_slice(bytes, config)?;
        if used != bytes.len() {
            return Err("trailing bytes".into());
        }
        Ok(value)
    }
}

#[test]
fn a_user_codec_is_used_for_keys_and_values_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("codec.chest");
    {
        let chest: Chest<u64, Vec<u64>, FixedWidth> = Chest::builder()
            .path(&path)
            .budget(0)
            .codec(FixedWidth)
            .open()
            .unwrap();
        chest.insert(1, vec![1, 2, 3]).unwrap();
        // Fixed width: an 8-byte length and three 8-byte integers, not varints.
        assert_eq!(chest.stats().spill_bytes, 32);
        chest.close().unwrap();
    }
    let chest: Chest<u64, Vec<u64>, FixedWidth> = Chest::builder()
        .path(&path)
        .codec(FixedWidth)
        .open()
        .unwrap();
    assert_eq!(chest.get(&1).unwrap().as_deref(), Some(&vec![1, 2, 3]));
    chest.close().unwrap();
    let err = Chest::<u64, Vec<u64>>::open(&path).unwrap_err();
    assert!(matches!(err, Error::TypeMismatch { .. }), "{err}");
    assert!(
        err.to_string().contains("test-bincode-fixed-width"),
        "{err}"
    );
}

#[test]
fn a_panicking_update_closure_loses_nothing() {
    let chest: Chest<u32, Vec<u8>> = Chest::with_budget(1000).unwrap();
    chest.insert(1, vec![1; 100]).unwrap(); // in memory, only copy
    chest.insert(2, vec![2; 900]).unwrap(); // evicts 1 to disk
    for key in [1u32, 2] {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            chest.update(&key, |_| panic!("closure fails")).unwrap();
        }));
        assert!(outcome.is_err());
        assert!(chest.contains_key(&key), "key {key} vanished after a panic");
        let v = chest.get(&key).unwrap().unwrap();
        assert_eq!(v[0], key as u8);
    }
    assert_eq!(chest.len(), 2);
    let s = chest.stats();
    assert!(s.memory_bytes <= s.budget_bytes);
    chest.update(&1, |v| v.push(7)).unwrap();
    assert_eq!(chest.get(&1).unwrap().unwrap().len(), 101);
}

/// A value whose `Serialize` panics when asked to.
#[derive(Debug, Deserialize)]
struct Explosive(bool);

impl Serialize for Explosive {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        assert!(!self.0, "Serialize panics");
        s.serialize_bool(false)
    }
}

#[test]
fn a_panicking_serialize_during_eviction_is_an_error_and_leaves_the_chest_consistent() {
    let chest: Chest<u32, Explosive> = Chest::builder()
        .budget(100)
        .weigher(|_| 40)
        .synchronous_spill(true)
        .open()
        .unwrap();
    chest.insert(1, Explosive(true)).unwrap();
    chest.insert(2, Explosive(false)).unwrap();
    // The panic is caught where the value is encoded for its spill and reported as an error.
    let err = chest.insert(3, Explosive(false)).unwrap_err();
    assert!(matches!(err, Error::Encode { .. }), "{err}");
    assert!(err.to_string().contains("panicked"), "{err}");
    // Key 1 is still the next victim, in memory, and the chest still works once it is gone.
    assert_eq!(chest.len(), 2);
    assert_eq!(chest.stats().in_memory, 2);
    assert!(chest.remove(&1).unwrap());
    chest.insert(3, Explosive(false)).unwrap();
    chest.insert(4, Explosive(false)).unwrap();
    assert_eq!(chest.len(), 3);
    let s = chest.stats();
    assert!(s.memory_bytes <= s.budget_bytes);
    assert!(s.on_disk >= 1, "key 2 could be spilled after the panic");
}

/// Above 100,000 entries an open builds its tables on two threads: every key and value must
/// come back as from a small chest.
#[test]
fn a_chest_large_enough_to_open_on_two_threads_reopens_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("large.chest");
    let n = 120_000u64;
    let chest: Chest<u64, u64> = Chest::builder()
        .path(&path)
        .budget(64 << 10)
        .open()
        .unwrap();
    for k in 0..n {
        chest.insert(k, k * 3 + 1).unwrap();
    }
    for k in (0..n).step_by(7) {
        chest.remove(&k).unwrap();
    }
    chest.close().unwrap();
    let chest: Chest<u64, u64> = Chest::open(&path).unwrap();
    let want = n - n.div_ceil(7);
    assert_eq!(chest.len() as u64, want);
    let mut keys = chest.keys();
    keys.sort_unstable();
    let expected: Vec<u64> = (0..n).filter(|k| k % 7 != 0).collect();
    assert_eq!(keys, expected);
    for k in (0..n).step_by(997) {
        let got = chest.get(&k).unwrap().map(|v| *v);
        assert_eq!(got, (k % 7 != 0).then_some(k * 3 + 1), "key {k}");
    }
}

#[test]
fn spilled_values_go_to_segments_below_the_small_value_limit_and_to_files_from_it() {
    // The writer encodes small values straight into the segment batch and moves one that
    // turns out too large to a value file: the limit falls between 999 and 1,000 encoded bytes
    // (a `Vec<u8>` of 996 bytes encodes as 999: a 3-byte length, then the bytes).
    for compression in [Compression::None, Compression::Lz4] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("places.chest");
        let lens = [10usize, 996, 997, 5_000];
        let value = |i: u64| -> Vec<u8> {
            let len = lens[i as usize % lens.len()];
            (0..len).map(|j| (j as u64 % 7 + i) as u8).collect()
        };
        let chest: Chest<u64, Vec<u8>> = Chest::builder()
            .path(&path)
            .budget(8 << 10)
            .small_value_bytes(1_000)
            .compression(compression)
            .open()
            .unwrap();
        for i in 0..200 {
            chest.insert(i, value(i)).unwrap();
        }
        chest.close().unwrap();

        let info = spillchest::ChestInfo::open(&path).unwrap();
        let (mut in_segments, mut in_files) = (0, 0);
        for entry in info.entries() {
            match entry.place {
                spillchest::EntryPlace::Segment { .. } => {
                    assert!(entry.raw_len < 1_000, "{compression:?}: {entry:?}");
                    in_segments += 1;
                }
                spillchest::EntryPlace::File { .. } => {
                    assert!(entry.raw_len >= 1_000, "{compression:?}: {entry:?}");
                    in_files += 1;
                }
                other => panic!("a place this test does not know: {other:?}"),
            }
            match compression {
                Compression::None => assert!(!entry.compressed, "{entry:?}"),
                // The repeating bytes compress whenever there are enough of them.
                _ => assert_eq!(entry.compressed, entry.raw_len > 100, "{entry:?}"),
            }
        }
        assert_eq!((in_segments, in_files), (100, 100), "{compression:?}");
        assert!(info.verify(|_| {}).is_healthy(), "{compression:?}");
        drop(info);

        let chest: Chest<u64, Vec<u8>> = Chest::open(&path).unwrap();
        for i in 0..200 {
            assert_eq!(chest.get(&i).unwrap().as_deref(), Some(&value(i)), "{i}");
        }
    }
}

/// A codec that breaks the contract of [`spillchest::Codec::encode`]: it clears the buffer
/// before writing instead of appending to it.
#[derive(Debug, Clone, Copy)]
struct Clearing;

impl spillchest::Codec for Clearing {
    const NAME: &'static str = "test-clearing";

    fn encode<T: Serialize + 'static>(
        &self,
        value: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), spillchest::CodecError> {
        out.clear();
        spillchest::Bincode.encode(value, out)
    }

    fn decode<T: serde::de::DeserializeOwned + 'static>(
        &self,
        bytes: &[u8],
    ) -> Result<T, spillchest::CodecError> {
        spillchest::Bincode.decode(bytes)
    }
}

#[test]
fn a_codec_that_clears_its_buffer_cannot_reach_other_keys_records() {
    // The writer encodes straight into the segment batch only with the built-in codec; any
    // other codec writes into a buffer of its own, so this one's clearing loses nothing.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clearing.chest");
    let value = |i: u64| vec![i as u8; 300 + i as usize % 7];
    {
        let chest: Chest<u64, Vec<u8>, Clearing> = Chest::builder()
            .path(&path)
            .budget(4 << 10)
            .codec(Clearing)
            .open()
            .unwrap();
        for i in 0..300 {
            chest.insert(i, value(i)).unwrap();
        }
        assert!(
            chest.stats().spills > 250,
            "most values were spilled in batches"
        );
        chest.close().unwrap();
    }
    let chest: Chest<u64, Vec<u8>, Clearing> =
        Chest::builder().path(&path).codec(Clearing).open().unwrap();
    for i in 0..300 {
        assert_eq!(
            chest.get(&i).unwrap().as_deref(),
            Some(&value(i)),
            "key {i}"
        );
    }
}
