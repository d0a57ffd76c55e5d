"""Tensors to the arrays the ops take, and results back to tensors, without copies where
the memory allows.

CPU tensors become NumPy arrays that share their memory (``Tensor.numpy()``); a tensor
that is not C-contiguous (a transposed view, say) is first made contiguous, which copies.
CUDA tensors become Numba device arrays through ``__cuda_array_interface__``, and the
kernels are launched on PyTorch's current stream of the tensors' device. Results come
back the same way: ``torch.from_numpy`` on the CPU, ``torch.as_tensor`` on the GPU, both
without a copy.

Half precision is computed in float32: a float16 or bfloat16 tensor becomes a float32
array (a copy; the ops take float32 and float64 only, and NumPy has no bfloat16), and the
results are rounded back to the dtype the caller gave (``to_tensor``'s ``dtype``).
"""
import contextlib

import numpy as np
import torch


#: The dtypes the ops do not take, and the dtype they are computed in instead.
COMPUTED_IN = {torch.float16: torch.float32, torch.bfloat16: torch.float32}


def to_array(t):
    """The NumPy array (CPU) or Numba device array (CUDA) viewing ``t``; None stays None.

    Contiguous float32 and float64 tensors are not copied; float16 and bfloat16 ones are
    copied to float32 (``COMPUTED_IN``). The result does not track gradients: the bridge
    computes them itself.
    """
    if t is None:
        return None
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"expected a torch.Tensor, got {type(t).__name__}")
    t = t.detach()
    if t.dtype in COMPUTED_IN:
        t = t.to(COMPUTED_IN[t.dtype], memory_format=torch.contiguous_format)
    if not t.is_contiguous():
        t = t.contiguous()
    if t.device.type == "cuda":
        from numba import cuda
        # No synchronisation on import: the kernels run on the current stream, after
        # whatever PyTorch queued there to produce t.
        return cuda.as_cuda_array(t, sync=False)
    if t.device.type != "cpu":
        raise ValueError(f"expected a CPU or CUDA tensor, got one on {t.device}")
    if t.is_conj() or t.is_neg():
        t = t.resolve_conj().resolve_neg()
    return t.numpy()


def to_tensor(a, device, dtype):
    """A contiguous tensor of ``dtype`` on ``device`` holding the op's result ``a`` (NumPy or
    Numba device array). The results of the ops are contiguous already, so nothing is
    copied unless ``dtype`` is a half-precision one: then ``a`` (float32) is rounded to it."""
    if device.type == "cuda":
        t = torch.as_tensor(a, device=device).contiguous()
    else:
        t = torch.from_numpy(np.ascontiguousarray(a))
    return t if t.dtype == dtype else t.to(dtype)


@contextlib.contextmanager
def kernels_on(device):
    """Inside the block, the CUDA target launches on PyTorch's current stream of ``device``
    (nothing to do on the CPU)."""
    if device.type != "cuda":
        yield
        return
    from numba import cuda

    from ..cuda.launch import on_stream
    index = device.index if device.index is not None else torch.cuda.current_device()
    with torch.cuda.device(index), cuda.gpus[index]:
        stream = cuda.external_stream(torch.cuda.current_stream(index).cuda_stream)
        with on_stream(stream):
            yield
