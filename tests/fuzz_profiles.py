"""Hypothesis profiles of the fuzz suite (tests/fuzz/).

ci    the default: a fixed number of examples per property, derandomized and without an
      example database, so that every run tries the same cases (well within 90 s for the whole
      suite on 2 cores, JIT compilation included).
long  for a release: thousands of random examples per property, remembered in the
      example database; ``python -m pytest tests/fuzz --hypothesis-profile=long``.
"""
from hypothesis import HealthCheck, settings

CI_EXAMPLES = 50
LONG_EXAMPLES = 2000

_quiet = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
          HealthCheck.large_base_example]

settings.register_profile("ci", max_examples=CI_EXAMPLES, derandomize=True, database=None,
                          deadline=None, suppress_health_check=_quiet, print_blob=True)
settings.register_profile("long", max_examples=LONG_EXAMPLES, deadline=None,
                          suppress_health_check=_quiet, print_blob=True)
