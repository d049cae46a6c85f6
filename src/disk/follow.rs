//! Following a writer from a read-only tier: the `.keys` file that was replayed stays open, and
//! a refresh reads only the bytes the writer appended since, applying each whole,
//! checksum-valid record and stopping at a record that is not whole yet (to read it again next
//! time).
//!
//! A reload of everything (replay, scan, reconcile) is asked for when the index the path names
//! is no longer the open file (the writer rewrote it: a rename gives it another inode), when
//! the file became shorter than what was read, when the last record applied is no longer where
//! it was (the writer cut back a failed append and wrote over it), or when a whole record fails
//! its checksum where no earlier load stopped (damage a reload reports, or bytes written over).
//! Why this never shows a reader a torn state is in `docs/design.md` ("Readers beside a
//! writer").

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::disk::index_log::{FRAME_LEN, Framed, Record, read_framed};
use crate::disk::{DiskLoc, io};
use crate::error::{Error, Result};

/// What the writer changed since the last refresh, netted per key: a key put and then removed
/// is only in `removes`, a key removed and put again only in `puts` (with its last place).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Changes {
    /// Encoded keys whose value is now stored at the place given.
    pub(crate) puts: Vec<(Vec<u8>, DiskLoc)>,
    /// Encoded keys that no longer have a stored value.
    pub(crate) removes: Vec<Vec<u8>>,
    /// The time of the last Commit record read, if one was.
    pub(crate) last_commit_ms: Option<u64>,
}

#[cfg(test)]
impl Changes {
    /// True when nothing changed.
    pub(crate) fn is_empty(&self) -> bool {
        self.puts.is_empty() && self.removes.is_empty()
    }
}

/// What the follower found.
#[derive(Debug)]
pub(crate) enum Step {
    /// Records appended since the last step (maybe none).
    Changes(Changes),
    /// The index is not the file that was read any more: replay everything.
    Reload,
}

/// Whether the index grew since the last step (checked before reading it, so that the caller
/// can look at other files first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pending {
    /// Nothing to read.
    Nothing,
    /// New bytes to read.
    Grew,
    /// The file was replaced, removed or cut short: reload.
    Reload,
}

/// The `.keys` file a read-only tier replayed, and how far it was read.
#[derive(Debug)]
pub(crate) struct Follower {
    path: PathBuf,
    file: File,
    /// Device and inode of `file`: the path names another file once the writer renames a new
    /// index over it.
    identity: (u64, u64),
    /// Bytes read when the file was opened (to tell whether it changed during an open).
    read_len: u64,
    /// False when the file's header is not one this build follows (a foreign file): nothing is
    /// read from it until it is replaced.
    readable: bool,
    /// End of the last whole, valid record: the next step reads from here.
    offset: u64,
    /// Start and frame of the last record applied, checked before reading on.
    last: Option<(u64, [u8; FRAME_LEN])>,
    /// Where the last full load stopped at a record that is not valid: a step that stops there
    /// again waits instead of reloading (the same damage would stop a reload at the same byte).
    stuck_at: Option<u64>,
}

impl Follower {
    /// Opens the index at `path` and reads all of it. `Ok(None)` when there is no index.
    pub(crate) fn open(path: &Path) -> Result<Option<(Follower, Vec<u8>)>> {
        let mut file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path, "open index", e)),
        };
        let meta = file
            .metadata()
            .map_err(|e| Error::io(path, "stat index", e))?;
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        file.read_to_end(&mut bytes)
            .map_err(|e| Error::io(path, "read index", e))?;
        let follower = Follower {
            path: path.to_path_buf(),
            file,
            identity: io::identity(&meta),
            read_len: bytes.len() as u64,
            readable: false,
            offset: 0,
            last: None,
            stuck_at: None,
        };
        Ok(Some((follower, bytes)))
    }

    /// Records how the replay of the bytes [`open`](Self::open) returned went: `readable` when
    /// the header was one this build reads; the replay's valid length, where its last record
    /// starts, and whether it stopped early.
    pub(crate) fn replayed(
        &mut self,
        bytes: &[u8],
        readable: bool,
        valid_len: u64,
        last_record_at: Option<u64>,
        stopped_early: bool,
    ) {
        self.readable = readable;
        self.offset = valid_len;
        self.last = last_record_at.and_then(|at| {
            let frame = bytes.get(at as usize..at as usize + FRAME_LEN)?;
            Some((at, frame.try_into().ok()?))
        });
        self.stuck_at = stopped_early.then_some(valid_len);
    }

    /// True when the path no longer names the file that was read, as it was read: the writer
    /// appended to it or replaced it since (a read-only open that found something amiss tries
    /// again then).
    pub(crate) fn changed_since_open(&self) -> Result<bool> {
        match std::fs::metadata(&self.path) {
            Ok(meta) => Ok(io::identity(&meta) != self.identity || meta.len() != self.read_len),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
            Err(e) => Err(Error::io(&self.path, "stat index", e)),
        }
    }

    /// Whether there is something to read, from one `stat` of the path.
    pub(crate) fn pending(&self) -> Result<Pending> {
        let meta = match std::fs::metadata(&self.path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Pending::Reload),
            Err(e) => return Err(Error::io(&self.path, "stat index", e)),
        };
        if io::identity(&meta) != self.identity || meta.len() < self.offset {
            return Ok(Pending::Reload);
        }
        if !self.readable || meta.len() == self.offset {
            return Ok(Pending::Nothing);
        }
        Ok(Pending::Grew)
    }

    /// Reads what was appended since the last step and nets it per key.
    pub(crate) fn step(&mut self) -> Result<Step> {
        let from = self.last.map_or(self.offset, |(at, _)| at);
        let mut bytes = Vec::new();
        let mut file = &self.file;
        file.seek(SeekFrom::Start(from))
            .and_then(|_| file.read_to_end(&mut bytes))
            .map_err(|e| Error::io(&self.path, "read index", e))?;
        let skip = (self.offset - from) as usize;
        match read_appended(&bytes, from, skip, self.last, self.stuck_at) {
            Appended::Reload => Ok(Step::Reload),
            Appended::Read {
                changes,
                offset,
                last,
            } => {
                self.offset = offset;
                self.last = last;
                Ok(Step::Changes(changes))
            }
        }
    }
}

/// What [`read_appended`] found.
#[derive(Debug)]
pub(crate) enum Appended {
    /// The bytes are not the ones read before, or a whole record is invalid: reload.
    Reload,
    /// The records read, netted per key; the offset after the last whole valid record, and
    /// that record's start and frame.
    Read {
        changes: Changes,
        offset: u64,
        last: Option<(u64, [u8; FRAME_LEN])>,
    },
}

/// Reads the records of an index appended past what a follower applied, from `bytes` (the
/// file from byte `from` on, which is where the last applied record starts, or the offset
/// when there is none; its records start at `skip`), and nets them per key. A pure function of
/// bytes read from disk, so the fuzz target `index_follow` can check it against a replay.
pub(crate) fn read_appended(
    bytes: &[u8],
    from: u64,
    skip: usize,
    last: Option<(u64, [u8; FRAME_LEN])>,
    stuck_at: Option<u64>,
) -> Appended {
    if bytes.len() < skip {
        return Appended::Reload;
    }
    if let Some((_, frame)) = &last
        && bytes.get(..FRAME_LEN) != Some(&frame[..])
    {
        return Appended::Reload;
    }
    let mut net: HashMap<&[u8], Option<DiskLoc>> = HashMap::new();
    let mut last_commit_ms = None;
    let mut at = skip;
    let mut last = last;
    loop {
        match read_framed(&bytes[at..]) {
            Framed::Record(record, len) => {
                match record {
                    Record::Put { key, loc } => {
                        net.insert(key, Some(loc));
                    }
                    Record::Puts(puts) => {
                        for (key, loc) in puts.iter() {
                            net.insert(key, Some(loc));
                        }
                    }
                    Record::Remove { key } => {
                        net.insert(key, None);
                    }
                    Record::Commit { unix_ms } => last_commit_ms = Some(unix_ms),
                }
                let mut frame = [0u8; FRAME_LEN];
                frame.copy_from_slice(&bytes[at..at + FRAME_LEN]);
                last = Some((from + at as u64, frame));
                at += len;
            }
            Framed::Incomplete(_) => break,
            Framed::Invalid(_) if stuck_at == Some(from + at as u64) => break,
            Framed::Invalid(_) => return Appended::Reload,
        }
    }
    let mut changes = Changes {
        last_commit_ms,
        ..Changes::default()
    };
    for (key, loc) in net {
        match loc {
            Some(loc) => changes.puts.push((key.to_vec(), loc)),
            None => changes.removes.push(key.to_vec()),
        }
    }
    Appended::Read {
        changes,
        offset: from + at as u64,
        last,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::Place;
    use crate::disk::index_log::{self, IndexLog};
    use crate::disk::segment::RecordPlace;
    use std::io::Write;

    fn loc(seq: u64) -> DiskLoc {
        DiskLoc {
            place: Place::Segment(RecordPlace {
                segment: 1,
                offset: 16 + seq * 100,
            }),
            seq,
            raw_len: 10,
            stored_len: 10,
        }
    }

    /// Opens a follower on `path` as a read-only tier does: read, replay, remember.
    fn follow(path: &Path) -> (Follower, index_log::Replay) {
        let (mut f, bytes) = Follower::open(path).unwrap().unwrap();
        assert_eq!(index_log::check_header(&bytes), Ok(index_log::VERSION));
        let r = index_log::replay(&bytes);
        f.replayed(
            &bytes,
            true,
            r.valid_len,
            r.last_record_at,
            r.torn_tail.is_some(),
        );
        (f, r)
    }

    fn changes(f: &mut Follower) -> Changes {
        match f.step().unwrap() {
            Step::Changes(mut c) => {
                c.puts.sort_by(|a, b| a.0.cmp(&b.0));
                c.removes.sort();
                c
            }
            Step::Reload => panic!("unexpected reload"),
        }
    }

    fn encoded(records: &[Record<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        for r in records {
            r.encode(&mut out);
        }
        out
    }

    fn append_raw(path: &Path, bytes: &[u8]) {
        let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
        file.write_all(bytes).unwrap();
    }

    #[test]
    fn appends_are_seen_incrementally_and_netted_per_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".keys");
        let mut log = IndexLog::rewrite(&path, [(&b"a"[..], loc(1))].into_iter(), false).unwrap();
        let (mut f, r) = follow(&path);
        assert_eq!(r.entries.len(), 1);
        assert_eq!(f.pending().unwrap(), Pending::Nothing);
        assert!(!f.changed_since_open().unwrap());

        log.append(&Record::Put {
            key: b"b",
            loc: loc(2),
        })
        .unwrap();
        assert!(f.changed_since_open().unwrap());
        assert_eq!(f.pending().unwrap(), Pending::Grew);
        let c = changes(&mut f);
        assert_eq!(c.puts, vec![(b"b".to_vec(), loc(2))]);
        assert!(c.removes.is_empty());
        assert_eq!(f.pending().unwrap(), Pending::Nothing);
        assert!(changes(&mut f).is_empty(), "nothing is applied twice");

        // Several records in one step: the last one of each key wins.
        for record in [
            Record::Remove { key: b"a" },
            Record::Put {
                key: b"a",
                loc: loc(3),
            },
            Record::Put {
                key: b"c",
                loc: loc(4),
            },
            Record::Remove { key: b"c" },
            Record::Put {
                key: b"b",
                loc: loc(5),
            },
            Record::Commit { unix_ms: 77 },
        ] {
            log.append(&record).unwrap();
        }
        let c = changes(&mut f);
        assert_eq!(
            c.puts,
            vec![(b"a".to_vec(), loc(3)), (b"b".to_vec(), loc(5))]
        );
        assert_eq!(c.removes, vec![b"c".to_vec()]);
        assert_eq!(c.last_commit_ms, Some(77));
    }

    #[test]
    fn a_torn_tail_is_not_applied_until_it_is_complete() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".keys");
        IndexLog::rewrite(&path, std::iter::empty(), false).unwrap();
        let (mut f, _) = follow(&path);
        let whole = encoded(&[
            Record::Put {
                key: b"k",
                loc: loc(1),
            },
            Record::Put {
                key: b"m",
                loc: loc(2),
            },
        ]);
        let first = encoded(&[Record::Put {
            key: b"k",
            loc: loc(1),
        }])
        .len();
        // Every way of cutting the two records: only whole ones are applied, and the rest is
        // read again once it is there.
        let mut written = 0;
        for cut in [3, first - 1, first + 5, whole.len() - 1, whole.len()] {
            append_raw(&path, &whole[written..cut]);
            written = cut;
            let c = changes(&mut f);
            let want: Vec<(Vec<u8>, DiskLoc)> = match cut {
                c if c == first + 5 => vec![(b"k".to_vec(), loc(1))],
                c if c == whole.len() => vec![(b"m".to_vec(), loc(2))],
                _ => vec![],
            };
            assert_eq!(c.puts, want, "cut at {cut}");
        }
    }

    #[test]
    fn a_rewritten_or_shortened_index_asks_for_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".keys");
        let mut log = IndexLog::rewrite(&path, [(&b"a"[..], loc(1))].into_iter(), false).unwrap();
        let (f, _) = follow(&path);
        // The writer's index rewrite: a new file renamed over the path.
        IndexLog::rewrite(&path, [(&b"a"[..], loc(1))].into_iter(), false).unwrap();
        assert_eq!(f.pending().unwrap(), Pending::Reload);

        let (mut f, _) = follow(&path);
        log = {
            drop(log);
            IndexLog::open_append(&path, std::fs::metadata(&path).unwrap().len(), 2).unwrap()
        };
        log.append(&Record::Put {
            key: b"b",
            loc: loc(2),
        })
        .unwrap();
        assert_eq!(changes(&mut f).puts.len(), 1);
        // Cut shorter than what was read (a writer reopening after a crash cuts a torn tail,
        // never what was whole; a shorter file means something else happened): reload.
        let header_and_first = std::fs::metadata(&path).unwrap().len() - 1;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(header_and_first)
            .unwrap();
        assert_eq!(f.pending().unwrap(), Pending::Reload);
    }

    #[test]
    fn a_last_record_written_over_asks_for_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".keys");
        IndexLog::rewrite(&path, std::iter::empty(), false).unwrap();
        let (mut f, _) = follow(&path);
        let len = std::fs::metadata(&path).unwrap().len();
        append_raw(
            &path,
            &encoded(&[Record::Put {
                key: b"k",
                loc: loc(1),
            }]),
        );
        assert_eq!(changes(&mut f).puts.len(), 1);
        // A failed append was cut back, and later records took its bytes.
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len).unwrap();
        append_raw(
            &path,
            &encoded(&[
                Record::Put {
                    key: b"other",
                    loc: loc(2),
                },
                Record::Commit { unix_ms: 1 },
            ]),
        );
        assert_eq!(f.pending().unwrap(), Pending::Grew);
        assert!(matches!(f.step().unwrap(), Step::Reload));
    }

    #[test]
    fn a_damaged_record_reloads_once_then_waits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".keys");
        IndexLog::rewrite(&path, std::iter::empty(), false).unwrap();
        let (mut f, _) = follow(&path);
        let mut bad = encoded(&[Record::Put {
            key: b"k",
            loc: loc(1),
        }]);
        let last = bad.len() - 1;
        bad[last] ^= 1;
        append_raw(&path, &bad);
        assert!(matches!(f.step().unwrap(), Step::Reload));
        // The reload stops at the same record; from then on the follower waits there.
        let (mut f, r) = follow(&path);
        assert!(r.torn_tail.is_some());
        append_raw(
            &path,
            &encoded(&[Record::Put {
                key: b"m",
                loc: loc(2),
            }]),
        );
        assert!(changes(&mut f).is_empty());
    }
}
