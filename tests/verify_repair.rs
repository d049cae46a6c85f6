//! `verify`, `verify_path` and `repair` on healthy and damaged chests.

use std::fs;
use std::path::{Path, PathBuf};

use spillchest::{Chest, Error, repair, verify_path};

/// A closed chest with 40 small values (one segment) and 5 large ones (own files).
fn build(path: &Path) {
    let chest: Chest<u32, Vec<u8>> = Chest::builder()
        .path(path)
        .budget(0)
        .small_value_bytes(4096)
        .open()
        .unwrap();
    for k in 0..40 {
        chest.insert(k, vec![k as u8; 300]).unwrap();
    }
    for k in 100..105 {
        chest.insert(k, vec![k as u8; 10_000]).unwrap();
    }
    chest.remove(&3).unwrap();
    chest.close().unwrap();
}

fn expected(k: u32) -> Option<Vec<u8>> {
    match k {
        3 => None,
        0..40 => Some(vec![k as u8; 300]),
        100..105 => Some(vec![k as u8; 10_000]),
        _ => None,
    }
}

fn one_file_in(dir: &Path) -> PathBuf {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                return p;
            }
        }
    }
    panic!("no file under {}", dir.display())
}

fn flip(path: &Path, at_from_end: usize) {
    let mut bytes = fs::read(path).unwrap();
    let i = bytes.len() - at_from_end;
    bytes[i] ^= 0x55;
    fs::write(path, bytes).unwrap();
}

#[test]
fn a_healthy_chest_verifies_clean_open_or_closed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.chest");
    build(&path);
    let report = verify_path(&path).unwrap();
    assert!(report.is_healthy(), "{report:?}");
    assert_eq!(report.entries_checked, 44);
    assert_eq!(report.files_checked, 5);
    assert_eq!(report.segments_checked, 1);
    let chest: Chest<u32, Vec<u8>> = Chest::open(&path).unwrap();
    let report = chest.verify().unwrap();
    assert!(report.is_healthy(), "{report:?}");
    assert_eq!(report.entries_checked, 44);
    // A writer holds the lock: the path check takes none and runs beside it.
    let report = verify_path(&path).unwrap();
    assert!(report.is_healthy(), "{report:?}");
    assert_eq!(report.entries_checked, 44);
    // Repair rewrites the index: it needs the writer gone.
    assert!(matches!(repair(&path), Err(Error::Locked { .. })));
}

#[test]
fn verify_names_a_damaged_value_file_and_a_damaged_segment_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.chest");
    build(&path);
    let value_file = one_file_in(&path.join("values"));
    flip(&value_file, 10);
    let segment = one_file_in(&path.join("segments"));
    flip(&segment, 100);
    let report = verify_path(&path).unwrap();
    assert!(!report.is_healthy());
    let paths: Vec<&PathBuf> = report.damaged.iter().map(|d| &d.path).collect();
    assert!(paths.contains(&&value_file), "{report:?}");
    assert!(paths.contains(&&segment), "{report:?}");
    let keyed = report.damaged.iter().filter(|d| d.key.is_some()).count();
    assert_eq!(
        keyed, 2,
        "one value file and one segment record: {report:?}"
    );
    // Every other key still reads; the damaged ones are errors, never wrong values.
    let chest: Chest<u32, Vec<u8>> = Chest::open(&path).unwrap();
    let mut errors = 0;
    for k in (0..40).chain(100..105) {
        match chest.get(&k) {
            Ok(v) => assert_eq!(v.as_deref(), expected(k).as_ref(), "key {k}"),
            Err(Error::Corrupt { .. }) => errors += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(errors, 2);
}

#[test]
fn repair_rebuilds_a_missing_or_damaged_index_from_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rep.chest");
    build(&path);
    fs::write(path.join(".keys"), b"garbage, not an index").unwrap();
    let report = repair(&path).unwrap();
    assert_eq!(report.recovered, 44, "{report:?}");
    assert!(report.unrecoverable.is_empty(), "{report:?}");
    let chest: Chest<u32, Vec<u8>> = Chest::open(&path).unwrap();
    assert_eq!(chest.len(), 44);
    for k in 0..110 {
        assert_eq!(
            chest.get(&k).unwrap().as_deref(),
            expected(k).as_ref(),
            "key {k}"
        );
    }
    chest.close().unwrap();

    // With the index gone and a damaged value file, repair reports what it could not save.
    fs::remove_file(path.join(".keys")).unwrap();
    let value_file = one_file_in(&path.join("values"));
    flip(&value_file, 1);
    let report = repair(&path).unwrap();
    assert_eq!(report.recovered, 43);
    assert_eq!(report.unrecoverable.len(), 1, "{report:?}");
    assert_eq!(report.unrecoverable[0].path, value_file);
    assert!(verify_path(&path).unwrap().is_healthy());
}

#[test]
fn verify_and_repair_refuse_what_is_not_a_chest() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("x"), b"x").unwrap();
    assert!(matches!(
        verify_path(dir.path()),
        Err(Error::NotAChest { .. })
    ));
    assert!(matches!(repair(dir.path()), Err(Error::NotAChest { .. })));
    assert!(matches!(
        verify_path(dir.path().join("absent")),
        Err(Error::NotAChest { .. })
    ));
}

#[test]
fn a_segment_whose_creation_a_crash_cut_short_is_dropped_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("torn-segment.chest");
    build(&path);
    // A crash right after a new segment file was created, before its header was written.
    fs::write(path.join("segments/000000ff.seg"), b"SPCH").unwrap();
    let chest: Chest<u32, Vec<u8>> = Chest::open(&path).unwrap();
    assert!(chest.verify().unwrap().is_healthy());
    assert_eq!(chest.len(), 44);
    chest.close().unwrap();
    assert!(!path.join("segments/000000ff.seg").exists());
    assert!(verify_path(&path).unwrap().is_healthy());
}

#[test]
fn repair_recovers_the_records_after_a_damaged_one_in_a_segment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mid.chest");
    build(&path);
    // One byte in the middle of the segment (40 records of 300-byte values, one removal):
    // one record fails its checksum, and the walk goes on at the next one.
    let segment = one_file_in(&path.join("segments"));
    let len = fs::metadata(&segment).unwrap().len() as usize;
    flip(&segment, len / 2);
    let summary = spillchest::format::check_segment(&fs::read(&segment).unwrap()).unwrap();
    assert_eq!(
        (summary.values, summary.tombstones),
        (39, 1),
        "every record but the damaged one: {summary:?}"
    );
    let (at, _) = summary.stopped.clone().expect("damage found");
    assert!(
        at < (len / 2) as u64 && summary.damaged_bytes > 300,
        "{summary:?}"
    );
    fs::remove_file(path.join(".keys")).unwrap();
    let report = repair(&path).unwrap();
    assert_eq!(
        report.recovered, 43,
        "all but the damaged record: {report:?}"
    );
    assert_eq!(report.unrecoverable.len(), 1, "{report:?}");
    assert_eq!(report.unrecoverable[0].path, segment);
    let chest: Chest<u32, Vec<u8>> = Chest::open(&path).unwrap();
    let lost: Vec<u32> = (0..40)
        .filter(|&k| chest.get(&k).unwrap().as_deref() != expected(k).as_ref())
        .collect();
    assert_eq!(lost.len(), 1, "one key lost: {lost:?}");
    for k in 100..105 {
        assert_eq!(chest.get(&k).unwrap().as_deref(), expected(k).as_ref());
    }
    chest.close().unwrap();
}
