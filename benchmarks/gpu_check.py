"""Everything the CUDA target needs measured on a GPU, in one run of well under ten minutes.

    python benchmarks/gpu_check.py [--out DIR] [--before DIR] [--budget SECONDS] [--smoke]

Run from the repository root on a machine with an NVIDIA GPU, torch and torchvision (CUDA
builds) and the ``cuda`` extra. Every table is printed and written under ``--out`` (default
``$OUT``, else ``gpu_check_out``) as it is made, so a run cut short keeps what it finished:

    env.txt        the device, the versions, which GEMM runs (cuBLAS or the tiled kernel)
    accuracy.txt   float32: ours against torchvision's CUDA kernels, max relative error of
                   the output and every gradient; float64: the CUDA target against the CPU
    speed.txt      ms, shapes a-d of ``dcn-ref bench``, float32: forward and forward+backward,
                   ours (atomic and deterministic) and torchvision's, in one process
    launches.txt   kernel launches, memsets and cuBLAS calls per op
    dcnv3.txt      DCNv3 and DCNv4 on CUDA against their grid_sample formulation on the GPU
    before.txt     speed.txt for the checkout in ``--before`` (e.g. the code before the
                   fast paths, from ``git worktree add``), same machine, same script
    pytest_gpu.txt, pytest_cuda.txt
                   ``pytest tests/cuda tests/torch -m gpu``, then the rest of tests/cuda on
                   the hardware (no simulator)

The parts run in child processes, the most important first, each within what is left of
``--budget``. ``--smoke`` runs the Python parts in Numba's simulator on tiny shapes with
torchvision on the CPU, and only collects the tests: a check of the script itself.
"""
import argparse
import contextlib
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- measuring (in a child process) -------------------------------------------------------------

def shapes(smoke):
    from dcn_ref.bench.shapes import SHAPES, Shape
    if smoke:
        return {"a": Shape(2, 4, 5, 5, 3, 1, False), "c": Shape(1, 2, 4, 4, 2, 1, True)}
    return SHAPES


def problem(shape, dtype, device):
    """(numpy inputs, numba device arrays, torch tensors, params) of a bench shape."""
    import numpy as np
    import torch
    from numba import cuda

    from dcn_ref.bench.shapes import make_inputs
    a = make_inputs(shape, dtype=dtype)
    a["bias"] = np.random.default_rng(1).standard_normal(shape.C_out).astype(dtype)
    names = ("input", "offset", "weight", "bias", "mask")
    host = {k: a[k] for k in names}
    dev = {k: None if v is None else cuda.to_device(v) for k, v in host.items()}
    tensors = {k: None if v is None else torch.tensor(v, device=device, requires_grad=True)
               for k, v in host.items()}
    return host, dev, tensors, a["grad"], dict(stride=shape.stride, padding=1)


def torchvision_both(t, grad, params):
    """torchvision's output and gradients (input, offset, weight, bias, mask) as NumPy."""
    import torchvision
    for v in t.values():
        if v is not None:
            v.grad = None
    out = torchvision.ops.deform_conv2d(t["input"], t["offset"], t["weight"], t["bias"],
                                        mask=t["mask"], **params)
    out.backward(grad)
    fields = ("input", "offset", "weight", "bias", "mask")
    return out.detach().cpu().numpy(), {k: t[k].grad.cpu().numpy() for k in fields
                                        if t[k] is not None}


def relative(ours, theirs):
    import numpy as np
    return float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-30))


def accuracy(out, smoke, device):
    import numpy as np
    import torch

    from dcn_ref import ops
    out("float32: max |ours - torchvision| / max |torchvision| (target 1e-5); float64: the "
        "CUDA target against the CPU target (target 1e-12)")
    fields = ("input", "offset", "weight", "bias", "mask")
    out(f"{'shape':<7}{'dtype':<9}{'output':>10}" + "".join(f"{f:>10}" for f in fields))
    table = {}
    for name, shape in shapes(smoke).items():
        for dtype in (np.float32, np.float64):
            host, dev, t, grad, params = problem(shape, dtype, device)
            ours = ops.deform_conv2d(**dev, **params).copy_to_host()
            grads = ops.deform_conv2d_backward(grad, **host, **params, target="cuda")
            if dtype == np.float32:
                ref, ref_grads = torchvision_both(t, torch.tensor(grad, device=device), params)
            else:
                ref = ops.deform_conv2d(**host, **params)
                ref_grads = ops.deform_conv2d_backward(grad, **host, **params)._asdict()
            errors = {"output": relative(ours, ref)}
            errors.update({f: relative(getattr(grads, f), ref_grads[f]) for f in fields
                           if ref_grads.get(f) is not None})
            table[f"{name} {np.dtype(dtype).name}"] = errors
            out(f"{'(' + name + ')':<7}{np.dtype(dtype).name:<9}"
                + "".join(f"{errors.get(f, float('nan')):>10.1e}" for f in ("output",) + fields))
    return table


def synchronised(fn):
    import torch
    from numba import cuda

    def call():
        fn()
        cuda.synchronize()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    return call


def speed(out, smoke, device, repeat):
    import torch
    import torchvision
    from numba import cuda

    from dcn_ref import ops
    from dcn_ref.bench.timing import interleaved_ms
    out(f"float32, median of {repeat} after warm-up, ms; f+b = forward and backward; "
        f"det = deterministic input gradient")
    out(f"{'shape':<7}{'ours fwd':>10}{'tv fwd':>9}{'ratio':>8}{'ours f+b':>10}{'det f+b':>10}"
        f"{'tv f+b':>9}{'ratio':>8}{'det ratio':>10}{'det/atomic':>11}")
    table = {}
    for name, shape in shapes(smoke).items():
        host, dev, t, grad, params = problem(shape, "float32", device)
        dev_grad, t_grad = cuda.to_device(grad), torch.tensor(grad, device=device)

        def ours_both(deterministic):
            ops.deform_conv2d(**dev, **params)
            ops.deform_conv2d_backward(dev_grad, **dev, **params, deterministic=deterministic)

        def tv_forward():
            with torch.no_grad():
                torchvision.ops.deform_conv2d(t["input"], t["offset"], t["weight"], t["bias"],
                                              mask=t["mask"], **params)

        def tv_both():
            torchvision.ops.deform_conv2d(t["input"], t["offset"], t["weight"], t["bias"],
                                          mask=t["mask"], **params).backward(t_grad)

        fns = [lambda: ops.deform_conv2d(**dev, **params), tv_forward,
               lambda: ours_both(False), lambda: ours_both(True), tv_both]
        f, tf, b, d, tb = interleaved_ms([synchronised(fn) for fn in fns], repeat, warmup=2)
        table[name] = dict(ours_fwd=f, tv_fwd=tf, ours_fb=b, det_fb=d, tv_fb=tb)
        out(f"{'(' + name + ')':<7}{f:>10.2f}{tf:>9.2f}{f / tf:>8.2f}{b:>10.2f}{d:>10.2f}"
            f"{tb:>9.2f}{b / tb:>8.2f}{d / tb:>10.2f}{d / b:>11.2f}")
    out("shapes: " + "; ".join(f"({k}) {s.describe()}" for k, s in shapes(smoke).items()))
    return table


def launches(out, smoke):
    """Launches per op, counted where the target starts kernels, memsets and cuBLAS calls."""
    import collections

    import numpy as np

    from dcn_ref import ops
    from dcn_ref.cuda import blas, gemm, launch, memory
    counts = collections.Counter()
    real = {"start": launch.start, "memset": memory.device_memset, "cublas": blas.CuBLAS.gemm}

    def start(kernel, blocks, threads, args):
        counts["kernels"] += 1
        real["start"](kernel, blocks, threads, args)

    def memset(*args):
        counts["memsets"] += 1
        real["memset"](*args)

    def cublas(self, a, b, c, trans_a, trans_b, accumulate):
        A, Z = a.shape[0], c.shape[0]
        counts["cuBLAS calls"] += A if 1 < A < Z else 1
        real["cublas"](self, a, b, c, trans_a, trans_b, accumulate)

    launch.start, memory.device_memset, gemm.device_memset = start, memset, memset
    blas.CuBLAS.gemm = cublas
    out(f"GEMM: {gemm.backend()}; per op: kernels + memsets + cuBLAS calls")
    table = {}
    try:
        for name, shape in shapes(smoke).items():
            host, _, _, grad, params = problem(shape, np.float32, "cpu")
            for label, fn in (
                    ("deform_conv2d", lambda: ops.deform_conv2d(**host, **params, target="cuda")),
                    ("backward", lambda: ops.deform_conv2d_backward(
                        grad, **host, **params, target="cuda")),
                    ("backward det", lambda: ops.deform_conv2d_backward(
                        grad, **host, **params, target="cuda", deterministic=True))):
                counts.clear()
                fn()
                table[f"{label} ({name})"] = dict(counts)
                out(f"{label + ' (' + name + ')':<22}" + ", ".join(
                    f"{k} {v}" for k, v in sorted(counts.items())))
    finally:
        launch.start, memory.device_memset, gemm.device_memset = (real["start"], real["memset"],
                                                                  real["memset"])
        blas.CuBLAS.gemm = real["cublas"]
    return table


def dcnv3_speed(out, smoke, device, repeat):
    import numpy as np
    import torch
    from numba import cuda

    from dcn_ref import ops
    from dcn_ref.bench.dcnv3 import GRID, P, STAGES, Stage, dcnv3_grid_sample, make_stage_inputs
    from dcn_ref.bench.timing import interleaved_ms
    stages = {"i": Stage(1, 5, 5, 8, 2)} if smoke else STAGES
    out(f"float32, median of {repeat}, ms; theirs = the grid_sample formulation on the same "
        f"device (target: theirs/ours >= 2 forward+backward)")
    out(f"{'op':<7}{'stage':<7}{'ours fwd':>9}{'f+b':>8}{'theirs fwd':>11}{'f+b':>8}"
        f"{'theirs/ours f+b':>16}{'max |diff|':>12}")
    table = {}
    for name, stage in stages.items():
        a = make_stage_inputs(stage)
        G = stage.group
        N, H, W, _ = a["input"].shape
        packed = np.concatenate([a["offset"].reshape(N, H, W, G, 2 * P),
                                 a["mask"].reshape(N, H, W, G, P)], -1).reshape(N, H, W, -1)
        dev = {k: cuda.to_device(v) for k, v in dict(a, packed=packed).items()}
        t = {k: torch.tensor(v, device=device, requires_grad=True)
             for k, v in dict(a, packed=packed).items()}
        params = dict(GRID, group=G)

        def theirs(packed_form):
            if not packed_form:
                return dcnv3_grid_sample(torch, t["input"], t["offset"], t["mask"], G)
            blocks = t["packed"].view(N, H, W, G, 3 * P)
            return dcnv3_grid_sample(torch, t["input"], blocks[..., :2 * P].reshape(N, H, W, -1),
                                     blocks[..., 2 * P:].reshape(N, H, W, -1), G)

        for op in ("dcnv3", "dcnv4"):
            if op == "dcnv3":
                def forward():
                    return ops.dcnv3(dev["input"], dev["offset"], dev["mask"], **params)

                def backward():
                    ops.dcnv3_backward(dev["grad"], dev["input"], dev["offset"], dev["mask"],
                                       **params)
            else:
                def forward():
                    return ops.dcnv4(dev["input"], dev["packed"], **params)

                def backward():
                    ops.dcnv4_backward(dev["grad"], dev["input"], dev["packed"], **params)

            def theirs_forward():
                with torch.no_grad():
                    theirs(op == "dcnv4")

            fns = [forward, lambda: (forward(), backward()), theirs_forward,
                   lambda: theirs(op == "dcnv4").backward(t["grad"])]
            f, b, tf, tb = interleaved_ms([synchronised(fn) for fn in fns], repeat, warmup=2)
            with torch.no_grad():
                diff = float(np.abs(forward().copy_to_host()
                                    - theirs(op == "dcnv4").cpu().numpy()).max())
            table[f"{op} ({name})"] = dict(fwd=f, fb=b, theirs_fwd=tf, theirs_fb=tb, diff=diff)
            out(f"{op:<7}{'(' + name + ')':<7}{f:>9.2f}{b:>8.2f}{tf:>11.2f}{tb:>8.2f}"
                f"{tb / b:>16.2f}{diff:>12.1e}")
    out("stages: " + "; ".join(f"({k}) {s.describe()}" for k, s in stages.items()))
    return table


def environment(out, device):
    import numba
    import numpy as np
    import torch
    import torchvision
    from numba import cuda

    from dcn_ref.cuda import gemm
    blas = getattr(sys.modules.get("dcn_ref.cuda.gemm"), "blas", None)
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "none (simulator)"
    out(f"device: {name}; torch {torch.__version__} (CUDA {torch.version.cuda}), torchvision "
        f"{torchvision.__version__}, numba {numba.__version__}, numpy {np.__version__}")
    try:
        from importlib.metadata import version
        out(f"numba-cuda {version('numba-cuda')}, nvmath-python "
            f"{version('nvmath-python') if blas else '-'}")
    except Exception as exc:  # noqa: BLE001
        out(f"versions: {exc}")
    backend = gemm.backend() if hasattr(gemm, "backend") else "tiled (this checkout has no other)"
    why = blas.why_not() if blas and backend != "cublas" else None
    simulated = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
    out(f"GEMM: {backend}" + (f" ({why})" if why else "") + f"; Numba's simulator: {simulated}; "
        f"numba.cuda.is_available(): {cuda.is_available()}")
    return {"device": name, "gemm": backend}


def measure(parts, out_dir, smoke, repeat):
    """Run ``parts`` in this process, writing each one's table as it is done."""
    import torch
    device = "cuda" if torch.cuda.is_available() else "cpu"
    steps = {"env": lambda out: environment(out, device),
             "accuracy": lambda out: accuracy(out, smoke, device),
             "speed": lambda out: speed(out, smoke, device, repeat),
             "before": lambda out: speed(out, smoke, device, repeat),
             "launches": lambda out: launches(out, smoke),
             "dcnv3": lambda out: dcnv3_speed(out, smoke, device, repeat)}
    for part in parts:
        with open(os.path.join(out_dir, f"{part}.txt"), "w") as text:
            def out(line):
                print(line, flush=True)
                print(line, file=text, flush=True)
            out(f"== {part}")
            table = steps[part](out)
        with open(os.path.join(out_dir, f"{part}.json"), "w") as f:
            json.dump(table, f, indent=1)


# -- the run (the parent process) ------------------------------------------------------------------

def child(command, env, log, seconds):
    """Run ``command`` with its output in ``log`` (then printed); False if it failed or ran
    out of time."""
    if seconds < 20:
        print(f"-- skipped (no time left): {' '.join(command)}", flush=True)
        return False
    print(f"-- {' '.join(command)} (at most {seconds:.0f} s)", flush=True)
    with open(log, "a") as f:
        try:
            ok = subprocess.run(command, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT,
                                timeout=seconds).returncode == 0
        except subprocess.TimeoutExpired:
            f.write(f"-- stopped after {seconds:.0f} s\n")
            ok = False
    with open(log) as f:
        print(f.read(), flush=True)
    return ok


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT") or "gpu_check_out")
    parser.add_argument("--before", help="a checkout of the code to compare with (speed only)")
    parser.add_argument("--budget", type=float, default=540, help="seconds for the whole run")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--measure", help=argparse.SUPPRESS)     # parts, in a child process
    args = parser.parse_args()
    out_dir = os.path.abspath(args.out)
    os.makedirs(out_dir, exist_ok=True)
    if args.measure:
        measure(args.measure.split(","), out_dir, args.smoke, 1 if args.smoke else args.repeat)
        return
    began = time.monotonic()

    def left():
        return args.budget - (time.monotonic() - began)

    env = dict(os.environ, PYTHONPATH=ROOT)
    if args.smoke:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    me = [sys.executable, os.path.abspath(__file__), "--out", out_dir, "--repeat",
          str(args.repeat)] + (["--smoke"] if args.smoke else [])
    results = {}
    results["measure"] = child(me + ["--measure", "env,accuracy,speed,launches,dcnv3"], env,
                               os.path.join(out_dir, "measure.log"), 0.45 * left())
    if args.before:
        results["before"] = child(me + ["--measure", "before"],
                                  dict(env, PYTHONPATH=os.path.abspath(args.before)),
                                  os.path.join(out_dir, "before.log"), 0.25 * left())
    collect = ["--collect-only"] if args.smoke else []
    results["pytest -m gpu"] = child(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/cuda",
         "tests/torch", "-m", "gpu"] + collect, env, os.path.join(out_dir, "pytest_gpu.txt"),
        0.65 * left())
    results["pytest tests/cuda"] = child(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/cuda", "-m",
         "not gpu"] + collect, env, os.path.join(out_dir, "pytest_cuda.txt"), left() - 5)
    summary = "; ".join(f"{k}: {'ok' if v else 'FAILED or cut short'}" for k, v in results.items())
    print(f"== done in {time.monotonic() - began:.0f} s: {summary}")
    with open(os.path.join(out_dir, "summary.txt"), "w") as f:
        f.write(f"{summary}\n")
    sys.exit(0 if all(results.values()) else 1)


if __name__ == "__main__":
    main()
