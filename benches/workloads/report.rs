//! The parent's side: parse what each child printed and write the tables of BENCHMARKS.md.

use std::collections::BTreeMap;
use std::fmt::Write;

/// One timed phase of one child.
#[derive(Debug, Clone)]
pub struct Phase {
    /// Phase name (`insert`, `read_all`, ...).
    pub name: String,
    /// Operations done.
    pub ops: u64,
    /// Bytes moved.
    pub bytes: u64,
    /// Seconds taken.
    pub secs: f64,
}

impl Phase {
    /// Operations per second.
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.secs.max(1e-9)
    }
    /// Megabytes (10^6 bytes) per second.
    pub fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.secs.max(1e-9)
    }
}

/// Everything one child process reported.
#[derive(Debug, Clone, Default)]
pub struct ChildResult {
    /// W1..W5 or `limits`.
    pub workload: String,
    /// The system measured.
    pub system: String,
    /// Timed phases in order.
    pub phases: Vec<Phase>,
    /// Plain numbers.
    pub metrics: BTreeMap<String, f64>,
    /// Sentences.
    pub notes: Vec<String>,
    /// Set when the child failed; the text says how.
    pub error: Option<String>,
    /// Wall-clock seconds of the whole child.
    pub wall_secs: f64,
}

impl ChildResult {
    /// Parses the `@` lines of a child's stdout.
    pub fn parse(workload: &str, system: &str, stdout: &str) -> Self {
        let mut out = ChildResult {
            workload: workload.into(),
            system: system.into(),
            ..Default::default()
        };
        for line in stdout.lines() {
            let mut it = line.splitn(2, ' ');
            let (tag, rest) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
            let f: Vec<&str> = rest.split_whitespace().collect();
            match tag {
                "@phase" if f.len() == 4 => out.phases.push(Phase {
                    name: f[0].into(),
                    ops: f[1].parse().unwrap_or(0),
                    bytes: f[2].parse().unwrap_or(0),
                    secs: f[3].parse().unwrap_or(0.0),
                }),
                "@metric" if f.len() == 2 => {
                    out.metrics
                        .insert(f[0].into(), f[1].parse().unwrap_or(f64::NAN));
                }
                "@note" => out.notes.push(rest.into()),
                _ => {}
            }
        }
        out
    }

    /// The phase called `name`.
    pub fn phase(&self, name: &str) -> Option<&Phase> {
        self.phases.iter().find(|p| p.name == name)
    }

    /// The metric called `name`.
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics.get(name).copied()
    }
}

/// All results of a run, and the budgets the parent gave each workload.
#[derive(Debug, Default)]
pub struct RunResults {
    /// Every child, in run order.
    pub children: Vec<ChildResult>,
    /// Budget in bytes per workload.
    pub budgets: BTreeMap<String, u64>,
}

/// Bytes of memory allowed per key beside the budget: docs/design.md's per-key overhead of a
/// key on disk only (its entry in its shard's index of stored copies: 38 to 75 bytes for a
/// `u64` key, depending on how full the table is), with room for the keys held in memory.
pub const INDEX_BYTES_PER_KEY: u64 = 96;
const MIB: f64 = (1u64 << 20) as f64;

fn fmt_num(x: f64) -> String {
    if !x.is_finite() {
        "–".into()
    } else if x.fract() == 0.0 && x < 1e4 {
        format!("{x:.0}")
    } else if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if x >= 1e4 {
        format!("{:.0} k", x / 1e3)
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.3}")
    }
}

/// A share (0 to 1) as a percentage with one decimal.
fn percent(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// The median of `xs` (the mean of the middle two for an even count); NaN when empty.
fn median(xs: &[f64]) -> f64 {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// `lo–hi` of `xs`, formatted with `f`.
fn spread(xs: &[f64], f: impl Fn(f64) -> String) -> String {
    let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if lo.is_finite() && hi.is_finite() {
        format!("{}–{}", f(lo), f(hi))
    } else {
        "–".into()
    }
}

/// Microseconds, from nanoseconds.
fn fmt_us(ns: f64) -> String {
    if !ns.is_finite() {
        "–".into()
    } else if ns < 10_000.0 {
        format!("{:.2}", ns / 1e3)
    } else {
        format!("{:.0}", ns / 1e3)
    }
}

/// One insert run of T1, as the child reported it.
struct InsertRun<'a> {
    threads: usize,
    rep: usize,
    insert: &'a Phase,
    durable: Option<&'a Phase>,
    cores_insert: f64,
    cores_flush: f64,
    writer_busy: f64,
    callers_busy: f64,
    callers_cpu_wait: f64,
}

/// The latency scenarios of T1: metric prefix, what the getter ran beside, pacing.
const LATENCY_SCENARIOS: [(&str, &str, &str); 5] = [
    ("lat_alone_loop", "nothing (reference)", "back to back"),
    ("lat_spill_loop", "a thread spilling", "back to back"),
    ("lat_alone_paced", "nothing (reference)", "paced"),
    ("lat_spill_paced", "a thread spilling", "paced"),
    (
        "lat_spill_evicted",
        "a thread spilling; hot set evicted before",
        "back to back",
    ),
];

fn ratio(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() && b > 0.0 {
        format!("{:.2}x", a / b)
    } else {
        "–".into()
    }
}

impl RunResults {
    fn find(&self, workload: &str, system: &str) -> Option<&ChildResult> {
        self.children
            .iter()
            .find(|c| c.workload == workload && c.system == system && c.error.is_none())
    }

    fn limit(&self, name: &str) -> Option<&Phase> {
        self.find("limits", "machine")?.phase(name)
    }

    /// The limit a phase is compared with: writes with the fsynced sequential write, reads with
    /// the warm sequential read (the page cache).
    fn limit_for(&self, phase: &str) -> Option<(&'static str, &Phase)> {
        let name = match phase {
            "insert" | "insert_durable" => "seq_write_fsync",
            "read_all" | "hot_reread" | "random_get" | "zipf_get" => "seq_read_warm",
            _ => return None,
        };
        self.limit(name).map(|p| (name, p))
    }

    fn allowance(&self, c: &ChildResult) -> f64 {
        let budget = self.budgets.get(&c.workload).copied().unwrap_or(0) as f64;
        let entries = c
            .metric("entries")
            .or(c.metric("live_entries"))
            .unwrap_or(0.0);
        budget + entries * INDEX_BYTES_PER_KEY as f64 + 64.0 * MIB
    }

    /// The markdown report: limits, then one section per workload, then the targets.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "### Machine limits\n");
        let _ = writeln!(
            s,
            "| measure | bytes | seconds | MB/s |\n|---|---:|---:|---:|"
        );
        if let Some(c) = self.find("limits", "machine") {
            for p in &c.phases {
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.3} | {:.0} |",
                    p.name,
                    fmt_num(p.bytes as f64),
                    p.secs,
                    p.mb_per_sec()
                );
            }
            for n in &c.notes {
                let _ = writeln!(s, "\nNote: {n}");
            }
        }
        for wl in ["W1", "W2", "W3", "W4", "W5"] {
            self.workload_section(&mut s, wl);
        }
        self.threads_section(&mut s);
        self.targets(&mut s);
        let failed: Vec<&ChildResult> =
            self.children.iter().filter(|c| c.error.is_some()).collect();
        if !failed.is_empty() {
            let _ = writeln!(s, "\n### Failures\n");
            for c in failed {
                let _ = writeln!(
                    s,
                    "- {} / {}: {}",
                    c.workload,
                    c.system,
                    c.error.as_deref().unwrap_or("")
                );
            }
        }
        s
    }

    fn workload_section(&self, s: &mut String, wl: &str) {
        let children: Vec<&ChildResult> =
            self.children.iter().filter(|c| c.workload == wl).collect();
        if children.is_empty() {
            return;
        }
        let budget = self.budgets.get(wl).copied().unwrap_or(0);
        let _ = writeln!(s, "\n### {wl} (budget {:.1} MiB)\n", budget as f64 / MIB);
        let _ = writeln!(
            s,
            "| system | phase | ops | seconds | ops/s | MB/s | ÷ limit | spillchest ÷ this |"
        );
        let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|");
        let spill = self.find(wl, "spillchest");
        for c in &children {
            for p in &c.phases {
                let lim = match self.limit_for(&p.name) {
                    Some((name, l)) if p.bytes > 0 => {
                        format!("{} of {name}", ratio(p.mb_per_sec(), l.mb_per_sec()))
                    }
                    _ => "–".into(),
                };
                let vs = match spill.and_then(|sp| sp.phase(&p.name)) {
                    Some(sp) if c.system != "spillchest" && p.name != "flush" => {
                        // Above 1: spillchest is faster. One-shot phases (reopen) compare times.
                        if p.ops <= 1 {
                            ratio(p.secs, sp.secs)
                        } else {
                            ratio(sp.ops_per_sec(), p.ops_per_sec())
                        }
                    }
                    _ => "–".into(),
                };
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {:.4} | {} | {} | {lim} | {vs} |",
                    c.system,
                    p.name,
                    fmt_num(p.ops as f64),
                    p.secs,
                    fmt_num(p.ops_per_sec()),
                    if p.bytes > 0 {
                        format!("{:.0}", p.mb_per_sec())
                    } else {
                        "–".into()
                    },
                );
            }
        }
        let _ = writeln!(
            s,
            "\n| system | peak RssAnon MiB | allowance MiB | VmHWM MiB | disk MiB | files | entries found (of asked) | share of gets from memory | child wall s |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for c in &children {
            let found = ["read_all", "random_get", "zipf_get"]
                .iter()
                .find_map(|ph| {
                    let asked = c.phase(ph)?.ops;
                    Some(format!(
                        "{} of {asked}",
                        c.metric(&format!("{ph}_found"))? as u64
                    ))
                })
                .unwrap_or_else(|| "–".into());
            // Each read phase's share, named when there are several (W1: read all, hot re-read).
            let shares: Vec<(&str, f64)> = c
                .phases
                .iter()
                .filter_map(|p| {
                    Some((
                        p.name.as_str(),
                        c.metric(&format!("{}_memory_share", p.name))?,
                    ))
                })
                .collect();
            let share = match shares.as_slice() {
                [] => "–".to_string(),
                [(_, x)] => percent(*x),
                several => several
                    .iter()
                    .map(|(phase, x)| format!("{phase} {}", percent(*x)))
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            let peak = c.metric("peak_anon").unwrap_or(f64::NAN);
            // The allowance is spillchest's promise; the others only show it for scale.
            let allowance = if c.system.starts_with("spillchest") {
                self.allowance(c)
            } else {
                f64::INFINITY
            };
            let _ = writeln!(
                s,
                "| {} | {:.1}{} | {} | {:.1} | {:.1} | {} | {found} | {share} | {:.1} |",
                c.system,
                peak / MIB,
                if peak > allowance { " (over)" } else { "" },
                if allowance.is_finite() {
                    format!("{:.1}", allowance / MIB)
                } else {
                    "–".into()
                },
                c.metric("vm_hwm").unwrap_or(f64::NAN) / MIB,
                c.metric("disk_bytes").unwrap_or(f64::NAN) / MIB,
                c.metric("files").map(fmt_num).unwrap_or_else(|| "–".into()),
                c.wall_secs
            );
        }
        for c in &children {
            for n in &c.notes {
                let _ = writeln!(s, "\n- {} / {}: {n}", c.system, wl);
            }
            if let Some(e) = &c.error {
                let _ = writeln!(s, "\n- {} / {}: FAILED: {e}", c.system, wl);
            }
        }
    }

    /// T1's insert runs in run order.
    fn insert_runs<'a>(c: &'a ChildResult) -> Vec<InsertRun<'a>> {
        c.phases
            .iter()
            .filter_map(|p| {
                let rest = p.name.strip_prefix("insert_")?;
                let (threads, rep) = rest.split_once("t_")?;
                let tag = format!("{threads}t_{rep}");
                Some(InsertRun {
                    threads: threads.parse().ok()?,
                    rep: rep.parse().ok()?,
                    insert: p,
                    durable: c.phase(&format!("durable_{tag}")),
                    cores_insert: c.metric(&format!("cores_insert_{tag}")).unwrap_or(f64::NAN),
                    cores_flush: c.metric(&format!("cores_flush_{tag}")).unwrap_or(f64::NAN),
                    writer_busy: c
                        .metric(&format!("writer_insert_{tag}"))
                        .unwrap_or(f64::NAN),
                    callers_busy: c.metric(&format!("callers_busy_{tag}")).unwrap_or(f64::NAN),
                    callers_cpu_wait: c
                        .metric(&format!("callers_cpu_wait_{tag}"))
                        .unwrap_or(f64::NAN),
                })
            })
            .collect()
    }

    /// Median inserts/s of T1's runs with `threads` threads: (returned inserts, with the flush).
    fn insert_medians(runs: &[InsertRun], threads: usize) -> (f64, f64) {
        let of = |f: &dyn Fn(&InsertRun) -> Option<f64>| {
            let xs: Vec<f64> = runs
                .iter()
                .filter(|r| r.threads == threads)
                .filter_map(f)
                .collect();
            median(&xs)
        };
        (
            of(&|r| Some(r.insert.ops_per_sec())),
            of(&|r| r.durable.map(Phase::ops_per_sec)),
        )
    }

    /// The ratios of each repetition's 2-thread run over its 1-thread run: (returned, flushed).
    fn pair_ratios(runs: &[InsertRun]) -> (Vec<f64>, Vec<f64>) {
        let mut returned = Vec::new();
        let mut flushed = Vec::new();
        for one in runs.iter().filter(|r| r.threads == 1) {
            let Some(two) = runs.iter().find(|r| r.threads == 2 && r.rep == one.rep) else {
                continue;
            };
            returned.push(two.insert.ops_per_sec() / one.insert.ops_per_sec());
            if let (Some(a), Some(b)) = (two.durable, one.durable) {
                flushed.push(a.ops_per_sec() / b.ops_per_sec());
            }
        }
        (returned, flushed)
    }

    /// The reference stores beside the chest's insert runs (the synchronous system runs them):
    /// medians of each thread count and the ratio, pair by pair as for the chest.
    fn reference_table(s: &mut String, c: &ChildResult, runs: &[InsertRun]) {
        // (rep, threads, inserts/s) of the phases named `{prefix}_{threads}t_{rep}`.
        let rates = |prefix: &str| -> Vec<(usize, usize, f64)> {
            c.phases
                .iter()
                .filter_map(|p| {
                    let rest = p.name.strip_prefix(prefix)?.strip_prefix('_')?;
                    let (threads, rep) = rest.split_once("t_")?;
                    Some((rep.parse().ok()?, threads.parse().ok()?, p.ops_per_sec()))
                })
                .collect()
        };
        let chest: Vec<(usize, usize, f64)> = runs
            .iter()
            .map(|r| (r.rep, r.threads, r.insert.ops_per_sec()))
            .collect();
        let global = rates("ref_global");
        if global.is_empty() {
            return;
        }
        let _ = writeln!(
            s,
            "\nThe same inserts into the reference stores (`benches/workloads/reference.rs`), each run right after the chest's run with as many threads:\n\n| store | 1 thread (median) | 2 threads (median) | 2 ÷ 1 (pairs) |\n|---|---:|---:|---:|"
        );
        for (name, rows) in [
            (c.system.as_str(), chest),
            ("reference, global order", global),
            ("reference, own order", rates("ref_own")),
        ] {
            let of = |threads: usize| -> Vec<f64> {
                rows.iter()
                    .filter(|r| r.1 == threads)
                    .map(|r| r.2)
                    .collect()
            };
            let pairs: Vec<f64> = rows
                .iter()
                .filter(|r| r.1 == 1)
                .filter_map(|one| {
                    let two = rows.iter().find(|r| r.1 == 2 && r.0 == one.0)?;
                    Some(two.2 / one.2)
                })
                .collect();
            let (one, two) = (median(&of(1)), median(&of(2)));
            let _ = writeln!(
                s,
                "| {name} | {} | {} | {} ({}) |",
                fmt_num(one),
                fmt_num(two),
                ratio(two, one),
                spread(&pairs, |v| format!("{v:.2}x"))
            );
        }
    }

    /// T1: the insert runs, their medians, the get latencies and the concurrency targets.
    fn threads_section(&self, s: &mut String) {
        for c in self.children.iter().filter(|c| c.workload == "T1") {
            if c.error.is_none() {
                self.threads_system(s, c);
            }
        }
    }

    /// T1 for one system (one eviction policy).
    fn threads_system(&self, s: &mut String, c: &ChildResult) {
        let budget = self.budgets.get("T1").copied().unwrap_or(0);
        let policy = match crate::spill_policy(&c.system) {
            Some(p) if c.system == "spillchest" => format!("Policy::{p:?}, the default"),
            Some(p) if c.system == "spillchest-sync" => {
                format!("Policy::{p:?}, synchronous spilling: inserts only")
            }
            Some(p) => format!("Policy::{p:?}"),
            None => "policy unknown".to_string(),
        };
        let _ = writeln!(
            s,
            "\n### T1 threads: {} ({policy}; W1's {} values of {} B, budget {:.1} MiB)\n",
            c.system,
            c.metric("values").map(fmt_num).unwrap_or_default(),
            c.metric("value_bytes").map(fmt_num).unwrap_or_default(),
            budget as f64 / MIB
        );
        let runs = Self::insert_runs(c);
        let _ = writeln!(
            s,
            "| run | threads | insert s | inserts/s | MB/s | cores busy | writer thread busy | each inserting thread busy | waiting for a CPU | insert + flush s | inserts/s (+flush) | cores busy in flush |"
        );
        let _ = writeln!(
            s,
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for (i, r) in runs.iter().enumerate() {
            let (dsecs, drate) = r
                .durable
                .map(|d| (format!("{:.3}", d.secs), fmt_num(d.ops_per_sec())))
                .unwrap_or_else(|| ("–".into(), "–".into()));
            let _ = writeln!(
                s,
                "| {} | {} | {:.3} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {dsecs} | {drate} | {:.2} |",
                i + 1,
                r.threads,
                r.insert.secs,
                fmt_num(r.insert.ops_per_sec()),
                r.insert.mb_per_sec(),
                r.cores_insert,
                r.writer_busy,
                r.callers_busy,
                r.callers_cpu_wait,
                r.cores_flush,
            );
        }
        let _ = writeln!(
            s,
            "\n| threads | median inserts/s (min–max) | median inserts/s with the flush (min–max) |"
        );
        let _ = writeln!(s, "|---:|---:|---:|");
        for threads in [1, 2] {
            let mine: Vec<&InsertRun> = runs.iter().filter(|r| r.threads == threads).collect();
            let returned: Vec<f64> = mine.iter().map(|r| r.insert.ops_per_sec()).collect();
            let flushed: Vec<f64> = mine
                .iter()
                .filter_map(|r| r.durable.map(Phase::ops_per_sec))
                .collect();
            let (a, b) = Self::insert_medians(&runs, threads);
            let _ = writeln!(
                s,
                "| {threads} | {} ({}) | {} ({}) |",
                fmt_num(a),
                spread(&returned, fmt_num),
                fmt_num(b),
                spread(&flushed, fmt_num)
            );
        }
        let (one, one_d) = Self::insert_medians(&runs, 1);
        let (two, two_d) = Self::insert_medians(&runs, 2);
        let (pairs, pairs_d) = Self::pair_ratios(&runs);
        let x = |v: f64| format!("{v:.2}x");
        let _ = writeln!(
            s,
            "| 2 ÷ 1 | {} (pairs {}) | {} (pairs {}) |",
            ratio(two, one),
            spread(&pairs, x),
            ratio(two_d, one_d),
            spread(&pairs_d, x)
        );
        Self::reference_table(s, c, &runs);
        // The synchronous-spilling system runs the insert runs only.
        let has_latency = c.metric("lat_spill_loop_gets").is_some();
        if has_latency {
            let _ = writeln!(
                s,
                "\n| getter beside | gets | timing | p50 µs | p99 µs | p99.9 µs | max µs | longest gap between gets, ms | from memory (with ramp-up) | disk loads | spilling thread's inserts/s |"
            );
            let _ = writeln!(s, "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
            for (name, beside, timing) in LATENCY_SCENARIOS {
                let m = |k: &str| c.metric(&format!("{name}_{k}")).unwrap_or(f64::NAN);
                let rate = m("spiller_inserts") / m("secs");
                let _ = writeln!(
                    s,
                    "| {beside} | {} | {timing} | {} | {} | {} | {} | {:.1} | {:.2}% | {} | {} |",
                    fmt_num(m("gets")),
                    fmt_us(m("p50_ns")),
                    fmt_us(m("p99_ns")),
                    fmt_us(m("p999_ns")),
                    fmt_us(m("max_ns")),
                    m("max_gap_ns") / 1e6,
                    m("memory_share") * 100.0,
                    fmt_num(m("loads")),
                    if rate > 0.0 {
                        fmt_num(rate)
                    } else {
                        "–".into()
                    },
                );
                if m("wrong") > 0.0 {
                    let _ = writeln!(
                        s,
                        "\n**{name}: {} gets returned a wrong or no value**\n",
                        m("wrong")
                    );
                }
            }
        }
        let _ = writeln!(
            s,
            "\n| target of the concurrency issue | measured | met |\n|---|---|---|"
        );
        let met = |ok: bool| if ok { "yes" } else { "**no**" };
        let r2 = two / one;
        let _ = writeln!(
            s,
            "| (a) W1 inserts, 2 threads ≥ 1.6x 1 thread (medians, returned inserts) | {} ({} vs {}/s) | {} |",
            ratio(two, one),
            fmt_num(two),
            fmt_num(one),
            if r2.is_finite() {
                met(r2 >= 1.6)
            } else {
                "–"
            }
        );
        let _ = writeln!(
            s,
            "|   (same, counting the final flush: report only) | {} ({} vs {}/s) | – |",
            ratio(two_d, one_d),
            fmt_num(two_d),
            fmt_num(one_d)
        );
        if has_latency {
            for (name, timing) in [
                ("lat_spill_loop", "back to back"),
                ("lat_spill_paced", "paced"),
            ] {
                let p99 = c.metric(&format!("{name}_p99_ns")).unwrap_or(f64::NAN);
                let share = c
                    .metric(&format!("{name}_memory_share"))
                    .unwrap_or(f64::NAN);
                let _ = writeln!(
                    s,
                    "| (b) get of in-memory values while a thread spills, p99 < 1 ms ({timing}) | {} µs ({:.2}% of the hot set's gets from memory{}) | {} |",
                    fmt_us(p99),
                    share * 100.0,
                    if share < 0.999 {
                        "; not all were memory hits"
                    } else {
                        ""
                    },
                    if p99.is_finite() {
                        met(p99 < 1e6)
                    } else {
                        "–"
                    }
                );
            }
        }
        for n in &c.notes {
            let _ = writeln!(s, "\n- {} / T1: {n}", c.system);
        }
    }

    fn targets(&self, s: &mut String) {
        let _ = writeln!(s, "\n### Targets of issue 6\n");
        let _ = writeln!(s, "| target | measured | met |\n|---|---|---|");
        let mut row = |name: &str, measured: String, met: Option<bool>| {
            let m = match met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "–",
            };
            let _ = writeln!(s, "| {name} | {measured} | {m} |");
        };
        let sp = |wl: &str, ph: &str| self.find(wl, "spillchest").and_then(|c| c.phase(ph));
        let peer = |wl: &str, sys: &str, ph: &str| self.find(wl, sys).and_then(|c| c.phase(ph));
        let ratio_row = |a: Option<&Phase>, b: Option<&Phase>, min: f64, mb: bool| match (a, b) {
            (Some(a), Some(b)) => {
                let (x, y) = if mb {
                    (a.mb_per_sec(), b.mb_per_sec())
                } else {
                    (a.ops_per_sec(), b.ops_per_sec())
                };
                (
                    format!("{:.2}x ({} vs {})", x / y, fmt_num(x), fmt_num(y)),
                    Some(x / y >= min),
                )
            }
            _ => ("–".into(), None),
        };
        let (m, ok) = ratio_row(
            sp("W1", "insert_durable"),
            self.limit("seq_write_fsync"),
            0.5,
            true,
        );
        row(
            "W1 insert (+flush) ≥ 0.5x sequential write with fsync (MB/s)",
            m,
            ok,
        );
        let (m, ok) = ratio_row(sp("W1", "insert"), self.limit("seq_write_fsync"), 0.5, true);
        row("  (same, insert without the final flush)", m, ok);
        let (m, ok) = ratio_row(
            sp("W1", "insert_durable"),
            peer("W1", "foyer", "insert_durable"),
            2.0,
            false,
        );
        row(
            "W1 insert (+flush) ≥ 2x foyer durable (insert + wait)",
            m,
            ok,
        );
        for sys in ["foyer", "foyer-queue"] {
            let kept = self.find("W1", sys).and_then(|c| {
                let p = c.phase("insert_durable")?;
                let found = c.metric("read_all_found")?;
                Some((found, p.ops, found / p.secs.max(1e-9)))
            });
            let (m, ok) = match (kept, sp("W1", "insert_durable")) {
                (Some((found, ops, rate)), Some(s)) => (
                    format!(
                        "{:.2}x ({} vs {}: {sys} returned {found} of {ops} at the end)",
                        s.ops_per_sec() / rate,
                        fmt_num(s.ops_per_sec()),
                        fmt_num(rate)
                    ),
                    Some(s.ops_per_sec() / rate >= 2.0),
                ),
                _ => ("–".into(), None),
            };
            row(
                &format!("  (same, counting only the entries {sys} could return)"),
                m,
                ok,
            );
        }
        let (m, ok) = ratio_row(
            sp("W1", "read_all"),
            peer("W1", "files", "read_all"),
            3.0,
            false,
        );
        row("W1 read all ≥ 3x one-file-per-key", m, ok);
        let ins = sp("W2", "insert");
        row(
            "W2 ≥ 1,000,000 inserts/s",
            ins.map(|p| fmt_num(p.ops_per_sec())).unwrap_or_default(),
            ins.map(|p| p.ops_per_sec() >= 1e6),
        );
        let g = sp("W2", "random_get");
        row(
            "W2 ≥ 300,000 random gets/s (warm page cache)",
            g.map(|p| fmt_num(p.ops_per_sec())).unwrap_or_default(),
            g.map(|p| p.ops_per_sec() >= 3e5),
        );
        let w2 = self.find("W2", "spillchest");
        let files = w2.and_then(|c| c.metric("files"));
        row(
            "W2 ≤ 64 files",
            files.map(fmt_num).unwrap_or_default(),
            files.map(|f| f <= 64.0),
        );
        let re = sp("W2", "reopen_get");
        row(
            "W2 reopen ≤ 0.5 s",
            re.map(|p| format!("{:.3} s", p.secs)).unwrap_or_default(),
            re.map(|p| p.secs <= 0.5),
        );
        let amp = w2.and_then(|c| Some(c.metric("disk_bytes")? / c.metric("live_encoded_bytes")?));
        row(
            "W2 disk bytes ≤ 1.5x live encoded bytes",
            amp.map(|a| format!("{a:.2}x")).unwrap_or_default(),
            amp.map(|a| a <= 1.5),
        );
        let (m, ok) = ratio_row(
            sp("W2", "insert_durable"),
            peer("W2", "redb", "insert_durable"),
            2.0,
            false,
        );
        row("W2 inserts (+flush) ≥ 2x redb (durable commits)", m, ok);
        let w4 = sp("W4", "open_get");
        let w4_keys = self
            .find("W4", "spillchest")
            .and_then(|c| c.metric("entries"));
        row(
            "W4 reopen of the W2 chest + one get ≤ 0.5 s",
            w4.map(|p| {
                format!(
                    "{:.3} s ({} keys)",
                    p.secs,
                    w4_keys.map(fmt_num).unwrap_or_default()
                )
            })
            .unwrap_or_default(),
            w4.map(|p| p.secs <= 0.5),
        );
        for wl in ["W1", "W2", "W3", "W4", "W5"] {
            let c = self.find(wl, "spillchest");
            let v = c.and_then(|c| Some((c.metric("peak_anon")?, self.allowance(c))));
            row(
                &format!("{wl} peak anonymous memory ≤ budget + index + 64 MiB"),
                v.map(|(p, a)| format!("{:.1} MiB of {:.1} MiB", p / MIB, a / MIB))
                    .unwrap_or_default(),
                v.map(|(p, a)| p <= a),
            );
        }
        let share = |sys: &str| {
            self.find("W5", sys)
                .and_then(|c| c.metric("zipf_get_memory_share"))
        };
        let (ours, moka) = (share("spillchest"), share("moka"));
        row(
            "W5 share of gets from memory ≥ moka's (same budget; default policy)",
            format!(
                "{} vs {}",
                ours.map(percent).unwrap_or_default(),
                moka.map(percent).unwrap_or_default()
            ),
            ours.zip(moka).map(|(ours, moka)| ours >= moka),
        );
        for c in &self.children {
            if c.workload == "W5" && c.system.starts_with("spillchest-") {
                row(
                    &format!("  (same, {})", c.system),
                    share(&c.system).map(percent).unwrap_or_default(),
                    None,
                );
            }
        }
    }
}
