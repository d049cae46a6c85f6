//! Memoised computations: compute once, serve from the chest, version bumps, fallible calls,
//! concurrent callers, parallel maps with failures, results beyond the budget, and a rerun in a
//! new process that computes nothing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use spillchest::memo::{CallError, Progress};
use spillchest::{Chest, Memo, MemoKey};

fn temp_chest<R: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static>(
    budget: u64,
) -> Arc<Chest<MemoKey, R>> {
    Arc::new(Chest::with_budget(budget).unwrap())
}

#[test]
fn a_call_is_computed_once_then_served_from_the_chest() {
    let memo = Memo::new(temp_chest(1 << 20), "square", 1);
    let runs = AtomicUsize::new(0);
    let square = |x: &u64| {
        runs.fetch_add(1, Ordering::SeqCst);
        x * x
    };
    assert_eq!(*memo.call(&12u64, square).unwrap(), 144);
    assert_eq!(*memo.call(&12u64, square).unwrap(), 144);
    assert_eq!(*memo.call(&13u64, square).unwrap(), 169);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    // Arguments that encode identically are the same call: a 1-tuple encodes as its field.
    assert_eq!(*memo.call(&(12u64,), |_| 0).unwrap(), 144);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[test]
fn another_version_or_name_never_sees_old_results() {
    let chest = temp_chest(1 << 20);
    let v1 = Memo::new(Arc::clone(&chest), "f", 1);
    let v2 = Memo::new(Arc::clone(&chest), "f", 2);
    let g = Memo::new(Arc::clone(&chest), "g", 1);
    assert_eq!(*v1.call("x", |_| "one".to_string()).unwrap(), "one");
    assert_eq!(*v2.call("x", |_| "two".to_string()).unwrap(), "two");
    assert_eq!(*g.call("x", |_| "gee".to_string()).unwrap(), "gee");
    // All three results are kept side by side; each memo sees only its own.
    assert_eq!(*v1.call("x", |_| unreachable!()).unwrap(), "one");
    assert_eq!(*v2.call("x", |_| unreachable!()).unwrap(), "two");
    assert_eq!(chest.len(), 3);
}

#[test]
fn a_failed_computation_is_not_stored() {
    let memo: Memo<u32> = Memo::new(temp_chest(1 << 20), "parse", 1);
    let err = memo.try_call("x1", |s: &str| s.parse::<u32>()).unwrap_err();
    assert!(matches!(err, CallError::Function(_)), "{err}");
    assert!(memo.chest().is_empty());
    let runs = AtomicUsize::new(0);
    let value = memo
        .try_call("x1", |_| {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok::<u32, std::num::ParseIntError>(7)
        })
        .unwrap();
    assert_eq!((*value, runs.load(Ordering::SeqCst)), (7, 1));
}

#[test]
fn concurrent_callers_of_a_missing_call_compute_it_once() {
    let memo: Memo<Vec<u64>> = Memo::new(temp_chest(1 << 20), "slow", 1);
    let runs = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (memo, runs, barrier) = (memo.clone(), Arc::clone(&runs), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                memo.call(&42u32, |_| {
                    runs.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    vec![42; 1000]
                })
                .unwrap()
            })
        })
        .collect();
    for h in handles {
        assert_eq!(*h.join().unwrap(), vec![42; 1000]);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[test]
fn a_panicking_call_lets_a_waiter_compute_instead() {
    let memo: Memo<u32> = Memo::new(temp_chest(1 << 20), "flaky", 1);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        memo.call(&1u8, |_| panic!("boom"))
    }));
    assert!(outcome.is_err());
    assert!(memo.chest().is_empty());
    assert_eq!(*memo.call(&1u8, |_| 5).unwrap(), 5);
}

#[test]
fn par_map_computes_only_what_is_missing_in_input_order_with_progress() {
    let memo: Memo<u64> = Memo::new(temp_chest(1 << 20), "cube", 1).threads(4);
    let inputs: Vec<u64> = (0..300).collect();
    for x in inputs.iter().step_by(3) {
        memo.call(x, |x| x * x * x).unwrap();
    }
    let runs = AtomicUsize::new(0);
    let last = parking_lot::Mutex::new(Vec::<Progress>::new());
    let results = memo
        .par_map(
            &inputs,
            |x| {
                runs.fetch_add(1, Ordering::SeqCst);
                x * x * x
            },
            |p| last.lock().push(p),
        )
        .unwrap();
    let expected: Vec<u64> = inputs.iter().map(|x| x * x * x).collect();
    assert_eq!(results.iter().map(|v| **v).collect::<Vec<_>>(), expected);
    assert_eq!(runs.load(Ordering::SeqCst), 200);
    let reports = last.into_inner();
    assert_eq!(reports.len(), 300);
    let max_done = reports.iter().map(|p| p.done).max().unwrap();
    let final_cache = reports.iter().map(|p| p.from_cache).max().unwrap();
    assert_eq!((max_done, final_cache), (300, 100));
    assert!(reports.iter().all(|p| p.total == 300));
}

#[test]
fn a_panic_or_error_in_one_input_keeps_the_others_and_names_the_failures() {
    let memo: Memo<String> = Memo::new(temp_chest(1 << 20), "label", 1).threads(3);
    let inputs: Vec<u32> = (0..50).collect();
    let err = memo
        .par_map(
            &inputs,
            |x| {
                assert!(*x != 17, "input 17 is cursed");
                format!("#{x}")
            },
            |_| {},
        )
        .unwrap_err();
    assert_eq!(err.failures.len(), 1);
    assert_eq!(err.failures[0].index, 17);
    assert!(
        err.failures[0].reason.contains("cursed"),
        "{}",
        err.failures[0].reason
    );
    assert_eq!(err.results.iter().filter(|r| r.is_some()).count(), 49);
    assert_eq!(memo.chest().len(), 49);
    // A rerun computes only the failed input.
    let runs = AtomicUsize::new(0);
    let results = memo
        .par_map(
            &inputs,
            |x| {
                runs.fetch_add(1, Ordering::SeqCst);
                format!("#{x}")
            },
            |_| {},
        )
        .unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(*results[17], "#17");
    // Fallible functions: errors are failures, not stored.
    let err = memo
        .try_par_map(
            &[100u32, 101],
            |x| {
                if *x == 101 {
                    Err("odd")
                } else {
                    Ok(format!("#{x}"))
                }
            },
            |_| {},
        )
        .unwrap_err();
    assert_eq!(err.failures[0].index, 1);
    assert_eq!(err.failures[0].reason, "odd");
}

#[test]
fn results_ten_times_the_budget_all_come_back_correct() {
    let budget = 256 << 10;
    let memo: Memo<Vec<u64>> = Memo::new(temp_chest(budget), "big", 1).threads(2);
    let inputs: Vec<u64> = (0..160).collect();
    // 160 results of about 18 KiB encoded (large numbers take 9 bytes as varints): 2.9 MiB,
    // over ten times the budget.
    let value = |x: u64| vec![u64::MAX - x; 2048];
    let results = memo.par_map(&inputs, |x| value(*x), |_| {}).unwrap();
    for (x, r) in inputs.iter().zip(&results) {
        assert_eq!(**r, value(*x));
    }
    memo.chest().flush().unwrap(); // waits for the background writes
    let s = memo.chest().stats();
    assert!(s.memory_bytes <= s.budget_bytes);
    assert!(s.spill_bytes > 10 * budget, "{s:?}");
    assert!(s.on_disk > 140, "{s:?}");
    drop(results);
    for x in &inputs {
        assert_eq!(*memo.call(x, |_| unreachable!()).unwrap(), value(*x));
    }
}

#[test]
fn par_map_stream_yields_every_result_as_it_finishes() {
    let memo: Memo<u64> = Memo::new(temp_chest(1 << 20), "double", 1).threads(3);
    let mut seen: Vec<(usize, u64)> = memo
        .par_map_stream((0..100u64).collect(), |x| x * 2)
        .map(|(i, r)| (i, *r.unwrap()))
        .collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        (0..100).map(|i| (i as usize, i * 2)).collect::<Vec<_>>()
    );
}

const CHILD: &str = "SPILLCHEST_MEMO_CHILD";

/// Runs the map on the persistent chest at `path`; returns how many inputs it computed.
fn map_in(path: &std::path::Path) -> usize {
    let chest: Arc<Chest<MemoKey, u64>> = Arc::new(Chest::open(path).unwrap());
    let memo = Memo::new(Arc::clone(&chest), "triangle", 1);
    let runs = AtomicUsize::new(0);
    let inputs: Vec<u64> = (0..200).collect();
    let results = memo
        .par_map(
            &inputs,
            |x| {
                runs.fetch_add(1, Ordering::SeqCst);
                x * (x + 1) / 2
            },
            |_| {},
        )
        .unwrap();
    assert_eq!(*results[199], 199 * 200 / 2);
    drop(memo);
    Arc::try_unwrap(chest).ok().unwrap().close().unwrap();
    runs.load(Ordering::SeqCst)
}

#[test]
fn a_rerun_in_a_new_process_computes_nothing() {
    if let Ok(path) = std::env::var(CHILD) {
        println!("computed={}", map_in(std::path::Path::new(&path)));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memo.chest");
    assert_eq!(map_in(&path), 200);
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_rerun_in_a_new_process_computes_nothing",
            "--nocapture",
        ])
        .env(CHILD, &path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("computed=0"), "{stdout}");
}
