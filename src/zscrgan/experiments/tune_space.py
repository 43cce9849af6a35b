"""`zscrgan tune`'s search space: the default ranges, a --space file's edits, and the checks on them.

A range is plain data, ``{"type": "float"|"int"|"categorical", ...}`` as Optuna's distributions
take it, so a YAML or JSON file can replace any entry (null removes it).
"""
from __future__ import annotations

import json
import typing
from pathlib import Path

from zscrgan.config import RUN_CONTROL, Config, check_config, choice_problems
from zscrgan.errors import DataError, require
from zscrgan.flags import flag_type
from zscrgan.recipes import RECIPES

# The default search space: flag name -> Optuna distribution, as plain data (--space FILE edits it).
SPACE = {
    "generator_lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
    "discriminator_lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
    "CSEM_lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
    "gf_dim": {"type": "categorical", "choices": [256, 512, 1024, 2048]},
    "df_dim": {"type": "categorical", "choices": [256, 512, 1024]},
    "embed_dim": {"type": "categorical", "choices": [128, 256, 512, 1024]},
    "z_dim": {"type": "categorical", "choices": [32, 64, 128, 256]},
    "kl_div_coefficient": {"type": "float", "low": 0.01, "high": 10.0, "log": True},
    "mm_reg_coeff": {"type": "float", "low": 0.1, "high": 10.0, "log": True},
    "n_critic": {"type": "int", "low": 1, "high": 10},
    "m_steps": {"type": "int", "low": 25, "high": 400, "log": True},
    "clip_val": {"type": "float", "low": 0.001, "high": 0.1, "log": True},
    "mmr_margin": {"type": "float", "low": 0.5, "high": 8.0, "log": True},
    # every on/off switch of the recipes (mmr_hinge, csem_per_row, kl_standard, all_texts, eval_mean, ...)
    **{switch: {"type": "categorical", "choices": [False, True]}
       for switch, value in RECIPES["original"].items() if isinstance(value, bool)},
    "optimizer": {"type": "categorical", "choices": ["tf1", "torch"]},
}
# Free to change when a study resumes (tune.open_study): how to run, and whether trials score the
# unseen classes too (they never do: tune turns --track_test off).
STUDY_FREE = RUN_CONTROL | {"track_test"}
# Flags that are not hyperparameters: those, and what the study is about (data, split, selection); never searched.
NOT_TUNABLE = STUDY_FREE | {"dataset", "seed", "seeds", "select", "val_fraction", "select_k", "patience", "eval_k",
                            "recipe"}
SPEC_KEYS = {"float": {"type", "low", "high", "log", "step"}, "int": {"type", "low", "high", "log", "step"},
             "categorical": {"type", "choices"}}

def read_space(path: str, base: dict) -> dict:
    """SPACE with FILE's entries replacing its own (null removes one); every entry checked."""
    space = dict(SPACE)
    if path:
        file = Path(path)
        if not file.is_file():
            raise DataError(f"{path}: space file not found")
        if file.suffix not in (".json", ".yaml", ".yml"):
            raise DataError(f"{path}: a space file is .json, .yaml or .yml")
        load = json.loads if file.suffix == ".json" else require("yaml", "tune", "a YAML --space file").safe_load
        try:
            values = load(file.read_text())
        except Exception as exc:  # json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError
            raise DataError(f"{path}: not valid {file.suffix[1:].upper()} ({str(exc).splitlines()[0]})") from None
        if not isinstance(values, dict):
            raise DataError(f"{path}: expected a mapping of flag name -> range")
        for name, spec in values.items():
            check_spec(path, name, spec, base)
            if spec is None:
                space.pop(name, None)
            else:
                space[name] = spec
    return space


FLAG_TYPES = {name: flag_type(hint) for name, hint in typing.get_type_hints(Config).items()}  # -> int/float/str/bool


def check_spec(path: str, name: str, spec, base: dict) -> None:
    """One line naming FILE and the parameter for an unknown name, a bad kind or an empty range."""
    if name not in FLAG_TYPES or name in NOT_TUNABLE:
        known = sorted(set(FLAG_TYPES) - NOT_TUNABLE)
        raise DataError(f"{path}: unknown parameter {name!r} (tunable: {', '.join(known)})")
    if spec is None:
        return
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind not in SPEC_KEYS:
        raise DataError(f"{path}: {name}: expected {{type: float|int|categorical, ...}}, got {spec!r}")
    extra = sorted(set(spec) - SPEC_KEYS[kind])
    if extra:
        raise DataError(f"{path}: {name}: unknown key {extra[0]!r} for type {kind}")
    if kind == "categorical":
        values = spec.get("choices")
        if not isinstance(values, list) or not values:
            raise DataError(f"{path}: {name}: empty choices")
    else:
        low, high = spec.get("low"), spec.get("high")
        number = (int,) if kind == "int" else (int, float)
        if not all(isinstance(v, number) and not isinstance(v, bool) for v in (low, high)):
            raise DataError(f"{path}: {name}: low and high must be {kind}s, got {low!r}, {high!r}")
        if not low < high:
            raise DataError(f"{path}: {name}: empty range (low {low} >= high {high})")
        if spec.get("log") and low <= 0:
            raise DataError(f"{path}: {name}: a log range needs low > 0, got {low}")
        if spec.get("log") and spec.get("step"):
            raise DataError(f"{path}: {name}: a range takes log or step, not both")
        values = [low, high]
    flag_kind = FLAG_TYPES[name]
    want = (int, float) if flag_kind is float else flag_kind  # an int is a float value too
    for value in values:
        if not isinstance(value, want) or (isinstance(value, bool) and flag_kind is not bool):
            raise DataError(f"{path}: {name}: {value!r} is not a value of --{name} ({flag_kind.__name__})")
        problems = check_config(Config(**{**base, name: value}).resolved()) + choice_problems({name: value})
        if problems:
            raise DataError(f"{path}: {name}: {problems[0]}")


def suggest(trial, space: dict) -> dict:
    def one(name, spec):
        if spec["type"] == "categorical":
            return trial.suggest_categorical(name, spec["choices"])
        if spec["type"] == "int":
            return trial.suggest_int(name, spec["low"], spec["high"], log=bool(spec.get("log")),
                                     step=spec.get("step", 1))
        return trial.suggest_float(name, spec["low"], spec["high"], log=bool(spec.get("log")), step=spec.get("step"))
    return {name: one(name, spec) for name, spec in space.items()}
