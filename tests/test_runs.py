"""zscrgan.runs: a run folder read back one way -- the names the trainer writes, the data-set lookup
order, a checkpoint opened as networks and the run's query embedder."""
import json

import pytest
import torch
from helpers import TINY, small_set

from zscrgan.cli import main
from zscrgan.config import Config
from zscrgan.core.embedding import embed_queries, eval_rng
from zscrgan.errors import DataError
from zscrgan.runfiles import ARGS_FILE, BEST_CHECKPOINT, CONFIG_FILE, LAST_CHECKPOINT, METRICS_FILE, SUMMARY_FILE, run_dirs, seeds_file
from zscrgan.runs import SavedRun, dataset_folder


def test_a_run_writes_the_files_this_module_names(tmp_path):
    assert main(["train", "--epochs", "1", "--device", "cpu", "--seeds", "0", *TINY, "--no-report",
                 "--out_dir", str(tmp_path)]) == 0
    logs, res = run_dirs(tmp_path, "builtin_seed0")
    assert sorted(p.name for p in logs.iterdir() if not p.name.startswith(".")) == sorted(
        [ARGS_FILE, BEST_CHECKPOINT, CONFIG_FILE, LAST_CHECKPOINT, METRICS_FILE, SUMMARY_FILE])
    assert [p.name for p in res.glob("acc*.pkl")] and seeds_file(tmp_path, "builtin").is_file()


def data_sets(tmp_path):
    """Two data set folders, the run folder and a config naming the second by NAME under its root."""
    first, second = tmp_path / "a" / "FIRST", tmp_path / "b" / "SECOND"
    first.mkdir(parents=True), second.mkdir(parents=True)
    run_dir = tmp_path / "ckt_logs" / "X_logs"
    run_dir.mkdir(parents=True)
    return first, second, run_dir, Config(dataset="SECOND", data_root=str(tmp_path / "b"))


def test_the_data_set_is_summary_json_s_folder_first_then_the_checkpoint_s(tmp_path):
    first, second, run_dir, cfg = data_sets(tmp_path)
    assert dataset_folder(run_dir, cfg) == second.resolve()  # no summary.json yet: the checkpoint's NAME
    (run_dir / SUMMARY_FILE).write_text(json.dumps({"data_dir": str(first)}))
    assert dataset_folder(run_dir, cfg) == first  # where the run read it wins over the config
    first.rmdir()
    assert dataset_folder(run_dir, cfg) == second.resolve()  # moved away: the config's again
    assert dataset_folder(run_dir, Config(dataset="")) is None  # the built-in demo data


def test_a_data_set_found_nowhere_is_one_line_naming_both_places(tmp_path):
    _, second, run_dir, cfg = data_sets(tmp_path)
    second.rmdir()
    with pytest.raises(DataError, match=rf"X_logs: its data set 'SECOND' is not found \(neither summary.json's "
                                        rf"data_dir nor {tmp_path / 'b'}/SECOND\)"):
        dataset_folder(run_dir, cfg)


def test_a_saved_run_embeds_as_its_round_scored_and_finds_its_data(tmp_path):
    source = small_set(tmp_path / "TOY")
    assert main(["train", "--dataset", str(source), "--epochs", "2", "--no-eval_mean", "--eval_samples", "2",
                 "--eval_centre", "--out_dir", str(tmp_path), *TINY, "--no-report"]) == 0
    logs, _ = run_dirs(tmp_path, "TOY")
    saved = SavedRun.open(logs / LAST_CHECKPOINT)
    assert saved.state["round"] == 2 and saved.dataset_folder() == source.resolve()
    data = saved.load_data()
    centre = saved.centre(data)
    texts = torch.from_numpy(data.stacked_texts(data.unseen)[0])
    by_hand = embed_queries(saved.model.eval(), texts, 2, False, eval_rng(saved.cfg.seed, 2, "cpu")) - centre
    assert torch.equal(saved.embedder(centre).embed_texts(texts), by_hand)
    with pytest.raises(DataError, match="nothing.pt: checkpoint not found"):
        SavedRun.open(logs / "nothing.pt")
