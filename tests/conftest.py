"""Shared pytest fixtures: real data root (optional) and synthetic dataset trees."""
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real datasets' root from ``JBIM_DATA_ROOT``; skips the test when it is unset or missing."""
    value = os.environ.get("JBIM_DATA_ROOT")
    if not value:
        pytest.skip("JBIM_DATA_ROOT is not set: integration tests need the real datasets")
    root = Path(value).resolve()
    if not root.is_dir():
        pytest.skip(f"JBIM_DATA_ROOT={value} is not a directory")
    return root
