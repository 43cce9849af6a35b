"""Shared fixtures: the real data sets live in ../shared beside the checkout, never in the repo."""
import inspect
import os
import re
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


# Building the shared tiny flower run (tests/flowerkit.py: `data build` + `train` on the shared
# photos) takes 15 s or more, so a test that needs it, itself or through a fixture, is in the slow tier.
FLOWER_RUN_CALL = re.compile(r"(?<![\w.])(?<!def )(flower_run|flower_index|flowers)\(")


def _builds_flower_run(item) -> bool:
    functions = [getattr(item, "function", None)]
    info = getattr(item, "_fixtureinfo", None)  # absent on items that are not test functions (doctests)
    functions += [defs[-1].func for defs in info.name2fixturedefs.values()] if info else []
    for function in functions:
        try:
            source = inspect.getsource(function)
        except (TypeError, OSError):
            continue
        if FLOWER_RUN_CALL.search(source):
            return True
    return False


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _builds_flower_run(item):
            item.add_marker(pytest.mark.slow)
