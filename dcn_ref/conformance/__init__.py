"""Check another implementation of deform_conv2d against the reference: ``dcn-ref
conformance --against NAME`` and, in Python,

    from dcn_ref.conformance import run
    report = run("torchvision")        # or "onnxruntime", "openvino", "my.module:my_function"
    print(report.table())
    report.ok                          # every case agrees within tolerance

Each case of the catalogue (``dcn_ref.conformance.cases``) runs in float32 and float64;
the reference is dcn_ref's deform_conv2d in float64 on the same numbers. Where the
implementation departs, the rules of ``dcn_ref.conformance.rules`` are evaluated to name
the one that reproduces its numbers.
"""
from typing import NamedTuple

import numpy as np

from . import cases as _cases
from . import worker as _worker
from .peers import PeerError, peer

#: The largest error that agrees, relative to the largest |value| of the reference (at least 1).
TOLERANCE = {"float32": 1e-5, "float64": 1e-10}


class Row(NamedTuple):
    """One case in one dtype. ``status``: "agree", "DISAGREE", "error" (the implementation
    raised) or "crashed" (it ended its process). ``rule`` names what explains a
    disagreement (or gives the error)."""
    case: str
    dtype: str
    forward_error: object       # float, or None where not computed
    gradient_error: object      # float, or None where the implementation has no gradients
    status: str
    rule: str


class Report(NamedTuple):
    against: str
    description: str
    rows: list

    @property
    def ok(self):
        """Whether every case agrees within tolerance."""
        return all(r.status == "agree" for r in self.rows)

    def table(self):
        """The report as a text table, one row per case and dtype."""
        tol = ", ".join(f"{k} {v:g}" for k, v in TOLERANCE.items())
        lines = [f"Conformance of {self.description} with dcn_ref's deform_conv2d",
                 f"(max error relative to the reference's largest |value|; agree within {tol})",
                 f"{'case':<38} {'dtype':<8} {'forward':>9} {'gradients':>9}  {'result':<8} rule"]
        for r in self.rows:
            lines.append(f"{r.case:<38} {r.dtype:<8} {_number(r.forward_error):>9} "
                         f"{_number(r.gradient_error):>9}  {r.status:<8} {r.rule}".rstrip())
        agree = sum(r.status == "agree" for r in self.rows)
        lines.append(f"{agree} of {len(self.rows)} cases agree")
        return "\n".join(lines)

    def to_json(self):
        """The report as JSON-ready data (errors as numbers, None as null, inf as "inf")."""
        def value(v):
            return None if v is None else (v if np.isfinite(v) else str(v))
        return {"against": self.against, "description": self.description, "ok": self.ok,
                "tolerance": TOLERANCE,
                "rows": [dict(r._asdict(), forward_error=value(r.forward_error),
                              gradient_error=value(r.gradient_error)) for r in self.rows]}


def _number(value):
    return "-" if value is None else f"{value:.1e}"


def run(against, nonfinite=False, progress=None, isolate=True):
    """Run the catalogue against an implementation.

    Parameters
    ----------
    against : str
        ``torchvision``, ``torchvision:cuda``, ``onnxruntime``, ``openvino``,
        ``openvino:pad=false`` or ``MODULE:FUNCTION`` (torchvision's signature, torch
        tensors in and out).
    nonfinite : bool, default False
        Add the cases with NaN and inf offsets and NaN masks, whose rules differ between
        libraries on purpose.
    progress : callable or None, default None
        Called with each ``Row`` as soon as it is done.
    isolate : bool, default True
        Run the cases in a worker process, so that an implementation that crashes (a
        kernel reading out of bounds at a NaN offset) gives a "crashed" row instead of
        ending this process; the worker is started again for the next case. False runs
        them here (faster, for implementations known to survive every case).

    Returns
    -------
    Report

    Raises
    ------
    PeerError
        When the implementation cannot be loaded.
    """
    implementation = _worker.Isolated(against, nonfinite) if isolate else peer(against)
    rows = []
    try:
        for index, case in enumerate(_cases.catalogue(nonfinite)):
            for dtype in ("float32", "float64"):
                if isolate:
                    row = implementation.check(index, dtype)
                else:
                    row = check(implementation, case, np.dtype(dtype))
                rows.append(row)
                if progress is not None:
                    progress(row)
    finally:
        if isolate:
            implementation.close()
    return Report(against, implementation.description, rows)


def check(implementation, case, dtype):
    """One case in one dtype against a loaded implementation (a ``Peer``): a ``Row``."""
    from . import rules as _rules            # imports the ops (Numba): only when cases run
    a = _cases.arrays(case, dtype)
    exact = a._replace(**{f: None if v is None else v.astype(np.float64)
                          for f, v in a._asdict().items() if isinstance(v, np.ndarray)})
    tol, loose = TOLERANCE[dtype.name], TOLERANCE["float32"]
    expected = _rules.reference(exact)
    try:
        got = implementation.forward(a)
    except Exception as exc:
        return Row(case.name, dtype.name, None, None, "error", _message(exc))
    forward_error = _rules.max_error(got, expected)
    if np.shape(got) != expected.shape:
        return Row(case.name, dtype.name, None, None, "DISAGREE",
                   f"output shape {tuple(np.shape(got))}, expected {expected.shape}")
    grad_output = np.random.default_rng(0).normal(size=expected.shape).astype(dtype)
    try:
        got_grads = implementation.gradients(a, grad_output)
    except Exception as exc:
        return Row(case.name, dtype.name, forward_error, None, "error",
                   f"gradients: {_message(exc)}")
    gradient_error, expected_grads = None, None
    if got_grads is not None:
        expected_grads = _rules.reference_grads(exact, grad_output.astype(np.float64))
        gradient_error = max((_rules.max_error(g, e) for g, e in zip(got_grads, expected_grads)),
                             default=0.0)
    if forward_error <= tol and (gradient_error is None or gradient_error <= tol):
        return Row(case.name, dtype.name, forward_error, gradient_error, "agree", "")
    if forward_error > tol:
        found = _rules.explain(_rules.FORWARD_RULES, (case, exact), (got,), (expected,), tol,
                               loose)
        names = ("out",)
    else:
        found = _rules.explain(_rules.GRADIENT_RULES, (case, exact, grad_output.astype(np.float64)),
                               got_grads, expected_grads, tol, loose)
        names = tuple(f"grad {f}" for f in ("input", "offset", "weight", "bias", "mask")
                      if f in ("input", "offset", "weight") or getattr(a, f) is not None)
    return Row(case.name, dtype.name, forward_error, gradient_error, "DISAGREE",
               _describe(found, names))


def _describe(found, names):
    which, *index = found.where
    at = (f"{names[which]}[{', '.join(map(str, index))}]: {found.got:.8g}, "
          f"expected {found.expected:.8g}")
    if found.rule is None:
        return f"no known rule (first at {at})"
    if found.whole:
        return f"{found.rule} (first at {at})"
    return f"{found.rule} at the first difference ({at}); no rule explains every number"


def _message(exc):
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:160]}"


__all__ = ["run", "Report", "Row", "TOLERANCE", "PeerError"]
