"""dcn-ref conformance and dcn_ref.conformance: the catalogue run against torchvision, ONNX
Runtime and OpenVINO, and against deformable convolutions written in
tests/conformance_kernels.py with one deliberate mistake each, which the report must catch
and name by the rule that reproduces them."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from dcn_ref.conformance import run
from dcn_ref.conformance.cases import catalogue

pytest.importorskip("torchvision")

TESTS = os.path.dirname(__file__)
SWAPPED = "coordinate order: (dx, dy) swapped"
CLAMPED = "clamped border: sample points clamped into the image"
HIGH_BAND = "border band: samples in (H-1, H) read on the last row"
LOW_BAND = "border band: samples in (-1, 0) dropped"
BOTH_BANDS = "border bands: samples in (-1, 0) dropped, in (H-1, H) read on the last row"
NAMES = [case.name for case in catalogue()]          # the cases run by default (not NaN, inf)


def dcn_ref_command(*args):
    """dcn-ref as the README runs it (the console script next to this Python), with
    tests/ importable for the MODULE:FUNCTION kernels."""
    script = os.path.join(os.path.dirname(sys.executable), "dcn-ref")
    command = [script] if os.path.exists(script) else [sys.executable, "-m", "dcn_ref"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [TESTS] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    return subprocess.run(command + list(args), capture_output=True, text=True, timeout=600,
                          env=env)


def by_status(report):
    rows = {}
    for row in report.rows:
        rows.setdefault(row.status, []).append(row)
    return rows


def test_torchvision_agrees_on_every_case_as_the_readme_runs_it():
    result = dcn_ref_command("conformance", "--against", "torchvision")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Conformance of torchvision")
    rows = [line for line in lines if line.split("  ")[0].strip() in NAMES]
    assert len(rows) == 2 * len(NAMES) == 30
    assert all(" agree" in line for line in rows)
    assert lines[-1] == "30 of 30 cases agree"


def test_a_kernel_reading_the_offsets_as_dx_dy_is_caught_and_named():
    report = run("conformance_kernels:swapped", isolate=False)
    rows = by_status(report)
    assert not report.ok
    # only where both coordinates are far outside does the order not matter
    assert {r.case for r in rows["agree"]} == {"far outside", "empty batch"}
    assert all(r.rule.startswith(SWAPPED + " (first at out[") for r in rows["DISAGREE"])


def test_a_kernel_clamping_its_points_into_the_image_is_caught_and_named():
    rows = by_status(run("conformance_kernels:clamped", isolate=False))
    assert {r.case for r in rows["agree"]} == {"empty batch"}
    named = {r.case: r.rule for r in rows["DISAGREE"]}
    # a point in (H-1, H) clamped is one read on the last row: that band's case cannot
    # tell the two rules apart, and names the narrower one
    for case in ("border band y in (H-1, H)", "border band x in (W-1, W)"):
        assert named.pop(case).startswith(HIGH_BAND)
    assert all(rule.startswith(CLAMPED) for rule in named.values()), named


def test_a_mistake_no_rule_describes_is_caught_and_not_named():
    rows = by_status(run("conformance_kernels:dilation_ignored", isolate=False))
    assert [(r.case, r.rule.split(" (")[0]) for r in rows["DISAGREE"]] == [
        ("dilation", "no known rule"), ("dilation", "no known rule")]
    assert len(rows["agree"]) == 28


def test_the_correct_kernel_agrees_everywhere_nonfinite_cases_included():
    report = run("conformance_kernels:correct", nonfinite=True, isolate=False)
    assert report.ok and len(report.rows) == 36
    assert all(r.gradient_error is None for r in report.rows)     # it has no autograd


def test_a_crash_costs_one_row_and_the_report_goes_on_json_and_exit_status_1():
    result = dcn_ref_command("conformance", "--against",
                             "conformance_kernels:crashes_on_nan_float64", "--nonfinite", "--json")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is False and len(report["rows"]) == 36
    crashed = [r for r in report["rows"] if r["status"] != "agree"]
    assert [(r["case"], r["dtype"], r["status"]) for r in crashed] == [
        ("NaN offset", "float64", "crashed")]
    assert "SIGSEGV" in crashed[0]["rule"]
    assert report["rows"][-1]["case"] == "NaN mask"                 # the cases after it ran


@pytest.mark.parametrize("args, message", [
    (["--against", "nonsense"], "expected torchvision, torchvision:cuda, onnxruntime"),
    (["--against", "no_such_module:f"], "cannot import no_such_module"),
    ([], "the following arguments are required: --against"),
])
def test_bad_arguments_exit_2_with_one_line(args, message):
    result = dcn_ref_command("conformance", *args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr


needs = {name: pytest.mark.skipif(importlib.util.find_spec(name) is None,
                                  reason=f"needs {name} (the export extra)")
         for name in ("onnxruntime", "openvino")}


@needs["onnxruntime"]
def test_onnxruntime_agrees_but_for_the_nan_mask_which_it_propagates():
    rows = by_status(run("onnxruntime", nonfinite=True))   # 1.25 crashed at a NaN offset
    assert [(r.case, r.rule.split(" (")[0]) for r in rows["DISAGREE"]] == [
        ("NaN mask", "NaN mask -> NaN")] * 2
    assert len(rows["agree"]) == 34          # NaN and inf offsets sample 0, as in dcn_ref


@needs["openvino"]
def test_openvino_agrees_with_the_pad_and_its_default_is_named():
    # run in worker processes (isolate=True): importing openvino here would change
    # Numba's threading layer for the rest of the test session
    imported_before = "openvino" in sys.modules   # by another test file of this worker
    rows = by_status(run("openvino"))
    assert ({(r.case, r.dtype) for r in rows["agree"]}
            == {(name, "float32") for name in NAMES} | {("empty batch", "float64")})
    assert all(r.dtype == "float64" and r.rule.startswith("float32 arithmetic on float64 inputs")
               for r in rows["DISAGREE"])

    named = {(r.case, r.dtype): r.rule for r in run("openvino:pad=false").rows}
    assert ("openvino" in sys.modules) == imported_before   # only the workers imported it
    for dtype in ("float32", "float64"):
        assert named["border band y in (-1, 0)", dtype].startswith(LOW_BAND)
        assert named["border band x in (-1, 0)", dtype].startswith(LOW_BAND)
        assert named["border band y in (H-1, H)", dtype].startswith(HIGH_BAND)
        assert named["border band x in (W-1, W)", dtype].startswith(HIGH_BAND)
        assert named["random offsets", dtype].startswith(BOTH_BANDS)
    assert ", in float32 arithmetic (first at" in named["random offsets", "float64"]
