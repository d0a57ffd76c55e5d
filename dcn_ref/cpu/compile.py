"""How the CPU kernels are compiled: each twice, once serial and once parallel, and cached.

A parallel kernel wakes Numba's worker threads on every call, which costs far more than a
small kernel's work (0.03 ms of work can take 8 ms when the cores are busy). So every
kernel is compiled both ways, and a call picks by the amount of work it was given.
``prange`` in the serial build is a plain ``range``. A process forked from one that
imported dcn_ref runs every kernel serial (``dcn_ref/fork_safety.py``): a thread pool does
not survive ``fork()``.

The machine code is kept across processes (tests, tutorials and the command line start
many) in Numba's cache, next to the module (``__pycache__``, or ``NUMBA_CACHE_DIR``). Numba
checks a cache entry against the source of the kernel's own file only, but a kernel also
compiles the functions it calls from other modules (the maths in ``dcn_ref/sampling.py``).
So a kernel's cache entry is stamped here with a hash of its module's file and of every
file of the package that module uses, directly or through another: editing any of them
(``sampling.py`` included) makes the next process compile the kernel afresh.
"""
import functools
import hashlib
import sys
import types

import numba
from numba.core import caching

from .. import fork_safety

#: Below this many inner-loop iterations a kernel runs on the calling thread alone.
PARALLEL_MIN_WORK = 16_384

_PACKAGE = __name__.split(".")[0]


def _package_modules(namespace):
    """The names of the package's modules that ``namespace`` (a module's globals) uses:
    modules it imported, and the modules of the functions and objects it imported."""
    names = set()
    for value in list(namespace.values()):
        name = value.__name__ if isinstance(value, types.ModuleType) else getattr(
            value, "__module__", None)
        if isinstance(name, str) and name.split(".")[0] == _PACKAGE:
            names.add(name)
    return names


@functools.lru_cache(maxsize=None)
def _file_digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def source_files(namespace):
    """The source files a kernel defined in ``namespace`` depends on: its module's and,
    transitively, those of every package module it uses (sorted paths)."""
    files, seen = {namespace["__file__"]}, set()
    todo = _package_modules(namespace)
    while todo:
        name = todo.pop()
        seen.add(name)
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None)
        if path is None:
            continue
        files.add(path)
        todo |= _package_modules(vars(module)) - seen
    return sorted(files)


def source_stamp(namespace):
    """A hash of the contents of ``source_files(namespace)``."""
    digest = hashlib.sha256()
    for path in source_files(namespace):
        digest.update(path.encode() + b"\0" + _file_digest(path).encode())
    return digest.hexdigest()


class _StampedLocator:
    """Mixin for Numba's cache locators: the freshness stamp covers the kernel's
    dependencies (``source_stamp``), not only its own file."""

    def get_source_stamp(self):
        return source_stamp(self._py_func_globals)

    @classmethod
    def from_function(cls, py_func, py_file):
        locator = super().from_function(py_func, py_file)
        if locator is not None:
            locator._py_func_globals = py_func.__globals__
        return locator


class _UserProvided(_StampedLocator, caching.UserProvidedCacheLocator):
    pass


class _InTree(_StampedLocator, caching.InTreeCacheLocator):
    pass


class _UserWide(_StampedLocator, caching.UserWideCacheLocator):
    pass


class _StampedImpl(caching.CompileResultCacheImpl):
    # the same places as Numba's default, in the same order of preference
    _locator_classes = [_UserProvided, _InTree, _UserWide]


class _StampedCache(caching.FunctionCache):
    _impl_class = _StampedImpl


def _njit_cached(fn, parallel):
    dispatcher = numba.njit(fn, parallel=parallel)
    dispatcher._cache = _StampedCache(fn)     # what cache=True does, with our locators
    return dispatcher


class Kernel:
    """A kernel compiled serial and parallel; ``kernel(*args, work=n)`` runs the right one:
    the parallel build for ``work >= PARALLEL_MIN_WORK`` (never in a forked child).

    ``work`` is the number of inner-loop iterations the call will do (a keyword, so that a
    call's arguments line up with the kernel's parameters).
    """

    def __init__(self, fn):
        # a second function object with its own name, so that the two builds get separate
        # cache files (Numba names cache files after the function)
        serial = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial",
                                    fn.__defaults__, fn.__closure__)
        serial.__qualname__ = fn.__qualname__ + "_serial"
        serial.__module__ = fn.__module__
        self.serial = _njit_cached(serial, parallel=False)
        self.parallel = _njit_cached(fn, parallel=True)
        self.__doc__ = fn.__doc__
        self.__name__ = fn.__name__

    def __call__(self, *args, work):
        parallel = work >= PARALLEL_MIN_WORK and not fork_safety.forked_child
        return (self.parallel if parallel else self.serial)(*args)


def kernel(fn):
    """Decorator: compile ``fn`` serial and parallel (see ``Kernel``), cached."""
    return Kernel(fn)
