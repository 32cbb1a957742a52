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


@pytest.fixture(scope="module")
def caviar_root(tmp_path_factory) -> Path:
    """A synthetic CAVIAR tree (8 two-camera ids, 1 one-camera id) for end-to-end CLI runs; a test module
    may define its own ``caviar_root`` of another shape."""
    from synthetic import make_caviar

    return make_caviar(tmp_path_factory.mktemp("data"), num_two_cam=8, num_one_cam=1)
