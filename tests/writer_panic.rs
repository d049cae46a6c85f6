//! A panic while spilling (here a key's `Serialize` that panics when the key is encoded for
//! its write) becomes an error for every later change and flush instead of a hang, and reads
//! go on.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};
use spillchest::{Chest, Error};

/// Encodings of key 13 so far.
static THIRTEENS: AtomicUsize = AtomicUsize::new(0);

/// A key whose second encoding panics for 13: the first is `insert` counting its bytes, the
/// second the encoding for its write, by the writer thread or by an inserting thread held back
/// by the in-flight allowance, which writes batches itself. Later ones (reads) succeed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
struct Touchy(u64);

impl Serialize for Touchy {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0 == 13 && THIRTEENS.fetch_add(1, Ordering::SeqCst) == 1 {
            panic!("key 13 refuses to be written");
        }
        self.0.serialize(serializer)
    }
}

#[test]
fn a_panic_in_the_writer_becomes_an_error_for_later_changes_and_reads_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("touchy.chest");
    let chest: Chest<Touchy, Vec<u8>> =
        Chest::builder().path(&path).budget(4 << 10).open().unwrap();
    let (done, outcome) = mpsc::channel();
    // The chest works on its own thread, so that a hang fails the test instead of stalling it.
    std::thread::spawn(move || {
        let mut failed_at = None;
        for i in 0..2_000u64 {
            if let Err(e) = chest.insert(Touchy(i), vec![i as u8; 500]) {
                failed_at = Some((i, e));
                break;
            }
        }
        let flushed = chest.flush();
        let read_back: Vec<bool> = (0..20u64)
            .map(|i| chest.get(&Touchy(i)).unwrap().as_deref() == Some(&vec![i as u8; 500]))
            .collect();
        let again = chest.insert(Touchy(5_000), vec![1]);
        let closed = chest.close();
        done.send((failed_at, flushed, read_back, again, closed))
            .unwrap();
    });
    let (failed_at, flushed, read_back, again, closed) = outcome
        .recv_timeout(Duration::from_secs(120))
        .expect("the chest hung after its writer panicked");
    let (at, e) = failed_at.expect("an insert after the panic failed");
    assert!(at > 13, "key 13 was written after it was evicted ({at})");
    assert!(matches!(e, Error::WriterPanicked { .. }), "{e}");
    assert!(
        e.to_string().contains("key 13 refuses to be written"),
        "{e}"
    );
    assert!(
        matches!(flushed, Err(Error::WriterPanicked { .. })),
        "{flushed:?}"
    );
    assert!(
        matches!(again, Err(Error::WriterPanicked { .. })),
        "{again:?}"
    );
    assert!(
        matches!(closed, Err(Error::WriterPanicked { .. })),
        "{closed:?}"
    );
    assert!(
        read_back.iter().all(|ok| *ok),
        "every value read back: {read_back:?}"
    );

    // What was written before the panic is there after a reopen, and nothing is wrong.
    let chest: Chest<Touchy, Vec<u8>> = Chest::open(&path).unwrap();
    let mut found = 0;
    for key in chest.keys() {
        let want = vec![key.0 as u8; 500];
        assert_eq!(chest.get(&key).unwrap().as_deref(), Some(&want), "{key:?}");
        found += 1;
    }
    assert!(found > 0, "values spilled before the panic survived");
    assert!(chest.verify().unwrap().is_healthy());
}
