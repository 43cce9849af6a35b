"""`zscrgan evaluate CHECKPOINT`: every metric of the unseen classes recomputed from a checkpoint,
as the run scored them (its query embedder, its round's noise seed, its --eval_centre vector).

    zscrgan evaluate ckt_logs/FLO_logs/best.pt
    zscrgan evaluate ckt_logs/FLO_logs/last.pt --eval_samples 4 --dataset ../shared/data/FLO
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from zscrgan.console import Parser
from zscrgan.device import DEVICE_HELP, DEVICES, pick_device
from zscrgan.errors import DataError
from zscrgan.evaluation.scoring import score_views
from zscrgan.experiments.runfolder import view_figures
from zscrgan.flags import add_dataclass_flags, flag
from zscrgan.runs import SavedRun, load_run_data


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
    overrides = {k: v for k, v in vars(args).items() if k not in ("checkpoint", "device") and v is not None}
    saved = SavedRun.open(args.checkpoint, **overrides)
    if args.dataset or args.data_root:
        data, _ = load_run_data(saved.cfg)
    else:  # the run's own data set (zscrgan.runs.dataset_folder)
        try:
            data = saved.load_data()
        except DataError as exc:
            raise DataError(f"{exc}, or give --dataset PATH") from None
    saved.model.to(device)
    embedder = saved.embedder(saved.centre(data, device), device)
    scores, _, per_class = score_views(embedder, data, data.unseen, saved.cfg.scored_ks(), device,
                                       per_class=data.many_texts)
    result = {"checkpoint": str(args.checkpoint), "round": saved.state["round"],
              **view_figures("test", scores, per_class)}
    print(json.dumps(result, indent=1))
    return 0
