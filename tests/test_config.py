"""Every command and script that takes Config flags reads them one way (config.parse_config):
a --config file is honoured and check_config refuses a bad value in one line, in each of them."""
import json
import sys
from pathlib import Path

import pytest

from zscrgan.config import flags_given, parse_config
from zscrgan.experiments import compare, train, tune

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "scripts"), str(REPO / "benchmarks")]
import ablation  # noqa: E402
import speed  # noqa: E402
import warm_start  # noqa: E402


class Parsed(Exception):
    """Raised by the stand-in for the first step after parsing, carrying the Config the command built."""


# each entry point: its module, its main, and the function it first hands the parsed Config to
ENTRIES = {
    "zscrgan train": (train, "train_main", "prepare_process"),
    "zscrgan compare": (compare, "main", "prepare_process"),
    "zscrgan tune": (tune, "main", "check_validation"),
    "scripts/ablation.py": (ablation, "main", "prepare_process"),
    "scripts/warm_start.py": (warm_start, "main", "prepare_process"),
    "benchmarks/speed.py": (speed, "main", "prepare_process"),
}


def config_built(monkeypatch, entry: str, argv: list[str]):
    """The Config ``entry`` builds from ``argv``, caught at the first function it hands it to."""
    module, main, first = ENTRIES[entry]
    if module is tune:
        pytest.importorskip("optuna")  # the [tune] extra

    def stop(cfg, *args, **kwargs):
        raise Parsed(cfg)

    monkeypatch.setattr(module, first, stop)
    with pytest.raises(Parsed) as parsed:
        getattr(module, main)(argv)
    return parsed.value.args[0]


@pytest.mark.parametrize("entry", ENTRIES)
def test_each_command_and_script_reads_its_config_file_and_flags_win(tmp_path, monkeypatch, entry):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"z_dim": 7, "eval_k": "3,9", "gf_dim": 40}))
    cfg = config_built(monkeypatch, entry, ["--config", str(path), "--gf_dim", "48"])
    assert (cfg.z_dim, cfg.eval_k, cfg.gf_dim) == (7, "3,9", 48)


@pytest.mark.parametrize("entry", ENTRIES)
def test_each_command_and_script_refuses_a_bad_value_of_its_config_file_in_one_line(tmp_path, monkeypatch,
                                                                                  capsys, entry):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"val_fraction": 1.5}))
    with pytest.raises(SystemExit) as exit_info:
        config_built(monkeypatch, entry, ["--config", str(path)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines() == \
        [f"{entry}: error: --val_fraction must be in (0, 1), got 1.5 ({entry} --help for the rest)"]


def test_command_defaults_sit_below_the_config_file_and_the_own_flags_come_back_apart(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"seeds": "4,5"}))
    cfg, own = parse_config(["--config", str(path), "--color", "red"], "prog", defaults=dict(seeds="0", epochs=3),
                            extra=lambda parser: parser.add_argument("--color", default="blue"))
    assert (cfg.seeds, cfg.epochs, vars(own)) == ("4,5", 3, {"color": "red"})
    assert cfg.generator_lr is None and cfg.resolved().generator_lr == 0.0002  # as given: the recipe fills it


def test_flags_given_names_only_what_the_command_line_spells_out(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"z_dim": 7}))
    assert flags_given(["--config", str(path), "--gf_dim", "8", "--no-report", "--out", "x", "--trials", "3"]) == \
        {"config", "gf_dim", "report"}
