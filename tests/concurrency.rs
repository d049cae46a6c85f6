//! Many threads on one chest: 8 threads × 100,000 random operations on shared and private
//! keys with a tiny budget, spilling in the background and (a second run) synchronously,
//! checked against a model; a sampler thread checks the memory bound all along.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::Rng;
use spillchest::Chest;

const THREADS: u64 = 8;
const OPS: u64 = 100_000;
const SHARED_KEYS: u64 = 64;
const PRIVATE_KEYS: u64 = 200;
const BUDGET: u64 = 64 << 10;
const IN_FLIGHT: u64 = 16 << 10;
const MAX_VALUE: usize = 3000;

/// A value that names its key and carries its own checksum, so any read can be checked.
fn value(key: u64, stamp: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len.max(24));
    out.extend_from_slice(&key.to_le_bytes());
    out.extend_from_slice(&stamp.to_le_bytes());
    out.resize(len.max(24) - 8, (stamp % 251) as u8);
    let sum = checksum(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Panics unless `v` is a well-formed value of `key`.
fn check(key: u64, v: &[u8]) {
    assert!(v.len() >= 24, "key {key}: value of {} bytes", v.len());
    let (body, sum) = v.split_at(v.len() - 8);
    assert_eq!(
        checksum(body),
        u64::from_le_bytes(sum.try_into().unwrap()),
        "key {key}: torn value"
    );
    assert_eq!(u64::from_le_bytes(v[..8].try_into().unwrap()), key);
}

#[test]
fn eight_threads_agree_with_a_model_and_the_budget_holds_throughout() {
    eight_threads(false);
}

#[test]
fn eight_threads_spilling_synchronously_agree_with_a_model_and_the_budget_holds_throughout() {
    // Every evicting thread writes batches itself, side by side with the others.
    eight_threads(true);
}

/// The stress test, spilling in the background or synchronously.
fn eight_threads(synchronous: bool) {
    let chest: Arc<Chest<u64, Vec<u8>>> = Arc::new(
        Chest::builder()
            .budget(BUDGET)
            .in_flight_bytes(IN_FLIGHT)
            .small_value_bytes(4096)
            .segment_bytes(256 << 10)
            .synchronous_spill(synchronous)
            .open()
            .unwrap(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (chest, stop) = (Arc::clone(&chest), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut samples = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let s = chest.stats();
                assert!(s.memory_bytes <= s.budget_bytes, "over budget: {s:?}");
                // The allowance (or one value when it alone is in flight), plus at most one
                // value per thread whose update found no room in memory.
                assert!(
                    s.in_flight_bytes
                        <= IN_FLIGHT.max(MAX_VALUE as u64 + 16) + THREADS * (MAX_VALUE as u64 + 16),
                    "in flight: {s:?}"
                );
                samples += 1;
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            samples
        })
    };
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let chest = Arc::clone(&chest);
            std::thread::spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (t + 1));
                let mut model: HashMap<u64, Vec<u8>> = HashMap::new();
                let private = |i: u64| 1_000_000 * (t + 1) + i;
                for op in 0..OPS {
                    let r = rng.next();
                    let shared = r.is_multiple_of(4);
                    let key = if shared {
                        (r >> 8) % SHARED_KEYS
                    } else {
                        private((r >> 8) % PRIVATE_KEYS)
                    };
                    let len = 24 + ((r >> 20) % MAX_VALUE as u64) as usize;
                    match (r >> 40) % 10 {
                        0..=3 => {
                            let v = value(key, op, len);
                            chest.insert(key, v.clone()).unwrap();
                            if !shared {
                                model.insert(key, v);
                            }
                        }
                        4..=7 => {
                            let got = chest.get(&key).unwrap();
                            if let Some(v) = &got {
                                check(key, v);
                            }
                            if !shared {
                                assert_eq!(got.as_deref(), model.get(&key), "key {key}");
                            }
                        }
                        8 => {
                            let removed = chest.remove(&key).unwrap();
                            if !shared {
                                assert_eq!(removed, model.remove(&key).is_some(), "key {key}");
                            }
                        }
                        _ => {
                            let v = value(key, op, len);
                            let changed = chest.update(&key, |old| *old = v.clone()).unwrap();
                            if !shared {
                                assert_eq!(changed, model.contains_key(&key), "key {key}");
                                if changed {
                                    model.insert(key, v);
                                }
                            }
                        }
                    }
                }
                model
            })
        })
        .collect();
    let models: Vec<HashMap<u64, Vec<u8>>> =
        workers.into_iter().map(|w| w.join().unwrap()).collect();
    chest.flush().unwrap();
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.join().unwrap();
    assert!(samples > 10, "the sampler ran {samples} times");
    for (t, model) in models.iter().enumerate() {
        for i in 0..PRIVATE_KEYS {
            let key = 1_000_000 * (t as u64 + 1) + i;
            assert_eq!(
                chest.get(&key).unwrap().as_deref(),
                model.get(&key),
                "key {key}"
            );
        }
    }
    for key in 0..SHARED_KEYS {
        if let Some(v) = chest.get(&key).unwrap() {
            check(key, &v);
        }
    }
    // The gets above brought values back from disk, evicting others: their writes may still be
    // in flight until a flush waits for them.
    chest.flush().unwrap();
    let s = chest.stats();
    assert!(s.spills > 10_000, "the budget forced spills: {s:?}");
    assert!(s.loads > 1_000, "values came back from disk: {s:?}");
    assert_eq!(s.in_flight_bytes, 0, "{s:?}");
}

#[test]
fn concurrent_get_or_insert_with_computes_a_missing_value_once() {
    let chest: Arc<Chest<u64, Vec<u8>>> = Arc::new(Chest::with_budget(1 << 20).unwrap());
    let runs = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let callers: Vec<_> = (0..6)
        .map(|_| {
            let (chest, runs) = (Arc::clone(&chest), Arc::clone(&runs));
            std::thread::spawn(move || {
                chest
                    .get_or_insert_with(7, || {
                        runs.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        vec![7; 100]
                    })
                    .unwrap()
            })
        })
        .collect();
    for c in callers {
        assert_eq!(*c.join().unwrap(), vec![7; 100]);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1, "f ran once");
    // A failing computation stores nothing and its error reaches the caller.
    let err = chest
        .get_or_try_insert_with(8, || Err(Failure::Compute))
        .unwrap_err();
    assert!(matches!(err, Failure::Compute));
    assert!(!chest.contains_key(&8));
    let v = chest.get_or_try_insert_with(8, || Ok::<_, Failure>(vec![8]));
    assert_eq!(*v.unwrap(), vec![8]);
}

/// A caller's error type: its own failures, or the chest's.
#[derive(Debug)]
enum Failure {
    Compute,
    #[allow(dead_code)]
    Chest(spillchest::Error),
}

impl From<spillchest::Error> for Failure {
    fn from(e: spillchest::Error) -> Self {
        Failure::Chest(e)
    }
}

/// Names of the threads that encoded a [`Traced`] value for the disk.
static ENCODED_ON: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Bytes whose encoding notes the thread doing it (the chest below has a weigher, so values
/// are encoded only to be written).
#[derive(serde::Deserialize)]
struct Traced(Vec<u8>);

impl serde::Serialize for Traced {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let name = std::thread::current().name().unwrap_or("").to_string();
        let mut seen = ENCODED_ON.lock().unwrap();
        if !seen.contains(&name) {
            seen.push(name);
        }
        drop(seen);
        self.0.serialize(s)
    }
}

#[test]
fn an_insert_held_back_by_the_in_flight_allowance_writes_batches_itself() {
    // A budget of 8 MiB and an allowance of 4 MiB (four batches of 1 MiB): the background
    // writer cannot keep up with an inserting thread that only copies 16 KiB values, so the
    // allowance fills and the inserting thread writes queued batches instead of waiting.
    let chest: Chest<u64, Traced> = Chest::builder()
        .temp()
        .budget(8 << 20)
        .in_flight_bytes(4 << 20)
        .weigher(|v: &Traced| v.0.len() as u64)
        .open()
        .unwrap();
    let inserted = std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("inserter".into())
            .spawn_scoped(s, || {
                let mut n = 0u64;
                // Until the inserting thread is seen encoding, at most 16 passes over the budget.
                while n < 8192 && !ENCODED_ON.lock().unwrap().iter().any(|t| t == "inserter") {
                    chest.insert(n, Traced(vec![n as u8; 16 << 10])).unwrap();
                    n += 1;
                }
                n
            })
            .unwrap()
            .join()
            .unwrap()
    });
    let seen = ENCODED_ON.lock().unwrap().clone();
    assert!(
        seen.iter().any(|t| t == "inserter"),
        "after {inserted} inserts only these threads wrote: {seen:?}"
    );
    for key in [0, inserted / 2, inserted - 1] {
        let v = chest.get(&key).unwrap().expect("inserted");
        assert_eq!(v.0, vec![key as u8; 16 << 10]);
    }
    chest.close().unwrap();
}
