"""Run configuration: one dataclass whose fields are the command-line flags.

Hyperparameter names and defaults are upstream's (the authors' run_exp.py), so its commands
still work; each field's ``help`` is the flag's help text. A recipe (recipes.py) fills the fields
left at ``None``.
Every command and script that takes these flags reads them through :func:`parse_config`.
"""
from __future__ import annotations

import argparse
import operator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Sequence

from zscrgan.console import Parser, comma_list
from zscrgan.device import DEVICE_HELP, DEVICES
from zscrgan.errors import UserError
from zscrgan.files import read_json_object
from zscrgan.flags import DefaultsHelpFormatter, add_dataclass_flags, flag
from zscrgan.recipes import RECIPES
from zscrgan.runfiles import CONFIG_FILE, run_dirs

BUILTIN = "builtin"  # name of the generated demo data set used when --dataset is empty
DEFAULT_K = 50  # upstream's K: Prec@50 is the figure the paper reports, so every run scores it (parse_ks)

# Flags that say how to run, not what to train: where a run reads and writes, on what and how fast,
# what this one command does. A run's figures do not depend on them, so they may change when a run
# resumes (RESUMABLE) or a study continues (tune_space.STUDY_FREE), and are never tuned.
PER_CALL = frozenset({"config", "resume", "overwrite"})  # this command line's own: never read from a settings file
RUN_CONTROL = PER_CALL | {"name", "data_root", "out_dir", "device", "workers", "compile", "retain_memory", "report"}
# Flags that may change between a run and its resumption (how long, which seeds); any other change is refused.
RESUMABLE = RUN_CONTROL | {"epochs", "seeds", "patience"}


@dataclass
class Config:
    # --- upstream's hyperparameters, same names and defaults ---
    dataset: str = flag("", "data set NAME (looked up as <data_root>/NAME/) or a folder path; empty: the built-in demo data")
    batch_size: int = flag(32, "rows per batch (one seen class per row)")
    gf_dim: int = flag(2048, "generator hidden width (its second hidden layer is 2*gf_dim)")
    df_dim: int = flag(1024, "critic hidden width")
    embed_dim: int = flag(1024, "size of mu and of sigma, and of the common space")
    CSEM_lr: float = flag(None, "Adam learning rate of the CSEM (upstream's 0.002; tuned: 0.000776)")
    generator_lr: float = flag(None, "RMSProp learning rate of text encoder + generator (original: 0.0002, upstream's; improved: 0.003 up to gf_dim 256, times sqrt(256/gf_dim) above)")
    discriminator_lr: float = flag(None, "RMSProp learning rate of the critic (original: 0.0002, upstream's; improved: as --generator_lr)")
    epochs: int = flag(0, "number of EM rounds (upstream left it unused); 0: 5000 as upstream, or 5 on the built-in data")
    kl_div_coefficient: float = flag(None, "weight of the KL term (upstream's 1.0; tuned: 0.118)")
    mm_reg_coeff: float = flag(None, "weight of the max-margin regulariser (upstream's 2.0; tuned: 2.38)")
    z_dim: int = flag(256, "noise size")
    mmr_margin: float = flag(None, "margin of the max-margin regulariser (upstream's constant 2; matters with --mmr_hinge)")
    clip_val: float = flag(None, "WGAN weight clipping of the critic, 0 disables it (upstream's 0.01; tuned: 0.0519 up "
                               "to df_dim 256, times 256/df_dim above)")
    config: str = flag("", "a JSON file of settings (as written by zscrgan tune, or a run's config.json); "
                         "flags given on the command line override it")
    # --- where things are ---
    name: str = flag("", "NAME of the outputs (retrieved_res/NAME_res/, ckt_logs/NAME_logs/); default: the data set's")
    data_root: str = flag("datasets", "folder holding data sets by NAME")
    out_dir: str = flag(".", "folder under which retrieved_res/ and ckt_logs/ are written")
    # --- run control ---
    seed: int = flag(0, "random seed of the run (model init, batches, noise)")
    seeds: str = flag("", "comma list of seeds, e.g. 0,1,2: one run each, then mean +- sd of every figure")
    workers: int = flag(1, "with --seeds: train this many seeds at once, each in its own process with an equal share "
                         "of the CPU threads (on a CPU, small products use the cores better this way)")
    device: str = flag("auto", DEVICE_HELP, choices=DEVICES)
    resume: bool = flag(False, "continue this run from its last.pt after a crash or Ctrl-C; --resume RUN (a "
                             "ckt_logs/NAME_logs folder, or a NAME) takes every setting from that run's config.json")
    overwrite: bool = flag(False, "start over in a folder holding an earlier run's outputs, deleting them first "
                                "(without it, or --resume, such a folder is refused)")
    report: bool = flag(True, "write plots and report.html into the run folder at the end")
    # --- schedule (upstream's fixed values; smaller for smoke tests) ---
    e_steps: int = flag(100, "generator steps per E-step")
    n_critic: int = flag(None, "critic steps before each generator step (upstream's 5; tuned: 1)")
    m_steps: int = flag(None, "CSEM steps per M-step (upstream's 100; tuned: 504)")
    # --- evaluation and model selection ---
    select: str = flag("test", "round selection: test (upstream's, optimistic), val (held-out seen classes) or last (no selection: the final round)",
                     choices=("test", "val", "last"))
    val_fraction: float = flag(0.2, "with --select val: fraction of seen classes held out for validation")
    track_test: bool = flag(False, "with --select val: also score the unseen classes every round (to report best-on-test beside)")
    select_k: int = flag(DEFAULT_K, "the K whose Prec@K drives --select, --patience, tuning and the baselines' choices "
                           "(added to --eval_k); keep it below the smallest validation class's image count, or every "
                           "round ties")
    patience: int = flag(0, "stop once the selection figure has not improved for this many rounds (0: never; "
                          "the run still ends at --epochs)")
    eval_k: str = flag("10,50,100", "comma list of K for Prec@K, mAP@K and Recall@K (50 and --select_k always included)")
    eval_samples: int = flag(None, "average the query's common-space embedding over N noise draws (original: 1)")
    eval_mean: bool = flag(None, "embed queries with mu and z = 0, no noise (original: off)")
    # --- recipe and its switches (None: taken from the recipe) ---
    recipe: str = flag("original", "original (the authors' code, quirks included), improved (its quirks fixed) or tuned "
                                             "(improved with settings chosen on FLO's validation classes)",
                    choices=tuple(RECIPES))
    mmr_hinge: bool = flag(None, "fix: hinge max(0, .) on the max-margin term")
    csem_per_row: bool = flag(None, "fix: mean of per-row softplus in the CSEM loss")
    kl_standard: bool = flag(None, "fix: the standard KL(N(mu, sigma^2) || N(0, I))")
    all_texts: bool = flag(None, "fix: train on all texts of a class (one drawn per row), not only the first")
    csem_real: bool = flag(None, "fix: the M-step also maps real images to their class's code (upstream trains the CSEM "
                               "on generated features only, yet embeds the real gallery with it)")
    generator_linear: bool = flag(None, "a linear map of the code beside the generator's MLP, starting at zero "
                                      "(docs/results.md; tuned: on)")
    ridge_path: bool = flag(None, "a linear map of the text beside the generator's MLP, started at the ridge regression "
                                "fit on the training classes (lambda chosen on the validation classes, 0.1 without "
                                "them); training moves it away from ridge (docs/results.md; tuned: on)")
    eval_centre: bool = flag(None, "centre common-space embeddings on the training images' mean embedding before the "
                                 "cosine (as the baselines centre theirs)")
    optimizer: str = flag(None, "tf1 (TF1 RMSProp/Adam semantics) or torch (PyTorch defaults)", choices=("tf1", "torch"))
    # --- captions tied to their photos (caption_photos.npz of `zscrgan data build --captions`) ---
    photo_pairs: bool = flag(False, "the baselines (and --ridge_path) also try pairing each caption with the photo it "
                                  "describes, chosen on the validation classes like their other pairings")
    own_captions: bool = flag(False, "E-step: each row's text is one of its photo's own captions, not any text of "
                                   "its class")
    # --- speed (changes no result beyond float rounding) ---
    compile: bool = flag(False, "compile the optimiser updates with torch.compile: about 30 s once per process (needs a "
                              "C++ compiler on the CPU), then each update one fused pass (docs/performance.md)")
    retain_memory: bool = flag(True, "on the CPU, have glibc keep freed memory for reuse in this process (mallopt): "
                                   "large blocks are not unmapped and faulted back in every step, so rounds run "
                                   "faster; memory use then stays at its peak (docs/performance.md)")

    def scored_ks(self) -> tuple[int, ...]:
        """Every K a run scores: --eval_k, --select_k and 50 (:func:`parse_ks`)."""
        return parse_ks(f"{self.eval_k},{self.select_k}")

    def resolved(self) -> "Config":
        """A copy with the recipe's values filled into the fields left at None."""
        values = asdict(self)
        for key, value in RECIPES[self.recipe].items():
            if values[key] is None:
                values[key] = value(values) if callable(value) else value
        return Config(**values)


def build_parser(prog: str = "zscrgan train", description: str = "Train and evaluate ZSCRGAN.",
                 allow_abbrev: bool = True, defaults: bool = True) -> argparse.ArgumentParser:
    """One flag per Config field (flags.py); ``--resume`` also takes a RUN to read the settings of.

    ``defaults=False``: a parse holds only the flags given (:func:`flags_given`)."""
    def resume(parser, **kw):  # --resume, --resume RUN (a string: parse_config reads that run's settings)
        parser.add_argument("--resume", nargs="?", const=True, metavar="RUN", **kw)
        parser.add_argument("--no-resume", dest="resume", action="store_false")

    parser = Parser(prog=prog, description=description, formatter_class=DefaultsHelpFormatter,
                    allow_abbrev=allow_abbrev, argument_default=None if defaults else argparse.SUPPRESS)
    return add_dataclass_flags(parser, Config, custom={"resume": resume}, defaults=defaults)


def read_config_file(path: str) -> dict:
    """Settings from a JSON file of flag names -> values; unknown names are refused."""
    if not Path(path).is_file():
        raise UserError(f"{path}: config file not found")
    values = read_json_object(Path(path))
    known = {f.name for f in fields(Config)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"{path}: unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}")
    problems = choice_problems(values)
    if problems:
        raise UserError(f"{path}: {problems[0]}")
    return {k: v for k, v in values.items() if k not in PER_CALL}  # a run's own choices


def choice_problems(values: dict) -> list[str]:
    """Values outside a flag's ``choices``: argparse checks only those the command line gives, so a
    settings file's (``--config``, ``--resume RUN``) and a search space's are checked here."""
    return [f"--{f.name} must be one of {', '.join(f.metadata['choices'])}, got {values[f.name]}"
            for f in fields(Config) if f.metadata.get("choices") and values.get(f.name) is not None
            and values[f.name] not in f.metadata["choices"]]


def find_run_config(run: str, out_dir: str) -> tuple[Path, dict]:
    """``--resume RUN``: the run folder (a path, or NAME under <out_dir>/ckt_logs) and its settings."""
    records = run_dirs(out_dir, run)[0]
    tried = [Path(run), records, records.parent / run]
    for folder in tried:
        if (folder / CONFIG_FILE).is_file():
            return folder, read_config_file(str(folder / CONFIG_FILE))
    raise UserError(f"--resume {run}: no run there (no {CONFIG_FILE} in {', '.join(map(str, dict.fromkeys(tried)))})")


def parse_config(argv: list[str] | None, prog: str = "zscrgan train", *, description: str = "Train and evaluate ZSCRGAN.",
                 extra: Callable[[argparse.ArgumentParser], object] | None = None, defaults: dict | None = None,
                 allow_abbrev: bool = True) -> tuple[Config, argparse.Namespace]:
    """The one way from a command line to a Config, for every command and script that takes its flags.

    Values come from, last winning: the Config defaults, the command's ``defaults``, the ``--config``
    FILE or the run ``--resume RUN`` names, the flags given (``argv`` None: sys.argv[1:], as argparse).
    ``extra(parser)`` adds the command's own flags; their values come back as the Namespace. The Config is as given (recipe fields left at None:
    ``.resolved()`` fills them; compare and the ablation try several recipes on one). A bad flag, or a
    resolved Config :func:`check_config` refuses, exits with the parser's one-line error; a bad
    settings file raises UserError (one line under cli.py).
    """
    parser = build_parser(prog, description, allow_abbrev)
    if extra is not None:
        extra(parser)
    parser.set_defaults(**(defaults or {}))
    known = parser.parse_known_args(argv)[0]
    if known.config:
        parser.set_defaults(**read_config_file(known.config))
    if isinstance(known.resume, str):
        folder, saved = find_run_config(known.resume, known.out_dir)
        if folder.parent.name == "ckt_logs":  # where the run's outputs are, wherever it was started from
            saved["out_dir"] = str(folder.parent.parent)
        parser.set_defaults(**saved)
    values = vars(parser.parse_args(argv))
    if isinstance(values["resume"], str):
        values["resume"] = True
    cfg = Config(**{f.name: values.pop(f.name) for f in fields(Config)})
    problems = check_config(cfg.resolved())
    if problems:
        parser.error(problems[0])
    return cfg, argparse.Namespace(**values)


def flags_given(argv: list[str], prog: str = "zscrgan tune") -> set[str]:
    """The Config flags a command line names itself (not a default, not a settings file's): tune fixes those.

    Abbreviations are not read as flags here, so a command's own ``--out`` is not ``--out_dir``."""
    parser = build_parser(prog, allow_abbrev=False, defaults=False)
    return set(vars(parser.parse_known_args(argv)[0]))


def check_config(cfg: Config) -> list[str]:
    """Values no run could use, each as one line."""
    problems = []
    if cfg.patience < 0:
        problems.append(f"--patience must be >= 0, got {cfg.patience}")
    if cfg.resume and cfg.overwrite:
        problems.append("--resume continues a run, --overwrite deletes it: give one of them")
    if cfg.patience and cfg.select == "last":
        problems.append("--patience needs a selection figure: use it with --select val (or test), not last")
    for name in ("select_k", "workers", "batch_size", "gf_dim", "df_dim", "embed_dim", "z_dim", "e_steps", "n_critic", "m_steps", "eval_samples"):
        if getattr(cfg, name) < 1:
            problems.append(f"--{name} must be at least 1, got {getattr(cfg, name)}")
    for name in ("CSEM_lr", "generator_lr", "discriminator_lr"):
        if not getattr(cfg, name) > 0:
            problems.append(f"--{name} must be positive, got {getattr(cfg, name)}")
    if cfg.epochs < 0:
        problems.append(f"--epochs must be >= 0, got {cfg.epochs}")
    if cfg.clip_val < 0:
        problems.append(f"--clip_val must be >= 0, got {cfg.clip_val}")
    try:
        parse_ks(cfg.eval_k)
    except ValueError as exc:
        problems.append(f"--eval_k: {exc}")
    try:
        parse_seeds(cfg.seeds)
    except ValueError as exc:
        problems.append(str(exc))
    if not 0 < cfg.val_fraction < 1:
        problems.append(f"--val_fraction must be in (0, 1), got {cfg.val_fraction}")
    return problems


def run_name(cfg: Config) -> str:
    """NAME of the outputs: retrieved_res/NAME_res/, ckt_logs/NAME_logs/."""
    base = cfg.name or (Path(cfg.dataset.rstrip("/")).name if cfg.dataset else BUILTIN)
    return f"{base}_seed{cfg.seed}" if cfg.seeds else base


def parse_seeds(text: str) -> list[int]:
    """--seeds "0,1,2" -> [0, 1, 2], or a ValueError naming the flag."""
    try:
        return [int(s) for s in comma_list(text)]
    except ValueError:
        raise ValueError(f"--seeds {text!r}: expected a comma list of integers") from None


def positive_ks(items, source: str = "") -> list[int]:
    """Each item as an int, or a ValueError naming the first that is not a positive one."""
    where = f" in {source!r}" if source else ""
    out = []
    for item in items:
        if isinstance(item, str):
            value = int(item) if item.strip().lstrip("+").isdigit() else None
        elif isinstance(item, bool):
            value = None
        else:
            try:
                value = operator.index(item)
            except TypeError:
                value = None
        if value is None:
            raise ValueError(f"invalid K {item!r}{where}: expected positive integers separated by commas")
        if value <= 0:
            raise ValueError(f"invalid K {value}{where}: K must be a positive integer")
        out.append(value)
    return out


def parse_ks(text: str | Sequence[int]) -> tuple[int, ...]:
    """Parse "10,50,100" (or a sequence of ints) into sorted unique Ks, always with 50.

    50 (:data:`DEFAULT_K`) is always added because Prec@50 is the figure the paper reports and the
    trainer selects on; asking for other Ks must not lose it. An empty string means just 50.
    """
    if isinstance(text, str):
        ks = positive_ks(text.split(","), text) if text.strip() else []
    else:
        ks = positive_ks(text)
    return tuple(sorted(set(ks) | {DEFAULT_K}))
