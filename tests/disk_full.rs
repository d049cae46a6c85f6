//! A real full disk: a small tmpfs mounted for the test (needs root; skipped with a message
//! otherwise). Filling it must give an error that says the disk is full, lose nothing stored
//! before, and leave a chest that works again once space is freed.

use std::path::{Path, PathBuf};
use std::process::Command;

use spillchest::{Chest, Error};

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
struct SmallDisk {
    mount: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mount = dir.path().join("disk");
        std::fs::create_dir(&mount).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&mount)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed (not root, or no permission): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(SmallDisk { mount, _dir: dir })
    }

    fn path(&self) -> &Path {
        &self.mount
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount).status();
    }
}

#[test]
fn a_full_disk_is_reported_loses_nothing_and_recovers_when_space_is_freed() {
    run(true);
}

#[test]
fn with_background_spilling_a_full_disk_is_reported_by_the_next_operation() {
    run(false);
}

/// Fills a small disk through a chest that spills synchronously or in the background.
fn run(synchronous: bool) {
    let disk = match SmallDisk::mount("1m") {
        Ok(disk) => disk,
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    // Another program's file takes part of the disk; deleting it later frees the space.
    let ballast = disk.path().join("ballast");
    std::fs::write(&ballast, vec![0u8; 384 << 10]).unwrap();
    let path = disk.path().join("full.chest");
    let chest: Chest<u32, Vec<u8>> = Chest::builder()
        .path(&path)
        .budget(64 << 10)
        .in_flight_bytes(64 << 10)
        .synchronous_spill(synchronous)
        .open()
        .unwrap();
    // Values that failed to spill in the background stay in memory, beside the budget.
    let allowed = if synchronous {
        64 << 10
    } else {
        2 * (64 << 10)
    };
    let value = |k: u32| -> Vec<u8> { (0..32_000u32).map(|i| (i ^ k) as u8).collect() };
    let mut stored = Vec::new();
    let mut failure = None;
    for k in 0..200 {
        match chest.insert(k, value(k)) {
            Ok(()) => stored.push(k),
            Err(e) => {
                failure = Some((k, e));
                break;
            }
        }
    }
    let (failed_key, err) = failure.expect("a 1 MiB disk must fill up");
    assert!(matches!(err, Error::DiskFull { .. }), "{err}");
    assert!(err.to_string().contains("disk full"), "{err}");
    assert!(
        !chest.contains_key(&failed_key),
        "a refused insert changes nothing"
    );
    let s = chest.stats();
    assert!(s.memory_bytes + s.in_flight_bytes <= allowed, "{s:?}");
    for k in &stored {
        assert_eq!(*chest.get(k).unwrap().unwrap(), value(*k), "key {k}");
    }
    // A flush on a full disk fails the same way, and still loses nothing.
    if let Err(e) = chest.insert(failed_key + 1, vec![1; 10]) {
        // In the background, values whose spill failed are back in memory, over the budget:
        // every insert needs a spill, and fails while the disk is full.
        assert!(!synchronous && e.is_disk_full(), "{e}");
    }
    if let Err(e) = chest.flush() {
        assert!(e.is_disk_full(), "{e}");
    }
    // Free space, then the chest works again, including the insert that failed.
    std::fs::remove_file(&ballast).unwrap();
    if !synchronous {
        // A background write that failed before the space was freed is reported once.
        if let Err(e) = chest.flush() {
            assert!(e.is_disk_full(), "{e}");
        }
    }
    chest.insert(failed_key, value(failed_key)).unwrap();
    for k in stored.iter().take(10) {
        assert!(chest.remove(k).unwrap());
    }
    assert_eq!(*chest.get(&failed_key).unwrap().unwrap(), value(failed_key));
    chest.close().unwrap();
    let chest: Chest<u32, Vec<u8>> = Chest::open(&path).unwrap();
    for k in stored.iter().skip(10).chain([&failed_key]) {
        assert_eq!(
            *chest.get(k).unwrap().unwrap(),
            value(*k),
            "key {k} after reopen"
        );
    }
}
