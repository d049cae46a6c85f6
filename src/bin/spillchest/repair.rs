//! `spillchest repair DIR`.

use std::io::Write;
use std::path::Path;

use crate::failure::{DAMAGED, Failure, OK};
use crate::ls::relative;

/// Rebuilds the index of the chest at `dir` from its files; status 1 when something could not
/// be recovered.
pub fn run(dir: &Path, out: &mut dyn Write) -> Result<u8, Failure> {
    let r = spillchest::repair(dir)?;
    writeln!(
        out,
        "recovered {} entries; index rebuilt from the files",
        r.recovered
    )?;
    if r.unrecoverable.is_empty() {
        writeln!(out, "nothing lost")?;
        return Ok(OK);
    }
    let lost = match r.unrecoverable.len() {
        1 => "1 damaged file or run of records".to_string(),
        n => format!("{n} damaged files or runs of records"),
    };
    writeln!(out, "could not recover what {lost} held:")?;
    for d in &r.unrecoverable {
        writeln!(out, "  {}: {}", relative(dir, &d.path), d.reason)?;
    }
    writeln!(
        out,
        "damaged value files were removed; values in the damaged runs of segments are lost"
    )?;
    Ok(DAMAGED)
}
