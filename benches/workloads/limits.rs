//! The machine's limits, measured by the benchmark itself: a sequential write with fsync, the
//! same bytes read back (cold with O_DIRECT, then warm from the page cache), and a memory copy.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::time::Instant;

use crate::common::{Report, RunConfig, SplitMix, secs};

/// Linux's `O_DIRECT` on x86_64 and aarch64 (the crate allows no `libc` calls, only the flag).
#[cfg(target_arch = "aarch64")]
const O_DIRECT: i32 = 0o200000;
#[cfg(not(target_arch = "aarch64"))]
const O_DIRECT: i32 = 0o40000;

const CHUNK: usize = 8 << 20;

/// Runs the three limits; `total` is 1 GiB at full scale.
pub fn run(cfg: &RunConfig, r: &Report) -> std::io::Result<()> {
    let total = (cfg.scaled(1 << 30, 16 << 20) / CHUNK).max(1) * CHUNK;
    let mut rng = SplitMix::new(7);
    let chunk = rng.bytes(CHUNK);
    let path = cfg.dir.join("limits.bin");

    let t = Instant::now();
    let mut f = File::create(&path)?;
    for _ in 0..total / CHUNK {
        f.write_all(&chunk)?;
    }
    f.sync_all()?;
    drop(f);
    r.phase(
        "seq_write_fsync",
        (total / CHUNK) as u64,
        total as u64,
        secs(t),
    );

    // Cold read: O_DIRECT bypasses the page cache, so this is the device. Needs an aligned
    // buffer: take the 4 KiB-aligned window of a slightly larger Vec.
    let mut raw = vec![0u8; CHUNK + 4096];
    let off = raw.as_ptr().align_offset(4096);
    let buf = &mut raw[off..off + CHUNK];
    match OpenOptions::new()
        .read(true)
        .custom_flags(O_DIRECT)
        .open(&path)
    {
        Ok(mut f) => {
            let t = Instant::now();
            let mut read = 0usize;
            loop {
                let n = f.read(buf)?;
                if n == 0 {
                    break;
                }
                read += n;
            }
            r.phase("seq_read_cold", (read / CHUNK) as u64, read as u64, secs(t));
        }
        Err(e) => r.note(&format!(
            "O_DIRECT read unavailable ({e}); no cold read figure"
        )),
    }

    // Warm read: read once to fill the page cache, then time a second pass.
    let mut buf = vec![0u8; CHUNK];
    for pass in 0..2 {
        let mut f = File::open(&path)?;
        let t = Instant::now();
        let mut read = 0usize;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            read += n;
        }
        if pass == 1 {
            r.phase("seq_read_warm", (read / CHUNK) as u64, read as u64, secs(t));
        }
    }
    std::fs::remove_file(&path)?;

    // Memory copy: 256 MiB source and destination (well beyond the caches), copied until
    // `total` bytes moved; the pages are touched first so page faults are not timed.
    let block = (256usize << 20).min(total);
    let src = vec![1u8; block];
    let mut dst = vec![0u8; block];
    dst.copy_from_slice(&src);
    let t = Instant::now();
    let mut copied = 0usize;
    while copied < total {
        dst.copy_from_slice(&src);
        copied += block;
    }
    let elapsed = secs(t);
    std::hint::black_box(&dst);
    r.phase("memcpy", (copied / block) as u64, copied as u64, elapsed);
    Ok(())
}
