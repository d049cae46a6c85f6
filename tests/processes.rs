//! Process-level behaviour through the public API: a persistent chest written by one process
//! and reopened by another, the lock between two processes (refusal, waiting), read-only
//! handles, and what survives a child process that aborts or is killed.
//!
//! Each test re-runs this test binary as a child process (see `common`); the child acts on the
//! chest directory it is given and reports through stdout lines and its exit status.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{ChildRun, child_role, run_child, say, spawn_child, tag_of, value_of};
use spillchest::{Chest, Error, Policy, Stats};

type TestChest = Chest<u64, Vec<u8>>;

/// Bytes of every value the tests store.
const VALUE_LEN: usize = 4096;
/// A budget that holds four values (each weighs a few bytes more than `VALUE_LEN` encoded), so
/// nearly every value spills.
const BUDGET: u64 = 5 * VALUE_LEN as u64;
/// The most values `BUDGET` holds.
const VALUES_IN_BUDGET: u64 = 4;

/// The chest directory inside a fresh temporary directory.
fn chest_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("data.chest")
}

/// Opens the persistent chest at `path` for writing with the small budget.
fn open(path: &Path) -> TestChest {
    Chest::builder()
        .path(path)
        .budget(BUDGET)
        .policy(Policy::Lru)
        // The workload checks what spilled after each step.
        .synchronous_spill(true)
        .open()
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// Opens the persistent chest at `path` read-only with the small budget.
fn open_read_only(path: &Path) -> TestChest {
    Chest::builder()
        .path(path)
        .budget(BUDGET)
        .read_only()
        .open()
        .unwrap_or_else(|e| panic!("open {} read-only: {e}", path.display()))
}

/// The role this process was given, when it runs as a child; panics on an unexpected role.
fn as_child(expected_role: &str) -> Option<PathBuf> {
    let (role, path) = child_role()?;
    assert_eq!(role, expected_role, "child started with the wrong role");
    Some(path)
}

/// Panics unless the values in memory weigh at most the budget.
fn assert_within_budget(stats: &Stats) {
    assert!(
        stats.memory_bytes <= stats.budget_bytes,
        "memory bound broken: {stats:?}"
    );
}

/// Panics unless `got` is `want`, naming the key and the tags of both values (a 4 KiB byte
/// dump helps nobody).
fn assert_value(key: u64, got: Option<&Vec<u8>>, want: Option<&Vec<u8>>) {
    let describe = |v: Option<&Vec<u8>>| v.map(|v| (tag_of(v), v.len()));
    assert!(
        got == want,
        "key {key}: got a value tagged (key, generation) {:?}, want {:?}",
        describe(got),
        describe(want)
    );
}

// ---------------------------------------------------------------------------------------------
// The reopen workload: inserts several times the budget, overwrites, in-place updates of spilled
// values, removals, and a few late inserts that are still in memory at `close`.

/// Keys the workload inserts first.
const KEYS: u64 = 200;
/// Keys inserted last, after the updates and removals.
const LATE_KEYS: Range<u64> = 200..208;
/// Keys the checks look at: every key the workload touched and some it never did.
const CHECKED_KEYS: Range<u64> = 0..230;

/// True when the workload overwrites `key` with a generation-2 value.
fn overwritten(key: u64) -> bool {
    key < KEYS && key.is_multiple_of(11)
}

/// True when the workload updates `key` in place with [`mutate`].
fn updated(key: u64) -> bool {
    key < KEYS && key % 5 == 1
}

/// True when the workload removes `key`.
fn removed(key: u64) -> bool {
    key < KEYS && key % 7 == 3
}

/// The in-place change the workload's updates make.
fn mutate(value: &mut Vec<u8>) {
    for byte in value.iter_mut() {
        *byte = byte.wrapping_add(1);
    }
    value.push(0xAB);
}

/// The value the workload leaves under `key`, if any.
fn expected(key: u64) -> Option<Vec<u8>> {
    if LATE_KEYS.contains(&key) {
        return Some(value_of(key, 1, VALUE_LEN));
    }
    if key >= KEYS || removed(key) {
        return None;
    }
    let mut value = value_of(key, if overwritten(key) { 2 } else { 1 }, VALUE_LEN);
    if updated(key) {
        mutate(&mut value);
    }
    Some(value)
}

/// The number of entries the workload leaves.
fn expected_len() -> usize {
    CHECKED_KEYS.filter(|k| expected(*k).is_some()).count()
}

/// Runs the workload on `chest`, checking along the way that values really spilled and that
/// the updates read spilled values back from disk.
fn write_workload(chest: &TestChest) {
    for key in 0..KEYS {
        chest.insert(key, value_of(key, 1, VALUE_LEN)).unwrap();
        assert_within_budget(&chest.stats());
    }
    let stats = chest.stats();
    assert_eq!(stats.entries, KEYS);
    assert!(
        stats.in_memory <= VALUES_IN_BUDGET && stats.on_disk >= KEYS - VALUES_IN_BUDGET,
        "most values should have spilled: {stats:?}"
    );
    for key in (0..KEYS).filter(|k| overwritten(*k)) {
        chest.insert(key, value_of(key, 2, VALUE_LEN)).unwrap();
        assert_within_budget(&chest.stats());
    }
    let loads_before = chest.stats().loads;
    let updates = (0..KEYS).filter(|k| updated(*k)).count() as u64;
    for key in (0..KEYS).filter(|k| updated(*k)) {
        assert!(chest.update(&key, mutate).unwrap(), "key {key} exists");
        assert_within_budget(&chest.stats());
    }
    let loads = chest.stats().loads - loads_before;
    assert!(
        loads >= updates - VALUES_IN_BUDGET,
        "the updates should have read spilled values from disk: {loads} loads for {updates}"
    );
    for key in (0..KEYS).filter(|k| removed(*k)) {
        assert!(chest.remove(&key).unwrap(), "key {key} exists");
    }
    assert!(
        !chest.remove(&KEYS).unwrap(),
        "key {KEYS} was never inserted"
    );
    for key in LATE_KEYS {
        chest.insert(key, value_of(key, 1, VALUE_LEN)).unwrap();
    }
    assert_within_budget(&chest.stats());
}

/// Checks that `chest` holds exactly what the workload leaves; returns the number of entries.
fn check_workload(chest: &TestChest) -> usize {
    for key in CHECKED_KEYS {
        let want = expected(key);
        assert_eq!(chest.contains_key(&key), want.is_some(), "key {key}");
        let got = chest.get(&key).unwrap();
        assert_value(key, got.as_deref(), want.as_ref());
        assert_within_budget(&chest.stats());
    }
    let keys: BTreeSet<u64> = chest.keys().into_iter().collect();
    let want: BTreeSet<u64> = CHECKED_KEYS.filter(|k| expected(*k).is_some()).collect();
    assert_eq!(keys, want);
    assert_eq!(chest.len(), want.len());
    want.len()
}

#[test]
fn a_child_process_reopens_what_the_parent_wrote() {
    if let Some(path) = as_child("reader") {
        let chest = open(&path);
        let stats = chest.stats();
        assert_eq!(stats.mended_on_open, 0, "a closed chest needs no mending");
        assert_eq!(stats.entries, expected_len() as u64);
        let n = check_workload(&chest);
        chest.close().unwrap();
        say(format!("CHECKED {n}"));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = chest_path(&dir);
    let chest = open(&path);
    write_workload(&chest);
    chest.close().unwrap();

    let run = run_child(
        "a_child_process_reopens_what_the_parent_wrote",
        "reader",
        &path,
    );
    run.assert_success();
    assert_eq!(
        run.lines_after("CHECKED"),
        [expected_len().to_string()],
        "{}",
        run.transcript
    );
}

#[test]
fn the_parent_reopens_what_a_child_wrote() {
    if let Some(path) = as_child("writer") {
        let chest = open(&path);
        write_workload(&chest);
        chest.close().unwrap();
        say("WROTE");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = chest_path(&dir);
    let run = run_child("the_parent_reopens_what_a_child_wrote", "writer", &path);
    run.assert_success();
    assert_eq!(run.lines, ["WROTE"], "{}", run.transcript);

    let chest = open(&path);
    let stats = chest.stats();
    assert_eq!(stats.mended_on_open, 0, "a closed chest needs no mending");
    assert_eq!(stats.entries, expected_len() as u64);
    assert_eq!(stats.in_memory, 0, "a reopened chest reads values lazily");
    assert_eq!(
        stats.on_disk, stats.entries,
        "close wrote every value: {stats:?}"
    );
    assert_eq!(check_workload(&chest), expected_len());
    chest.close().unwrap();
}

#[test]
fn a_chest_dropped_without_close_by_an_exiting_child_is_complete() {
    if let Some(path) = as_child("dropper") {
        let chest = open(&path);
        write_workload(&chest);
        // No close: dropping a persistent chest flushes it, best effort.
        drop(chest);
        say("DROPPED");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = chest_path(&dir);
    let run = run_child(
        "a_chest_dropped_without_close_by_an_exiting_child_is_complete",
        "dropper",
        &path,
    );
    run.assert_success();
    assert_eq!(run.lines, ["DROPPED"], "{}", run.transcript);

    let chest = open(&path);
    assert_eq!(
        chest.stats().mended_on_open,
        0,
        "the drop flushed everything"
    );
    assert_eq!(check_workload(&chest), expected_len());
    chest.close().unwrap();
}

// ---------------------------------------------------------------------------------------------
// The lock between processes.

/// Panics unless `result` is `Error::Locked` naming the lock file of the chest at `path` in
/// its message; returns the message.
fn assert_locked(result: spillchest::Result<TestChest>, path: &Path) -> String {
    let err = match result {
        Ok(_) => panic!(
            "a second handle opened {} while it was locked",
            path.display()
        ),
        Err(e) => e,
    };
    let message = err.to_string();
    match err {
        Error::Locked { path: lock } => {
            assert_eq!(lock, path.join("lock"), "Locked should name the lock file");
            assert!(
                message.contains(&lock.display().to_string()),
                "the message should name the lock file: {message}"
            );
        }
        other => panic!("want Error::Locked, got {other:?}: {message}"),
    }
    message
}

#[test]
fn a_second_writer_in_another_process_is_refused() {
    if let Some(path) = as_child("second-writer") {
        let message = assert_locked(Chest::builder().path(&path).budget(BUDGET).open(), &path);
        assert_locked(Chest::open(&path), &path);
        // A reader takes no lock: it opens beside the writer and sees what it flushed.
        let reader = open_read_only(&path);
        assert_eq!(reader.len(), 20);
        for key in 0..20 {
            let want = value_of(key, 1, VALUE_LEN);
            assert_value(key, reader.get(&key).unwrap().as_deref(), Some(&want));
        }
        reader.close().unwrap();
        say(format!("REFUSED {message}"));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = chest_path(&dir);
    let chest = open(&path);
    for key in 0..20 {
        chest.insert(key, value_of(key, 1, VALUE_LEN)).unwrap();
    }
    chest.flush().unwrap();

    let run = run_child(
        "a_second_writer_in_another_process_is_refused",
        "second-writer",
        &path,
    );
    run.assert_success();
    let refused = run.lines_after("REFUSED");
    assert_eq!(refused.len(), 1, "{}", run.transcript);
    println!("the second writer was told: {}", refused[0]);

    // The refused opens changed nothing: the holder goes on, and its data is intact.
    chest.insert(20, value_of(20, 1, VALUE_LEN)).unwrap();
    chest.close().unwrap();
    let chest = open(&path);
    assert_eq!(chest.len(), 21);
    for key in 0..21 {
        let want = value_of(key, 1, VALUE_LEN);
        assert_value(key, chest.get(&key).unwrap().as_deref(), Some(&want));
    }
    chest.close().unwrap();
}

/// The key the holder inserts after the waiter was refused and before it closes.
const LAST_BEFORE_CLOSE: u64 = 999;
/// The key the waiter inserts once it holds the chest.
const WAITER_KEY: u64 = 1000;

#[test]
fn a_waiting_writer_in_another_process_opens_once_the_holder_closes() {
    if let Some(path) = as_child("waiter") {
        assert_locked(Chest::builder().path(&path).budget(BUDGET).open(), &path);
        say("LOCKED");
        let chest: TestChest = Chest::builder()
            .path(&path)
            .budget(BUDGET)
            .wait_for_lock(Duration::from_secs(300))
            .open()
            .unwrap_or_else(|e| panic!("waiting for the lock: {e}"));
        // The holder inserted this only after this process was refused, and made it durable
        // only by closing: seeing it proves the open came after the close.
        let want = value_of(LAST_BEFORE_CLOSE, 1, VALUE_LEN);
        let got = chest.get(&LAST_BEFORE_CLOSE).unwrap();
        assert_value(LAST_BEFORE_CLOSE, got.as_deref(), Some(&want));
        chest
            .insert(WAITER_KEY, value_of(WAITER_KEY, 1, VALUE_LEN))
            .unwrap();
        chest.close().unwrap();
        say("OPENED");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = chest_path(&dir);
    let chest = open(&path);
    chest.insert(1, value_of(1, 1, VALUE_LEN)).unwrap();
    chest.flush().unwrap();

    let mut child = spawn_child(
        "a_waiting_writer_in_another_process_opens_once_the_holder_closes",
        "waiter",
        &path,
    );
    child.expect_line("LOCKED");
    chest
        .insert(LAST_BEFORE_CLOSE, value_of(LAST_BEFORE_CLOSE, 1, VALUE_LEN))
        .unwrap();
    // Give the child a moment to start waiting; the test holds however long this takes.
    std::thread::sleep(Duration::from_millis(200));
    chest.close().unwrap();
    child.expect_line("OPENED");
    let (status, _) = child.finish();
    assert!(status.success(), "the waiting child failed: {status}");

    let chest = open(&path);
    let keys: BTreeSet<u64> = chest.keys().into_iter().collect();
    assert_eq!(keys, BTreeSet::from([1, LAST_BEFORE_CLOSE, WAITER_KEY]));
    let want = value_of(WAITER_KEY, 1, VALUE_LEN);
    assert_value(
        WAITER_KEY,
        chest.get(&WAITER_KEY).unwrap().as_deref(),
        Some(&want),
    );
    chest.close().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Read-only handles.

/// Panics unless every kind of write on `chest` gives `Error::ReadOnly` naming `path`.
fn assert_writes_refused(chest: &TestChest, path: &Path) {
    let refused = |what: &str, result: spillchest::Result<()>| match result {
        Err(Error::ReadOnly { path: p }) => assert_eq!(p, path, "{what}"),
        Err(e) => panic!("{what}: want Error::ReadOnly, got {e:?}"),
        Ok(()) => panic!("{what} succeeded on a read-only handle"),
    };
    // An existing key, and keys the chest does not have.
    refused("insert", chest.insert(0, value_of(0, 9, VALUE_LEN)));
    refused(
        "insert new",
        chest.insert(10_000, value_of(10_000, 9, VALUE_LEN)),
    );
    refused("update", chest.update(&0, mutate).map(drop));
    refused("update missing", chest.update(&10_000, mutate).map(drop));
    refused("remove", chest.remove(&0).map(drop));
    refused("remove missing", chest.remove(&10_000).map(drop));
    chest
        .flush()
        .expect("flush is documented as a no-op on a read-only handle");
}

#[test]
fn a_read_only_handle_refuses_writes_and_reads_every_value() {
    if let Some(path) = as_child("reader") {
        // The parent holds a read-only handle too.
        let chest = open_read_only(&path);
        assert_writes_refused(&chest, &path);
        let n = check_workload(&chest);
        assert_writes_refused(&chest, &path);
        // Readers take no lock: a writer opens beside the two of them, and they read on.
        let writer = open(&path);
        assert_eq!(writer.len(), n);
        writer.close().unwrap();
        chest.refresh().unwrap();
        assert_eq!(check_workload(&chest), n);
        chest.close().unwrap();
        say(format!("READ {n}"));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = chest_path(&dir);
    let chest = open(&path);
    write_workload(&chest);
    chest.close().unwrap();

    let reader = open_read_only(&path);
    assert_writes_refused(&reader, &path);
    assert_eq!(check_workload(&reader), expected_len());
    let stats = reader.stats();
    assert!(
        stats.loads > 0,
        "values were read back from disk: {stats:?}"
    );

    let run = run_child(
        "a_read_only_handle_refuses_writes_and_reads_every_value",
        "reader",
        &path,
    );
    run.assert_success();
    assert_eq!(
        run.lines_after("READ"),
        [expected_len().to_string()],
        "{}",
        run.transcript
    );
    assert_eq!(check_workload(&reader), expected_len());
    reader.close().unwrap();

    // A writer finds everything as it was.
    let chest = open(&path);
    assert_eq!(chest.stats().mended_on_open, 0);
    assert_eq!(check_workload(&chest), expected_len());
    chest.close().unwrap();
}

// ---------------------------------------------------------------------------------------------
// A child that aborts after spilling, without flushing.

/// Keys the aborting child inserts (generation 1).
const ABORT_KEYS: Range<u64> = 0..60;
/// Keys it then overwrites (generation 2).
const ABORT_OVERWRITTEN: Range<u64> = 0..20;
/// Keys it then removes; all of them were spilled by then.
const ABORT_REMOVED: Range<u64> = 30..35;

/// The generations the aborting child stored under `key`.
fn abort_generations(key: u64) -> &'static [u64] {
    if ABORT_OVERWRITTEN.contains(&key) {
        &[1, 2]
    } else if ABORT_KEYS.contains(&key) {
        &[1]
    } else {
        &[]
    }
}

#[test]
fn a_child_that_aborts_without_flushing_keeps_every_spilled_value() {
    if let Some(path) = as_child("aborter") {
        let chest = open(&path);
        // Every key in the order it was last used.
        let mut touched = Vec::new();
        for key in ABORT_KEYS {
            chest.insert(key, value_of(key, 1, VALUE_LEN)).unwrap();
            touched.push(key);
            assert_within_budget(&chest.stats());
        }
        for key in ABORT_OVERWRITTEN {
            chest.insert(key, value_of(key, 2, VALUE_LEN)).unwrap();
            touched.push(key);
            assert_within_budget(&chest.stats());
        }
        for key in ABORT_REMOVED {
            assert!(chest.remove(&key).unwrap());
            touched.retain(|k| *k != key);
        }
        let stats = chest.stats();
        assert!(stats.spills > 0, "{stats:?}");
        assert!(
            stats.in_memory > 0 && stats.in_memory <= VALUES_IN_BUDGET,
            "{stats:?}"
        );
        // Every entry not in memory has its current value on disk.
        assert_eq!(stats.on_disk + stats.in_memory, stats.entries, "{stats:?}");
        // Under LRU with values of one weight, the values in memory are those of the last
        // `in_memory` keys used; every other key's current value was written to disk.
        let mut in_memory = BTreeSet::new();
        for key in touched.iter().rev() {
            if in_memory.len() as u64 == stats.in_memory {
                break;
            }
            in_memory.insert(*key);
        }
        let mut current = BTreeMap::new();
        for key in &touched {
            let generation = if ABORT_OVERWRITTEN.contains(key) {
                2
            } else {
                1
            };
            current.insert(*key, generation);
        }
        assert_eq!(current.len() as u64, stats.entries);
        for (key, generation) in &current {
            if !in_memory.contains(key) {
                say(format!("SPILLED {key} {generation}"));
            }
        }
        for key in ABORT_REMOVED {
            say(format!("REMOVED {key}"));
        }
        say("ABORT");
        std::process::abort();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = chest_path(&dir);
    let run = run_child(
        "a_child_that_aborts_without_flushing_keeps_every_spilled_value",
        "aborter",
        &path,
    );
    assert!(
        run.lines.last().map(String::as_str) == Some("ABORT"),
        "the child should have reached its abort:\n{}",
        run.transcript
    );
    assert!(!run.status.success(), "{}", run.status);
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(run.status.signal(), Some(6), "SIGABRT: {}", run.status);
    }
    let spilled = parse_spilled(&run);
    let removed: Vec<u64> = run
        .lines_after("REMOVED")
        .iter()
        .map(|k| k.parse().unwrap())
        .collect();
    assert!(
        spilled.len()
            >= (ABORT_KEYS.end - ABORT_REMOVED.end + ABORT_REMOVED.start - VALUES_IN_BUDGET)
                as usize,
        "{spilled:?}"
    );

    // A read-only handle sees the spilled values before any writer has mended the chest.
    let reader = open_read_only(&path);
    check_after_abort(&reader, &spilled, &removed, 1);
    reader.close().unwrap();
    // A writer's open mends what the abort left; the open after it must see the same chest.
    for open_number in 2..=3 {
        let chest = open(&path);
        check_after_abort(&chest, &spilled, &removed, open_number);
        chest.close().unwrap();
    }
}

/// The `SPILLED <key> <generation>` lines of the aborted child, by key.
fn parse_spilled(run: &ChildRun) -> BTreeMap<u64, u64> {
    run.lines_after("SPILLED")
        .iter()
        .map(|line| {
            let (key, generation) = line.split_once(' ').expect("SPILLED <key> <generation>");
            (key.parse().unwrap(), generation.parse().unwrap())
        })
        .collect()
}

/// Checks a chest the aborted child left: every value it said was spilled, no removed key, and
/// nothing it never stored. `open_number` labels failures.
fn check_after_abort(
    chest: &TestChest,
    spilled: &BTreeMap<u64, u64>,
    removed: &[u64],
    open_number: u32,
) {
    for (&key, &generation) in spilled {
        let want = value_of(key, generation, VALUE_LEN);
        let got = chest
            .get(&key)
            .unwrap_or_else(|e| panic!("open {open_number}: key {key}: {e}"));
        assert_value(key, got.as_deref(), Some(&want));
    }
    for key in removed {
        assert!(
            !chest.contains_key(key),
            "open {open_number}: removed key {key} came back"
        );
        assert!(chest.get(key).unwrap().is_none());
    }
    // Entries that only lived in memory may be gone, but whatever is there is a value the
    // child stored under that key.
    let keys = chest.keys();
    assert_eq!(keys.len(), chest.len());
    for key in keys {
        let got = chest
            .get(&key)
            .unwrap_or_else(|e| panic!("open {open_number}: key {key}: {e}"))
            .unwrap_or_else(|| panic!("open {open_number}: listed key {key} has no value"));
        let stored_one = abort_generations(key)
            .iter()
            .any(|g| *got == value_of(key, *g, VALUE_LEN));
        assert!(
            stored_one,
            "open {open_number}: key {key} holds a value the child never stored: {:?}",
            tag_of(&got)
        );
        assert!(!removed.contains(&key));
    }
}

// ---------------------------------------------------------------------------------------------
// Children killed with SIGKILL in the middle of writes, after earlier flushes, one after another
// on the same chest, so each reopens what the kill before it left.

/// Keys every round of a killed child rewrites.
const ROUND_KEYS: u64 = 48;
/// The first key of the one-per-round extra keys: round `r` inserts `EXTRA_BASE + r`.
const EXTRA_BASE: u64 = 100_000;
/// Rounds a child would write if nobody killed it.
const MAX_ROUNDS: u64 = 10_000;
/// For each child in turn, how many flushed rounds the parent waits for before the kill. The
/// long one passes the point where a flush rewrites the bloated index (more than 1024 dead
/// records).
const KILL_AFTER_ROUNDS: [u64; 3] = [3, 30, 2];

/// True when round `round` removes the extra key of the round before it (when the same child
/// inserted that key).
fn removes_previous_extra(round: u64) -> bool {
    round.is_multiple_of(3)
}

/// The child: from round `start` on, rewrites every round key with the round's value, inserts
/// the round's extra key, sometimes removes the previous one, flushes, and says so.
fn write_rounds_until_killed(path: &Path, start: u64) {
    let chest = open(path);
    for round in start..start + MAX_ROUNDS {
        for key in 0..ROUND_KEYS {
            chest.insert(key, value_of(key, round, VALUE_LEN)).unwrap();
        }
        let extra = EXTRA_BASE + round;
        chest
            .insert(extra, value_of(extra, round, VALUE_LEN))
            .unwrap();
        if removes_previous_extra(round) && round > start {
            assert!(chest.remove(&(extra - 1)).unwrap());
        }
        assert_within_budget(&chest.stats());
        chest.flush().unwrap();
        say(format!("FLUSHED {round}"));
    }
    chest.close().unwrap();
    say("NOT KILLED");
}

#[test]
fn children_killed_mid_write_keep_every_flushed_value() {
    if let Some((role, path)) = child_role() {
        let start = role
            .strip_prefix("killed-from-")
            .and_then(|s| s.parse().ok())
            .expect("role killed-from-<round>");
        write_rounds_until_killed(&path, start);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = chest_path(&dir);
    // Extra keys of earlier children, as the last reopen found them.
    let mut earlier_extras = BTreeSet::new();
    let mut start = 1;
    for kill_after in KILL_AFTER_ROUNDS {
        let mut child = spawn_child(
            "children_killed_mid_write_keep_every_flushed_value",
            &format!("killed-from-{start}"),
            &path,
        );
        let mut flushed = 0;
        while flushed < start + kill_after - 1 {
            flushed = child.expect_line("FLUSHED").parse().unwrap();
        }
        child.child.kill().expect("kill the child");
        let (status, rest) = child.finish();
        // A flush whose line arrived after the kill had still returned Ok before it.
        for line in &rest {
            if let Some(round) = common::after_word(line, "FLUSHED") {
                flushed = flushed.max(round.parse().unwrap());
            }
        }
        assert!(
            !rest.iter().any(|l| l == "NOT KILLED"),
            "the child finished before the kill"
        );
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(status.signal(), Some(9), "SIGKILL: {status}");
        }
        #[cfg(not(unix))]
        assert!(!status.success());

        let chest = open(&path);
        let extras = check_after_kill(&chest, start, flushed, &earlier_extras);
        println!(
            "child from round {start} killed after round {flushed} was flushed; reopen: {:?}",
            chest.stats()
        );
        chest.close().unwrap();
        earlier_extras = extras;
        start = flushed + 2;
    }
}

/// Checks the chest a child that started at round `start` left when it was killed after
/// flushing round `flushed`; returns the extra keys present.
fn check_after_kill(
    chest: &TestChest,
    start: u64,
    flushed: u64,
    earlier_extras: &BTreeSet<u64>,
) -> BTreeSet<u64> {
    // Every round key holds its value of the last flushed round or of the round the kill
    // interrupted.
    for key in 0..ROUND_KEYS {
        let got = chest
            .get(&key)
            .unwrap_or_else(|e| panic!("key {key}: {e}"))
            .unwrap_or_else(|| panic!("flushed key {key} is gone"));
        let ok = [flushed, flushed + 1]
            .iter()
            .any(|r| *got == value_of(key, *r, VALUE_LEN));
        assert!(
            ok,
            "key {key}: {:?}, want generation {flushed} or {}",
            tag_of(&got),
            flushed + 1
        );
    }
    // This child's extra keys: present when inserted and not removed by the last flushed
    // round, absent when removed by it; those the interrupted round touched may go either way.
    for round in start..=flushed + 1 {
        let extra = EXTRA_BASE + round;
        let removed_in = round + 1;
        let got = chest.get(&extra).unwrap();
        if let Some(got) = &got {
            assert_value(extra, Some(got), Some(&value_of(extra, round, VALUE_LEN)));
        }
        if removes_previous_extra(removed_in) && removed_in <= flushed {
            assert!(
                got.is_none(),
                "extra key {extra} was removed in flushed round {removed_in}"
            );
        } else if round <= flushed {
            assert!(
                got.is_some(),
                "extra key {extra} of flushed round {round} is gone"
            );
        }
    }
    let keys: BTreeSet<u64> = chest.keys().into_iter().collect();
    let extras: BTreeSet<u64> = keys.iter().copied().filter(|k| *k >= EXTRA_BASE).collect();
    // Earlier children's extra keys are as the last reopen found them.
    let earlier: BTreeSet<u64> = extras
        .iter()
        .copied()
        .filter(|k| *k < EXTRA_BASE + start)
        .collect();
    assert_eq!(&earlier, earlier_extras, "extra keys of earlier children");
    for key in &earlier {
        let got = chest.get(key).unwrap().expect("listed key");
        let round = key - EXTRA_BASE;
        assert_value(*key, Some(&got), Some(&value_of(*key, round, VALUE_LEN)));
    }
    let unexpected: Vec<u64> = keys
        .iter()
        .copied()
        .filter(|k| *k >= ROUND_KEYS && !(EXTRA_BASE + 1..=EXTRA_BASE + flushed + 1).contains(k))
        .collect();
    assert!(unexpected.is_empty(), "keys never written: {unexpected:?}");
    assert_eq!(chest.len(), keys.len());
    extras
}
