"""A run's life through the real entry points: its lock, its folder, a kill, Ctrl-C, resuming, errors."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import TINY, read_jsonl, small_set

from zscrgan.cli import main
from zscrgan.config import parse_config
from zscrgan.files import KILL_AFTER_TMP

SRC = str(Path(__file__).resolve().parents[1] / "src")


def default_sigint():
    """A shell that starts pytest in the background leaves SIGINT ignored, and Python then installs no
    KeyboardInterrupt handler: restore the default in the child so Ctrl-C reaches it as from a terminal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def zscrgan(*args, env=None, **kw):
    """`zscrgan ARGS` in a fresh process, unbuffered, stdout and stderr piped (not a terminal)."""
    env = {**os.environ, "PYTHONPATH": SRC, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "zscrgan.cli", *map(str, args)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=default_sigint, **kw)


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.slow  # a second process
def test_second_run_refused_while_the_first_holds_the_folder_and_ctrl_c_names_resume(tmp_path, capsys):
    """Two processes, one run name: the second refuses naming the first's PID. A named data set
    without --epochs says after round 1 what upstream's 5000 rounds cost. Ctrl-C names the resume
    command, which needs no flag retyped; its log holds no carriage-return frames."""
    small_set(tmp_path / "TOY")
    first = zscrgan("train", "--dataset", tmp_path / "TOY", "--out_dir", tmp_path, *TINY)
    lines = []
    for line in first.stdout:  # wait until the run is under way
        lines.append(line)
        if line.startswith("note: --epochs was not given"):
            break
    assert "5000 rounds run" in lines[-1] and "--epochs N" in lines[-1] and "--patience" in lines[-1]
    assert main(["train", "--dataset", str(tmp_path / "TOY"), "--out_dir", str(tmp_path), *TINY]) == 1
    assert f"another zscrgan run (PID {first.pid}) is writing this folder" in one_line(capsys)
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=60)
    run_dir = tmp_path / "ckt_logs" / "TOY_logs"
    assert first.returncode == 130
    assert err.strip().splitlines()[-1] == f"zscrgan train: interrupted; continue with: zscrgan train --resume {run_dir}"
    assert "\r" not in err and "\r" not in "".join(lines)
    done = len(read_jsonl(run_dir / "metrics.jsonl"))
    assert main(["train", "--resume", str(run_dir), "--epochs", str(done + 1)]) == 0
    history = read_jsonl(run_dir / "metrics.jsonl")
    assert [h["round"] for h in history] == list(range(1, done + 2))
    config = json.loads((run_dir / "config.json").read_text())
    assert config["gf_dim"] == 32 and config["dataset"] == str(tmp_path / "TOY")  # TINY came from the saved config


@pytest.mark.slow  # a second process
def test_a_kill_during_a_checkpoint_write_leaves_a_temporary_file_the_next_start_removes(tmp_path):
    killed = zscrgan("train", "--epochs", "2", "--out_dir", tmp_path, *TINY, env={KILL_AFTER_TMP: "last.pt"})
    killed.communicate(timeout=120)
    assert killed.returncode == -signal.SIGKILL
    run_dir = tmp_path / "ckt_logs" / "builtin_logs"
    assert len(list(run_dir.glob(".last.pt.*.tmp"))) == 1
    assert main(["train", "--resume", "builtin", "--out_dir", str(tmp_path)]) == 0  # a NAME under --out_dir
    assert not list(run_dir.glob(".*.tmp"))
    assert [h["round"] for h in read_jsonl(run_dir / "metrics.jsonl")] == [1, 2]


def test_a_rerun_is_refused_and_overwrite_clears_every_old_output(tmp_path, capsys):
    args = ["train", "--epochs", "1", *TINY, "--out_dir", str(tmp_path)]
    assert main(args) == 0
    run_dir, res_dir = tmp_path / "ckt_logs" / "builtin_logs", tmp_path / "retrieved_res" / "builtin_res"
    for stale in (res_dir / "acc0.999.pkl", run_dir / "prec_at_k.png", run_dir / "report.html"):
        stale.write_bytes(b"old")
    capsys.readouterr()
    assert main(args) == 1
    line = one_line(capsys)
    assert "holds an earlier run's outputs" in line and "--overwrite replaces it" in line
    assert main(args + ["--overwrite"]) == 0
    assert len(list(res_dir.glob("acc*.pkl"))) == 1 and not (res_dir / "acc0.999.pkl").exists()
    assert not (run_dir / "prec_at_k.png").exists() and not (run_dir / "report.html").exists()


def test_resume_lists_every_differing_flag_and_a_corrupt_last_pt_names_best_pt(tmp_path, capsys):
    assert main(["train", "--epochs", "1", *TINY, "--out_dir", str(tmp_path)]) == 0
    capsys.readouterr()
    changed = [a if a != "32" else "64" for a in TINY]
    assert main(["train", "--epochs", "2", *changed, "--out_dir", str(tmp_path), "--resume"]) == 1
    line = one_line(capsys)
    assert "--gf_dim 32, this run asks 64; --df_dim 32, this run asks 64" in line
    run_dir = tmp_path / "ckt_logs" / "builtin_logs"
    (run_dir / "last.pt").write_bytes(b"not a checkpoint")
    assert main(["train", "--resume", str(run_dir), "--epochs", "2"]) == 1
    line = one_line(capsys)
    assert "last.pt: not a readable zscrgan checkpoint" in line and "best.pt is a separate file" in line


def test_evaluate_from_another_folder_and_into_a_closed_pipe(tmp_path, monkeypatch):
    small_set(tmp_path / "datasets" / "TOY")
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--dataset", "TOY", "--epochs", "1", *TINY]) == 0  # a NAME under ./datasets
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    ckpt = tmp_path / "ckt_logs" / "TOY_logs" / "best.pt"
    piped = subprocess.run(f"{sys.executable} -m zscrgan.cli evaluate {ckpt} --device cpu | head -1", shell=True,
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": SRC}, timeout=120)
    assert piped.stdout == "{\n" and piped.stderr == ""


@pytest.mark.parametrize("argv, message", [
    (["train", "--out_dir", "/proc/zscrgan_out"], "/proc: cannot write here"),
    (["compare", "--out_dir", "/proc/zscrgan_out"], "/proc: cannot write here"),
    (["train", "--dataset", "README.md"], "README.md: is a file, not a data set folder"),
])
def test_unwritable_folders_and_a_file_as_data_set_fail_in_one_line_at_once(argv, message, capsys):
    start = time.perf_counter()
    assert main(argv + ["--epochs", "1", *TINY]) == 1
    assert message in one_line(capsys)
    assert time.perf_counter() - start < 5  # nothing was trained first


def test_argparse_errors_are_one_line_pointing_to_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--no_such_flag"])
    assert exit_info.value.code == 2
    assert one_line(capsys) == ("zscrgan train: error: unrecognized arguments: --no_such_flag "
                                "(zscrgan train --help for the rest)")


def test_seeds_prefix_their_lines(tmp_path, capsys):
    assert main(["train", "--epochs", "1", "--seeds", "0,1", *TINY, "--out_dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "[seed 0] round 1:" in out and "[seed 1] round 1:" in out


def test_readme_own_data_training_commands_parse_and_bound_their_rounds():
    """Each `zscrgan train` of README's own-data block is a valid command and gives --epochs (the
    default is upstream's 5000 rounds)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("## Bring your own data", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    trains = [line for line in block.splitlines() if line.startswith("zscrgan train")]
    assert trains
    for line in trains:
        argv = line.split("#")[0].split()[2:]
        assert "--epochs" in argv and parse_config(argv)[0].epochs > 0, line
