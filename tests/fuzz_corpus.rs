//! Runs the saved fuzz corpus (`fuzz/corpus/<target>/`) through the same checks the fuzz
//! targets call, on stable Rust, so every input a fuzzer once found keeps being tested.

use std::fs;
use std::path::Path;

use spillchest::Chest;

#[path = "../fuzz/differential_driver.rs"]
mod differential;
use spillchest::format::{
    check_index_follow, check_index_log, check_meta, check_segment, check_value_codec,
    check_value_file,
};

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut out = Vec::new();
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        out.push((path.display().to_string(), fs::read(&path).unwrap()));
    }
    assert!(!out.is_empty(), "empty corpus {}", dir.display());
    out
}

#[test]
fn value_file_corpus_never_panics_and_seeds_parse() {
    let mut valid = 0;
    for (name, bytes) in corpus("value_file") {
        if check_value_file(&bytes).is_ok() {
            valid += 1;
        } else {
            assert!(!name.contains("seed-valid"), "{name} should parse");
        }
    }
    assert!(valid > 0);
}

#[test]
fn index_log_corpus_never_panics_and_seeds_parse() {
    let mut valid = 0;
    for (name, bytes) in corpus("index_log") {
        match check_index_log(&bytes) {
            Ok(summary) if summary.torn_tail.is_none() => valid += 1,
            _ => assert!(!name.contains("seed-valid"), "{name} should replay"),
        }
    }
    assert!(valid > 0);
}

#[test]
fn index_follow_corpus_agrees_with_a_replay() {
    let mut followed = 0;
    for (name, data) in corpus("index_follow") {
        if data.len() < 2 {
            continue;
        }
        let cut = usize::from(u16::from_le_bytes([data[0], data[1]]));
        match check_index_follow(&data[2..], cut) {
            Ok(true) => followed += 1,
            Ok(false) => assert!(!name.contains("seed-valid"), "{name} should be followed"),
            Err(why) => panic!("{name}: {why}"),
        }
    }
    assert!(followed > 0);
}

#[test]
fn meta_corpus_never_panics_and_seeds_parse() {
    let mut valid = 0;
    for (name, bytes) in corpus("meta") {
        if check_meta(&bytes).is_ok() {
            valid += 1;
        } else {
            assert!(!name.contains("seed-valid"), "{name} should parse");
        }
    }
    assert!(valid > 0);
}

#[test]
fn segment_corpus_never_panics_and_seeds_parse() {
    let mut valid = 0;
    for (name, bytes) in corpus("segment") {
        match check_segment(&bytes) {
            Ok(summary) if summary.stopped.is_none() => valid += 1,
            _ => assert!(
                !name.contains("seed-valid"),
                "{name} should walk to its end"
            ),
        }
    }
    assert!(valid > 0);
}

#[test]
fn differential_corpus_agrees_with_a_hashmap() {
    let inputs = corpus("differential");
    for (_, bytes) in &inputs {
        differential::run(bytes);
    }
    assert!(inputs.len() >= 3);
}

/// Writes the seed corpus from a real chest: `cargo test --test fuzz_corpus -- --ignored`.
#[test]
#[ignore = "regenerates fuzz/corpus seeds; run by hand after a format change"]
fn regenerate_seed_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seed.chest");
    {
        // Values from 1000 bytes get their own file; smaller ones go into the segment.
        let chest: Chest<String, Vec<u8>> = Chest::builder()
            .path(&path)
            .budget(0)
            .small_value_bytes(1000)
            .compression(spillchest::Compression::Lz4)
            .open()
            .unwrap();
        chest
            .insert("plain".into(), (0..=255u8).cycle().take(2000).collect())
            .unwrap();
        chest.insert("packed".into(), vec![7; 4000]).unwrap();
        chest.insert("small".into(), (0..200u8).collect()).unwrap();
        chest.insert("small-packed".into(), vec![3; 900]).unwrap();
        chest.insert("gone".into(), vec![1]).unwrap();
        chest.remove(&"gone".to_string()).unwrap();
        chest.close().unwrap();
    }
    let segment = fs::read(path.join("segments/00000001.seg")).unwrap();
    fs::create_dir_all(root.join("segment")).unwrap();
    fs::write(root.join("segment/seed-valid-segment"), &segment).unwrap();
    fs::write(
        root.join("segment/seed-torn-segment"),
        &segment[..segment.len() - 5],
    )
    .unwrap();
    for target in ["value_file", "index_log", "meta"] {
        fs::create_dir_all(root.join(target)).unwrap();
    }
    fs::copy(path.join("meta"), root.join("meta/seed-valid-meta")).unwrap();
    fs::copy(path.join(".keys"), root.join("index_log/seed-valid-keys")).unwrap();
    let mut n = 0;
    for fan in fs::read_dir(path.join("values")).unwrap() {
        for file in fs::read_dir(fan.unwrap().path()).unwrap() {
            let bytes = fs::read(file.unwrap().path()).unwrap();
            fs::write(root.join(format!("value_file/seed-valid-{n}")), &bytes).unwrap();
            let mut torn = bytes.clone();
            torn.truncate(bytes.len() / 2);
            fs::write(root.join(format!("value_file/seed-torn-{n}")), &torn).unwrap();
            n += 1;
        }
    }
    // Differential seeds: config byte, then (op, arg[, len]) triples.
    fs::create_dir_all(root.join("differential")).unwrap();
    let mut seed = vec![0x02u8];
    for i in 0..120u8 {
        seed.extend_from_slice(&[i % 6, i.wrapping_mul(7), i.wrapping_mul(13) % 90]);
    }
    fs::write(root.join("differential/seed-lru"), &seed).unwrap();
    seed[0] = 0xC1;
    fs::write(root.join("differential/seed-largest-lz4"), &seed).unwrap();
    seed[0] = 0x00;
    fs::write(root.join("differential/seed-zero-budget"), &seed).unwrap();
    let keys = fs::read(path.join(".keys")).unwrap();
    fs::write(
        root.join("index_log/seed-torn-keys"),
        &keys[..keys.len() - 3],
    )
    .unwrap();
    // Follower seeds: the reader's cut (two bytes), then the index, cut at its header, at a
    // third, at a half, inside its last record and at its end.
    fs::create_dir_all(root.join("index_follow")).unwrap();
    for (name, index) in [
        ("valid-keys", &keys[..]),
        ("torn-keys", &keys[..keys.len() - 3]),
    ] {
        let len = index.len();
        for cut in [16, len / 3, len / 2, len.saturating_sub(5).max(16), len] {
            let mut seed = u16::try_from(cut).unwrap().to_le_bytes().to_vec();
            seed.extend_from_slice(index);
            fs::write(
                root.join(format!("index_follow/seed-{name}-cut{cut}")),
                &seed,
            )
            .unwrap();
        }
    }
}

#[test]
fn value_codec_corpus_agrees_with_serde() {
    let mut valid = 0;
    for (name, bytes) in corpus("value_codec") {
        match check_value_codec(&bytes) {
            Ok(0) => assert!(!name.contains("seed-valid"), "{name} should decode"),
            Ok(_) => valid += 1,
            Err(why) => panic!("{name}: {why}"),
        }
    }
    assert!(valid > 0);
}
