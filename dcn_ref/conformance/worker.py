"""Run the cases in a worker process, so that an implementation that crashes its process
(a segmentation fault at a NaN offset) costs one row, not the whole report.

The worker (``python -m dcn_ref.conformance.worker NAME [--nonfinite]``) loads the
implementation, answers with one JSON line (its description, or why it cannot be
loaded), then reads "INDEX DTYPE" lines and answers each with the case's row as one JSON
line. ``Isolated`` drives it from the parent and starts a new one after a crash.
"""
import json
import signal
import subprocess
import sys
import tempfile

import numpy as np


def _encode(row):
    return json.dumps({k: (str(v) if isinstance(v, float) and not np.isfinite(v) else v)
                       for k, v in row._asdict().items()})


def _decode(line):
    from . import Row
    data = json.loads(line)
    for key in ("forward_error", "gradient_error"):
        if isinstance(data[key], str):
            data[key] = float(data[key])
    return Row(**data)


class Isolated:
    """The implementation ``against``, run in a worker process; ``check(index, dtype)``
    -> the Row of case ``index`` of the catalogue, "crashed" if the worker died on it."""

    def __init__(self, against, nonfinite):
        self.command = [sys.executable, "-m", "dcn_ref.conformance.worker", against]
        self.command += ["--nonfinite"] if nonfinite else []
        self.against, self.nonfinite = against, nonfinite
        self.description = self._start()

    def _start(self):
        from .peers import PeerError
        self.stderr = tempfile.TemporaryFile("w+")
        self.process = subprocess.Popen(self.command, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self.stderr, text=True)
        first = self.process.stdout.readline()
        if not first:
            raise PeerError(f"{self.against}: the worker process ended before loading it "
                            f"({self._ending()})")
        answer = json.loads(first)
        if "error" in answer:
            self.close()
            raise PeerError(answer["error"])
        return answer["description"]

    def check(self, index, dtype):
        from . import Row
        from .cases import catalogue
        self.process.stdin.write(f"{index} {dtype}\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if line:
            return _decode(line)
        ending = self._ending()
        self.close()
        self.description = self._start()
        return Row(catalogue(self.nonfinite)[index].name, dtype, None, None, "crashed",
                   f"the implementation ended its process ({ending})")

    def _ending(self):
        code = self.process.wait()
        if code < 0:
            return f"killed by {signal.Signals(-code).name}"
        self.stderr.seek(0)
        last = [line for line in self.stderr.read().splitlines() if line.strip()][-1:]
        return f"exit status {code}" + (f": {last[0].strip()}" if last else "")

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait()
        self.stderr.close()


def main(argv=None):
    from . import check
    from .cases import catalogue
    from .peers import PeerError, peer
    argv = sys.argv[1:] if argv is None else argv
    nonfinite = "--nonfinite" in argv
    try:
        implementation = peer(argv[0])
    except PeerError as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
        return 0
    print(json.dumps({"description": implementation.description}), flush=True)
    cases = catalogue(nonfinite)
    for line in sys.stdin:
        index, dtype = line.split()
        print(_encode(check(implementation, cases[int(index)], np.dtype(dtype))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
