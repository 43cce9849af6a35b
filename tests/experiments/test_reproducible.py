"""A seeded run gives the same figures every time on one machine and thread count (docs/results.md,
"Reproducibility")."""
import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import small_set

LIBTORCH = Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"


def mkl_reports_dynamic() -> bool:
    try:
        ctypes.CDLL(str(LIBTORCH)).mkl_serv_get_dynamic
    except (OSError, AttributeError):
        return False
    return True


def fresh_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("MKL_DYNAMIC", "OMP_DYNAMIC")}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[2] / "src"), env.get("PYTHONPATH", "")])
    return env | extra


@pytest.mark.skipif(not mkl_reports_dynamic(), reason="a torch without MKL (or one that hides its symbols)")
def test_a_training_process_turns_off_mkls_run_time_thread_choice():
    code = ("import ctypes, torch; from zscrgan.config import Config; from zscrgan.experiments.run import "
            f"prepare_process; dynamic = ctypes.CDLL({str(LIBTORCH)!r}).mkl_serv_get_dynamic; before = dynamic(); "
            "threads = torch.get_num_threads(); prepare_process(Config(retain_memory=False)); "
            "print(before, dynamic(), threads == torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=fresh_env(), check=True)
    assert out.stdout.split() == ["1", "0", "True"]  # on by default (torch leaves it), off after, the count kept


def figures_of(run_dir: Path) -> list[str]:
    """metrics.jsonl with each round's timings dropped: every figure and loss, as written."""
    rows = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        record.pop("seconds"), record.pop("eval_seconds")
        rows.append(json.dumps(record))
    return rows


@pytest.mark.slow
def test_the_same_seeded_compare_in_fresh_processes_writes_the_same_figures(tmp_path):
    source = small_set(tmp_path / "small")
    outs = []
    for attempt, hash_seed in enumerate(("0", "1")):  # fresh processes, set iteration orders differing too
        out = tmp_path / f"run{attempt}"
        subprocess.run([sys.executable, "-m", "zscrgan.cli", "compare", "--dataset", str(source), "--methods", "ridge,tuned",
                        "--seeds", "0", "--epochs", "2", "--gf_dim", "64", "--df_dim", "64", "--embed_dim", "32",
                        "--z_dim", "16", "--e_steps", "20", "--m_steps", "20", "--select_k", "5", "--out_dir", str(out)],
                       check=True, capture_output=True, env=fresh_env(PYTHONHASHSEED=hash_seed, OMP_NUM_THREADS="2"))
        outs.append(out)
    runs = [o / "ckt_logs" / "small_tuned_seed0_logs" for o in outs]
    assert len(figures_of(runs[0])) == 2 and figures_of(runs[0]) == figures_of(runs[1])
    pickles = [sorted((o / "retrieved_res" / "small_tuned_seed0_res").glob("*.pkl")) for o in outs]
    assert [p.name for p in pickles[0]] == [p.name for p in pickles[1]]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(*pickles))
    tables = [(o / "compare_small.md").read_text().split("| train s |")[1] for o in outs]
    strip = [[row.rsplit("|", 2)[0] for row in t.splitlines()] for t in tables]  # all but the seconds column
    assert strip[0] == strip[1]
