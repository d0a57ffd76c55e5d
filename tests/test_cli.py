"""The command line, run as a user runs it: a separate process."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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
                        "deform_roi_pool", "deform_psroi_pool", "dcnv3", "dcnv4"}
    assert all(line.rstrip().endswith("pass") for line in rows)
    inputs = {tuple(line.split()[:2]) for line in rows}
    assert {("dcnv3", "input"), ("dcnv3", "offset"), ("dcnv3", "mask"), ("dcnv4", "input"),
            ("dcnv4", "offset_mask")} <= inputs
    assert len(rows) == 33
    assert "33 of 33 gradients pass" in result.stdout


def test_gradcheck_prints_the_header_and_each_row_while_it_runs():
    proc = subprocess.Popen([sys.executable, "-m", "dcn_ref", "gradcheck"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(3)]   # title, header, first row
        assert proc.poll() is None, "the table came out only at the end"
    finally:
        proc.kill()
        proc.wait()
    assert lines[1].split()[:2] == ["op", "input"]
    assert lines[2].split()[:2] == ["bilinear_sample[zeros]", "image"]


def test_gradcheck_fails_with_status_1_when_the_tolerance_cannot_be_met():
    result = run("gradcheck", "--tol", "1e-300")
    assert result.returncode == 1
    assert "FAIL" in result.stdout


def test_gradcheck_refuses_a_tolerance_that_is_not_a_positive_number():
    for tol in ["nan", "inf", "-1e-6", "0"]:
        result = run("gradcheck", f"--tol={tol}")
        assert result.returncode == 2, tol
        assert result.stdout == ""
        assert result.stderr.strip().splitlines() == [
            f"dcn-ref gradcheck: --tol: expected a positive finite number, got {float(tol)!r}"]


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


def dcn_ref_script(*args):
    """``dcn-ref ...`` as the README gives it: the console script beside this Python."""
    script = Path(sys.executable).with_name("dcn-ref")
    assert script.exists(), f"no console script at {script}: pip install -e . installs it"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return subprocess.run([str(script), *args], capture_output=True, text=True, timeout=120,
                          env=env)


def test_help_is_plain_text():
    """argparse prints help as it is: Markdown or reST markup would show raw."""
    for command in [(), ("gradcheck",), ("experiment",), ("download-mnist",), ("bench",),
                    ("conformance",)]:
        result = dcn_ref_script(*command, "--help")
        assert result.returncode == 0, (command, result.stderr)
        assert result.stdout.startswith("usage: dcn-ref")
        assert "`" not in result.stdout and "**" not in result.stdout, result.stdout


def test_bench_help_says_what_the_shapes_are():
    from dcn_ref.bench.shapes import SHAPES
    result = dcn_ref_script("bench", "--help")
    for name, shape in SHAPES.items():
        assert f"({name}) {shape.describe()}" in result.stdout, result.stdout
    assert "k3: 3x3 kernel" in result.stdout
