"""`zscrgan evaluate CHECKPOINT`: every metric of the unseen classes recomputed from a checkpoint,
as the run scored them (its round's noise seed, its --eval_centre vector).

    zscrgan evaluate ckt_logs/FLO_logs/best.pt
    zscrgan evaluate ckt_logs/FLO_logs/last.pt --eval_samples 4 --dataset ../shared/data/FLO
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from zscrgan.config import Config
from zscrgan.console import Parser
from zscrgan.core.checkpoint import checkpoint_config, load_checkpoint, model_from_weights
from zscrgan.core.embedding import QueryEmbedder, training_centre
from zscrgan.device import DEVICE_HELP, DEVICES, pick_device
from zscrgan.errors import DataError
from zscrgan.evaluation.scoring import score_views
from zscrgan.experiments.run import load_run_data
from zscrgan.experiments.runfolder import SUMMARY_FILE, view_figures
from zscrgan.files import read_json_object
from zscrgan.flags import add_dataclass_flags, flag


@dataclass
class EvaluateArgs:
    """``zscrgan evaluate``'s flags; None: the checkpoint's setting."""

    checkpoint: str = flag("", "a best.pt or last.pt written by zscrgan train", positional=True)
    dataset: str | None = flag(None, "data set NAME or folder (default: the checkpoint's)")
    data_root: str | None = flag(None, "folder holding data sets by NAME (default: the checkpoint's)")
    device: str = flag("auto", DEVICE_HELP, choices=DEVICES)
    eval_k: str | None = flag(None, "comma list of K (default: the checkpoint's)")
    eval_samples: int | None = flag(None, "noise draws averaged per query")
    eval_mean: bool | None = flag(None, "use mu and z = 0")


def evaluate_main(argv: list[str]) -> int:
    parser = Parser(prog="zscrgan evaluate", description="Recompute every metric from a checkpoint.")
    args = add_dataclass_flags(parser, EvaluateArgs).parse_args(argv)
    device = pick_device(args.device)
    state = load_checkpoint(Path(args.checkpoint))
    overrides = {k: v for k, v in vars(args).items() if k not in ("checkpoint", "device") and v is not None}
    cfg = replace(checkpoint_config(state["config"]), **overrides)
    data = checkpoint_data(cfg, Path(args.checkpoint), given=bool(args.dataset or args.data_root))
    model = model_from_weights(state["trainer"]["model"], cfg).to(device)
    centre = training_centre(model, data, state["classes"]["train"], device) if cfg.eval_centre else None
    embedder = QueryEmbedder.for_round(model, cfg, state["round"], device, centre)
    scores, _, per_class = score_views(embedder, data, data.unseen, cfg.scored_ks(), device, per_class=data.many_texts)
    result = {"checkpoint": str(args.checkpoint), "round": state["round"],
              **view_figures("test", scores, per_class)}
    print(json.dumps(result, indent=1))
    return 0


def checkpoint_data(cfg: Config, checkpoint: Path, given: bool):
    """The checkpoint's data set; runs of older versions stored a path relative to where they were
    started, so the run's summary.json (an absolute data_dir) is tried next, then a hint."""
    try:
        return load_run_data(cfg)[0]
    except DataError as exc:
        if given:
            raise
        data_dir = read_json_object(checkpoint.parent / SUMMARY_FILE).get("data_dir")
        if isinstance(data_dir, str) and Path(data_dir).is_dir():
            return load_run_data(replace(cfg, dataset=data_dir))[0]
        raise DataError(f"{exc}; the checkpoint names a data set path relative to where the run was started: "
                        "run from there, or give --dataset PATH") from None
