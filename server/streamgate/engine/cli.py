"""The flags of `streamgate engine`, derived from `EngineConfig`'s fields.

Every field is one flag, `--<field-name>` unless its metadata names another (a boolean's flag
switches it away from its default), in the help group its metadata names, typed and (for
`Literal` fields) restricted to the choices its annotation allows. Nothing here imports torch:
`streamgate --help` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Literal

from streamgate.engine.config import EngineConfig

__all__ = ["HelpFormatter", "add_engine_arguments", "engine_config"]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default unless it is None/boolean or the help already explains it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text or action.default is None or isinstance(action.default, bool):
            return text
        return super()._get_help_string(action)


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """Add a flag for every field of `EngineConfig` (its dest is the field's name), grouped as
    the fields' metadata says, groups in the order of their first field."""
    hints = typing.get_type_hints(EngineConfig)
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in dataclasses.fields(EngineConfig):
        group_name: str = f.metadata["group"]
        group = groups.get(group_name)
        if group is None:
            group = groups[group_name] = parser.add_argument_group(group_name)
        flag = f.metadata["flag"] or "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            action = "store_false" if f.default else "store_true"
            group.add_argument(flag, dest=f.name, action=action, help=f.metadata["help"])
            continue
        kind, choices = _value_type(hints[f.name])
        group.add_argument(
            flag,
            dest=f.name,
            type=kind,
            choices=choices,
            default=f.default,
            help=f.metadata["help"],
        )


def engine_config(args: argparse.Namespace) -> EngineConfig:
    """The config the parsed flags of `add_engine_arguments` describe."""
    return EngineConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(EngineConfig)})


def _value_type(hint: Any) -> tuple[type, tuple[Any, ...] | None]:
    """The argparse type and choices of a field annotated `hint` (`X | None` is X's)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        (hint,) = (arg for arg in typing.get_args(hint) if arg is not type(None))
    if typing.get_origin(hint) is Literal:
        choices = typing.get_args(hint)
        return type(choices[0]), choices
    if hint in (str, int, float):
        return typing.cast(type, hint), None
    raise TypeError(f"no flag type for {hint!r}")
