"""Command-line flags from a dataclass: one field, one flag, its help text in the field's metadata.

Every command whose options are a dataclass (``Config`` for train/compare/tune, the evaluate
command's options) builds its parser here, so types are read one way: ``int``, ``float``,
``str``, ``bool`` (``--flag/--no-flag``), each optionally ``| None`` with a ``None`` default
("not given": a recipe or a checkpoint fills it). Field metadata: ``help``, ``choices``,
``positional`` (an argument, not a ``--flag``), ``metavar``.
"""
from __future__ import annotations

import argparse
import types
import typing
from dataclasses import MISSING, field, fields

SCALARS = (int, float, str, bool)


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help that shows each flag's default, except ``None`` ("not given": the help text says what fills it)."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def flag(default, help: str, **meta):
    """A dataclass field that is a flag: its default, help text and metadata (``choices``, ...)."""
    return field(default=default, metadata={"help": help, **meta})


def flag_type(hint) -> type:
    """The scalar type of a field's annotation: ``float | None`` and ``Optional[float]`` -> float."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        kinds = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(kinds) == 1:
            return flag_type(kinds[0])
    if hint in SCALARS:
        return hint
    raise TypeError(f"no command-line flag for a field of type {hint!r}; use one of int, float, str, bool (| None)")


def add_dataclass_flags(parser: argparse.ArgumentParser, cls, custom: dict | None = None,
                        defaults: bool = True) -> argparse.ArgumentParser:
    """Add one flag per field of dataclass ``cls``; ``custom[name](parser, **kw)`` adds a field's flag its own way.

    ``defaults=False`` leaves the fields' defaults out (the parser's ``argument_default`` applies)."""
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        kind = flag_type(hints[f.name])
        meta = f.metadata
        kw = dict(help=meta.get("help"))
        if defaults and f.default is not MISSING:
            kw["default"] = f.default
        elif defaults and f.default_factory is not MISSING:
            kw["default"] = f.default_factory()
        if custom and f.name in custom:
            custom[f.name](parser, **kw)
        elif meta.get("positional"):
            parser.add_argument(f.name, type=kind, metavar=meta.get("metavar"), help=kw["help"])
        elif kind is bool:
            parser.add_argument(f"--{f.name}", action=argparse.BooleanOptionalAction, **kw)
        else:
            parser.add_argument(f"--{f.name}", type=kind, choices=meta.get("choices"), metavar=meta.get("metavar"), **kw)
    return parser
