"""Forked children of a process that used torch run the ops with the parent's numbers: a
plain os.fork() after torch's own thread pool ran, and DataLoader workers under the
default start method (fork, on Linux). Each scenario runs in a process of its own
(tests/fork_scenarios.py), which kills a child that does not finish."""
from fork_scenarios import run


def test_a_child_forked_after_torch_ran_runs_the_ops_with_the_parents_results():
    status, output = run("torch-first")
    assert status == 0 and output.strip().endswith("ok"), output[-3000:]


def test_dataloader_workers_run_the_ops_with_the_parents_results():
    status, output = run("dataloader")
    assert status == 0 and output.strip().endswith("ok"), output[-3000:]
