//! Helpers shared by the process-level tests: running this test binary again as a child
//! process that plays a role, and values that say which key and generation they belong to.
//!
//! A child is the current test binary re-run with `--exact <test> --nocapture
//! --test-threads=1` and two environment variables: [`ROLE_VAR`] (what to do) and
//! [`PATH_VAR`] (the chest directory). The test function sees the role with [`child_role`] and
//! acts as the child. A child talks back through stdout lines starting with [`LINE_PREFIX`]
//! (written by [`say`]) and its exit status; everything else libtest prints is ignored.
//! Also a small xorshift stream ([`Rng`]) for tests that draw operations or keys.

// Each test file uses a different subset of these helpers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};

/// The environment variable naming the role a re-run test binary plays.
pub const ROLE_VAR: &str = "SPILLCHEST_CHILD";
/// The environment variable carrying the chest directory to the child.
pub const PATH_VAR: &str = "SPILLCHEST_CHILD_PATH";
/// The start of every line a child says to its parent. Found anywhere in a line, because
/// libtest may print `test name ... ` on the same line before the child's first output.
pub const LINE_PREFIX: &str = "@spillchest-child@ ";

/// The role and chest path given to this process when it runs as a child, else `None`.
pub fn child_role() -> Option<(String, PathBuf)> {
    let role = std::env::var(ROLE_VAR).ok()?;
    let path = std::env::var_os(PATH_VAR).expect("a child needs a chest path");
    Some((role, PathBuf::from(path)))
}

/// Says one line to the parent, flushing at once so it survives an abort or a kill.
pub fn say(line: impl AsRef<str>) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{LINE_PREFIX}{}", line.as_ref()).expect("write to the parent");
    out.flush().expect("flush stdout to the parent");
}

/// The protocol line inside one line of a child's stdout, if there is one.
pub fn said(line: &str) -> Option<&str> {
    line.find(LINE_PREFIX)
        .map(|at| line[at + LINE_PREFIX.len()..].trim_end())
}

/// What follows `word` in `line` when it is the line's first word.
pub fn after_word<'a>(line: &'a str, word: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(word)?;
    if rest.is_empty() {
        return Some(rest);
    }
    rest.strip_prefix(' ')
}

/// The command that re-runs the test `test_name` of this binary as a child playing `role` on
/// the chest at `path`.
fn child_command(test_name: &str, role: &str, path: &Path) -> Command {
    let exe = std::env::current_exe().expect("path of the test binary");
    let mut command = Command::new(exe);
    command
        .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env(ROLE_VAR, role)
        .env(PATH_VAR, path);
    command
}

/// What a finished child did.
#[derive(Debug)]
pub struct ChildRun {
    /// How it ended.
    pub status: ExitStatus,
    /// Its protocol lines, in order.
    pub lines: Vec<String>,
    /// All of its stdout and stderr, for failure messages.
    pub transcript: String,
}

impl ChildRun {
    /// Panics with the transcript unless the child exited successfully after running exactly
    /// one test (a misspelt test name would otherwise run nothing and "pass").
    pub fn assert_success(&self) {
        assert!(
            self.status.success(),
            "child failed ({}):\n{}",
            self.status,
            self.transcript
        );
        assert!(
            self.transcript.contains("running 1 test"),
            "child ran no test; is the test name right?\n{}",
            self.transcript
        );
    }

    /// What follows `word` in each protocol line whose first word it is.
    pub fn lines_after(&self, word: &str) -> Vec<&str> {
        self.lines
            .iter()
            .filter_map(|l| after_word(l, word))
            .collect()
    }
}

/// Runs `test_name` as a child playing `role` on the chest at `path` and waits for it.
pub fn run_child(test_name: &str, role: &str, path: &Path) -> ChildRun {
    let output = child_command(test_name, role, path)
        .stdin(Stdio::null())
        .output()
        .expect("spawn the child test process");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    ChildRun {
        status: output.status,
        lines: stdout.lines().filter_map(said).map(String::from).collect(),
        transcript: format!("--- stdout ---\n{stdout}--- stderr ---\n{stderr}"),
    }
}

/// A running child whose protocol lines the parent reads as they come.
pub struct RunningChild {
    /// The process.
    pub child: Child,
    stdout: BufReader<ChildStdout>,
    /// Every stdout line read so far, for failure messages.
    pub seen: Vec<String>,
}

/// Starts `test_name` as a child playing `role` on the chest at `path`, without waiting. Its
/// stderr goes to this process's stderr.
pub fn spawn_child(test_name: &str, role: &str, path: &Path) -> RunningChild {
    let mut child = child_command(test_name, role, path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the child test process");
    let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    RunningChild {
        child,
        stdout,
        seen: Vec::new(),
    }
}

impl RunningChild {
    /// Reads the child's next protocol line, or `None` when its stdout ends.
    pub fn next_line(&mut self) -> Option<String> {
        loop {
            let mut line = String::new();
            let read = self.stdout.read_line(&mut line).expect("read child stdout");
            if read == 0 {
                return None;
            }
            self.seen.push(line.trim_end().to_string());
            if let Some(said) = said(&line) {
                return Some(said.to_string());
            }
        }
    }

    /// Reads protocol lines until one starts with `word`, returning the rest of it. Panics
    /// with what the child printed if its stdout ends first.
    pub fn expect_line(&mut self, word: &str) -> String {
        while let Some(line) = self.next_line() {
            if let Some(rest) = after_word(&line, word) {
                return rest.to_string();
            }
        }
        panic!(
            "child ended without saying {word:?}; its stdout:\n{}",
            self.seen.join("\n")
        );
    }

    /// Reads the rest of the child's stdout and waits for it to end.
    pub fn finish(&mut self) -> (ExitStatus, Vec<String>) {
        let mut rest = Vec::new();
        while let Some(line) = self.next_line() {
            rest.push(line);
        }
        let status = self.child.wait().expect("wait for the child");
        (status, rest)
    }
}

impl Drop for RunningChild {
    /// Kills a child that is still running, so a failing parent leaves no orphan behind.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A value of `len` bytes (at least 16) for `key` in generation `generation`: the key and the
/// generation little-endian, then bytes from a xorshift stream seeded by both, so values do
/// not compress and a wrong value cannot pass for a right one.
pub fn value_of(key: u64, generation: u64, len: usize) -> Vec<u8> {
    assert!(len >= 16, "a value carries its key and generation");
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&key.to_le_bytes());
    out.extend_from_slice(&generation.to_le_bytes());
    let mut x = (key ^ 0x9E37_79B9_7F4A_7C15)
        .wrapping_mul(0xBF58_476D_1CE4_E5B9)
        .wrapping_add(generation.wrapping_mul(0x94D0_49BB_1331_11EB))
        | 1;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let take = (len - out.len()).min(8);
        out.extend_from_slice(&x.to_le_bytes()[..take]);
    }
    out
}

/// The key and generation a value from [`value_of`] says it belongs to.
pub fn tag_of(value: &[u8]) -> Option<(u64, u64)> {
    let key = u64::from_le_bytes(value.get(..8)?.try_into().ok()?);
    let generation = u64::from_le_bytes(value.get(8..16)?.try_into().ok()?);
    Some((key, generation))
}

/// A small deterministic xorshift stream, for tests that draw operations or keys.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A draw below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
