"""One tiny flower data set and trained run per test process, shared by the search-product tests.

Built through the real entry points (`zscrgan data build`, `zscrgan train`) from the shared
flower photos, in a temporary folder removed at exit; about 15 s on 2 cores, once. So a test
that builds it, itself or through a fixture, carries ``@pytest.mark.slow`` explicitly.
"""
import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from conftest import shared_path

from zscrgan.cli import main as cli
from zscrgan.runfiles import run_dirs

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
UNSEEN = "canterbury_bells,daffodil,pink_primrose,sweet_pea,sword_lily"
# examples/flowers_tiny.json: small widths, few steps, enough for seen-class descriptions to find their
# photos; benchmarks/serve_load.py trains the same run
TRAIN = ["--config", str(EXAMPLES / "flowers_tiny.json")]
ORCHID = "A tropical orchid with pale yellow-green slipper-shaped pouch and mottled leaves."


@functools.lru_cache(maxsize=1)
def _build(photos: str) -> tuple[Path, Path]:
    root = Path(tempfile.mkdtemp(prefix="zscrgan-flowers-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    assert cli(["data", "build", "--images", photos, "--texts", str(EXAMPLES / "flower_descriptions.csv"), "--out", str(root / "flowers"),
                "--unseen", UNSEEN, "--device", "cpu"]) == 0
    assert cli(["train", "--dataset", str(root / "flowers"), "--out_dir", str(root), "--device", "cpu", *TRAIN]) == 0
    return root / "flowers", run_dirs(root, "flowers")[0]


def flower_run() -> tuple[Path, Path, Path]:
    """(photo folder, data set folder, run folder); skips without the shared photos."""
    photos = shared_path("data", "flower_photos")
    dataset, run = _build(str(photos))
    return photos, dataset, run


@functools.lru_cache(maxsize=1)
def flower_index() -> Path:
    """An index of all 60 shared flower photos with the tiny run (about 5 s, once)."""
    photos, _, run = flower_run()
    out = run.parent.parent / "flower_index"
    assert cli(["index", "--run", str(run), "--images", str(photos), "--out", str(out)]) == 0
    return out
