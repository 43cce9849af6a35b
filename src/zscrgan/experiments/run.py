"""One training run (one --seed) of `zscrgan train`: its data, its EM loop, its outputs and checkpoints.

:class:`Run` trains and scores round after round and writes, as upstream did plus machine-readable
records (NAME = data set folder name, ``builtin`` for the demo data; ``NAME_seed<S>`` with --seeds;
the file names are zscrgan.runfiles'):
    retrieved_res/NAME_res/acc<Prec@50>.pkl   retrieval lists of the selected round
    ckt_logs/NAME_logs/args.txt, config.json  the arguments of the run
    ckt_logs/NAME_logs/best.pt, last.pt       checkpoints (plain dicts, weights_only-loadable)
    ckt_logs/NAME_logs/metrics.jsonl          one JSON object per EM round
    ckt_logs/NAME_logs/summary.json           the selected and best-on-test figures
Every file is written atomically; --resume continues from last.pt after a crash or Ctrl-C.
A run holds a lock on its folders and never mixes its outputs with another run's (runfolder.py).
The command itself, several seeds included, is experiments.train; `zscrgan evaluate` is
experiments.evaluate.
"""
from __future__ import annotations

import io
import math
import os
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from zscrgan.config import DEFAULT_K, Config, run_name
from zscrgan.console import progress, say
from zscrgan.core.checkpoint import load_checkpoint
from zscrgan.core.embedding import QueryEmbedder, common_space_centre
from zscrgan.data.dataset import split_validation
from zscrgan.device import pick_device
from zscrgan.errors import Interrupted, UserError
from zscrgan.evaluation.metrics import is_collapsed
from zscrgan.evaluation.scoring import score_views
from zscrgan.evaluation.selection import Selector, check_select_k
from zscrgan.experiments.report import write_report
from zscrgan.experiments.runfolder import (
    PER_CLASS_FORMS,
    RECORD_VIEWS,
    RunFolder,
    config_differences,
    per_class_table,
    view_figures,
)
from zscrgan.experiments.trainer import EMTrainer, retain_freed_memory
from zscrgan.recipes import recipe_warnings
from zscrgan.runfiles import BEST_CHECKPOINT, LAST_CHECKPOINT, METRICS_FILE, REPORT_FILE, SUMMARY_FILE, run_dirs
from zscrgan.runs import load_run_data

BUILTIN_EPOCHS, UPSTREAM_EPOCHS = 5, 5000


def rounds_to_run(cfg: Config) -> int:
    """--epochs, or when it is 0 upstream's 5000 rounds on a named data set and 5 on the built-in one."""
    return cfg.epochs or (UPSTREAM_EPOCHS if cfg.dataset else BUILTIN_EPOCHS)


def prepare_process(cfg: Config) -> None:
    """What a training command sets for its whole process, once: a fixed thread count, and glibc
    keeping freed memory for reuse on the CPU (``--retain_memory``, trainer.retain_freed_memory).

    Setting the thread count, even to the one in use, is what turns off MKL's run-time choice of
    how many threads a call gets (ATen's set_num_threads calls mkl_set_dynamic(0); torch leaves it
    on otherwise): with it on, MKL does not promise the same result run to run, only with a fixed
    count (docs/results.md, "Reproducibility")."""
    torch.set_num_threads(torch.get_num_threads())
    if cfg.retain_memory and pick_device(cfg.device).type == "cpu":
        retain_freed_memory()


def projection(record: dict, remaining: int) -> str:
    """After round 1 of a run left at upstream's 5000 rounds: what the rest costs, and how to bound it."""
    seconds = (record["seconds"] + record["eval_seconds"]) * remaining
    span = f"{seconds / 3600:.1f} hours" if seconds >= 5400 else f"{seconds / 60:.0f} minutes"
    return (f"note: --epochs was not given, so {remaining + 1} rounds run (upstream's default): about {span} more at "
            f"this pace; bound it with --epochs N, or stop on a plateau with --patience P")


def precisions(figures: dict) -> str:
    """'Prec@10 0.1234 Prec@50 0.2345' for every K scored (small galleries need small K)."""
    ks = sorted(int(key[5:]) for key in figures if key.startswith("prec@"))
    return " ".join(f"Prec@{k} {figures[f'prec@{k}']:.4f}" for k in ks)


def describe(summary: dict) -> str:
    """The run's result in two lines: the honest figure and upstream's optimistic one."""
    lines = []
    sel = summary["selected"]["test"]
    how = {"val": "validation-selected", "last": "final round, no selection"}.get(
        summary["select"], "best-on-test (optimistic: chosen on the test classes)")
    k = summary.get("select_k", DEFAULT_K)  # runs older than --select_k selected on 50
    lines.append(f"{summary['run_name']}: unseen {precisions(sel)}, mAP@{k} {sel[f'map@{k}']:.4f} "
                 f"at round {summary['selected_round']} [{how}]")
    for form, what in PER_CLASS_FORMS.items():
        per = summary["selected"].get(f"test_{form}")
        if per:
            lines.append(f"  per class (one query a class, {what}): {precisions(per)}, mAP@{k} {per[f'map@{k}']:.4f}")
    if summary["select"] == "val" and "best_on_test" in summary:
        b = summary["best_on_test"]["test"]
        lines.append(f"  best-on-test (optimistic) {precisions(b)} at round {summary['best_on_test_round']}")
    return "\n".join(lines)


def run_folder(cfg: Config) -> RunFolder:
    """The run's output folders, opened as --resume / --overwrite say."""
    mode = "resume" if cfg.resume else "overwrite" if cfg.overwrite else "new"
    return RunFolder(*run_dirs(cfg.out_dir, run_name(cfg)), mode)


def checkpoint_bytes(payload: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


class Run:
    """One training run (one --seed): its folders, its trainer and what it has selected so far."""

    def __init__(self, cfg: Config):
        self.name = run_name(cfg)
        self.folder = run_folder(cfg)
        self.run_dir, self.res_dir = self.folder.run_dir, self.folder.res_dir
        self.prefix = f"[seed {cfg.seed}] " if cfg.seeds else ""  # parallel seeds' lines interleave
        self.scores_test = cfg.select != "val" or cfg.track_test
        self.ks = cfg.scored_ks()
        self.device = pick_device(cfg.device)
        splits = ("seen", "unseen") if self.scores_test else ("seen",)
        self.data, self.data_dir = load_run_data(cfg, splits)
        self.default_epochs = not cfg.epochs  # upstream's 5000: say after round 1 what that costs
        # saved with absolute data paths and the real round count, so evaluate, --resume RUN
        # and the report work from any folder and show what ran
        cfg = replace(cfg, epochs=rounds_to_run(cfg))
        if self.data_dir is not None:
            cfg = replace(cfg, dataset=os.path.abspath(self.data_dir), data_root=os.path.abspath(cfg.data_root))
        self.cfg = cfg
        if cfg.select == "val":
            self.train_classes, self.val_classes = split_validation(self.data, cfg.val_fraction, cfg.seed)
        else:
            self.train_classes, self.val_classes = list(self.data.seen), []
        self.warnings = recipe_warnings(cfg) + self.check_select_k()
        torch.manual_seed(cfg.seed)
        self.trainer = EMTrainer(cfg, self.data, self.train_classes, self.device, self.val_classes)
        self.history: list[dict] = []
        self.selector = Selector(cfg.select, cfg.select_k, cfg.patience)
        self.per_class: dict = {}
        self.stopped = ""  # why the run ended before --epochs, if it did

    def check_select_k(self) -> list[str]:
        """The selection's warnings for this data (selection.check_select_k; refusals raise)."""
        classes = {"val": self.val_classes, "test": self.data.unseen}.get(self.cfg.select, [])
        return check_select_k(self.cfg.select, self.cfg.select_k, [len(self.data.images[c]) for c in classes])

    # ---- checkpoints ----------------------------------------------------------------------
    def checkpoint(self, round_: int) -> dict:
        rng = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {"config": asdict(self.cfg), "round": round_, "trainer": self.trainer.state_dict(),
                "rng": rng, "history": self.history, "selector": self.selector.state_dict(),
                "per_class": self.per_class, "classes": {"train": self.train_classes, "val": self.val_classes}}

    def restore(self, path: Path) -> int:
        try:
            state = load_checkpoint(path)
        except UserError as exc:
            best = path.with_name(BEST_CHECKPOINT)
            hint = (f"; {best} is a separate file: copy it over {LAST_CHECKPOINT} to resume from the best round"
                    if best.is_file() else "")
            raise UserError(f"{exc}{hint}, or --overwrite to start over") from None
        changed = config_differences(state["config"], asdict(self.cfg))
        if changed:
            raise UserError(f"{path}: made with {changed}; drop the differing flags to resume "
                            f"(zscrgan train --resume {self.run_dir}), or --overwrite to start over")
        self.trainer.load_state_dict(state["trainer"])
        torch.set_rng_state(state["rng"]["cpu"])
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        self.history, self.per_class = state["history"], state["per_class"]
        self.selector.load_state_dict(state["selector"])
        return state["round"]

    # ---- the loop ----------------------------------------------------------------------------
    def centre(self) -> torch.Tensor | None:
        """The training images' mean common-space embedding under --eval_centre, else None."""
        return common_space_centre(self.trainer.model, self.trainer.images) if self.cfg.eval_centre else None

    def score(self, classes: list, round_: int, centre: torch.Tensor | None):
        """The model scored among ``classes`` as round ``round_`` (its noise seed) evaluates: the
        per-text scores, retrieval lists and, where a class has many texts, the per-class forms."""
        embedder = QueryEmbedder.for_round(self.trainer.model, self.cfg, round_, self.device, centre)
        return score_views(embedder, self.data, classes, self.ks, self.device, per_class=self.data.many_texts)

    def train_round(self, r: int) -> dict | None:
        """Train and score round ``r``; None (nothing written) when a loss went non-finite."""
        cfg, data = self.cfg, self.data
        start = time.perf_counter()
        record = {"round": r, **self.trainer.run_round()}
        record["seconds"] = round(time.perf_counter() - start, 3)
        bad = [k for k, v in record.items() if k.startswith("loss_") and not math.isfinite(v)]
        if bad:
            kept = (f"keeping the checkpoints of round {r - 1} ({LAST_CHECKPOINT})" if self.history
                    else "before any checkpoint was written")
            self.stopped = f"round {r}: the {bad[0][5:]} loss is {record[bad[0]]}; stopped {kept}; lower the learning rates"
            return None
        start = time.perf_counter()
        collapse, centre = {}, self.centre()
        if self.val_classes:
            val, _, per_class = self.score(self.val_classes, r, centre)
            record.update(view_figures("val", val, per_class))
            collapse["val"] = val.collapse
        if self.scores_test:
            test, lists, per_class = self.score(data.unseen, r, centre)
            record.update(view_figures("test", test, per_class))
            collapse["test"] = test.collapse
        record["eval_seconds"] = round(time.perf_counter() - start, 3)
        record["collapse"] = collapse
        record["collapsed"] = is_collapsed(collapse["val" if self.val_classes else "test"])
        self.history.append(record)

        new_best = self.selector.update(record)
        if new_best and cfg.select != "val":
            self.per_class = per_class_table(test, data.unseen)
            self.folder.write_retrieval(cfg.select_k, record["test"], lists, only=cfg.select == "last")
        state = checkpoint_bytes(self.checkpoint(r))  # serialised once, written as last.pt (and best.pt)
        if new_best:
            self.folder.write(BEST_CHECKPOINT, state)
        self.folder.write(LAST_CHECKPOINT, state)
        # after the checkpoints: a failure above leaves no round in metrics.jsonl that last.pt lacks
        self.folder.write_json(METRICS_FILE, self.history, lines=True)
        return record

    def say(self, line: str) -> None:
        say(line, self.prefix)

    def train(self, on_round=None, score_unseen: bool = True) -> dict:
        """Train to --epochs (or a plateau), then finish, holding the run's folders (runfolder.py).
        ``on_round(record, selector)`` is called after every round (zscrgan tune reports there,
        and may stop the run by raising); ``score_unseen=False`` (zscrgan tune) never reads the unseen classes."""
        with self.folder:
            try:
                return self._train(on_round, score_unseen)
            except Interrupted:
                raise
            except KeyboardInterrupt:
                raise Interrupted(f"continue with: zscrgan train --resume {self.run_dir}") from None
            except OSError as exc:  # a full disk: the file, and how to continue once there is room
                raise OSError(exc.errno, f"{exc.strerror or exc}; once fixed, continue with: zscrgan train "
                                         f"--resume {self.run_dir}", exc.filename) from None

    def _train(self, on_round, score_unseen: bool) -> dict:
        cfg = self.cfg
        first = 1
        if cfg.resume and (self.run_dir / LAST_CHECKPOINT).is_file():
            first = self.restore(self.run_dir / LAST_CHECKPOINT) + 1
            self.say(f"resuming {self.name} after round {first - 1}")
        self.folder.write_config(asdict(self.cfg))
        for line in self.warnings:
            self.say(line)
        self.say(f"{self.data.summary()}; training on {len(self.train_classes)} classes"
                 f"{f', validating on {len(self.val_classes)}' if self.val_classes else ''}; device {self.device}")
        bar = progress(cfg.epochs, self.name, "round", every=0, initial=first - 1)  # plain logs: the round lines
        for r in range(first, cfg.epochs + 1):
            if self.selector.should_stop():
                self.stopped = (f"stopped after round {r - 1}: no better {cfg.select} Prec@{cfg.select_k} "
                                f"for {cfg.patience} rounds (--patience)")
                break
            rec = self.train_round(r)
            if rec is None:
                break
            bar.update()
            self.say(f"round {r}: " + "  ".join(f"{k} {precisions(rec[k])}" for k in ("val", "test") if k in rec)
                     + f"  ({rec['seconds']:.1f} s train, {rec['eval_seconds']:.1f} s eval)")
            if rec["collapsed"]:
                self.say(f"round {r}: collapsed: every query ranks the gallery alike")
            if r == first and self.default_epochs and cfg.dataset and r < cfg.epochs:
                self.say(projection(rec, cfg.epochs - r))
            bar.set_postfix_str(f"best {self.selector.describe()}")
            if on_round is not None:
                on_round(rec, self.selector)
        bar.close()
        if self.stopped:
            self.say(self.stopped)
        return self.finish(score_unseen)

    def finish(self, score_unseen: bool = True) -> dict:
        """Score the selected round on the unseen classes (val mode) and write the summary."""
        cfg, sel = self.cfg, self.selector
        selected = next((h for h in self.history if h["round"] == sel.round), None)
        if selected is None:
            raise UserError(self.stopped or f"{self.run_dir}: no round was trained (--epochs {cfg.epochs})")
        selected = {k: selected[k] for k in RECORD_VIEWS if k in selected}
        if cfg.select == "val" and score_unseen:
            state = load_checkpoint(self.run_dir / BEST_CHECKPOINT)
            self.trainer.model.load_state_dict(state["trainer"]["model"])
            if not self.scores_test:  # only now are the unseen classes read
                full, _ = load_run_data(cfg)
                self.data.images.update({c: full.images[c] for c in full.unseen})
                self.data.texts.update({c: full.texts[c] for c in full.unseen})
            centre = self.centre()
            test, lists, per_class = self.score(self.data.unseen, sel.round, centre)
            selected.update(view_figures("test", test, per_class))
            self.per_class = per_class_table(test, self.data.unseen)
            self.folder.write_retrieval(cfg.select_k, selected["test"], lists)
        summary = {"dataset": self.data.name, "data_dir": str(self.data_dir.resolve()) if self.data_dir else None,
                   "run_name": self.name, "select": cfg.select, "select_k": cfg.select_k, "recipe": cfg.recipe,
                   "rounds": len(self.history), "selected_round": sel.round, "selected_collapsed": sel.collapsed,
                   "collapsed_rounds": [h["round"] for h in self.history if h.get("collapsed")],
                   "selected": selected, "per_class": self.per_class,
                   "train_seconds": round(sum(h["seconds"] for h in self.history), 2)}
        if self.stopped:
            summary["stopped"] = self.stopped
        if sel.test_round is not None:
            at_best = next(h for h in self.history if h["round"] == sel.test_round)
            summary.update(best_on_test_round=sel.test_round, best_on_test={"test": at_best["test"]})
        self.folder.write_json(SUMMARY_FILE, summary)
        if cfg.report:
            write_report(self.run_dir)
        if "test" in selected:
            print(describe(summary))
        self.say(self.outputs_line(selected))
        return summary

    def outputs_line(self, selected: dict) -> str:
        """Where the run wrote what the next command needs: the folder, its files, and the retrieval
        lists of the selected round (named by its figures, whichever process wrote them)."""
        files = [BEST_CHECKPOINT, SUMMARY_FILE] + ([REPORT_FILE] if self.cfg.report else [])
        lists = self.folder.retrieval_path(self.cfg.select_k, selected["test"]) if "test" in selected else None
        return (f"outputs: {self.run_dir}/ ({', '.join(files)})" +
                (f"; retrieval lists: {lists}" if lists is not None and lists.is_file() else ""))
