"""zscrgan tune on tiny synthetic data: parallel trial processes, pruning, resume, no unseen read, bad input."""
import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import asdict

import pytest

optuna = pytest.importorskip("optuna")  # the [tune] extra
from helpers import TINY, read_jsonl, small_set  # noqa: E402
from optuna.storages.journal import JournalFileBackend, JournalStorage  # noqa: E402

from zscrgan.cli import main  # noqa: E402
from zscrgan.config import Config  # noqa: E402
from zscrgan.experiments import tune  # noqa: E402
from zscrgan.experiments.tune_space import SPACE, read_space  # noqa: E402

# lrs kept low so that no tiny trial's loss goes non-finite (a failed trial would be a false alarm here)
SAFE_SPACE = "generator_lr: {type: float, low: 0.0001, high: 0.002, log: true}\n" \
             "discriminator_lr: {type: float, low: 0.0001, high: 0.002, log: true}\n"


def tune_args(data, out, *extra):
    return ["tune", "--dataset", str(data), "--out_dir", str(out), "--epochs", "2", "--select_k", "5", *TINY, *extra]


def summary(out: str) -> tuple[int, float, int]:
    """(trials, best value, best trial) from a tune's closing line."""
    found = re.search(r"study \S+: (\d+) trials .*; best val prec@5 ([\d.]+) \(trial (\d+)\)", out)
    assert found, out
    return int(found[1]), float(found[2]), int(found[3])


def load(study_dir, name):
    storage = JournalStorage(JournalFileBackend(str(study_dir / "journal.log")))
    return optuna.load_study(study_name=name, storage=storage)


@pytest.mark.slow
def test_two_processes_share_a_journal_and_never_read_unseen(tmp_path, capfd):
    data = small_set(tmp_path / "NANS", nan_unseen=True)  # reading an unseen image fails the run
    (tmp_path / "space.yaml").write_text(SAFE_SPACE)
    assert main(tune_args(data, tmp_path / "out", "--jobs", "2", "--trials", "6",
                          "--space", str(tmp_path / "space.yaml"))) == 0
    out = capfd.readouterr().out
    study_dir = tmp_path / "out" / "tune_NANS"
    trials = load(study_dir, "NANS").trials
    assert len(trials) == 6 and all(t.state.name in ("COMPLETE", "PRUNED") for t in trials), \
        [(t.state.name, t.user_attrs) for t in trials]
    pids = [t.user_attrs["pid"] for t in trials]
    assert sorted(pids.count(p) for p in set(pids)) == [3, 3]  # 2 processes x 3 trials
    for t in trials:
        assert f"trial {t.number}: val prec@5 " in out
        assert set(t.params) >= {"generator_lr", "CSEM_lr", "mmr_hinge"} and "gf_dim" not in t.params  # flags fix
        run_dir = study_dir / f"trial_{t.number:04d}" / "ckt_logs" / "NANS_logs"
        assert all("val" in h and "test" not in h for h in read_jsonl(run_dir / "metrics.jsonl"))
        if t.state.name == "COMPLETE":
            selected = set(json.loads((run_dir / "summary.json").read_text())["selected"])
            assert "val" in selected and not selected & {"test", "test_class", "test_prototype"}  # val_class: TOY has 2 texts a class
    assert not list(study_dir.rglob("acc*.pkl"))  # no retrieval lists: nothing scored on unseen classes
    for name in ("best_config.json", "study.html", "history.png", "importances.png"):
        assert (study_dir / name).is_file(), name
    assert "data:image/png;base64," in (study_dir / "study.html").read_text()


def test_a_trial_is_pruned_through_the_real_objective(tmp_path, capsys, monkeypatch):
    data = small_set(tmp_path / "TOY")
    # a real Optuna pruner that prunes every trial at its first report: Prec@K never exceeds 1
    monkeypatch.setattr(tune, "make_pruner", lambda name, epochs: optuna.pruners.ThresholdPruner(lower=1.1))
    assert main(tune_args(data, tmp_path, "--epochs", "3", "--trials", "1")) == 0
    assert "trial 0: val prec@5 " in capsys.readouterr().out
    (trial,) = load(tmp_path / "tune_TOY", "TOY").trials
    assert trial.state.name == "PRUNED" and list(trial.intermediate_values) == [1]
    history = read_jsonl(tmp_path / "tune_TOY" / "trial_0000" / "ckt_logs" / "TOY_logs" / "metrics.jsonl")
    assert [h["round"] for h in history] == [1]  # stopped after round 1 of 3


@pytest.mark.slow
def test_resume_fails_stale_trials_and_best_config_round_trips(tmp_path, capsys):
    data = small_set(tmp_path / "TOY")
    (tmp_path / "space.yaml").write_text(SAFE_SPACE)
    args = tune_args(data, tmp_path, "--space", str(tmp_path / "space.yaml"))
    assert main([*args, "--trials", "2"]) == 0
    study_dir = tmp_path / "tune_TOY"
    # a trial left RUNNING by a process killed with -9
    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan = load(study_dir, "TOY").ask()
    orphan.set_user_attr("pid", dead.pid)
    orphan.set_user_attr("host", socket.gethostname())
    assert main([*args, "--trials", "1"]) == 0
    assert "trials [2] were left running by a process that is gone; marked failed" in capsys.readouterr().out
    trials = load(study_dir, "TOY").trials
    assert [t.state.name for t in trials][2] == "FAIL" and len(trials) == 4
    assert all(t.state.name in ("COMPLETE", "PRUNED") for i, t in enumerate(trials) if i != 2)

    # other base settings are another study
    assert main([*args, "--trials", "1", "--epochs", "3"]) == 1
    assert "study TOY: made with --epochs 2, this call asks 3" in capsys.readouterr().err
    assert len(load(study_dir, "TOY").trials) == 4

    # best_config.json -> zscrgan train --config reproduces the best trial's settings; a flag overrides the file
    best = load(study_dir, "TOY").best_trial
    assert main(["train", "--config", str(study_dir / "best_config.json"), "--out_dir", str(tmp_path / "again"),
                 "--clip_val", "0.5", "--no-report"]) == 0
    trial_cfg = json.loads((study_dir / f"trial_{best.number:04d}" / "ckt_logs" / "TOY_logs" / "config.json")
                           .read_text())
    again = json.loads((tmp_path / "again" / "ckt_logs" / "TOY_logs" / "config.json").read_text())
    assert again["clip_val"] == 0.5 and again["select"] == "val"
    for key in set(trial_cfg) - {"out_dir", "config", "clip_val"}:  # report: --no-report as in the trial
        assert again[key] == trial_cfg[key], key
    assert all(again[k] == v for k, v in best.params.items() if k != "clip_val")


@pytest.mark.parametrize("extra, space, message", [
    (["--val_fraction", "0.99"], None, "tune needs validation classes: "),
    (["--select_k", "50"], None, "--select_k 50 is larger than every validation class's gallery (at most 12"),
    pytest.param(["--storage", "postgresql://nobody@127.0.0.1:1/x"], None,
                 "--storage postgresql://nobody@127.0.0.1:1/x: cannot open (OperationalError: ",
                 marks=pytest.mark.skipif(importlib.util.find_spec("psycopg") is None,
                                          reason="a refused connection needs the driver: pip install 'zscrgan[postgres]'")),
    (["--storage", "postgresql://a:b@c:d"], None, "--storage postgresql://a:***@c:d: cannot open"),
    ([], '{"learning_rate": {"type": "float", "low": 0.1, "high": 1}}',
     "space.json: unknown parameter 'learning_rate'"),
    ([], '{"CSEM_lr": {"type": "float", "low": 0.01, "high": 0.001}}', "space.json: CSEM_lr: empty range (low 0.01"),
    ([], '{"z_dim": {"type": "categorical", "choices": []}}', "space.json: z_dim: empty choices"),
    ([], '{"optimizer": {"type": "categorical", "choices": ["adam"]}}', "space.json: optimizer: --optimizer must be"),
    ([], '{"CSEM_lr": {"type": "float", "low": 0.1', "space.json: not valid JSON"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, extra, space, message):
    data = small_set(tmp_path / "data" / "TOY")
    if space is not None:
        (tmp_path / "space.json").write_text(space)
        extra = [*extra, "--space", str(tmp_path / "space.json")]
    assert main(tune_args(data, tmp_path / "out", *extra)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag", ["--trials", "--jobs"])
def test_trials_and_jobs_below_one_are_refused_by_the_parser(tmp_path, capsys, flag):
    with pytest.raises(SystemExit) as exit_info:
        main(tune_args(tmp_path / "TOY", tmp_path / "out", flag, "0"))
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines() == \
        [f"zscrgan tune: error: argument {flag}: must be at least 1, got 0 (zscrgan tune --help for the rest)"]


def test_space_file_yaml_replaces_and_removes_entries(tmp_path):
    (tmp_path / "s.yaml").write_text("gf_dim: {type: categorical, choices: [64, 128]}\nclip_val: null\n")
    base = {**asdict(Config()), "select": "val"}
    space = read_space(str(tmp_path / "s.yaml"), base)
    assert space["gf_dim"]["choices"] == [64, 128] and "clip_val" not in space
    assert space["generator_lr"] == SPACE["generator_lr"]


def test_an_interrupted_study_still_writes_its_best_config_and_page(tmp_path, monkeypatch):
    data = small_set(tmp_path / "TOY")
    real_run_jobs = tune.run_jobs

    def one_trial_then_ctrl_c(job, trials, jobs):
        real_run_jobs(job, 1, 1)
        raise KeyboardInterrupt

    monkeypatch.setattr(tune, "run_jobs", one_trial_then_ctrl_c)
    assert main(tune_args(data, tmp_path, "--trials", "5", "--pruner", "none")) == 130
    study_dir = tmp_path / "tune_TOY"
    assert (study_dir / "study.html").is_file() and (study_dir / "history.png").is_file()
    assert json.loads((study_dir / "best_config.json").read_text())["select"] == "val"


def test_tune_without_optuna_says_which_extra_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "optuna", None)  # what an install without the tune extra looks like
    assert main(["tune", "--trials", "1"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == ["zscrgan tune: error: tuning needs optuna: pip install 'zscrgan[tune]'"]


@pytest.mark.parametrize("url, hidden, message", [
    ("postgresql://optuna:pw@db/tune", "psycopg",  # SQLAlchemy 2.1 reads a plain postgresql:// with psycopg 3
     "--storage postgresql://optuna:***@db/tune: the postgresql driver needs psycopg: pip install 'zscrgan[postgres]'"),
    ("postgresql+psycopg2://o@db/t", "psycopg2",
     "--storage postgresql+psycopg2://o@db/t: the postgresql+psycopg2 driver needs psycopg2: pip install psycopg2-binary"),
    ("mysql+pymysql://o@db/t", "pymysql", "--storage mysql+pymysql://o@db/t: the mysql+pymysql driver needs pymysql: "
     "pip install PyMySQL"),
])
def test_a_missing_database_driver_names_what_installs_it(tmp_path, monkeypatch, capsys, url, hidden, message):
    monkeypatch.setitem(sys.modules, hidden, None)  # as on a machine without the driver
    data = small_set(tmp_path / "data" / "TOY")
    assert main(tune_args(data, tmp_path / "out", "--storage", url)) == 1
    assert capsys.readouterr().err.strip().splitlines() == [f"zscrgan tune: error: {message}"]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_two_workers_share_one_study_on_a_real_postgresql(tmp_path, servers):
    """docs/scale.md's several-machine tuning: two `zscrgan tune` processes, one --storage postgresql://."""
    from servers import start_postgres

    url = start_postgres(servers)  # skips without PostgreSQL's server programs or psycopg
    data = small_set(tmp_path / "TOY")
    (tmp_path / "space.yaml").write_text(SAFE_SPACE)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = [servers.start([sys.executable, "-m", "zscrgan.cli", *tune_args(
        data, tmp_path / f"machine{i}", "--trials", "3", "--study", "shared", "--storage", url,
        "--space", str(tmp_path / "space.yaml"))], f"worker{i}.log", env=env) for i in range(2)]
    ended, deadline = [], time.monotonic() + 300
    while len(ended) < 2 and time.monotonic() < deadline:
        ended += [i for i, w in enumerate(workers) if w.poll() is not None and i not in ended]
        time.sleep(0.2)
    logs = [servers.log(f"worker{i}.log") for i in range(2)]
    assert [w.returncode for w in workers] == [0, 0], logs

    study = optuna.load_study(study_name="shared", storage=url)
    assert sorted(t.number for t in study.trials) == list(range(6))  # one numbering: one study
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials), [t.state for t in study.trials]
    for i, worker in enumerate(workers):
        mine = sorted(t.number for t in study.trials if t.user_attrs["pid"] == worker.pid)
        assert len(mine) == 3, (i, mine)
        runs = sorted(int(p.name[len("trial_"):]) for p in (tmp_path / f"machine{i}" / "tune_shared").glob("trial_*"))
        assert runs == mine  # each machine keeps its own trials' runs
    last, first = summary(logs[ended[1]]), summary(logs[ended[0]])
    assert last == (6, round(study.best_value, 4), study.best_trial.number)  # the last to end saw every trial
    assert 3 <= first[0] <= 6 and first[1] <= last[1]  # the first saw its own and those the other had finished
    best = json.loads((tmp_path / f"machine{ended[1]}" / "tune_shared" / "best_config.json").read_text())
    assert all(best[k] == v for k, v in study.best_params.items())
