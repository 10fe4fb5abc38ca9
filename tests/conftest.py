"""Shared test configuration.

Hypothesis profiles: ``ci`` (used by ``make test``; CI=true selects it too) runs the example counts the
issues ask for; ``dev`` is a quicker loop; ``fuzz`` is the long documented run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile(
    "fuzz", max_examples=200_000, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLES_DIR = Path(
    os.environ.get("TICKGATE_SAMPLES_DIR", REPO_ROOT.parent / "shared" / "data" / "dhan-samples")
)


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    """Real Dhan scrip-master extracts (read-only, beside the repository)."""
    if not SAMPLES_DIR.is_dir():
        pytest.fail(f"real Dhan samples not found at {SAMPLES_DIR} (set TICKGATE_SAMPLES_DIR)")
    return SAMPLES_DIR
