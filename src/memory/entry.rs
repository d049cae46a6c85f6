//! One entry of the chest: where its value is held and what copy of it the disk has.

use std::sync::{Arc, Weak};

use crate::disk::DiskLoc;

/// Where an entry's value is held.
#[derive(Debug)]
pub(crate) enum Held<V> {
    /// In memory, counted against the budget with `weight` bytes.
    Memory { value: Arc<V>, weight: u64 },
    /// Only on disk. `weak` still reaches the value while a caller holds an `Arc` of it, so a
    /// later `get` returns that same `Arc` instead of decoding a copy.
    Disk { weak: Weak<V> },
}

/// The stored copy a key has on disk (the one the index names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DiskCopy {
    pub(crate) loc: DiskLoc,
    /// False when the value changed in memory after the file was written (the file is stale
    /// and must be rewritten before the value can leave memory).
    pub(crate) current: bool,
}

/// One entry.
#[derive(Debug)]
pub(crate) struct Entry<V> {
    pub(crate) held: Held<V>,
    pub(crate) disk: Option<DiskCopy>,
}

impl<V> Entry<V> {
    /// True when the disk holds the current value.
    pub(crate) fn disk_is_current(&self) -> bool {
        self.disk.is_some_and(|d| d.current)
    }

    /// The value, if some `Arc` of it is alive.
    pub(crate) fn live_value(&self) -> Option<Arc<V>> {
        match &self.held {
            Held::Memory { value, .. } => Some(value.clone()),
            Held::Disk { weak } => weak.upgrade(),
        }
    }
}
