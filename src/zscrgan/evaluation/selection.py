"""Which round a run keeps, and when it stops: ``--select``, ``--select_k``, ``--patience``.

A :class:`Selector` sees each round's record (the dict written to metrics.jsonl) and says
whether that round is the new best. It keeps the score and the round in separate fields,
so ``--select last`` never stores a round number where a precision belongs.

Policies:
* ``test`` -- upstream's: the round with the best unseen-class Prec@K (optimistic, labelled so);
* ``val``  -- the round with the best Prec@K on held-out seen classes (honest);
* ``last`` -- no selection: the final round (for sets too small to hold classes out).

A collapsed round (every query ranks the gallery alike: :func:`zscrgan.evaluation.metrics.collapse_stats`)
is never chosen while a sound round exists: a sound round beats any collapsed one, whatever
their scores. ``patience`` stops a run once the selection figure has not improved for that
many rounds (the run still ends at ``--epochs``).
"""
from __future__ import annotations

import math

from zscrgan.config import DEFAULT_K
from zscrgan.errors import UserError

POLICIES = ("test", "val", "last")


MIN_VAL_CLASSES = 2  # a gallery of one validation class holds only that class's photos: Prec@K 1.0 whatever the model


def check_select_k(policy: str, k: int, sizes: list[int]) -> list[str]:
    """Warnings about selecting on Prec@``k`` among classes of ``sizes`` images (the validation
    classes under ``val``, the unseen ones under ``test``); a UserError where no gallery can fill K."""
    if not sizes or policy == "last":
        return []
    what = "validation" if policy == "val" else "unseen"
    if policy == "val" and len(sizes) < MIN_VAL_CLASSES:
        raise UserError(f"--select val holds out only {len(sizes)} validation class: its gallery holds only its own "
                        "photos, so every round scores Prec@K 1.0 whatever the model; raise --val_fraction, or use "
                        "--select last")
    if policy == "val" and k > max(sizes):
        raise UserError(f"--select_k {k} is larger than every validation class's gallery (at most {max(sizes)} "
                        f"images): Prec@{k} would saturate and every round tie; use --select_k {min(sizes)} or less")
    warnings = []
    if k > min(sizes):
        warnings.append(f"warning: --select_k {k} exceeds the smallest {what} class's {min(sizes)} "
                        f"images: Prec@{k} saturates there and rounds tie; try --select_k {min(sizes)}")
    if policy == "val" and len(sizes) < 5:
        warnings.append(f"warning: --select val holds out only {len(sizes)} validation classes: "
                        "the choice of round rests on very little")
    return warnings


class Selector:
    """Tracks the selected round and the best-on-test round of one run."""

    def __init__(self, policy: str, k: int = DEFAULT_K, patience: int = 0):
        if policy not in POLICIES:
            raise ValueError(f"unknown selection policy {policy!r}; choose from {', '.join(POLICIES)}")
        self.policy, self.k, self.patience = policy, k, patience
        self.score = -math.inf  # selection figure of the selected round (None for "last")
        self.round = None  # the selected round
        self.collapsed = False  # whether the selected round had collapsed
        self.test_score, self.test_round = -math.inf, None  # best-on-test, for the optimistic figure
        self.rounds_since_best = 0

    @property
    def key(self) -> str:
        return f"prec@{self.k}"

    def figure(self, record: dict) -> float | None:
        """The round's selection figure (None under ``last``)."""
        if self.policy == "last":
            return None
        value = record.get(self.policy, {}).get(self.key)
        return -math.inf if value is None else value

    def update(self, record: dict) -> bool:
        """Take one round's record; True when it becomes the selected round."""
        collapsed = bool(record.get("collapsed", False))
        test = record.get("test", {}).get(self.key)
        if test is not None and test > self.test_score:
            self.test_score, self.test_round = test, record["round"]
        figure = self.figure(record)
        if self.round is None or self.policy == "last":
            better = True
        elif collapsed != self.collapsed:
            better = not collapsed  # sound beats collapsed, whatever the figures
        else:
            better = figure > self.score
        if better:
            self.score, self.round, self.collapsed = figure, record["round"], collapsed
            self.rounds_since_best = 0
        else:
            self.rounds_since_best += 1
        return better

    def should_stop(self) -> bool:
        """True once ``patience`` rounds in a row brought no new best."""
        return self.patience > 0 and self.policy != "last" and self.rounds_since_best >= self.patience

    def describe(self) -> str:
        """For the progress bar: 'val prec@50 0.4120 @ round 7'."""
        if self.round is None:
            return "none yet"
        if self.policy == "last":
            return f"round {self.round}"
        return f"{self.policy} {self.key} {self.score:.4f} @ round {self.round}"

    def state_dict(self) -> dict:
        return {"policy": self.policy, "k": self.k, "score": self.score, "round": self.round,
                "collapsed": self.collapsed, "test_score": self.test_score, "test_round": self.test_round,
                "rounds_since_best": self.rounds_since_best}

    def load_state_dict(self, state: dict) -> None:
        for name in ("score", "round", "collapsed", "test_score", "test_round", "rounds_since_best"):
            setattr(self, name, state[name])
