//! Memoised computations kept in a chest: [`Memo::call`] computes a result once per distinct
//! argument and serves it from the chest afterwards (in this process or, for a persistent
//! chest, any later one); [`Memo::par_map`] runs a function over many inputs on a pool of
//! threads, computing only what the chest does not hold yet.
//!
//! Results are keyed by a [`MemoKey`]: the memo's name, its version, and the arguments'
//! encoding. Bumping the version makes old results unreachable without deleting anything; a
//! result stored under another name or version is never returned.

pub(crate) mod once;
mod par_map;

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::Chest;
use crate::error::{Error, Result};
use once::{Claim, InFlight};
pub use par_map::{MapError, MapFailure, MapStream, Progress};

/// The key a memoised result is stored under.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MemoKey {
    /// The memo's name, e.g. the function's.
    pub name: String,
    /// The memo's version: results of other versions are never returned.
    pub version: u32,
    /// The arguments, encoded with bincode: equal encodings are the same call.
    pub args: Vec<u8>,
}

/// A memoised function's results, kept in a chest under a name and a version.
///
/// Cheap to clone: clones share the chest and the table of computations in flight.
pub struct Memo<R>
where
    R: Serialize + DeserializeOwned + 'static,
{
    chest: Arc<Chest<MemoKey, R>>,
    name: String,
    version: u32,
    threads: usize,
    in_flight: Arc<InFlight<MemoKey>>,
}

impl<R> Clone for Memo<R>
where
    R: Serialize + DeserializeOwned + 'static,
{
    fn clone(&self) -> Self {
        Memo {
            chest: Arc::clone(&self.chest),
            name: self.name.clone(),
            version: self.version,
            threads: self.threads,
            in_flight: Arc::clone(&self.in_flight),
        }
    }
}

impl<R> Memo<R>
where
    R: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// A memo named `name` at `version`, keeping its results in `chest`. Several memos (other
    /// names or versions) can share one chest.
    pub fn new(chest: Arc<Chest<MemoKey, R>>, name: impl Into<String>, version: u32) -> Self {
        Memo {
            chest,
            name: name.into(),
            version,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            in_flight: Arc::new(InFlight::default()),
        }
    }

    /// Uses `threads` threads in [`par_map`](Memo::par_map) (at least one; the default is the
    /// available parallelism).
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// The chest the results are kept in.
    pub fn chest(&self) -> &Arc<Chest<MemoKey, R>> {
        &self.chest
    }

    /// The key the result of `args` is stored under.
    ///
    /// # Errors
    /// [`Error::Encode`] when the arguments cannot be encoded.
    pub fn key<A: Serialize + ?Sized>(&self, args: &A) -> Result<MemoKey> {
        let mut encoded = Vec::new();
        crate::codec::bincode_encode(args, &mut encoded).map_err(|source| Error::Encode {
            what: format!("arguments of memo {:?}", self.name),
            source,
        })?;
        Ok(MemoKey {
            name: self.name.clone(),
            version: self.version,
            args: encoded,
        })
    }

    /// The stored result of `args`, or `f(args)` computed, stored and returned. Concurrent
    /// callers of the same missing call wait for one computation and all get its result.
    ///
    /// Compute-once covers this memo and its clones within one process: separately created
    /// memos, or other processes, may both compute a missing call (the last result stored
    /// wins). `f` must not call this memo with the same arguments: it would wait on itself.
    ///
    /// # Errors
    /// Errors of the chest (reading the stored result, storing the new one) and of encoding
    /// the arguments. If `f` panics the panic continues and nothing is stored; a waiting
    /// caller then computes it itself.
    pub fn call<A: Serialize + ?Sized>(&self, args: &A, f: impl FnOnce(&A) -> R) -> Result<Arc<R>> {
        match self.call_inner(args, |a| Ok::<R, std::convert::Infallible>(f(a))) {
            Ok((value, _)) => Ok(value),
            Err(CallError::Chest(e)) => Err(e),
            Err(CallError::Function(never)) => match never {},
        }
    }

    /// As [`call`](Memo::call) for a fallible computation: an `Err` from `f` is returned and
    /// not stored, so the next call computes again.
    ///
    /// # Errors
    /// [`CallError::Function`] with `f`'s error; [`CallError::Chest`] with the chest's.
    pub fn try_call<A: Serialize + ?Sized, E>(
        &self,
        args: &A,
        f: impl FnOnce(&A) -> Result<R, E>,
    ) -> Result<Arc<R>, CallError<E>> {
        self.call_inner(args, f).map(|(value, _)| value)
    }

    /// The shared path of every call: the stored value, and whether it was stored already.
    fn call_inner<A: Serialize + ?Sized, E>(
        &self,
        args: &A,
        f: impl FnOnce(&A) -> Result<R, E>,
    ) -> Result<(Arc<R>, bool), CallError<E>> {
        let key = self.key(args).map_err(CallError::Chest)?;
        let mut f = Some(f);
        loop {
            if let Some(value) = self.chest.get(&key).map_err(CallError::Chest)? {
                return Ok((value, true));
            }
            match self.in_flight.claim(&key) {
                Claim::Wait(slot) => {
                    // Another caller computes it; afterwards the chest holds it, or that
                    // caller failed and this one tries.
                    slot.wait();
                }
                Claim::Lead(leader) => {
                    // Checked again under the claim: the leader before us may have just stored.
                    if let Some(value) = self.chest.get(&key).map_err(CallError::Chest)? {
                        drop(leader);
                        return Ok((value, true));
                    }
                    let Some(f) = f.take() else {
                        unreachable!("a caller leads at most once: after computing it returns")
                    };
                    let value = f(args).map_err(CallError::Function)?;
                    self.chest
                        .insert(key.clone(), value)
                        .map_err(CallError::Chest)?;
                    let stored = self.chest.get(&key).map_err(CallError::Chest)?;
                    drop(leader);
                    return match stored {
                        Some(value) => Ok((value, false)),
                        None => Err(CallError::Chest(Error::corrupt(
                            self.chest.path(),
                            "a memoised result vanished right after it was stored",
                        ))),
                    };
                }
            }
        }
    }
}

/// Why a [`Memo::try_call`] failed.
#[derive(Debug)]
pub enum CallError<E> {
    /// The computation returned this error; nothing was stored.
    Function(E),
    /// The chest failed.
    Chest(Error),
}

impl<E: std::fmt::Display> std::fmt::Display for CallError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Function(e) => write!(f, "memoised computation failed: {e}"),
            CallError::Chest(e) => write!(f, "{e}"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for CallError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CallError::Function(e) => Some(e),
            CallError::Chest(e) => Some(e),
        }
    }
}
