"""What a process made by ``fork()`` may run: every CPU kernel's serial build.

A forked child inherits its parent's memory but only the thread that called ``fork()``.
A thread pool the parent started is gone in the child while its bookkeeping says it is
there, and GNU OpenMP cannot start a fresh one: a parallel kernel in the child hangs
(when torch, or anything else using GNU OpenMP, ran before the fork) or is killed by
Numba's guard ("fork() called from a process already using GNU OpenMP"). So, as torch's
DataLoader workers run torch on one thread, a child forked from a process that had
imported dcn_ref runs the CPU kernels serial, the same arithmetic in the same order
(``dcn_ref/cpu/compile.py``), and gets the same numbers. ``spawn`` and (by default)
``forkserver`` children import dcn_ref afresh and run the parallel builds, and the parent
is not affected.

Importing this module (``import dcn_ref`` does) registers the hook with
``os.register_at_fork``; it changes nothing else in the process.
"""
import os

#: True in a process made by fork() from one that had imported dcn_ref (and in its own
#: forked children): the CPU kernels run their serial builds.
forked_child = False


def _in_child():
    global forked_child
    forked_child = True


os.register_at_fork(after_in_child=_in_child)
