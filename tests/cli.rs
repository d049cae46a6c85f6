//! End-to-end tests of the `spillchest` binary on chests made by the library: healthy, damaged
//! (a flipped byte in a value file or a segment, a truncated or garbage index), locked by
//! another process, empty, and not a chest at all. Each checks the exact exit status and that
//! the message says what is wrong.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{child_role, say, spawn_child};
use serde_json::Value;
use spillchest::{Bincode, Chest, Codec, KeyDigest};

/// What one run of the binary did.
#[derive(Debug)]
struct Run {
    status: i32,
    stdout: String,
    stderr: String,
}

/// Runs `spillchest` with `args`.
fn spillchest(args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_spillchest"))
        .args(args)
        .output()
        .expect("run the spillchest binary");
    Run {
        status: output.status.code().expect("exit status, not a signal"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `spillchest COMMAND DIR EXTRA...` and checks the exit status.
fn run_on(command: &str, dir: &Path, extra: &[&str], status: i32) -> Run {
    let dir = dir.to_str().expect("UTF-8 temp path");
    let mut args = vec![command, dir];
    args.extend_from_slice(extra);
    let run = spillchest(&args);
    assert_eq!(run.status, status, "spillchest {args:?}: {run:#?}");
    run
}

fn json(run: &Run) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {run:#?}"))
}

fn encoded<T: serde::Serialize + 'static>(key: &T) -> Vec<u8> {
    let mut out = Vec::new();
    Bincode.encode(key, &mut out).unwrap();
    out
}

/// The small values' length: they are segment records (under 4096 bytes encoded).
const SMALL: usize = 300;
/// The large values' length: each has a value file.
const LARGE: usize = 10_000;

/// A closed chest with 39 small values in one segment (keys 0..40 but 3, removed) and 5 large
/// ones in files (keys 100..105).
fn build(path: &Path) {
    let chest: Chest<u32, Vec<u8>> = Chest::builder()
        .path(path)
        .budget(0)
        .small_value_bytes(4096)
        .open()
        .unwrap();
    for k in 0..40 {
        chest.insert(k, vec![k as u8; SMALL]).unwrap();
    }
    for k in 100..105 {
        chest.insert(k, vec![k as u8; LARGE]).unwrap();
    }
    chest.remove(&3).unwrap();
    chest.close().unwrap();
}

fn expected(k: u32) -> Option<Vec<u8>> {
    match k {
        3 => None,
        0..40 => Some(vec![k as u8; SMALL]),
        100..105 => Some(vec![k as u8; LARGE]),
        _ => None,
    }
}

/// Panics unless the chest at `path` holds exactly what [`build`] stored.
fn assert_intact(path: &Path) {
    let chest: Chest<u32, Vec<u8>> = Chest::open(path).unwrap();
    assert_eq!(chest.len(), 44);
    for k in 0..110 {
        let v = chest.get(&k).unwrap();
        assert_eq!(v.as_deref(), expected(k).as_ref(), "key {k}");
    }
    chest.close().unwrap();
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn flip(path: &Path, at_from_end: usize) {
    let mut bytes = fs::read(path).unwrap();
    let i = bytes.len() - at_from_end;
    bytes[i] ^= 0x55;
    fs::write(path, bytes).unwrap();
}

/// Bincode's standard encoding of a `Vec<u8>` of `len` bytes: a varint length, then the bytes.
fn encoded_vec_len(len: u64) -> u64 {
    len + if len < 251 { 1 } else { 3 }
}

#[test]
fn a_healthy_chest_gives_stats_ls_and_verify_in_text_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.chest");
    build(&path);

    let stats = run_on("stats", &path, &[], 0);
    assert!(stats.stdout.contains("entries         44\n"), "{stats:#?}");
    assert!(stats.stdout.contains("key type        u32\n"), "{stats:#?}");
    assert!(
        stats
            .stdout
            .contains("codec           bincode-2-standard\n")
    );
    assert!(stats.stdout.contains("format version  1\n"));
    assert!(
        stats.stdout.contains("  value files   5 holding"),
        "{stats:#?}"
    );
    assert!(
        stats.stdout.contains("  segments      1 holding"),
        "{stats:#?}"
    );
    assert!(stats.stdout.contains("compression     none\n"));
    assert!(
        !stats.stdout.contains("last flush      never"),
        "{stats:#?}"
    );

    let s = json(&run_on("stats", &path, &["--json"], 0));
    assert_eq!(s["entries"], 44);
    assert_eq!(s["value_files"], 5);
    assert_eq!(s["segments"], 1);
    assert_eq!(s["format_version"], 1);
    assert_eq!(s["codec"], "bincode-2-standard");
    assert_eq!(s["key_type"], "u32");
    assert_eq!(s["value_type"], "alloc::vec::Vec<u8>");
    assert_eq!(s["compressed_entries"], 0);
    let value_bytes = 39 * encoded_vec_len(SMALL as u64) + 5 * encoded_vec_len(LARGE as u64);
    assert_eq!(s["value_bytes"], value_bytes);
    assert_eq!(s["stored_bytes"], value_bytes);
    let disk = s["disk_bytes"].as_u64().unwrap();
    assert!(disk > value_bytes, "{s}");
    assert_eq!(
        disk,
        s["value_file_bytes"].as_u64().unwrap() + s["segment_bytes"].as_u64().unwrap()
    );
    assert!(s["last_flush_unix_ms"].as_u64().unwrap() >= s["created_unix_ms"].as_u64().unwrap());
    assert!(s["index_problem"].is_null());

    let ls = run_on("ls", &path, &[], 0);
    let lines: Vec<&str> = ls.stdout.lines().collect();
    assert_eq!(lines.len(), 44, "{ls:#?}");
    assert!(lines[0].starts_with("0 "), "keys in order: {ls:#?}");
    assert!(
        lines[0].contains("segment segments/00000001.seg @16"),
        "{ls:#?}"
    );
    assert!(lines[3].starts_with("4 "), "key 3 was removed: {ls:#?}");
    let large = format!(
        "values/{}",
        &KeyDigest::of(&encoded(&100u32)).to_string()[..2]
    );
    assert!(
        lines[39].starts_with("100 ") && lines[39].contains(&large),
        "{ls:#?}"
    );
    assert!(lines[39].contains("file values/"), "{ls:#?}");

    let limited = run_on("ls", &path, &["--limit", "3"], 0);
    assert_eq!(limited.stdout.lines().count(), 3, "{limited:#?}");
    assert!(
        limited.stderr.contains("listed 3 of 44 entries"),
        "{limited:#?}"
    );

    let entries = json(&run_on("ls", &path, &["--json"], 0));
    let entries = entries.as_array().unwrap();
    assert_eq!(entries.len(), 44);
    let keys: Vec<u64> = entries.iter().map(|e| e["key"].as_u64().unwrap()).collect();
    let want: Vec<u64> = (0..40).filter(|k| *k != 3).chain(100..105).collect();
    assert_eq!(keys, want);
    let files = entries.iter().filter(|e| e["place"] == "file").count();
    assert_eq!(files, 5);
    let first = &entries[0];
    assert_eq!(
        first["key_digest"],
        KeyDigest::of(&encoded(&0u32)).to_string()
    );
    assert_eq!(first["value_bytes"], encoded_vec_len(SMALL as u64));
    assert_eq!(first["path"], "segments/00000001.seg");
    assert_eq!(first["offset"], 16);
    let sizes: u64 = entries
        .iter()
        .map(|e| e["disk_bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(sizes, s["live_disk_bytes"].as_u64().unwrap());

    let verify = run_on("verify", &path, &[], 0);
    assert!(
        verify
            .stdout
            .contains("checked 44 entries (5 in value files), 1 segment, ")
    );
    assert!(
        verify.stdout.contains("healthy: nothing damaged"),
        "{verify:#?}"
    );
    let v = json(&run_on("verify", &path, &["--json"], 0));
    assert_eq!(v["healthy"], true);
    assert_eq!(v["entries_checked"], 44);
    assert_eq!(v["files_checked"], 5);
    assert_eq!(v["segments_checked"], 1);
    assert_eq!(v["damaged"].as_array().unwrap().len(), 0);
    // Nothing was written: the library still reads everything.
    assert_intact(&path);
}

#[test]
fn ls_decodes_string_keys_and_shows_the_digest_of_other_keys() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("text.chest");
    let chest: Chest<String, u64> = Chest::builder().path(&text).budget(0).open().unwrap();
    chest.insert("beta".into(), 2).unwrap();
    chest.insert("alpha\nline".into(), 1).unwrap();
    chest.insert("1".into(), 3).unwrap();
    chest.close().unwrap();
    let ls = run_on("ls", &text, &[], 0);
    let keys: Vec<&str> = ls
        .stdout
        .lines()
        .map(|l| l.split("  ").next().unwrap())
        .collect();
    assert_eq!(keys, ["\"1\"", "\"alpha\\nline\"", "\"beta\""], "{ls:#?}");
    let entries = json(&run_on("ls", &text, &["--json"], 0));
    assert_eq!(entries[1]["key"], "alpha\nline");

    let pairs = dir.path().join("pairs.chest");
    let chest: Chest<(u8, i64), u64> = Chest::builder().path(&pairs).budget(0).open().unwrap();
    chest.insert((1, -1), 1).unwrap();
    chest.close().unwrap();
    let digest = KeyDigest::of(&encoded(&(1u8, -1i64))).to_string();
    let ls = run_on("ls", &pairs, &[], 0);
    assert!(ls.stdout.starts_with(&format!("{digest}  ")), "{ls:#?}");
    let entries = json(&run_on("ls", &pairs, &["--json"], 0));
    assert!(entries[0]["key"].is_null());
    assert_eq!(entries[0]["key_digest"], digest);
}

#[test]
fn verify_names_a_value_file_with_a_flipped_byte_and_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.chest");
    build(&path);
    let digest = KeyDigest::of(&encoded(&102u32)).to_string();
    let file = path
        .join("values")
        .join(&digest[..2])
        .join(format!("{digest}.val"));
    flip(&file, 10);
    let verify = run_on("verify", &path, &[], 1);
    let shown = format!(
        "\n  values/{}/{digest}.val key {digest}: payload checksum mismatch\n",
        &digest[..2]
    );
    assert!(verify.stdout.contains(&shown), "{verify:#?}");
    assert!(
        verify.stdout.contains("DAMAGED: 1 problem\n"),
        "{verify:#?}"
    );
    let v = json(&run_on("verify", &path, &["--json"], 1));
    assert_eq!(v["healthy"], false);
    assert_eq!(v["damaged"][0]["key_digest"], digest);
    assert!(
        v["damaged"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("checksum"),
        "{v}"
    );
    // stats and ls read the index only: they still work.
    run_on("stats", &path, &[], 0);
    run_on("ls", &path, &[], 0);
}

#[test]
fn verify_names_a_segment_with_a_flipped_byte_and_the_damaged_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.chest");
    build(&path);
    let segment = path.join("segments").join("00000001.seg");
    // The segment ends with key 39's record (28 + 1 + 303 bytes) and key 3's tombstone (29).
    flip(&segment, 100);
    let verify = run_on("verify", &path, &[], 1);
    let digest = KeyDigest::of(&encoded(&39u32));
    assert!(
        verify.stdout.contains(&format!(
            "segments/00000001.seg key {digest}: record at offset"
        )),
        "{verify:#?}"
    );
    // The walk of the segment stops at the damaged record too.
    assert!(verify.stdout.contains("records from offset"), "{verify:#?}");
    let v = json(&run_on("verify", &path, &["--json"], 1));
    let damaged = v["damaged"].as_array().unwrap();
    assert_eq!(damaged.len(), 2, "{v}");
    assert!(damaged.iter().all(|d| d["path"] == "segments/00000001.seg"));
}

#[test]
fn a_truncated_index_is_reported_and_repair_restores_every_entry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.chest");
    build(&path);
    let index = path.join(".keys");
    let len = fs::metadata(&index).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&index)
        .unwrap()
        .set_len(len / 2)
        .unwrap();

    // Read-only commands see what the intact half names, plus value files (adopted).
    let s = json(&run_on("stats", &path, &["--json"], 0));
    let seen = s["entries"].as_u64().unwrap();
    assert!(seen < 44, "{s}");
    assert!(
        s["index_problem"]
            .as_str()
            .unwrap()
            .contains("index replay stopped early"),
        "{s}"
    );
    let verify = run_on("verify", &path, &[], 1);
    assert!(
        verify.stdout.contains(".keys: index replay stopped early"),
        "{verify:#?}"
    );
    assert_eq!(
        run_on("ls", &path, &[], 0).stdout.lines().count() as u64,
        seen
    );

    let repair = run_on("repair", &path, &[], 0);
    assert!(
        repair.stdout.contains("recovered 44 entries"),
        "{repair:#?}"
    );
    assert!(repair.stdout.contains("nothing lost"), "{repair:#?}");
    run_on("verify", &path, &[], 0);
    assert_intact(&path);
}

#[test]
fn a_garbage_index_is_reported_and_repair_rebuilds_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.chest");
    build(&path);
    fs::write(path.join(".keys"), b"garbage, not an index").unwrap();
    let verify = run_on("verify", &path, &[], 1);
    assert!(
        verify
            .stdout
            .contains(".keys: index is missing or is not an index log"),
        "{verify:#?}"
    );
    // In memory, the entries are rebuilt from the files.
    assert_eq!(run_on("ls", &path, &[], 0).stdout.lines().count(), 44);
    let repair = run_on("repair", &path, &[], 0);
    assert!(
        repair.stdout.contains("recovered 44 entries"),
        "{repair:#?}"
    );
    run_on("verify", &path, &[], 0);
    assert_intact(&path);
}

#[test]
fn repair_reports_what_it_could_not_recover() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lost.chest");
    build(&path);
    fs::remove_file(path.join(".keys")).unwrap();
    let digest = KeyDigest::of(&encoded(&101u32)).to_string();
    let file = format!("values/{}/{digest}.val", &digest[..2]);
    flip(&path.join(&file), 1);
    let repair = run_on("repair", &path, &[], 1);
    assert!(
        repair.stdout.contains("recovered 43 entries"),
        "{repair:#?}"
    );
    assert!(
        repair.stdout.contains(&format!("  {file}: ")),
        "{repair:#?}"
    );
    run_on("verify", &path, &[], 0);
}

#[test]
fn compact_stops_at_a_damaged_record_and_leaves_the_chest_readable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.chest");
    build(&path);
    let segment = path.join("segments").join("00000001.seg");
    flip(&segment, 100);
    let compact = run_on("compact", &path, &[], 1);
    let want = format!(
        "spillchest: corrupt data in {}: record checksum mismatch. Run `spillchest verify",
        segment.display()
    );
    assert!(compact.stderr.contains(&want), "{compact:#?}");
    assert!(compact.stderr.contains("spillchest repair"), "{compact:#?}");
    assert!(compact.stdout.is_empty(), "{compact:#?}");
    // The damaged segment is untouched: every other key still reads.
    assert!(segment.exists());
    let chest: Chest<u32, Vec<u8>> = Chest::open(&path).unwrap();
    for k in (0..39).chain(100..105) {
        assert_eq!(
            chest.get(&k).unwrap().as_deref(),
            expected(k).as_ref(),
            "key {k}"
        );
    }
    assert!(chest.get(&39).is_err());
}

#[test]
fn damaged_metadata_exits_1_and_a_future_format_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.chest");
    build(&path);
    let meta = path.join("meta");
    let good = fs::read(&meta).unwrap();
    flip(&meta, 3);
    for command in ["stats", "ls", "verify"] {
        let run = run_on(command, &path, &[], 1);
        let want = format!("spillchest: corrupt data in {}: ", meta.display());
        assert!(run.stderr.contains(&want), "{command}: {run:#?}");
    }
    let mut future = good;
    future[8] = 7;
    fs::write(&meta, future).unwrap();
    let run = run_on("stats", &path, &[], 3);
    let want = format!(
        "spillchest: {} has format version 7, which this build of spillchest cannot read",
        meta.display()
    );
    assert!(run.stderr.contains(&want), "{run:#?}");
}

/// The role of the child process in the lock test: open the chest as a writer, say so, and
/// hold it until the parent creates `release` beside the chest (or a minute passes).
fn hold_lock(path: &Path) {
    let chest: Chest<u32, Vec<u8>> = Chest::open(path).unwrap();
    say("ready");
    let release = path.with_file_name("release");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !release.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    chest.close().unwrap();
}

#[test]
fn a_chest_locked_by_another_process_exits_2_naming_the_lock() {
    const TEST: &str = "a_chest_locked_by_another_process_exits_2_naming_the_lock";
    if let Some((role, path)) = child_role() {
        assert_eq!(role, "hold");
        hold_lock(&path);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("held.chest");
    build(&path);
    let mut child = spawn_child(TEST, "hold", &path);
    child.expect_line("ready");
    let lock = path.join("lock");
    // The commands that only read take no lock: they run beside the writer.
    let stats = run_on("stats", &path, &[], 0);
    assert!(stats.stdout.contains("entries         44\n"), "{stats:#?}");
    run_on("stats", &path, &["--json"], 0);
    run_on("ls", &path, &[], 0);
    run_on("verify", &path, &[], 0);
    // The commands that write need the writer's lock.
    for command in ["compact", "repair"] {
        let run = run_on(command, &path, &[], 2);
        let want = format!(
            "spillchest: {} is locked by another process: its lock file {} is held.",
            path.display(),
            lock.display()
        );
        assert!(run.stderr.contains(&want), "{command}: {run:#?}");
        assert!(run.stdout.is_empty(), "{command}: {run:#?}");
    }
    fs::write(dir.path().join("release"), b"").unwrap();
    let (status, _) = child.finish();
    assert!(status.success(), "child: {status}");
    run_on("stats", &path, &[], 0);

    // A read-only handle takes no lock either: compact and repair run beside it, and it goes
    // on reading every value where they put it.
    let reader: Chest<u32, Vec<u8>> = Chest::builder().path(&path).read_only().open().unwrap();
    run_on("stats", &path, &[], 0);
    run_on("verify", &path, &[], 0);
    run_on("compact", &path, &[], 0);
    run_on("repair", &path, &[], 0);
    reader.refresh().unwrap();
    assert_eq!(reader.len(), 44);
    for k in 0..110 {
        let v = reader.get(&k).unwrap();
        assert_eq!(v.as_deref(), expected(k).as_ref(), "key {k}");
    }
    drop(reader);
    assert_intact(&path);
}

#[test]
fn an_empty_chest_is_healthy_and_empty() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.chest");
    let chest: Chest<u64, Vec<u8>> = Chest::open(&path).unwrap();
    chest.close().unwrap();
    let stats = run_on("stats", &path, &[], 0);
    assert!(stats.stdout.contains("entries         0\n"), "{stats:#?}");
    let s = json(&run_on("stats", &path, &["--json"], 0));
    assert_eq!(s["entries"], 0);
    assert_eq!(s["disk_bytes"], 0);
    assert_eq!(s["key_type"], "u64");
    let ls = run_on("ls", &path, &[], 0);
    assert_eq!(ls.stdout, "");
    assert_eq!(
        json(&run_on("ls", &path, &["--json"], 0)),
        Value::Array(vec![])
    );
    let verify = run_on("verify", &path, &[], 0);
    assert!(verify.stdout.contains("checked 0 entries"), "{verify:#?}");
    assert_eq!(
        json(&run_on("verify", &path, &["--json"], 0))["healthy"],
        true
    );
    run_on("compact", &path, &[], 0);
    let repair = run_on("repair", &path, &[], 0);
    assert!(repair.stdout.contains("recovered 0 entries"), "{repair:#?}");
}

#[test]
fn what_is_not_a_chest_exits_3_saying_why_and_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("photos");
    fs::create_dir(&other).unwrap();
    fs::write(other.join("cat.jpg"), b"not a chest").unwrap();
    let empty = dir.path().join("empty-dir");
    fs::create_dir(&empty).unwrap();
    let file = dir.path().join("notes.txt");
    fs::write(&file, b"text").unwrap();
    let absent = dir.path().join("absent");
    for command in ["stats", "ls", "verify", "compact", "repair"] {
        for (path, says) in [
            (
                &other,
                "is not a chest: it has no chest metadata file (meta)",
            ),
            (
                &empty,
                "is not a chest: it has no chest metadata file (meta)",
            ),
            (&file, "is not a chest: it is a file, not a directory"),
            (&absent, "does not exist"),
        ] {
            let run = run_on(command, path, &[], 3);
            let want = format!("spillchest: {} {says}", path.display());
            assert!(run.stderr.contains(&want), "{command}: {run:#?}");
        }
    }
    // Nothing was created, not even a lock file.
    assert_eq!(files_under(&other), [other.join("cat.jpg")]);
    assert!(files_under(&empty).is_empty());
    assert!(!absent.exists());
}

#[test]
fn compact_reclaims_overwritten_values_and_keeps_every_value() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("churn.chest");
    let chest: Chest<u32, Vec<u8>> = Chest::builder().path(&path).budget(0).open().unwrap();
    for generation in 0..4u8 {
        for k in 0..200u32 {
            chest.insert(k, vec![generation ^ k as u8; 500]).unwrap();
        }
    }
    chest.remove(&7).unwrap();
    chest.close().unwrap();
    let before = json(&run_on("stats", &path, &["--json"], 0));
    assert!(before["dead_bytes"].as_u64().unwrap() > 0, "{before}");

    let compact = run_on("compact", &path, &[], 0);
    let bytes = |label: &str| -> u64 {
        let line = compact
            .stdout
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let (was, is) = (bytes("before"), bytes("after"));
    assert!(is < was, "{compact:#?}");
    let after = json(&run_on("stats", &path, &["--json"], 0));
    assert_eq!(after["dead_bytes"], 0, "{after}");
    assert_eq!(after["entries"], 199);
    assert_eq!(
        after["disk_bytes"].as_u64().unwrap() + after["index_bytes"].as_u64().unwrap(),
        is
    );
    run_on("verify", &path, &[], 0);

    let chest: Chest<u32, Vec<u8>> = Chest::open(&path).unwrap();
    assert_eq!(chest.len(), 199);
    for k in 0..200u32 {
        let want = (k != 7).then(|| vec![3 ^ k as u8; 500]);
        assert_eq!(chest.get(&k).unwrap().as_deref(), want.as_ref(), "key {k}");
    }
    chest.close().unwrap();
    // A second compaction has nothing left to reclaim in the segments.
    let again = run_on("compact", &path, &[], 0);
    assert!(
        again
            .stdout
            .contains(": 0 segments rewritten (0 records moved)"),
        "{again:#?}"
    );
}

#[test]
fn the_command_line_is_checked_and_help_documents_the_exit_statuses() {
    let help = spillchest(&["--help"]);
    assert_eq!(help.status, 0, "{help:#?}");
    for status in [
        "0  success",
        "1  damage",
        "2  the chest is locked",
        "3  not a chest",
        "4  bad command line",
    ] {
        assert!(help.stdout.contains(status), "{status}: {help:#?}");
    }
    for command in ["stats", "ls", "verify", "compact", "repair"] {
        assert!(help.stdout.contains(command), "{help:#?}");
        let sub = spillchest(&[command, "--help"]);
        assert_eq!(sub.status, 0);
        assert!(sub.stdout.contains("Exit status:"), "{sub:#?}");
    }
    let bare = spillchest(&[]);
    assert_eq!(bare.status, 4, "{bare:#?}");
    assert!(
        bare.stderr.contains("Usage: spillchest <COMMAND>"),
        "{bare:#?}"
    );
    for args in [
        &["frobnicate"][..],
        &["stats"],
        &["ls", "x", "--limit", "many"],
    ] {
        let run = spillchest(args);
        assert_eq!(run.status, 4, "{args:?}: {run:#?}");
        assert!(run.stderr.contains("error:"), "{run:#?}");
    }
}
