//! `spillchest verify DIR [--json]`, with a progress bar on stderr when the check runs long
//! and stderr is a terminal.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use spillchest::{ChestInfo, VerifyReport};

use crate::failure::{DAMAGED, Failure, OK};
use crate::human;
use crate::ls::relative;

/// How long a check runs before the progress bar appears.
const QUIET_START: Duration = Duration::from_millis(500);

/// Checks every value and record of the chest at `dir`; status 1 when anything is damaged.
pub fn run(dir: &Path, json: bool, out: &mut dyn Write) -> Result<u8, Failure> {
    let info = ChestInfo::open(dir)?;
    let bar =
        ProgressBar::with_draw_target(Some(info.verify_steps()), ProgressDrawTarget::hidden());
    let style = ProgressStyle::with_template("verifying {bar:40} {pos}/{len} ({eta} left)")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    let interactive = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut shown = false;
    let report = info.verify(|done| {
        if interactive && !shown && started.elapsed() >= QUIET_START {
            bar.set_draw_target(ProgressDrawTarget::stderr());
            shown = true;
        }
        bar.set_position(done);
    });
    bar.finish_and_clear();
    info.close()?;
    if json {
        write_json(dir, &report, out)?;
    } else {
        write_text(dir, &report, out)?;
    }
    Ok(if report.is_healthy() { OK } else { DAMAGED })
}

fn write_text(dir: &Path, r: &VerifyReport, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "checked {} ({} in value files), {}, {} bytes",
        human::count(r.entries_checked, "entry"),
        r.files_checked,
        human::count(r.segments_checked, "segment"),
        r.bytes_checked
    )?;
    if r.discarded_on_open > 0 {
        writeln!(
            out,
            "{} values were left out on open (damaged, stale or missing)",
            r.discarded_on_open
        )?;
    }
    if r.is_healthy() {
        return writeln!(out, "healthy: nothing damaged");
    }
    writeln!(
        out,
        "DAMAGED: {}",
        human::count(r.damaged.len() as u64, "problem")
    )?;
    for d in &r.damaged {
        let key = d.key.map_or(String::new(), |k| format!(" key {k}"));
        // The reason may repeat the path the line starts with.
        let repeated = format!("corrupt data in {}: ", d.path.display());
        let reason = d.reason.strip_prefix(&repeated).unwrap_or(&d.reason);
        writeln!(out, "  {}{key}: {reason}", relative(dir, &d.path))?;
    }
    writeln!(
        out,
        "`spillchest repair {}` rebuilds the index from the files, dropping what is damaged",
        dir.display()
    )
}

fn write_json(dir: &Path, r: &VerifyReport, out: &mut dyn Write) -> std::io::Result<()> {
    let damaged: Vec<serde_json::Value> = r
        .damaged
        .iter()
        .map(|d| {
            json!({
                "path": relative(dir, &d.path),
                "key_digest": d.key.map(|k| k.to_string()),
                "reason": d.reason,
            })
        })
        .collect();
    let doc = json!({
        "path": dir.display().to_string(),
        "healthy": r.is_healthy(),
        "entries_checked": r.entries_checked,
        "files_checked": r.files_checked,
        "segments_checked": r.segments_checked,
        "bytes_checked": r.bytes_checked,
        "discarded_on_open": r.discarded_on_open,
        "damaged": damaged,
    });
    serde_json::to_writer_pretty(&mut *out, &doc).map_err(std::io::Error::from)?;
    writeln!(out)
}
