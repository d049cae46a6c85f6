//! The differential driver shared by the `differential` fuzz target and the stable corpus
//! test: operations decoded from arbitrary bytes run against a chest (tiny budget, tiny
//! segments, both value files and segment records) and a `HashMap`, which must agree at every
//! step and after every reopen.

use std::collections::HashMap;
use std::path::Path;

use spillchest::{Chest, Compression, Policy};

fn open(path: &Path, budget: u64, lz4: bool, largest: bool) -> Chest<u8, Vec<u8>> {
    Chest::builder()
        .path(path)
        .budget(budget)
        .small_value_bytes(64)
        .segment_bytes(4096)
        .compression(if lz4 {
            Compression::Lz4
        } else {
            Compression::None
        })
        .policy(if largest {
            Policy::Largest
        } else {
            Policy::Lru
        })
        .open()
        .expect("open")
}

/// Runs the operations `data` encodes; panics on any disagreement.
pub fn run(data: &[u8]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("differential.chest");
    let mut bytes = data.iter().copied();
    let config = bytes.next().unwrap_or(0);
    let budget = u64::from(config & 0x3f) * 16;
    let (lz4, largest) = (config & 0x40 != 0, config & 0x80 != 0);
    let mut chest = open(&path, budget, lz4, largest);
    let mut model: HashMap<u8, Vec<u8>> = HashMap::new();
    let mut ops = 0;
    while let (Some(op), Some(arg)) = (bytes.next(), bytes.next()) {
        ops += 1;
        if ops > 400 {
            break;
        }
        let key = arg % 16;
        match op % 6 {
            0 | 1 => {
                let len = usize::from(bytes.next().unwrap_or(0)) * 2;
                let value = vec![op; len];
                chest.insert(key, value.clone()).expect("insert");
                model.insert(key, value);
            }
            2 => assert_eq!(chest.get(&key).expect("get").as_deref(), model.get(&key)),
            3 => assert_eq!(
                chest.remove(&key).expect("remove"),
                model.remove(&key).is_some()
            ),
            4 => {
                let existed = chest.update(&key, |v| v.push(arg)).expect("update");
                assert_eq!(existed, model.contains_key(&key));
                if let Some(v) = model.get_mut(&key) {
                    v.push(arg);
                }
            }
            _ if arg & 1 == 0 => chest.flush().expect("flush"),
            _ => {
                chest.close().expect("close");
                chest = open(&path, budget, lz4, largest);
            }
        }
        let stats = chest.stats();
        assert!(stats.memory_bytes <= stats.budget_bytes);
        assert_eq!(chest.len(), model.len());
    }
    chest.close().expect("close");
    let chest = open(&path, budget, lz4, largest);
    for key in 0..16u8 {
        assert_eq!(chest.get(&key).expect("get").as_deref(), model.get(&key));
    }
    assert!(chest.verify().expect("verify").is_healthy());
}
