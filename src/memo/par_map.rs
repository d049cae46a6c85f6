//! Parallel maps over many inputs that compute only what the chest does not hold yet.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{CallError, Memo};

/// How far a map has come, given to its progress callback after every input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Inputs finished (computed, served from the chest, or failed).
    pub done: usize,
    /// Inputs in all.
    pub total: usize,
    /// Inputs whose result the chest already held.
    pub from_cache: usize,
}

/// An input whose computation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapFailure {
    /// Its position in the inputs.
    pub index: usize,
    /// The error or panic message.
    pub reason: String,
}

/// Why a map did not return every result. Every result that was computed is stored in the
/// chest and also here, so a rerun computes only the failed inputs.
#[derive(Debug)]
pub struct MapError<R> {
    /// The inputs that failed, in input order.
    pub failures: Vec<MapFailure>,
    /// Every input's result, `None` where it failed.
    pub results: Vec<Option<Arc<R>>>,
}

impl<R> std::fmt::Display for MapError<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} inputs failed",
            self.failures.len(),
            self.results.len()
        )?;
        if let Some(first) = self.failures.first() {
            write!(f, "; first, input {}: {}", first.index, first.reason)?;
        }
        Ok(())
    }
}

impl<R: std::fmt::Debug> std::error::Error for MapError<R> {}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    match crate::error::panic_text(panic) {
        Some(s) => format!("panicked: {s}"),
        None => "panicked".to_string(),
    }
}

impl<R> Memo<R>
where
    R: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// One input: its result and whether the chest held it, or why it failed. Panics are
    /// caught so one input cannot take the others down.
    fn one<A: Serialize, E: std::fmt::Display>(
        &self,
        input: &A,
        f: &(impl Fn(&A) -> Result<R, E> + Sync),
    ) -> Result<(Arc<R>, bool), String> {
        match catch_unwind(AssertUnwindSafe(|| self.call_inner(input, f))) {
            Ok(Ok(done)) => Ok(done),
            Ok(Err(CallError::Function(e))) => Err(e.to_string()),
            Ok(Err(CallError::Chest(e))) => Err(e.to_string()),
            Err(panic) => Err(panic_message(panic.as_ref())),
        }
    }

    /// Runs `f` over `inputs` on the memo's threads and returns the results in input order,
    /// computing only those the chest does not hold (see [`try_par_map`](Memo::try_par_map)).
    ///
    /// # Errors
    /// [`MapError`] naming every input whose computation panicked or whose result could not
    /// be stored; the others' results are stored and returned in it.
    pub fn par_map<A, F, P>(
        &self,
        inputs: &[A],
        f: F,
        progress: P,
    ) -> Result<Vec<Arc<R>>, MapError<R>>
    where
        A: Serialize + Sync,
        F: Fn(&A) -> R + Sync,
        P: Fn(Progress) + Sync,
    {
        self.try_par_map(
            inputs,
            |a| Ok::<R, std::convert::Infallible>(f(a)),
            progress,
        )
    }

    /// As [`par_map`](Memo::par_map) for a fallible `f`: an input whose `f` returns `Err` is
    /// reported as failed and nothing is stored for it. `progress` is called after every input
    /// (from the worker threads).
    ///
    /// # Errors
    /// [`MapError`] as for [`par_map`](Memo::par_map), also naming inputs whose `f` failed.
    pub fn try_par_map<A, E, F, P>(
        &self,
        inputs: &[A],
        f: F,
        progress: P,
    ) -> Result<Vec<Arc<R>>, MapError<R>>
    where
        A: Serialize + Sync,
        E: std::fmt::Display,
        F: Fn(&A) -> Result<R, E> + Sync,
        P: Fn(Progress) + Sync,
    {
        let total = inputs.len();
        let next = AtomicUsize::new(0);
        let (done, from_cache) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let results: Mutex<Vec<Option<Arc<R>>>> = Mutex::new(vec![None; total]);
        let failures: Mutex<Vec<MapFailure>> = Mutex::new(Vec::new());
        let worker = || {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(input) = inputs.get(index) else {
                    break;
                };
                match self.one(input, &f) {
                    Ok((value, cached)) => {
                        if cached {
                            from_cache.fetch_add(1, Ordering::Relaxed);
                        }
                        results.lock()[index] = Some(value);
                    }
                    Err(reason) => failures.lock().push(MapFailure { index, reason }),
                }
                progress(Progress {
                    done: done.fetch_add(1, Ordering::Relaxed) + 1,
                    total,
                    from_cache: from_cache.load(Ordering::Relaxed),
                });
            }
        };
        let threads = self.threads.min(total).max(1);
        let _ = crossbeam::scope(|scope| {
            for _ in 1..threads {
                scope.spawn(|_| worker());
            }
            worker();
        });
        let results = results.into_inner();
        let mut failures = failures.into_inner();
        if failures.is_empty() {
            return Ok(results.into_iter().flatten().collect());
        }
        failures.sort_by_key(|f| f.index);
        Err(MapError { failures, results })
    }

    /// Runs `f` over `inputs` on the memo's threads and yields each input's index and result
    /// as it finishes (not in input order). Dropping the stream stops handing out inputs and
    /// waits for the computations under way.
    pub fn par_map_stream<A, F>(&self, inputs: Vec<A>, f: F) -> MapStream<R>
    where
        A: Serialize + Send + Sync + 'static,
        F: Fn(&A) -> R + Send + Sync + 'static,
    {
        let inputs = Arc::new(inputs);
        let f = Arc::new(f);
        let next = Arc::new(AtomicUsize::new(0));
        let (sender, receiver) = crossbeam::channel::unbounded();
        let threads = self.threads.min(inputs.len()).max(1);
        let handles = (0..threads)
            .map(|_| {
                let (memo, inputs, f, next, sender) = (
                    self.clone(),
                    Arc::clone(&inputs),
                    Arc::clone(&f),
                    Arc::clone(&next),
                    sender.clone(),
                );
                std::thread::spawn(move || {
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        let Some(input) = inputs.get(index) else {
                            break;
                        };
                        let outcome = memo
                            .one(input, &|a: &A| Ok::<R, std::convert::Infallible>(f(a)))
                            .map(|(value, _)| value)
                            .map_err(|reason| MapFailure { index, reason });
                        if sender.send((index, outcome)).is_err() {
                            break;
                        }
                    }
                })
            })
            .collect();
        MapStream {
            receiver,
            handles,
            next,
        }
    }
}

/// The results of [`Memo::par_map_stream`] as they finish: `(input index, result)`.
pub struct MapStream<R> {
    receiver: crossbeam::channel::Receiver<(usize, Result<Arc<R>, MapFailure>)>,
    handles: Vec<std::thread::JoinHandle<()>>,
    next: Arc<AtomicUsize>,
}

impl<R> Iterator for MapStream<R> {
    type Item = (usize, Result<Arc<R>, MapFailure>);

    fn next(&mut self) -> Option<Self::Item> {
        self.receiver.recv().ok()
    }
}

impl<R> Drop for MapStream<R> {
    fn drop(&mut self) {
        // No more inputs are handed out; computations under way finish (and are stored).
        self.next.store(usize::MAX / 2, Ordering::Relaxed);
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}
