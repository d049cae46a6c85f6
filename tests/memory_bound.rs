//! The memory bound at the level of the process: a child process pushes 16 times its budget
//! through a chest and reads it all back, and its anonymous memory (`RssAnon`) stays within the
//! budget plus a fixed allowance. In its own file so that it runs in its own process, away from
//! other tests' allocations.

mod common;

use common::{child_role, run_child, say, tag_of, value_of};
use spillchest::Chest;

/// The chest's budget.
const BUDGET_BYTES: u64 = 32 << 20;
/// Bytes of each value.
const VALUE_LEN: usize = 128 << 10;
/// Values pushed through the chest: 512 MiB, 16 times the budget.
const VALUES: u64 = 4096;
/// `RssAnon` is sampled after every this many operations.
const SAMPLE_EVERY: u64 = 8;
/// What the process may hold beyond its baseline and the budget: the value being inserted or
/// read and the copies a spill or a load makes of it (a few times 128 KiB), the index (a few
/// dozen bytes per key), the allocator's slack and fragmentation. 64 MiB is twice the budget:
/// a chest that kept even a sixth of what it spilled would exceed it.
const ALLOWANCE_BYTES: u64 = 64 << 20;

const STATUS: &str = "/proc/self/status";

/// This process's `RssAnon` in bytes, or `None` when the kernel does not report it.
fn rss_anon_bytes() -> Option<u64> {
    let status = std::fs::read_to_string(STATUS).ok()?;
    let line = status.lines().find(|l| l.starts_with("RssAnon:"))?;
    let kib: u64 = line
        .trim_start_matches("RssAnon:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// The child: fills a chest with 16 times its budget, reads everything back, and reports its
/// `RssAnon` before the chest exists, at its peak, and at the end.
fn push_sixteen_budgets_through_a_chest() {
    let baseline = rss_anon_bytes().expect("RssAnon in /proc/self/status");
    let chest: Chest<u64, Vec<u8>> = Chest::with_budget(BUDGET_BYTES).unwrap();
    let mut peak = baseline;
    let mut operations = 0u64;
    let mut after_operation = |chest: &Chest<u64, Vec<u8>>| {
        let stats = chest.stats();
        assert!(
            stats.memory_bytes <= BUDGET_BYTES,
            "memory bound broken after operation {operations}: {stats:?}"
        );
        operations += 1;
        if operations.is_multiple_of(SAMPLE_EVERY) {
            peak = peak.max(rss_anon_bytes().expect("RssAnon"));
        }
    };

    for key in 0..VALUES {
        chest.insert(key, value_of(key, 1, VALUE_LEN)).unwrap();
        after_operation(&chest);
    }
    let stats = chest.stats();
    assert_eq!(stats.entries, VALUES);
    assert!(
        stats.on_disk >= VALUES - BUDGET_BYTES / VALUE_LEN as u64,
        "most values should be on disk: {stats:?}"
    );
    let after_inserts = rss_anon_bytes().expect("RssAnon");

    for key in 0..VALUES {
        let got = chest.get(&key).unwrap().expect("every key is present");
        assert!(
            *got == value_of(key, 1, VALUE_LEN),
            "key {key}: got a value tagged {:?}",
            tag_of(&got)
        );
        drop(got);
        after_operation(&chest);
    }
    let stats = chest.stats();
    assert!(
        stats.loads > 0,
        "values were read back from disk: {stats:?}"
    );
    let after_reads = rss_anon_bytes().expect("RssAnon");
    peak = peak.max(after_inserts).max(after_reads);
    say(format!("BASELINE {baseline}"));
    say(format!("AFTER_INSERTS {after_inserts}"));
    say(format!("AFTER_READS {after_reads}"));
    say(format!("PEAK {peak}"));
    say(format!("STATS {stats:?}"));
}

#[test]
fn anonymous_memory_stays_within_budget_plus_allowance() {
    if let Some((role, _)) = child_role() {
        assert_eq!(role, "pusher");
        push_sixteen_budgets_through_a_chest();
        return;
    }
    if rss_anon_bytes().is_none() {
        println!("skipped: {STATUS} has no RssAnon line here (not Linux?), nothing to measure");
        return;
    }
    // The child makes its own temporary chest; the path is unused.
    let dir = tempfile::tempdir().unwrap();
    let run = run_child(
        "anonymous_memory_stays_within_budget_plus_allowance",
        "pusher",
        dir.path(),
    );
    run.assert_success();
    let number = |word: &str| -> u64 {
        let found = run.lines_after(word);
        assert_eq!(found.len(), 1, "{word}:\n{}", run.transcript);
        found[0].parse().unwrap()
    };
    let baseline = number("BASELINE");
    let after_inserts = number("AFTER_INSERTS");
    let after_reads = number("AFTER_READS");
    let peak = number("PEAK");
    let limit = baseline + BUDGET_BYTES + ALLOWANCE_BYTES;
    println!(
        "RssAnon: baseline {:.1} MiB, after inserts {:.1} MiB, after reads {:.1} MiB, \
         peak {:.1} MiB; budget {:.0} MiB, limit {:.1} MiB (baseline + budget + {:.0} MiB); {}",
        mib(baseline),
        mib(after_inserts),
        mib(after_reads),
        mib(peak),
        mib(BUDGET_BYTES),
        mib(limit),
        mib(ALLOWANCE_BYTES),
        run.lines_after("STATS").join(""),
    );
    assert!(
        peak < limit,
        "peak RssAnon {:.1} MiB is over baseline {:.1} + budget {:.0} + allowance {:.0} MiB",
        mib(peak),
        mib(baseline),
        mib(BUDGET_BYTES),
        mib(ALLOWANCE_BYTES)
    );
}
