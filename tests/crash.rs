//! Crash safety, proven by killing: a child process does random inserts, updates, removals and
//! flushes on a chest with a tiny budget and tiny segments (so spills and compactions happen
//! all the time), logging each operation before doing it and each completed flush after it.
//! The parent kills it with SIGKILL at a random moment, reopens the chest, and checks:
//! reopening never fails, no value is ever wrong or unreadable, and every key holds the value
//! the last completed flush acknowledged or one written after it.
//!
//! CI runs 20 kills; `cargo test --test crash -- --ignored` runs 500.

use std::collections::{HashMap, HashSet};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use spillchest::{Chest, Compression};

const KEYS: u64 = 64;
const CHILD_ENV: &str = "SPILLCHEST_CRASH_CHILD";

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The value of `key` at `version`: it names its key and version, and the rest of its bytes
/// follow from them, so any wrong or damaged value is caught. Lengths straddle the
/// small-value threshold so both segments and value files are used.
fn value(key: u64, version: u64) -> Vec<u8> {
    let mut rng = Rng(key.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ version ^ 0xA5A5);
    let len = 16 + rng.below(1500) as usize;
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&key.to_le_bytes());
    out.extend_from_slice(&version.to_le_bytes());
    while out.len() < len {
        out.push(rng.next() as u8);
    }
    out
}

/// The version a value claims, after checking every byte of it.
fn version_of(key: u64, bytes: &[u8]) -> u64 {
    assert!(bytes.len() >= 16, "value of key {key} is too short");
    let claimed_key = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    let version = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
    assert_eq!(
        claimed_key, key,
        "value of key {key} claims key {claimed_key}"
    );
    assert_eq!(
        bytes,
        &value(key, version)[..],
        "value of key {key} is wrong"
    );
    version
}

fn open(path: &Path, round: u64) -> Chest<u64, Vec<u8>> {
    let compression = if round.is_multiple_of(2) {
        Compression::None
    } else {
        Compression::Lz4
    };
    Chest::builder()
        .path(path)
        .budget(8 << 10)
        .small_value_bytes(512)
        .segment_bytes(16 << 10)
        .compression(compression)
        .open()
        .unwrap_or_else(|e| panic!("reopen failed in round {round}: {e}"))
}

/// The child: random operations until killed, each logged before it is done.
fn child(path: &Path, log: &Path, round: u64) {
    let chest = open(path, round);
    let mut log = OpenOptions::new().append(true).open(log).unwrap();
    let mut line = |s: String| log.write_all(s.as_bytes()).unwrap();
    let mut present: HashSet<u64> = chest.keys().into_iter().collect();
    let mut rng = Rng(round.wrapping_mul(7919) + 1);
    for op in 0..1_000_000u64 {
        let key = rng.below(KEYS);
        let version = round * 10_000_000 + op + 1;
        match rng.below(20) {
            0..=9 => {
                line(format!("I {key} {version}\n"));
                chest.insert(key, value(key, version)).unwrap();
                present.insert(key);
            }
            10..=13 if present.contains(&key) => {
                line(format!("I {key} {version}\n"));
                let updated = chest.update(&key, |v| *v = value(key, version)).unwrap();
                assert!(updated);
            }
            14..=16 => {
                line(format!("R {key}\n"));
                chest.remove(&key).unwrap();
                present.remove(&key);
            }
            17 => {
                line("F\n".into());
                chest.flush().unwrap();
                line("FD\n".into());
            }
            _ => {
                if let Some(v) = chest.get(&key).unwrap() {
                    version_of(key, &v);
                }
            }
        }
    }
}

/// What a key may hold after a crash: its state at the last completed flush, or any state
/// written after it.
#[derive(Default)]
struct Allowed {
    acked: HashMap<u64, Option<u64>>,
    since: HashMap<u64, Vec<Option<u64>>>,
}

impl Allowed {
    fn from_state(state: &HashMap<u64, Option<u64>>) -> Self {
        Allowed {
            acked: state.clone(),
            since: HashMap::new(),
        }
    }

    fn replay(&mut self, log: &str, start: usize) {
        let mut current = self.acked.clone();
        for line in log[start..].lines() {
            let parts: Vec<&str> = line.split(' ').collect();
            match parts[..] {
                ["I", k, v] => {
                    let (k, v) = (k.parse().unwrap(), v.parse().unwrap());
                    current.insert(k, Some(v));
                    self.since.entry(k).or_default().push(Some(v));
                }
                ["R", k] => {
                    let k = k.parse().unwrap();
                    current.insert(k, None);
                    self.since.entry(k).or_default().push(None);
                }
                ["FD"] => {
                    self.acked = current.clone();
                    self.since.clear();
                }
                ["F"] | [""] => {}
                _ => panic!("bad log line {line:?}"),
            }
        }
    }

    fn allows(&self, key: u64, found: Option<u64>) -> bool {
        self.acked.get(&key).copied().flatten() == found
            || self.since.get(&key).is_some_and(|s| s.contains(&found))
    }
}

fn run(kills: u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.chest");
    let log_path = dir.path().join("ops.log");
    std::fs::write(&log_path, b"").unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut observed: HashMap<u64, Option<u64>> = HashMap::new();
    let mut rng = Rng(0xC0FFEE);
    for round in 0..kills {
        let start = std::fs::read_to_string(&log_path).unwrap().len();
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(
                CHILD_ENV,
                format!("{}|{}|{round}", path.display(), log_path.display()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until the child has done some work since its start (however slow the machine
        // is), then let it run a random while longer before killing it.
        let min_ops = 20 + rng.below(200) as usize;
        let waited = std::time::Instant::now();
        loop {
            let logged = std::fs::read_to_string(&log_path).unwrap()[start..]
                .lines()
                .count();
            if logged >= min_ops || child.try_wait().ok().flatten().is_some() {
                break;
            }
            assert!(
                waited.elapsed() < Duration::from_secs(120),
                "child made no progress"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(rng.below(50)));
        if let Ok(Some(status)) = child.try_wait() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "child stopped by itself in round {round} ({status}): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        child.kill().unwrap();
        child.wait().unwrap();

        let log = std::fs::read_to_string(&log_path).unwrap();
        let mut allowed = Allowed::from_state(&observed);
        allowed.replay(&log, start);
        let chest = open(&path, round + 1);
        let keys: HashSet<u64> = chest.keys().into_iter().collect();
        for key in 0..KEYS {
            let found = match chest.get(&key) {
                Ok(v) => v.map(|v| version_of(key, &v)),
                Err(e) => panic!("round {round}: key {key} unreadable after a crash: {e}"),
            };
            assert_eq!(found.is_some(), keys.contains(&key));
            assert!(
                allowed.allows(key, found),
                "round {round}: key {key} holds {found:?}; acked {:?}, later {:?}",
                allowed.acked.get(&key),
                allowed.since.get(&key)
            );
            observed.insert(key, found);
        }
        assert!(keys.iter().all(|k| *k < KEYS));
        let report = chest.verify().unwrap();
        assert!(report.is_healthy(), "round {round}: {report:?}");
        chest.close().unwrap();
    }
    // The kills landed in real work: many operations and completed flushes between them.
    let log = std::fs::read_to_string(&log_path).unwrap();
    let ops = log
        .lines()
        .filter(|l| l.starts_with('I') || l.starts_with('R'))
        .count();
    let flushes = log.lines().filter(|l| *l == "FD").count();
    assert!(
        ops as u64 >= 15 * kills,
        "only {ops} operations in {kills} rounds"
    );
    assert!(
        flushes as u64 >= kills / 2,
        "only {flushes} flushes in {kills} rounds"
    );
    let chest = open(&path, kills);
    println!(
        "{kills} kills survived: {ops} operations, {flushes} flushes; final {:?}",
        chest.stats()
    );
}

/// Not a test by itself: the child process's entry point.
#[test]
fn crash_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let parts: Vec<&str> = spec.split('|').collect();
    let (path, log, round) = (PathBuf::from(parts[0]), PathBuf::from(parts[1]), parts[2]);
    child(&path, &log, round.parse().unwrap());
}

#[test]
fn twenty_kills_lose_nothing_that_was_flushed() {
    run(20);
}

#[test]
#[ignore = "long: 500 kills (about a few minutes)"]
fn five_hundred_kills_lose_nothing_that_was_flushed() {
    run(500);
}
