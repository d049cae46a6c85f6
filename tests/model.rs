//! Model-based test: random operations on a chest and on a plain `HashMap`, with a budget so
//! small that most values spill, must agree at every step and after every reopen.

use std::collections::HashMap;
use std::path::Path;

use proptest::prelude::*;
use spillchest::{Chest, Compression, Policy};

#[derive(Debug, Clone)]
enum Op {
    Insert(u32, Vec<u8>),
    Get(u32),
    Remove(u32),
    Update(u32, u8),
    Flush,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0u32..24;
    prop_oneof![
        4 => (key.clone(), prop::collection::vec(any::<u8>(), 0..400)).prop_map(|(k, v)| Op::Insert(k, v)),
        4 => key.clone().prop_map(Op::Get),
        1 => key.clone().prop_map(Op::Remove),
        2 => (key, any::<u8>()).prop_map(|(k, b)| Op::Update(k, b)),
        1 => Just(Op::Flush),
        1 => Just(Op::Reopen),
    ]
}

/// The engine settings a run uses.
#[derive(Debug, Clone, Copy)]
struct Engine {
    policy: Policy,
    compression: Compression,
    /// Values from this size on get their own file; smaller ones go into segments.
    small_value_bytes: u64,
    /// Tiny segments roll over and compact constantly.
    segment_bytes: u64,
}

fn open(path: &Path, e: Engine) -> Chest<u32, Vec<u8>> {
    Chest::builder()
        .path(path)
        .budget(600)
        .policy(e.policy)
        .compression(e.compression)
        .small_value_bytes(e.small_value_bytes)
        .segment_bytes(e.segment_bytes)
        .open()
        .expect("open")
}

fn check_all(chest: &Chest<u32, Vec<u8>>, model: &HashMap<u32, Vec<u8>>) {
    assert_eq!(chest.len(), model.len());
    let mut keys = chest.keys();
    keys.sort_unstable();
    let mut expected: Vec<u32> = model.keys().copied().collect();
    expected.sort_unstable();
    assert_eq!(keys, expected);
    for (k, v) in model {
        assert_eq!(chest.get(k).expect("get").as_deref(), Some(v), "key {k}");
    }
}

fn run(ops: Vec<Op>, engine: Engine) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("model.chest");
    let mut chest = open(&path, engine);
    let mut model: HashMap<u32, Vec<u8>> = HashMap::new();
    for op in ops {
        match op {
            Op::Insert(k, v) => {
                chest.insert(k, v.clone()).expect("insert");
                model.insert(k, v);
            }
            Op::Get(k) => {
                assert_eq!(chest.get(&k).expect("get").as_deref(), model.get(&k));
            }
            Op::Remove(k) => {
                assert_eq!(
                    chest.remove(&k).expect("remove"),
                    model.remove(&k).is_some()
                );
            }
            Op::Update(k, b) => {
                let existed = chest.update(&k, |v| v.push(b)).expect("update");
                assert_eq!(existed, model.contains_key(&k));
                if let Some(v) = model.get_mut(&k) {
                    v.push(b);
                }
            }
            Op::Flush => chest.flush().expect("flush"),
            Op::Reopen => {
                chest.close().expect("close");
                chest = open(&path, engine);
                check_all(&chest, &model);
            }
        }
        let stats = chest.stats();
        assert!(
            stats.memory_bytes <= stats.budget_bytes,
            "memory {} over budget {}",
            stats.memory_bytes,
            stats.budget_bytes
        );
        assert_eq!(stats.failed_spills, 0);
        assert_eq!(stats.failed_compactions, 0);
        assert_eq!(stats.entries as usize, model.len());
        assert!(stats.in_memory <= stats.entries);
        assert!(stats.on_disk <= stats.entries);
        assert!(stats.in_memory + stats.on_disk >= stats.entries);
        let live_bytes: usize = model.values().map(|v| v.len() + 2).sum();
        if live_bytes > 2 * 600 {
            // More than twice the budget is live: some of it must be on disk.
            assert!(
                stats.on_disk > 0 || stats.in_flight_bytes > 0,
                "nothing spilled with {live_bytes} live bytes"
            );
        }
    }
    check_all(&chest, &model);
    chest.close().expect("close");
    let chest = open(&path, engine);
    check_all(&chest, &model);
}

const DEFAULT_ENGINE: Engine = Engine {
    policy: Policy::Lru,
    compression: Compression::None,
    small_value_bytes: spillchest::DEFAULT_SMALL_VALUE_BYTES,
    segment_bytes: spillchest::DEFAULT_SEGMENT_BYTES,
};

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn chest_agrees_with_a_hashmap_lru(ops in prop::collection::vec(op(), 1..80)) {
        run(ops, DEFAULT_ENGINE);
    }

    #[test]
    fn chest_agrees_with_a_hashmap_s3fifo(ops in prop::collection::vec(op(), 1..80)) {
        run(ops, Engine { policy: Policy::S3Fifo, ..DEFAULT_ENGINE });
    }

    #[test]
    fn chest_agrees_with_a_hashmap_s3fifo_tiny_segments(
        ops in prop::collection::vec(op(), 1..120)
    ) {
        run(ops, Engine {
            policy: Policy::S3Fifo,
            small_value_bytes: 200,
            segment_bytes: 4096,
            ..DEFAULT_ENGINE
        });
    }

    #[test]
    fn chest_agrees_with_a_hashmap_largest_lz4(ops in prop::collection::vec(op(), 1..80)) {
        run(ops, Engine { policy: Policy::Largest, compression: Compression::Lz4, ..DEFAULT_ENGINE });
    }

    #[test]
    fn chest_agrees_with_a_hashmap_tiny_segments_and_mixed_files(
        ops in prop::collection::vec(op(), 1..120)
    ) {
        run(ops, Engine { small_value_bytes: 200, segment_bytes: 4096, ..DEFAULT_ENGINE });
    }
}
