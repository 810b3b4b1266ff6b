"""Shared test set-up: Hypothesis profiles.

`default` keeps a local run quick; `ci` (``pytest --hypothesis-profile=ci``, what CI and the
README run) explores more examples within the suite's time budget.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile("default", max_examples=60, deadline=None)
settings.register_profile(
    "ci",
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile("default")
