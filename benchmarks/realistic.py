"""``dcn-ref bench --realistic`` as a script that imports NumPy and torch before dcn_ref.

    python benchmarks/realistic.py [--shapes abcd] [--rounds 5]
"""
import argparse
import sys
from pathlib import Path

import numpy as np  # noqa: F401  first, as in most scripts

try:
    import torch  # noqa: F401
    import torchvision  # noqa: F401
except ImportError:
    pass

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from dcn_ref.bench import realistic  # noqa: E402

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="abcd")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    realistic.run(list(args.shapes), rounds=args.rounds)
