//! Read-only chests beside a writer (issue #5, "Several processes"): readers take no lock,
//! follow what the writer appends to the index with `refresh` (also done by `get` on a miss),
//! and keep reading correct bytes while the writer overwrites, removes and compacts.
//!
//! The first tests run a writer and a reader on one directory in this process, step by step.
//! The last runs one writer and three readers as separate processes (this test binary re-run
//! as children, see `common`), every value carrying its own checksum.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Rng, child_role, say, spawn_child};
use spillchest::{Chest, Error};

type Store = Chest<u64, Vec<u8>>;

/// Values encoded below this are segment records; larger ones get a file each.
const SMALL_VALUE_BYTES: u64 = 4096;
/// The smallest segment size allowed, so a few values fill one and compaction comes soon.
const SEGMENT_BYTES: u64 = 4096;

/// A writer whose values all go to disk at once (a budget of 0, and spills done before each
/// call returns), so readers see them when the test looks.
fn spilling_writer(path: &Path) -> Store {
    writer_with_budget(path, 0)
}

fn writer_with_budget(path: &Path, budget: u64) -> Store {
    Chest::builder()
        .path(path)
        .budget(budget)
        .synchronous_spill(true)
        .small_value_bytes(SMALL_VALUE_BYTES)
        .segment_bytes(SEGMENT_BYTES)
        .open()
        .unwrap_or_else(|e| panic!("open {} for writing: {e}", path.display()))
}

/// A read-only chest that keeps nothing in memory, so every `get` reads the disk.
fn reader(path: &Path) -> Store {
    Chest::builder()
        .path(path)
        .budget(0)
        .read_only()
        .open()
        .unwrap_or_else(|e| panic!("open {} read-only: {e}", path.display()))
}

/// A value of `len` bytes saying it is generation `generation` of `key`.
fn value(key: u64, generation: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&key.to_le_bytes());
    v.extend_from_slice(&generation.to_le_bytes());
    v.resize(len, (key * 31 + generation) as u8);
    v
}

/// The generation a value from [`value`] carries, checking its key.
fn generation(key: u64, v: &[u8]) -> u64 {
    assert_eq!(u64::from_le_bytes(v[..8].try_into().unwrap()), key);
    u64::from_le_bytes(v[8..16].try_into().unwrap())
}

/// The generation of `key` that `chest` returns, if it has the key.
fn seen(chest: &Store, key: u64) -> Option<u64> {
    let got = chest
        .get(&key)
        .unwrap_or_else(|e| panic!("key {key}: {e}"))?;
    let g = generation(key, &got);
    assert_eq!(*got, value(key, g, got.len()), "key {key}: damaged value");
    Some(g)
}

fn segment_ids(path: &Path) -> Vec<String> {
    let mut ids: Vec<String> = fs::read_dir(path.join("segments"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

#[test]
fn a_reader_sees_what_the_writer_spilled_or_flushed_as_of_its_last_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.chest");
    // A budget that holds the small values: they stay in the writer's memory until a flush.
    let writer = writer_with_budget(&path, 64 << 10);
    for key in 0..10 {
        writer.insert(key, value(key, 1, 300)).unwrap();
    }
    // The writer holds the lock; a reader takes none and opens beside it.
    let second = Chest::<u64, Vec<u8>>::builder().path(&path).open();
    assert!(matches!(second, Err(Error::Locked { .. })));
    let r = reader(&path);
    assert_eq!(r.len(), 0, "nothing is on disk yet");
    r.refresh().unwrap();
    assert_eq!(
        seen(&r, 0),
        None,
        "values only in the writer's memory are not visible"
    );

    writer.flush().unwrap();
    assert_eq!(r.len(), 0, "len is as of the last refresh");
    assert!(!r.contains_key(&3));
    // A miss refreshes by itself.
    assert_eq!(seen(&r, 3), Some(1));
    assert_eq!(r.len(), 10);
    assert!(r.contains_key(&9));

    // A value heavier than the budget goes straight to disk: visible without a flush.
    writer.insert(50, value(50, 1, 100_000)).unwrap();
    assert_eq!(seen(&r, 50), Some(1));

    // Overwrites and removals show after a refresh; until then the reader reads the state
    // of its last refresh, from bytes that are still there.
    writer.insert(1, value(1, 2, 300)).unwrap();
    assert!(writer.remove(&2).unwrap());
    writer.flush().unwrap();
    assert_eq!(seen(&r, 1), Some(1));
    assert!(r.contains_key(&2));
    assert_eq!(seen(&r, 2), Some(1));
    r.refresh().unwrap();
    assert_eq!(seen(&r, 1), Some(2));
    assert!(!r.contains_key(&2));
    assert_eq!(seen(&r, 2), None);
    assert_eq!(r.len(), 10);

    // Refresh is a no-op on a writable chest.
    writer.refresh().unwrap();
    assert_eq!(writer.len(), 10);
    // Writes are still refused.
    assert!(matches!(r.insert(1, vec![]), Err(Error::ReadOnly { .. })));
    writer.close().unwrap();
    r.refresh().unwrap();
    assert_eq!(r.len(), 10);
}

#[test]
fn a_reader_reads_correct_bytes_while_the_writer_compacts_segments_away() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.chest");
    let writer = spilling_writer(&path);
    let keys = 0..40;
    for key in keys.clone() {
        writer.insert(key, value(key, 1, 300)).unwrap();
    }
    writer.flush().unwrap();
    let r = reader(&path);
    for key in keys.clone() {
        assert_eq!(seen(&r, key), Some(1));
    }
    for round in 2..=4 {
        let before = segment_ids(&path);
        let compactions = writer.stats().compactions;
        for key in keys.clone() {
            writer.insert(key, value(key, round, 300)).unwrap();
        }
        writer.flush().unwrap();
        assert!(
            writer.stats().compactions > compactions,
            "round {round}: {:?}",
            writer.stats()
        );
        let after = segment_ids(&path);
        assert!(
            before.iter().any(|s| !after.contains(s)),
            "round {round}: a segment the reader had open was deleted: {before:?} -> {after:?}"
        );
        // Without a refresh the reader reads the previous round from the deleted segments it
        // still has open.
        for key in keys.clone() {
            assert_eq!(seen(&r, key), Some(round - 1), "round {round}");
        }
        r.refresh().unwrap();
        for key in keys.clone() {
            assert_eq!(seen(&r, key), Some(round), "round {round}");
        }
        assert_eq!(r.len(), 40);
    }
    writer.close().unwrap();
}

#[test]
fn a_reader_follows_a_value_the_writer_moved_replaced_or_removed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.chest");
    let writer = spilling_writer(&path);
    writer.insert(7, value(7, 1, 10_000)).unwrap();
    writer.insert(8, value(8, 1, 300)).unwrap();
    let r = reader(&path);
    assert_eq!(seen(&r, 7), Some(1));

    // Into a segment: the value file is deleted once the new record is in the index. The
    // reader finds the file gone, refreshes and reads the record.
    writer.insert(7, value(7, 2, 300)).unwrap();
    assert_eq!(seen(&r, 7), Some(2));
    // Back into a file: the segment record the reader knows is still there.
    writer.insert(7, value(7, 3, 10_000)).unwrap();
    assert_eq!(seen(&r, 7), Some(2));
    r.refresh().unwrap();
    assert_eq!(seen(&r, 7), Some(3));
    // A file renamed over the one the reader knows holds a newer write: it is complete and
    // checked, so the reader returns it, and never an older one after it.
    writer.insert(7, value(7, 4, 10_000)).unwrap();
    assert_eq!(seen(&r, 7), Some(4));
    r.refresh().unwrap();
    assert_eq!(seen(&r, 7), Some(4));
    // Removed: the file is gone, and so is the key once the reader looked.
    assert!(writer.remove(&7).unwrap());
    assert!(r.contains_key(&7));
    assert_eq!(seen(&r, 7), None);
    assert!(!r.contains_key(&7));
    assert_eq!(seen(&r, 8), Some(1));
    writer.close().unwrap();
}

#[test]
fn a_rewritten_index_is_reloaded_in_full() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.chest");
    let writer = spilling_writer(&path);
    for key in 0..5 {
        writer.insert(key, value(key, 1, 300)).unwrap();
    }
    writer.flush().unwrap();
    let r = reader(&path);
    assert_eq!(r.len(), 5);
    let inode = |p: &Path| fs::metadata(p.join(".keys")).unwrap().ino();
    let before = inode(&path);
    // Enough overwrites that the flush finds the index bloated and rewrites it.
    for generation in 2..1200 {
        writer.insert(0, value(0, generation, 40)).unwrap();
    }
    assert!(writer.remove(&4).unwrap());
    writer.insert(9, value(9, 1, 300)).unwrap();
    writer.flush().unwrap();
    assert_ne!(
        inode(&path),
        before,
        "the flush should have rewritten the index"
    );
    r.refresh().unwrap();
    let mut keys = r.keys();
    keys.sort();
    assert_eq!(keys, [0, 1, 2, 3, 9]);
    assert_eq!(seen(&r, 0), Some(1199));
    assert_eq!(seen(&r, 4), None);
    assert_eq!(seen(&r, 9), Some(1));
    writer.close().unwrap();
}

#[test]
fn damaged_bytes_are_still_corrupt_for_a_reader() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.chest");
    let writer = spilling_writer(&path);
    writer.insert(1, value(1, 1, 300)).unwrap();
    writer.flush().unwrap();
    let r = reader(&path);
    let segment = path.join("segments").join(&segment_ids(&path)[0]);
    let mut bytes = fs::read(&segment).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x10;
    fs::write(&segment, &bytes).unwrap();
    match r.get(&1) {
        Err(Error::Corrupt { path: p, .. }) => assert_eq!(p, segment),
        other => panic!("want Corrupt, got {other:?}"),
    }
    writer.close().unwrap();
}

// ---------------------------------------------------------------------------------------------
// One writer and three readers, each a process of its own.

/// The test that plays every role.
const TEST: &str = "one_writer_and_three_readers_in_separate_processes";
/// Keys the writer writes.
const KEYS: u64 = 48;
/// How long the writer writes.
const WRITE_FOR: Duration = Duration::from_secs(3);
/// How long a reader waits for the writer's end before it gives up.
const READER_CAP: Duration = Duration::from_secs(60);

/// FNV-1a, 64 bits: the checksum each value carries.
fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A value carrying its key, its version, a payload of `len` bytes and the checksum of all
/// of that.
fn checked_value(key: u64, version: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 28);
    v.extend_from_slice(&key.to_le_bytes());
    v.extend_from_slice(&version.to_le_bytes());
    v.extend_from_slice(&(len as u32).to_le_bytes());
    let mut x = key.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ version | 1;
    for _ in 0..len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(x as u8);
    }
    let sum = fnv(&v);
    v.extend_from_slice(&sum.to_le_bytes());
    v
}

/// The key and version a value from [`checked_value`] carries, after checking it whole.
fn check_value(v: &[u8]) -> Result<(u64, u64), String> {
    if v.len() < 28 {
        return Err(format!("{} bytes is too short", v.len()));
    }
    let (body, sum) = v.split_at(v.len() - 8);
    if fnv(body) != u64::from_le_bytes(sum.try_into().unwrap()) {
        return Err("checksum mismatch".into());
    }
    let key = u64::from_le_bytes(body[..8].try_into().unwrap());
    let version = u64::from_le_bytes(body[8..16].try_into().unwrap());
    let len = u32::from_le_bytes(body[16..20].try_into().unwrap()) as usize;
    if body.len() != 20 + len || *v != checked_value(key, version, len) {
        return Err(format!("key {key} version {version}: wrong bytes"));
    }
    Ok((key, version))
}

/// Spills in the background (the default), so readers race the writer thread too.
fn multi_process_writer(path: &Path) -> Store {
    Chest::builder()
        .path(path)
        .budget(16 << 10)
        .small_value_bytes(SMALL_VALUE_BYTES)
        .segment_bytes(4 * SEGMENT_BYTES)
        .open()
        .unwrap_or_else(|e| panic!("open {} for writing: {e}", path.display()))
}

/// The file the writer leaves beside the chest when it is done: `key version` per key it
/// left, the readers' signal to stop.
fn final_file(path: &Path) -> PathBuf {
    path.with_file_name("final")
}

/// The writer: for `WRITE_FOR`, inserts and overwrites values of mixed sizes (segment records
/// and value files), removes some, flushes now and then; then closes and writes what it left.
fn write_for_a_while(path: &Path) {
    let chest = multi_process_writer(path);
    say("OPEN");
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut versions = vec![0u64; KEYS as usize];
    let mut present = vec![false; KEYS as usize];
    let start = Instant::now();
    let mut ops = 0u64;
    while start.elapsed() < WRITE_FOR {
        let key = rng.below(KEYS);
        if rng.below(12) == 0 {
            chest.remove(&key).unwrap();
            present[key as usize] = false;
        } else {
            versions[key as usize] += 1;
            let len = if rng.below(4) == 0 {
                SMALL_VALUE_BYTES as usize + rng.below(12_000) as usize
            } else {
                16 + rng.below(1500) as usize
            };
            chest
                .insert(key, checked_value(key, versions[key as usize], len))
                .unwrap();
            present[key as usize] = true;
        }
        ops += 1;
        if ops.is_multiple_of(40) {
            chest.flush().unwrap();
        }
    }
    let stats = chest.stats();
    chest.close().unwrap();
    let mut text = String::new();
    for key in 0..KEYS {
        if present[key as usize] {
            text.push_str(&format!("{key} {}\n", versions[key as usize]));
        }
    }
    let tmp = path.with_file_name("final.tmp");
    fs::write(&tmp, text).unwrap();
    fs::rename(&tmp, final_file(path)).unwrap();
    say(format!(
        "WROTE {ops} {} {} {}",
        stats.compactions, stats.files, stats.segments
    ));
}

/// A reader: refreshes and reads random keys until the writer is done, checking every value
/// it sees and that no key's version ever goes back; then checks the writer's last state.
fn read_until_the_writer_is_done(path: &Path, seed: u64) {
    let chest = reader(path);
    say("OPEN");
    let mut rng = Rng(seed);
    let mut last: BTreeMap<u64, u64> = BTreeMap::new();
    let (mut values, mut newer, mut refreshes) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    while !final_file(path).exists() {
        assert!(start.elapsed() < READER_CAP, "the writer never finished");
        chest.refresh().unwrap();
        refreshes += 1;
        for _ in 0..8 {
            let key = rng.below(KEYS);
            let Some(v) = chest.get(&key).unwrap_or_else(|e| panic!("key {key}: {e}")) else {
                continue;
            };
            let (k, version) = check_value(&v).unwrap_or_else(|e| panic!("key {key}: {e}"));
            assert_eq!(k, key, "the value of key {key} belongs to key {k}");
            let before = last.insert(key, version);
            assert!(
                before.is_none_or(|b| b <= version),
                "key {key} went back from version {before:?} to {version}"
            );
            if before.is_some_and(|b| b < version) {
                newer += 1;
            }
            values += 1;
        }
    }
    // The writer closed: everything it left is on disk.
    let text = fs::read_to_string(final_file(path)).unwrap();
    let want: BTreeMap<u64, u64> = text
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(' ').unwrap();
            (k.parse().unwrap(), v.parse().unwrap())
        })
        .collect();
    chest.refresh().unwrap();
    for key in 0..KEYS {
        let got = chest.get(&key).unwrap().map(|v| check_value(&v).unwrap().1);
        assert_eq!(
            got,
            want.get(&key).copied(),
            "key {key} after the writer closed"
        );
    }
    assert_eq!(chest.len(), want.len());
    say(format!("READ {values} {newer} {refreshes}"));
}

#[test]
fn one_writer_and_three_readers_in_separate_processes() {
    if let Some((role, path)) = child_role() {
        match role.as_str() {
            "writer" => write_for_a_while(&path),
            reader => {
                let n: u64 = reader.strip_prefix("reader-").unwrap().parse().unwrap();
                read_until_the_writer_is_done(&path, 0x9E37_79B9 * (n + 1));
            }
        }
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.chest");
    multi_process_writer(&path).close().unwrap();

    let mut writer = spawn_child(TEST, "writer", &path);
    writer.expect_line("OPEN");
    let mut readers: Vec<_> = (1..=3)
        .map(|n| spawn_child(TEST, &format!("reader-{n}"), &path))
        .collect();
    for r in &mut readers {
        r.expect_line("OPEN");
    }
    let wrote = writer.expect_line("WROTE");
    let (status, _) = writer.finish();
    assert!(status.success(), "the writer failed: {status}");
    let figures: Vec<u64> = wrote.split(' ').map(|f| f.parse().unwrap()).collect();
    println!("writer: {figures:?} (ops, compactions, value files, segments)");
    assert!(figures[0] > 200, "the writer did little: {wrote}");
    assert!(figures[1] > 0, "no compaction happened: {wrote}");
    for (n, r) in readers.iter_mut().enumerate() {
        let read = r.expect_line("READ");
        let (status, _) = r.finish();
        assert!(status.success(), "reader {} failed: {status}", n + 1);
        let figures: Vec<u64> = read.split(' ').map(|f| f.parse().unwrap()).collect();
        println!(
            "reader {}: {figures:?} (values checked, newer versions seen, refreshes)",
            n + 1
        );
        assert!(figures[0] >= 100, "reader {} saw too little: {read}", n + 1);
        assert!(
            figures[1] >= 10,
            "reader {} never saw a key change: {read}",
            n + 1
        );
    }
}

/// One read-only chest shared by three threads, beside a writer in the same process spilling in
/// the background: refreshes (explicit, and on misses) race each other and the threads' reads
/// of values the writer moves, overwrites, compacts away and removes. Every value read must be
/// whole and a version the writer stored, and no thread may see a key's version go back.
#[test]
fn a_read_only_chest_shared_by_threads_follows_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.chest");
    let writer = multi_process_writer(&path);
    const KEYS: u64 = 64;
    for key in 0..KEYS {
        writer.insert(key, checked_value(key, 0, 200)).unwrap();
    }
    writer.flush().unwrap();
    let reader: Store = Chest::builder()
        .path(&path)
        .budget(4 << 10)
        .read_only()
        .open()
        .unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let mut readers = Vec::new();
        for t in 0..3u64 {
            let (reader, done) = (&reader, &done);
            readers.push(scope.spawn(move || {
                let mut rng = Rng(0x5EED_0000 + t);
                let mut newest = vec![0u64; KEYS as usize];
                let mut reads = 0u64;
                while !done.load(std::sync::atomic::Ordering::Acquire) {
                    let key = rng.below(KEYS);
                    if rng.below(50) == 0 {
                        reader.refresh().unwrap();
                    }
                    match reader.get(&key) {
                        Ok(Some(v)) => {
                            let (k, version) = check_value(&v)
                                .unwrap_or_else(|e| panic!("thread {t}, key {key}: {e}"));
                            assert_eq!(k, key);
                            assert!(
                                version >= newest[key as usize],
                                "thread {t}, key {key}: version {version} after {}",
                                newest[key as usize]
                            );
                            newest[key as usize] = version;
                            reads += 1;
                        }
                        Ok(None) => {}
                        Err(e) => panic!("thread {t}, key {key}: {e}"),
                    }
                }
                reads
            }));
        }
        let mut rng = Rng(0xC0FFEE);
        for version in 1..=4000u64 {
            let key = rng.below(KEYS);
            if rng.below(10) == 0 {
                writer.remove(&key).unwrap();
            } else {
                let len = if rng.below(20) == 0 { 6000 } else { 200 };
                writer
                    .insert(key, checked_value(key, version, len))
                    .unwrap();
            }
            if version % 100 == 0 {
                writer.flush().unwrap();
            }
        }
        writer.flush().unwrap();
        done.store(true, std::sync::atomic::Ordering::Release);
        for handle in readers {
            assert!(handle.join().unwrap() > 0, "a thread read nothing");
        }
    });
    // After a last refresh the reader has exactly the writer's keys and values.
    reader.refresh().unwrap();
    for key in 0..KEYS {
        let want = writer.get(&key).unwrap();
        let got = reader.get(&key).unwrap();
        assert_eq!(got.as_deref(), want.as_deref(), "key {key}");
    }
    writer.close().unwrap();
}
