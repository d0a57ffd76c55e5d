import os
import sys

# tests/helpers.py is imported as ``helpers`` from tests/ and tests/cuda/ alike
sys.path.insert(0, os.path.dirname(__file__))

from hypothesis import settings  # noqa: E402

import fuzz_profiles  # noqa: E402,F401  (registers "ci" and "long" before --hypothesis-profile is read)

settings.load_profile("ci")  # the default; --hypothesis-profile=long replaces it
