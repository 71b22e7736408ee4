"""Shared, generic test fixtures. Keep it small: area-specific fixtures live next to their tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# ``from tests.helpers...`` must work whatever the pytest import mode or working directory.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SHARED_DATA = REPO / ".." / "shared" / "data"


@pytest.fixture
def tiny_bundle(tmp_path: Path) -> Path:
    """A small valid bundle (one behavior ``buy``, no groups) from tests.helpers.bundles."""
    from tests.helpers.bundles import write_tiny_bundle

    return write_tiny_bundle(tmp_path / "bundle")


@pytest.fixture
def shared_data() -> Path:
    """``<repo>/../shared/data``; skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data sets not found at {SHARED_DATA.resolve()}")
    return SHARED_DATA
