"""Forked children running the ops, one scenario a process (the fork-safety tests run it):

    python fork_scenarios.py SCENARIO

op-first      the parent runs one small dcn_ref op (1x1x5x5), then os.fork(); the child runs
              ops big enough for the parallel builds of the CPU kernels.
torch-first   the parent runs only torch's conv2d (which starts GNU OpenMP's thread pool),
              then os.fork(); the child runs the ops.
dataloader    the parent runs torch's conv2d and the ops, then a torch DataLoader with two
              worker processes under the default start method, whose dataset runs the ops.
blas-held     the parent forks while another of its threads is inside an op, holding the
              BLAS libraries at one thread; the child runs the ops, its ops hold the BLAS
              libraries at one thread too, and give back the counts the parent had before.

Every child's results must equal the parent's bit for bit (the parent computes them with
the parallel builds). Prints "ok" and exits 0, or prints what went wrong and exits 1; a
child that does not finish within CHILD_SECONDS is killed and reported.
"""
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

from dcn_ref import ops

CHILD_SECONDS = 60
SCENARIOS = ("op-first", "torch-first", "dataloader", "blas-held")


def work(seed):
    """deform_conv2d forward and backward and dcnv3 forward on a problem big enough for the
    parallel builds (more than PARALLEL_MIN_WORK inner iterations each)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 8, 16, 16))
    offset = rng.uniform(-2, 2, (2, 18, 16, 16))
    mask = rng.uniform(0, 1, (2, 9, 16, 16))
    weight = rng.standard_normal((8, 8, 3, 3))
    out = ops.deform_conv2d(x, offset, weight, None, padding=1, mask=mask)
    grads = ops.deform_conv2d_backward(np.ones_like(out), x, offset, weight, None, padding=1,
                                       mask=mask)
    v3 = ops.dcnv3(x.transpose(0, 2, 3, 1), rng.uniform(-2, 2, (2, 16, 16, 36)),
                   rng.uniform(0, 1, (2, 16, 16, 18)), 3, padding=1, group=2)
    return [out, grads.input, grads.offset, grads.weight, grads.mask, v3]


def differences(got, expected, who):
    """What differs between two lists of arrays, bit for bit ([] when nothing does)."""
    return [f"{who}: result {i} differs from the parent's"
            for i, (a, b) in enumerate(zip(got, expected)) if not np.array_equal(a, b)]


def torch_conv():
    import torch
    torch.nn.functional.conv2d(torch.randn(8, 16, 64, 64), torch.randn(16, 16, 3, 3))


def blas_threads():
    import threadpoolctl
    return sorted((lib["filepath"], lib["num_threads"])
                  for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas")


def fork_and_compare(seed, also=lambda: None, expected_also=None):
    """Fork; the child runs work(seed) and pickles it, with what ``also()`` returns after
    it; the parent compares with its own work(seed) and ``expected_also``."""
    path = os.path.join(tempfile.mkdtemp(), "child.pickle")
    pid = os.fork()
    if pid == 0:
        try:
            result = work(seed) + [also()]
            with open(path, "wb") as f:
                pickle.dump(result, f)
        finally:
            os._exit(0)
    deadline = time.monotonic() + CHILD_SECONDS
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return [f"the child did not finish within {CHILD_SECONDS} s (killed)"]
        time.sleep(0.05)
    if not os.path.exists(path):
        return ["the child died before it had a result"]
    with open(path, "rb") as f:
        got = pickle.load(f)
    problems = differences(got[:-1], work(seed), "the child")
    if got[-1] != expected_also:
        problems.append(f"the child: {got[-1]} where {expected_also} was expected")
    return problems


def dataloader():
    import torch

    class OpsDataset(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return [torch.from_numpy(a) for a in work(i)]

    torch_conv()
    expected = [work(i) for i in range(4)]
    loader = torch.utils.data.DataLoader(OpsDataset(), batch_size=None, num_workers=2,
                                         timeout=CHILD_SECONDS)
    problems = []
    for i, item in enumerate(loader):
        problems += differences([t.numpy() for t in item], expected[i], f"worker item {i}")
    return problems


def fork_while_an_op_holds_blas():
    import threading

    from dcn_ref.cpu import gemm
    work(0)                       # loads the BLAS libraries that the ops hold at one thread
    before = blas_threads()
    held = [(path, 1) for path, _ in before]

    def in_and_after_an_op():
        with gemm.single_threaded_blas():
            inside = blas_threads()
        return inside, blas_threads()
    inside, done = threading.Event(), threading.Event()

    def op_in_progress():         # the guard an op holds around its matrix products
        with gemm.single_threaded_blas():
            inside.set()
            done.wait()

    thread = threading.Thread(target=op_in_progress)
    thread.start()
    inside.wait()
    try:
        problems = fork_and_compare(2, also=in_and_after_an_op, expected_also=(held, before))
    finally:
        done.set()
        thread.join()
    if blas_threads() != before:
        problems.append(f"the parent's BLAS thread counts: {blas_threads()}, before: {before}")
    return problems


def main(scenario):
    if scenario == "op-first":
        ops.deform_conv2d(np.ones((1, 1, 5, 5)), np.zeros((1, 18, 5, 5)), np.ones((1, 1, 3, 3)),
                          padding=1)
        problems = fork_and_compare(0)
    elif scenario == "torch-first":
        torch_conv()
        problems = fork_and_compare(1)
    elif scenario == "dataloader":
        problems = dataloader()
    elif scenario == "blas-held":
        problems = fork_while_an_op_holds_blas()
    else:
        raise SystemExit(f"scenario: expected one of {SCENARIOS}, got {scenario!r}")
    print("\n".join(problems) or "ok", flush=True)
    return 1 if problems else 0


def run(scenario):
    """Run ``scenario`` in a fresh Python process (in its own session, so that nothing it
    forks outlives it); return (exit status, output)."""
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [os.path.dirname(here), here, os.environ.get("PYTHONPATH")])))
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), scenario], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=CHILD_SECONDS + 120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        return None, output
    return proc.returncode, output


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
