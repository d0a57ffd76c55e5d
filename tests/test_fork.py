"""A process forked from one that used dcn_ref runs the ops, and gets the parent's numbers
and its BLAS thread counts.

GNU OpenMP's thread pool (Numba's ``omp`` threading layer) does not survive fork(): a
forked child that starts a parallel kernel is killed by Numba's guard, or hangs. The
scenario runs in a process of its own (tests/fork_scenarios.py), which kills a child that
does not finish.
"""
from fork_scenarios import run


def test_a_child_forked_after_an_op_runs_the_ops_with_the_parents_results():
    status, output = run("op-first")
    assert status == 0 and output.strip().endswith("ok"), output[-3000:]


def test_a_child_forked_while_an_op_holds_blas_at_one_thread_gets_the_callers_counts():
    status, output = run("blas-held")
    assert status == 0 and output.strip().endswith("ok"), output[-3000:]
