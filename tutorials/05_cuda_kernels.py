# %% [markdown]
# # Tutorial 05: the same maths on the GPU, and why atomics change the last bits
#
# Every op of dcn_ref also runs as Numba CUDA kernels (`target="cuda"`). The kernels in
# `dcn_ref/cuda/` call the very same per-sample functions of `dcn_ref/sampling.py` as the
# CPU kernels. This tutorial looks at:
#
# 1. the simulator: running CUDA kernels without a GPU;
# 2. one helper compiled for two targets (`register_jitable`);
# 3. the thread-to-output mapping: which thread computes which column entry;
# 4. the ops on the GPU agree with the CPU;
# 5. atomics versus the deterministic gather: float addition is not associative, so
#    atomic scatters change the last bits from run to run; `deterministic=True` gives
#    bitwise equal gradients that agree with the atomic ones.
#
# Without a GPU it runs in Numba's CUDA simulator, which executes every GPU thread as a
# Python thread: correct, but slow, so the sizes stay tiny there. Run it as a script
# (`python tutorials/05_cuda_kernels.py`) or open it as a notebook.

# %%
import os
import shutil
import sys

# %% [markdown]
# ## 1. GPU or simulator?
#
# Numba reads `NUMBA_ENABLE_CUDASIM` once, when it is first imported, so the choice
# has to be made *before* `numba` (or `dcn_ref`, which imports it) is imported, and
# without asking Numba. Rule used here: if the variable is not set and there is no
# `nvidia-smi` on the PATH, there is no NVIDIA driver, so use the simulator. Set
# `NUMBA_ENABLE_CUDASIM=0` or `=1` yourself to force either.

# %%
if "NUMBA_ENABLE_CUDASIM" not in os.environ and shutil.which("nvidia-smi") is None:
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
numba_was_imported = "numba" in sys.modules

import math  # noqa: E402  (everything below comes after the simulator decision)

import numba  # noqa: E402
import numpy as np  # noqa: E402
from numba import cuda  # noqa: E402

from dcn_ref import cpu as cpu_target  # noqa: E402
from dcn_ref import cuda as cuda_target  # noqa: E402
from dcn_ref import sampling  # noqa: E402
from dcn_ref.cuda.launch import THREADS_PER_BLOCK, launch  # noqa: E402
from dcn_ref.geometry import conv_geometry  # noqa: E402
from dcn_ref.ops import deform_conv2d, deform_conv2d_backward  # noqa: E402
from dcn_ref.plotting import plt, save_figure  # noqa: E402

assert bool(numba.config.ENABLE_CUDASIM) == SIMULATOR, (
    "numba was imported before the simulator decision (restart the kernel and run from the top)")
FAST = os.environ.get("DCN_REF_FAST") == "1"
TINY = SIMULATOR or FAST        # the simulator runs every thread in Python: keep it tiny
print(f"{'Numba CUDA simulator' if SIMULATOR else 'CUDA GPU'}; numba {numba.__version__}; "
      f"{THREADS_PER_BLOCK} threads per block; cuda.is_available() = {cuda.is_available()}"
      f"{' (numba had been imported already)' if numba_was_imported else ''}")
np.set_printoptions(precision=4, suppress=True, linewidth=100)
rng = np.random.default_rng(0)

# %% [markdown]
# ## 2. One helper, two targets
#
# `dcn_ref.sampling.locate(y, x, height, width, mode)` finds the interpolation cell of
# a point (tutorial 01). It is decorated with `numba.extending.register_jitable`, which
# leaves it an ordinary Python function and tells Numba to compile it into whatever
# calls it. So it can be called three ways: from Python, from an `@numba.njit` CPU
# function, and from a `@cuda.jit` kernel (in the simulator the kernel is Python again).
#
# It returns a `Cell`, a `typing.NamedTuple` that Numba compiles for both targets, so the
# callers read `cell.y0` or `cell.inside` by name. By hand first: the point (1.25, 2.5) of
# a 4x5 image lies in the cell with corner (1, 2), at fractions (0.25, 0.5), inside, and
# nothing was clamped (`jy`, `jx` = 1); without a mask its `m` is 1.

# %%
cell = sampling.locate(1.25, 2.5, 4, 5, sampling.ZEROS)
assert cell == sampling.Cell(inside=True, y0=1, x0=2, ly=0.25, lx=0.5, jy=1.0, jx=1.0, m=1.0)
print(cell)

# %% [markdown]
# Two tiny callers written here, one per target. What they share is the helper alone:
# each caller is compiled for its own target and `locate` is compiled into it. The walk
# over the arrays stays target-specific: a plain loop here, a `prange` loop in
# `dcn_ref/cpu/planar.py`, one thread per element in `dcn_ref/cuda/deform.py`.

# %%
@numba.njit
def locate_all_cpu(points, height, width, mode, out):
    for p in range(points.shape[0]):                       # a plain loop on the CPU
        cell = sampling.locate(points[p, 0], points[p, 1], height, width, mode)
        out[p, 0], out[p, 1], out[p, 2], out[p, 3] = cell.y0, cell.x0, cell.ly, cell.lx
        out[p, 4] = 1.0 if cell.inside else 0.0


@cuda.jit
def locate_all_gpu(points, height, width, mode, out):
    p = cuda.grid(1)                                       # one thread per point
    if p < points.shape[0]:
        cell = sampling.locate(points[p, 0], points[p, 1], height, width, mode)
        out[p, 0], out[p, 1], out[p, 2], out[p, 3] = cell.y0, cell.x0, cell.ly, cell.lx
        out[p, 4] = 1.0 if cell.inside else 0.0


points = np.array([[1.25, 2.5], [-0.5, 3.0], [3.99, -1.0], [5.0, 1.0], [0.0, 0.0]])
for mode in (sampling.ZEROS, sampling.BORDER):
    cells = [sampling.locate(y, x, 4, 5, mode) for y, x in points]
    from_python = np.array([[c.y0, c.x0, c.ly, c.lx, float(c.inside)] for c in cells])
    from_cpu = np.zeros((len(points), 5))
    locate_all_cpu(points, 4, 5, mode, from_cpu)
    from_gpu = cuda.to_device(np.zeros((len(points), 5)))
    launch(locate_all_gpu, len(points), cuda.to_device(points), 4, 5, mode, from_gpu)
    assert np.array_equal(from_python, from_cpu)
    assert np.array_equal(from_python, from_gpu.copy_to_host())
    print(f"padding {'zeros' if mode == sampling.ZEROS else 'border'}: "
          f"(y0, x0, ly, lx, inside) of each point\n", from_python)
print("Python, CPU (njit) and CUDA (cuda.jit) agree bit for bit in both padding modes")

# %% [markdown]
# ## 3. Which thread computes which column entry
#
# The GPU kernels launch one thread per output element. `launch(kernel, n, ...)` in
# `dcn_ref/cuda/launch.py` starts ceil(n / THREADS_PER_BLOCK) blocks, and each thread
# finds its flat number with `cuda.grid(1)` = blockIdx.x * blockDim.x + threadIdx.x.
# The deformable im2col kernel (`dcn_ref/cuda/deform.py`) turns that number into an
# element of columns (Q, Cq, K, L), last index fastest:
#
#     l = idx % L,  k = (idx // L) % K,  c = (idx // (L*K)) % Cq,  q = idx // (L*K*Cq)
#
# To *see* it, here is a kernel with the same index arithmetic that records, instead of
# a sample, the thread number and block number that own each element.

# %%
@cuda.jit
def who_writes(thread_of, block_of):
    Q, Cq, K, L = thread_of.shape
    idx = cuda.grid(1)
    if idx >= Q * Cq * K * L:
        return
    l = idx % L
    k = (idx // L) % K
    c = (idx // (L * K)) % Cq
    q = idx // (L * K * Cq)
    thread_of[q, c, k, l] = idx
    block_of[q, c, k, l] = cuda.blockIdx.x


Q, Cq, K, L = 1, 2, 9, 15                   # one image, 2 channels, 3x3 taps, 3x5 output pixels
thread_of = cuda.to_device(np.full((Q, Cq, K, L), -1))
block_of = cuda.to_device(np.full((Q, Cq, K, L), -1))
launch(who_writes, Q * Cq * K * L, thread_of, block_of)
thread_of, block_of = thread_of.copy_to_host(), block_of.copy_to_host()
n_blocks = -(-Q * Cq * K * L // THREADS_PER_BLOCK)        # ceil
print(f"{Q * Cq * K * L} column entries, {n_blocks} blocks of {THREADS_PER_BLOCK} threads; "
      f"{n_blocks * THREADS_PER_BLOCK - Q * Cq * K * L} threads of the last block have nothing to do")
print("thread numbers of the first 3 rows (channel 0, taps 0-2):\n", thread_of[0, 0, :3])

# %% [markdown]
# Thread idx writes element idx of the array in memory order, so the 32 threads of a
# warp write 32 neighbouring addresses: the GPU merges those into few memory
# transactions ("coalesced" writes). Threads past the end return at the first `if`.
# The check:

# %%
assert np.array_equal(thread_of, np.arange(Q * Cq * K * L).reshape(Q, Cq, K, L))
assert np.array_equal(block_of, thread_of // THREADS_PER_BLOCK)
assert block_of.max() + 1 == n_blocks

fig, ax = plt.subplots(figsize=(9, 6.2))
ax.imshow(block_of.reshape(Cq * K, L), cmap="tab10", vmin=0, vmax=9, aspect="auto")
for (r, s), t in np.ndenumerate(thread_of.reshape(Cq * K, L)):
    ax.text(s, r, t, ha="center", va="center", fontsize=6.5)
ax.set_xticks(range(L))
ax.set_yticks(range(Cq * K), [f"c{c} k{k} ({k // 3},{k % 3})" for c in range(Cq) for k in range(K)],
              fontsize=7)
ax.set_xlabel("column l = oy * W_out + ox (output pixel)")
ax.set_ylabel("row (channel c, tap k = (i, j))")
ax.set_title(f"deform_im2col on the GPU: the thread that computes each column entry\n"
             f"(numbers: cuda.grid(1); colours: blocks of {THREADS_PER_BLOCK} threads)", fontsize=10)
fig.tight_layout()
save_figure(fig, "05_thread_mapping")

# %% [markdown]
# And the real kernel fills the same (Q, Cq, K, L) array the CPU kernel fills. Both
# are called here through their target modules, with the same engine arguments
# (a `ConvGeometry` of `dcn_ref/geometry.py`: where each tap of each output pixel reads,
# see `dcn_ref/sampling.py`).

# %%
H, W = 3, 5                                               # padding 1: a 3x5 output, L = 15
image = rng.standard_normal((Q, Cq, H, W))
offset = rng.normal(0.0, 1.0, (Q, K, 2, L))                # (Q, K, 2, L): 3x3 taps, 15 pixels
geometry = conv_geometry((3, 3), (3, 5), stride=(1, 1), padding=(1, 1), dilation=(1, 1))
columns_cpu = np.empty((Q, Cq, K, L))
cpu_target.deform_im2col(image, offset, None, sampling.ZEROS, geometry, columns_cpu)
columns_gpu = cuda.device_array((Q, Cq, K, L))
cuda_target.deform_im2col(cuda.to_device(image), cuda.to_device(offset), None, sampling.ZEROS,
                          geometry, columns_gpu)
print("max |GPU columns - CPU columns| =", np.max(np.abs(columns_gpu.copy_to_host() - columns_cpu)))
assert np.allclose(columns_gpu.copy_to_host(), columns_cpu, rtol=0, atol=1e-12)

# %% [markdown]
# ## 4. The ops on the GPU
#
# The public ops take `target="cuda"` for NumPy arrays (copying to the device and back),
# or CUDA device arrays directly, in which case they return device arrays.

# %%
N, C_in, C_out, S = (1, 2, 2, 4) if TINY else (4, 16, 16, 16)
x = rng.standard_normal((N, C_in, S, S))
weight = rng.standard_normal((C_out, C_in, 3, 3))
offset = rng.normal(0.0, 1.5, (N, 18, S, S))
mask = rng.uniform(0.2, 1.0, (N, 9, S, S))
on_cpu = deform_conv2d(x, offset, weight, padding=1, mask=mask)
on_gpu = deform_conv2d(cuda.to_device(x), cuda.to_device(offset), cuda.to_device(weight),
                       padding=1, mask=cuda.to_device(mask))       # device in, device out
print(type(on_gpu).__name__, "-> max |GPU - CPU| =", np.max(np.abs(on_gpu.copy_to_host() - on_cpu)))
assert np.allclose(on_gpu.copy_to_host(), on_cpu, rtol=0, atol=1e-10)

# %% [markdown]
# ## 5. Atomics, and why they change the last bits
#
# In the backward pass every sample hands its gradient to the four pixels it read.
# On the CPU one loop iteration owns a whole image plane and adds its samples in a fixed
# order. On the GPU thread (q, c, k, l) adds its share with `cuda.atomic.add`
# (`deform_col2im_atomic` in `dcn_ref/cuda/deform.py`): each addition is safe, but many
# threads hit the same pixel and the order in which they arrive is up to the scheduler.
#
# That matters because floating-point addition is **not associative**. In float32, the
# numbers near 1e8 are 8 apart, so 1e8 + 1 rounds back to 1e8:
#
#     (1e8 + 1) - 1e8 = 0,      (1e8 - 1e8) + 1 = 1

# %%
big, one = np.float32(1e8), np.float32(1.0)
assert (big + one) - big == np.float32(0.0)
assert (big - big) + one == np.float32(1.0)
print("float32: (1e8 + 1) - 1e8 =", (big + one) - big, "  (1e8 - 1e8) + 1 =", (big - big) + one)

# %% [markdown]
# With ordinary numbers the effect is small, some units in the last place (ulp) of the
# result, but it is there. Sum 1000 float32 numbers one by one in many random orders and compare
# each result with the exact sum:

# %%
values = rng.standard_normal(1000).astype(np.float32)
exact = math.fsum(values.astype(np.float64))               # exact, then rounded once
ulp = float(np.spacing(np.float32(abs(exact))))           # the float32 spacing there
n_orders = 300
sums = np.array([np.add.accumulate(values[rng.permutation(values.size)], dtype=np.float32)[-1]
                 for _ in range(n_orders)])                # one left-to-right sum per order
n_distinct = len(set(sums.view(np.uint32).tolist()))
errors = (sums.astype(np.float64) - exact) / ulp          # in ulp
print(f"{n_orders} orders gave {n_distinct} different float32 sums, "
      f"from {errors.min():+.0f} to {errors.max():+.0f} ulp from the exact sum")
assert n_distinct > 1

fig, ax = plt.subplots(figsize=(7, 3.6))
ax.hist(errors, bins=np.arange(errors.min() - 0.5, errors.max() + 1.5), color="tab:blue",
        edgecolor="white")
ax.set_xlabel("float32 sum minus the exact sum, in units in the last place (ulp)")
ax.set_ylabel(f"number of orders (of {n_orders})")
ax.set_title("The same 1000 float32 numbers, added one by one in random orders", fontsize=10)
fig.tight_layout()
save_figure(fig, "05_summation_order")

# %% [markdown]
# ### The deterministic gather
#
# `deterministic=True` replaces the scatter by a gather (`dcn_ref/cuda/deterministic.py`):
#
# 1. the samples of every plane are sorted by the cell they fall in (a stable counting
#    sort, so samples of a cell stay in index order), in parallel steps: a thread per
#    sample counts its cell, a block per plane adds the counts up, a thread per sample
#    takes a slot in its cell's segment and a thread per cell sorts the segment;
# 2. one thread per *pixel* visits the four cells that have the pixel as a corner, in a
#    fixed order, and adds their samples' contributions in sorted order.
#
# Every pixel is written by one thread, the terms arrive in the same order every time,
# and the result is bitwise reproducible. The offset, mask, weight and bias gradients
# need none of this: each of their elements is already computed by exactly one thread.
#
# Let's run the backward pass twice in each mode, in float32 where the last bits are
# easiest to see.

# %%
x32, offset32, weight32, mask32 = (a.astype(np.float32) for a in (x, offset, weight, mask))
dout = rng.standard_normal(on_cpu.shape).astype(np.float32)
args = (dout, x32, offset32, weight32)
runs = {(det, r): deform_conv2d_backward(*args, padding=1, mask=mask32, target="cuda",
                                         deterministic=det)
        for det in (False, True) for r in (0, 1)}
for name in ("input", "offset", "mask", "weight"):
    assert np.array_equal(getattr(runs[True, 0], name), getattr(runs[True, 1], name))
    atomic, gather = getattr(runs[False, 0], name), getattr(runs[True, 0], name)
    assert np.allclose(atomic, gather, rtol=1e-5, atol=1e-5)
same_atomic = np.array_equal(runs[False, 0].input, runs[False, 1].input)
gap = np.max(np.abs(runs[False, 0].input - runs[True, 0].input))
top_ulp = np.spacing(np.max(np.abs(runs[True, 0].input)))   # one ulp of the largest entry
print("deterministic: two runs bitwise equal for input, offset, mask and weight gradients")
print(f"atomic: two runs bitwise equal? {same_atomic}")
print(f"atomic vs deterministic input gradient: max difference {gap:.2e} "
      f"= {gap / top_ulp:.1f} ulp of the largest entry")

# %% [markdown]
# And both modes agree with the CPU, which is deterministic by construction, to
# float64 rounding:

# %%
cpu_grads = deform_conv2d_backward(dout.astype(np.float64), x, offset, weight, padding=1, mask=mask)
for det in (False, True):
    gpu_grads = deform_conv2d_backward(dout.astype(np.float64), x, offset, weight, padding=1,
                                       mask=mask, target="cuda", deterministic=det)
    for name in ("input", "offset", "mask", "weight"):
        assert np.allclose(getattr(gpu_grads, name), getattr(cpu_grads, name), rtol=0, atol=1e-10)
print("float64: atomic and deterministic GPU gradients equal the CPU's to 1e-10")

# %% [markdown]
# ## Summary
#
# * `NUMBA_ENABLE_CUDASIM=1`, set before Numba is imported, runs the CUDA kernels as
#   Python threads: a GPU-free way to test and to step through them.
# * The per-sample maths lives once in `dcn_ref/sampling.py`; `register_jitable` lets
#   Python, `njit` and `cuda.jit` code call the same lines. The loops over the arrays
#   are written per target.
# * One thread per output element, numbered in memory order: thread idx computes element
#   idx of the column array, and neighbouring threads write neighbouring addresses.
# * Where threads add into shared pixels, atomics make each addition safe but leave the
#   order to the scheduler; float addition is not associative, so the last bits vary.
#   `deterministic=True` gathers instead and is bitwise reproducible; both modes agree
#   to rounding.
#
# ## Exercises
#
# 1. Which gradients of `deform_conv2d` would need atomics if the offset-gradient
#    kernel used one thread per (q, c, k, l) instead of one per (q, k, l)?
# 2. Change `THREADS_PER_BLOCK` in your head to 64: which block computes column
#    entry (c=1, k=4, l=5) of the example in section 3?
# 3. In float64, how many of the 300 orders of section 5 give different sums? Why
#    fewer than in float32?
# 4. On a GPU, time `deform_conv2d_backward` with `deterministic=False` and `True` on
#    a large input with large offsets, where many samples pile into a few cells.
#    Which part of the gather becomes the bottleneck?
