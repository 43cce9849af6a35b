"""The research scripts run end to end on a small data set (their real entry points, tiny budgets)."""
import json
import sys
from pathlib import Path

from helpers import TINY, small_set

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import warm_start  # noqa: E402


def test_warm_start_scores_every_round_and_never_reads_unseen_classes(tmp_path):
    """With the generator's rate at 1e-12 (frozen at its ridge start) its image-space figures stay
    put round after round while the CSEM trains; unseen images are NaN, so reading them would fail."""
    small_set(tmp_path / "TOY", nan_unseen=True)
    out = tmp_path / "out"
    assert warm_start.main(["--dataset", str(tmp_path / "TOY"), "--recipe", "tuned", *TINY, "--epochs", "2",
                            "--seeds", "0,1", "--generator_lr", "1e-12",
                            "--out_dir", str(out)]) == 0
    runs = json.loads((out / "warm_start.json").read_text())
    assert [r["seed"] for r in runs] == [0, 1]
    for r in runs:
        assert all(len(r[view]) == 3 and all(0 <= v <= 1 for v in r[view]) for view in warm_start.VIEWS)
        assert len(set(r["generator in image space"])) == 1 and len(set(r["generator in image space, training classes"])) == 1
        assert 0 < r["ridge"] <= 1
    assert (out / "warm_start.png").stat().st_size > 0
    assert "| common space |" in (out / "warm_start.md").read_text()
