"""Parsers from dataclasses (flags.py): every field type, None defaults, choices, and every command's flags."""
from dataclasses import dataclass
from typing import Optional

import pytest

from zscrgan.config import Config, build_parser
from zscrgan.console import Parser
from zscrgan.experiments.evaluate import EvaluateArgs
from zscrgan.flags import add_dataclass_flags, flag, flag_type


@dataclass
class Every:
    path: str = flag("", "a positional argument", positional=True)
    count: int = flag(3, "an int")
    rate: float = flag(0.5, "a float")
    name: str = flag("x", "a str with choices", choices=("x", "y"))
    on: bool = flag(True, "a bool")
    maybe_rate: float | None = flag(None, "float | None")
    maybe_count: Optional[int] = flag(None, "Optional[int]")
    maybe_on: bool | None = flag(None, "bool | None: given or not")
    legacy: float = flag(None, "an annotation without None, default None (Config's recipe switches)")


def parse(argv):
    return vars(add_dataclass_flags(Parser(prog="t"), Every).parse_args(argv))


def test_defaults_and_types():
    assert parse(["p"]) == dict(path="p", count=3, rate=0.5, name="x", on=True, maybe_rate=None, maybe_count=None,
                                maybe_on=None, legacy=None)
    got = parse(["p", "--count", "7", "--rate", "1e-3", "--name", "y", "--no-on", "--maybe_rate", "0.25",
                 "--maybe_count", "2", "--maybe_on", "--legacy", "2"])
    assert got == dict(path="p", count=7, rate=0.001, name="y", on=False, maybe_rate=0.25, maybe_count=2,
                       maybe_on=True, legacy=2.0)
    assert type(got["count"]) is int and type(got["maybe_rate"]) is float
    assert parse(["p", "--no-maybe_on"])["maybe_on"] is False


@pytest.mark.parametrize("argv, message", [
    (["p", "--count", "x"], "argument --count: invalid int value: 'x' (t --help for the rest)"),
    (["p", "--maybe_rate", "fast"], "argument --maybe_rate: invalid float value: 'fast'"),
    (["p", "--name", "z"], "argument --name: invalid choice: 'z'"),
    ([], "the following arguments are required: path"),
])
def test_errors_stay_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1 and message in err


def test_flag_type_unwraps_optional_and_refuses_what_no_flag_can_hold():
    assert flag_type(float | None) is float and flag_type(Optional[str]) is str and flag_type(bool) is bool
    with pytest.raises(TypeError, match="no command-line flag"):
        flag_type(list[int])
    with pytest.raises(TypeError):
        flag_type(int | str)


def test_every_config_field_is_a_flag_with_its_default():
    parser = build_parser()
    assert vars(parser.parse_args([])) == vars(Config())
    assert parser.parse_args(["--resume", "RUN"]).resume == "RUN" and parser.parse_args(["--resume"]).resume is True
    assert parser.parse_args(["--generator_lr", "0.01"]).generator_lr == 0.01
    assert parser.parse_args(["--no-retain_memory"]).retain_memory is False


def test_evaluate_flags():
    parser = add_dataclass_flags(Parser(prog="zscrgan evaluate"), EvaluateArgs)
    args = vars(parser.parse_args(["best.pt", "--eval_samples", "4", "--no-eval_mean", "--device", "cpu"]))
    assert args == dict(checkpoint="best.pt", dataset=None, data_root=None, device="cpu", eval_k=None,
                        eval_samples=4, eval_mean=False)


def test_help_shows_defaults_but_never_none(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: None)" not in text  # a recipe or checkpoint fills those; the help says which
    assert "--gf_dim GF_DIM generator hidden width" in text and "(default: 2048)" in text


def test_version(capsys):
    from importlib.metadata import version

    from zscrgan import __version__
    from zscrgan.cli import main

    assert main(["--version"]) == 0 and capsys.readouterr().out == f"zscrgan {__version__}\n"
    assert version("zscrgan") == __version__  # pyproject.toml reads the one version string
