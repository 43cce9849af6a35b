"""Shared fixtures: the real data sets live in ../shared beside the checkout, never in the repo."""
import os
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("ZSCRGAN_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def shared_path(*parts: str) -> Path:
    """A path under ../shared; skips the test when absent, fails it when CI is set."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        message = f"{path} is absent"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI must have ../shared)")
        pytest.skip(message)
    return path


@pytest.fixture
def flo_dir() -> Path:
    return shared_path("data", "FLO")


@pytest.fixture
def flower_photos_dir() -> Path:
    return shared_path("data", "flower_photos")


@pytest.fixture
def servers():
    """Real server processes for one test (tests/servers.py): stopped, and checked gone, after it."""
    from servers import Servers

    started = Servers()
    yield started
    started.stop()
