"""W3 for Python's `chest` (pip install chest numpy), as benches/arrays.rs runs it side by side.

64 float64 arrays of 8 MiB, available_memory 128 MiB, pickle protocol 5. Insert = set every
array and flush (so every byte reaches the files, as spillchest writes every array); read-all
= load every array and sum it, with the files in the page cache. Prints one line:
`insert_gbps read_gbps peak_rss_mib`. chest 0.2.3 imports names that moved to collections.abc
in Python 3.10; they are aliased back before the import, and its flush leaves stale keys in
its LRU heap, which the script clears.
"""
import collections
import collections.abc
import pickle
import resource
import shutil
import statistics
import sys
import tempfile
import time
from functools import partial

for _name in ("MutableMapping", "Mapping", "Iterator", "Iterable"):
    setattr(collections, _name, getattr(collections.abc, _name))

import numpy as np  # noqa: E402
from chest import Chest  # noqa: E402

ARRAYS = 64
ELEMENTS = 1 << 20  # 8 MiB of float64
BUDGET = 128 << 20
TOTAL = ARRAYS * ELEMENTS * 8


def one_round(arrays):
    path = tempfile.mkdtemp(prefix="chest-w3-")
    try:
        c = Chest(
            path=path,
            available_memory=BUDGET,
            dump=partial(pickle.dump, protocol=5),
            load=pickle.load,
        )
        t = time.perf_counter()
        for i, a in enumerate(arrays):
            c[i] = a
        c.flush()
        insert = time.perf_counter() - t
        # chest 0.2.3's flush leaves flushed keys in its LRU heap, and the next shrink then
        # fails with KeyError; emptying the heap is what flush should have done.
        c.heap.clear()
        t = time.perf_counter()
        total = 0.0
        for i in range(ARRAYS):
            total += float(c[i].sum())
        read = time.perf_counter() - t
        assert total > 0
        return TOTAL / insert / 1e9, TOTAL / read / 1e9
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    base = np.arange(ELEMENTS, dtype=np.float64)
    arrays = [base + i for i in range(ARRAYS)]
    results = [one_round(arrays) for _ in range(rounds)]
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{statistics.median(r[0] for r in results):.3f} "
        f"{statistics.median(r[1] for r in results):.3f} {peak_mib:.0f}"
    )


if __name__ == "__main__":
    main()
