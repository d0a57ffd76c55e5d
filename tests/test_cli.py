"""The command line, run as a user runs it: a separate process."""
import os
import subprocess
import sys


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "dcn_ref", *args], capture_output=True, text=True,
                          timeout=600, env=env)


def test_gradcheck_prints_an_all_pass_table():
    result = run("gradcheck")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line for line in result.stdout.splitlines() if line.rstrip().endswith((" pass", " FAIL"))
            and not line.endswith("gradients pass")]
    ops_seen = {line.split()[0].split("[")[0] for line in rows}
    assert ops_seen == {"bilinear_sample", "offset_sample", "conv2d", "deform_conv2d",
                        "deform_roi_pool", "deform_psroi_pool"}
    assert all(line.rstrip().endswith("pass") for line in rows)
    assert len(rows) == 25
    assert "25 of 25 gradients pass" in result.stdout


def test_gradcheck_fails_with_status_1_when_the_tolerance_cannot_be_met():
    result = run("gradcheck", "--tol", "0")
    assert result.returncode == 1
    assert "FAIL" in result.stdout


def test_bad_arguments_exit_2_with_one_line():
    for args in [("gradcheck", "--target", "gpu"), (), ("nonsense",), ("gradcheck", "--tol", "x")]:
        result = run(*args)
        assert result.returncode == 2, args
        assert len(result.stderr.strip().splitlines()) == 1, (args, result.stderr)
        assert result.stdout == ""


def test_gradcheck_on_cuda_without_a_gpu_exits_2_with_the_reason():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["CUDA_VISIBLE_DEVICES"] = ""          # hide any GPU this machine may have
    result = run("gradcheck", "--target", "cuda", env=env)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "target: 'cuda' needs" in result.stderr
