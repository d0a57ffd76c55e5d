"""Tensors to the arrays the ops take, and results back to tensors, without copies where
the memory allows.

CPU tensors become NumPy arrays that share their memory (``Tensor.numpy()``); a tensor
that is not C-contiguous (a transposed view, say) is first made contiguous, which copies.
CUDA tensors become Numba device arrays through ``__cuda_array_interface__``, and the
kernels are launched on PyTorch's current stream of the tensors' device. Results come
back the same way: ``torch.from_numpy`` on the CPU, ``torch.as_tensor`` on the GPU, both
without a copy.
"""
import contextlib

import numpy as np
import torch


def to_array(t):
    """The NumPy array (CPU) or Numba device array (CUDA) viewing ``t``; None stays None.

    Contiguous tensors are not copied. The result does not track gradients: the bridge
    computes them itself.
    """
    if t is None:
        return None
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"expected a torch.Tensor, got {type(t).__name__}")
    t = t.detach()
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


def to_tensor(a, device):
    """A contiguous tensor on ``device`` viewing the op's result ``a`` (NumPy or Numba device
    array); the results of the ops are contiguous already, so nothing is copied."""
    if device.type == "cuda":
        return torch.as_tensor(a, device=device).contiguous()
    return torch.from_numpy(np.ascontiguousarray(a))


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
