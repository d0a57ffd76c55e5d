"""The one timer of the benchmarks: medians of wall time, calls made round by round.

A round calls each function once, in order; ``warmup`` rounds are not timed (compilation,
caches, thread pools). Timing several functions in the same rounds lets a busy machine
slow them all alike, so their ratio stays meaningful.
"""
import statistics
import time


def interleaved_ms(fns, repeat, warmup=1):
    """[median ms of each of ``fns``] over ``repeat`` timed rounds, after ``warmup`` rounds."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times = [[] for _ in fns]
    for _ in range(repeat):
        for fn, bucket in zip(fns, times):
            start = time.perf_counter()
            fn()
            bucket.append((time.perf_counter() - start) * 1e3)
    return [statistics.median(t) for t in times]


def median_ms(fn, repeat, warmup=1):
    """Median wall time of ``fn()`` in ms over ``repeat`` calls after ``warmup`` calls."""
    return interleaved_ms([fn], repeat, warmup)[0]
