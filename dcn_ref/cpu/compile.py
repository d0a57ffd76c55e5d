"""How the CPU kernels are compiled: each twice, once serial and once parallel.

A parallel kernel wakes Numba's worker threads on every call, which costs far more than a
small kernel's work (0.03 ms of work can take 8 ms when the cores are busy). So every
kernel is compiled both ways at import, and a call picks by the amount of work it was
given. ``prange`` in the serial build is a plain ``range``.

``cache=True`` keeps the machine code across processes (tests, tutorials and the command
line start many). Numba checks a cache entry against the kernel's own file only, so after
editing ``dcn_ref/sampling.py`` delete ``dcn_ref/cpu/__pycache__/*.nb*`` when developing.
"""
import types

import numba

#: Below this many inner-loop iterations a kernel runs on the calling thread alone.
PARALLEL_MIN_WORK = 16_384


class Kernel:
    """A kernel compiled serial and parallel; ``kernel(work, *args)`` runs the right one."""

    def __init__(self, fn):
        # a second function object with its own name, so that the two builds get separate
        # cache files (Numba names cache files after the function)
        serial = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial",
                                    fn.__defaults__, fn.__closure__)
        serial.__qualname__ = fn.__qualname__ + "_serial"
        self.serial = numba.njit(serial, parallel=False, cache=True)
        self.parallel = numba.njit(fn, parallel=True, cache=True)
        self.__doc__ = fn.__doc__
        self.__name__ = fn.__name__

    def __call__(self, work, *args):
        run = self.parallel if work >= PARALLEL_MIN_WORK else self.serial
        return run(*args)


def kernel(fn):
    """Decorator: compile ``fn`` serial and parallel (see ``Kernel``)."""
    return Kernel(fn)
