"""Which threads a process that uses dcn_ref beside NumPy and torch runs, and what they do.

    python benchmarks/profile_threads.py [--shape a] [--repeat 7]

A script imports NumPy first (its BLAS starts its threads when it loads), then torch and
torchvision when installed, then dcn_ref. This prints

1. the thread pools: every thread of the process by the step that created it, the
   libraries threadpoolctl finds with their thread counts, and Numba's threading layer;
2. whether idle threads spin: a Numba kernel with no BLAS work is timed right after
   nothing, right after a NumPy matrix product and right after a torch conv2d, with the
   CPU time each group of threads spent meanwhile (read from /proc/self/task/*/stat). A
   group that burns CPU during a kernel that gives it no work is spinning;
3. our deform_conv2d forward+backward alone and right after torchvision's, wall time
   and CPU time by group of threads.

CPU times are counted in clock ticks (usually 10 ms), so the kernels are repeated to
fill several ticks. Linux only.
"""
import os
import time

_THREADS_AT_START = set(os.listdir("/proc/self/task"))

import numpy as np  # noqa: E402  NumPy first, as most scripts do

_THREADS_AFTER_NUMPY = set(os.listdir("/proc/self/task"))

try:
    import torch
    import torchvision
except ImportError:
    torch = None

_THREADS_AFTER_TORCH = set(os.listdir("/proc/self/task"))

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numba  # noqa: E402
import threadpoolctl  # noqa: E402

from dcn_ref.bench.calls import our_calls, their_calls  # noqa: E402
from dcn_ref.bench.shapes import SHAPES, make_inputs, threads_line  # noqa: E402
from dcn_ref.cpu import columns  # noqa: E402
from dcn_ref.geometry import conv_geometry  # noqa: E402

_TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")


def cpu_ms_by_thread():
    """{thread id: user + system CPU ms so far}."""
    spent = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:                                  # the thread ended meanwhile
            continue
        spent[tid] = (int(fields[11]) + int(fields[12])) * _TICK_MS
    return spent


def new_threads(action):
    """The threads that ``action()`` starts."""
    before = set(os.listdir("/proc/self/task"))
    action()
    return set(os.listdir("/proc/self/task")) - before


def timed_by_group(call, groups):
    """(wall ms, {group: CPU ms}) of one ``call()``."""
    before = cpu_ms_by_thread()
    start = time.perf_counter()
    call()
    wall = (time.perf_counter() - start) * 1e3
    after = cpu_ms_by_thread()
    return wall, {name: sum(after.get(t, 0) - before.get(t, 0) for t in tids)
                  for name, tids in groups.items()}


def median_by_group(prepare, call, groups, repeat):
    runs = []
    for _ in range(repeat):
        prepare()
        runs.append(timed_by_group(call, groups))
    return (statistics.median(r[0] for r in runs),
            {name: statistics.median(r[1][name] for r in runs) for name in groups})


def print_row(label, wall, cpu):
    print(f"| {label} | {wall:.1f} | " + " | ".join(f"{v:.0f}" for v in cpu.values()) + " |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="a", choices=list(SHAPES))
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    shape, a = SHAPES[args.shape], make_inputs(SHAPES[args.shape])
    mine = our_calls(shape, a)
    theirs = their_calls(shape, a)

    # 1. the pools, by the step that started them
    groups = {"main": {str(os.getpid())},
              "started by import numpy": _THREADS_AFTER_NUMPY - _THREADS_AT_START,
              "started by import torch": _THREADS_AFTER_TORCH - _THREADS_AFTER_NUMPY,
              "started by other imports": (set(os.listdir("/proc/self/task"))
                                           - _THREADS_AFTER_TORCH)}
    groups["started by our first op"] = new_threads(mine["deform_conv2d", "f+b"])
    if theirs:
        groups["started by torch's ops"] = new_threads(
            lambda: [call() for call in theirs.values()])
    print(threads_line(), f"| Numba threading layer: {numba.threading_layer()}")
    print("\n| thread group | threads |\n| --- | ---: |")
    for name, tids in groups.items():
        print(f"| {name} | {len(tids)} |")
    print("\n| library (threadpoolctl) | API | threads | file |\n| --- | --- | ---: | --- |")
    for lib in threadpoolctl.threadpool_info():
        print(f"| {lib['internal_api']} | {lib['user_api']} | {lib['num_threads']} | "
              f"{Path(lib['filepath']).name} |")

    # 2. spinning: a Numba kernel that gives the BLAS threads nothing to do
    x_cl = np.random.default_rng(0).random((32, 197, 64), dtype=np.float32)
    cols = np.empty((1, 32, 196, 9, 64), np.float32)
    geometry = conv_geometry((3, 3), (14, 14), stride=(1, 1), padding=(1, 1), dilation=(1, 1))

    def kernel():
        for _ in range(20):
            columns.im2col(x_cl, 14, 14, geometry, cols, work=cols.size)

    big, w = np.ones((4096, 576), np.float32), np.ones((128, 576), np.float32)
    before = {"nothing": lambda: None, "a NumPy matrix product": lambda: big @ w.T,
              "a NumPy matrix product, then 0.3 s asleep": lambda: (big @ w.T, time.sleep(0.3))}
    if theirs:
        before["torch's conv2d"] = theirs["conv2d", "fwd"]
    kernel()
    print(f"\nA Numba kernel (20 x im2col of shape (a), no BLAS), median of {args.repeat}: wall "
          "ms and CPU ms of each thread group while it ran")
    print("| run right after | wall | " + " | ".join(groups) + " |")
    print("| --- | ---: |" + " ---: |" * len(groups))
    for label, prepare in before.items():
        print_row(label, *median_by_group(prepare, kernel, groups, args.repeat))

    # 3. our op, alone and right after torchvision's
    op = mine["deform_conv2d", "f+b"]
    print(f"\nOur deform_conv2d forward+backward on ({args.shape}), median of {args.repeat}")
    print("| run right after | wall | " + " | ".join(groups) + " |")
    print("| --- | ---: |" + " ---: |" * len(groups))
    print_row("itself", *median_by_group(op, op, groups, args.repeat))
    if theirs:
        print_row("torchvision's deform_conv2d f+b",
                  *median_by_group(theirs["deform_conv2d", "f+b"], op, groups, args.repeat))


if __name__ == "__main__":
    main()
