"""`streamgate engine`'s flags, derived from EngineConfig's fields: one flag per field."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from streamgate.engine.cli import HelpFormatter, add_engine_arguments, engine_config
from streamgate.engine.config import EngineConfig


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="engine", formatter_class=HelpFormatter)
    add_engine_arguments(p)
    return p


def options(p: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in p._actions if a.dest != "help"}


def test_one_flag_per_field_named_after_it() -> None:
    actions = options(parser())
    fields = [f.name for f in dataclasses.fields(EngineConfig)]
    assert list(actions) == fields
    renamed = {"enable_prefix_caching": "--no-prefix-caching"}
    for name, action in actions.items():
        assert action.option_strings == [renamed.get(name, "--" + name.replace("_", "-"))]
        assert action.help


def test_no_flags_give_the_default_config() -> None:
    assert engine_config(parser().parse_args([])) == EngineConfig()


def test_flags_set_their_fields_with_their_types() -> None:
    args = parser().parse_args(
        [
            "--model", "/models/x", "--dtype", "bfloat16", "--quantize", "int4",
            "--no-prefix-caching", "--max-input-tokens", "7", "--scheduling", "static",
            "--keep-alive-seconds", "0.5", "--port", "0",
        ]
    )  # fmt: skip
    config = engine_config(args)
    assert config == dataclasses.replace(
        EngineConfig(),
        model="/models/x",
        dtype="bfloat16",
        quantize="int4",
        enable_prefix_caching=False,
        max_input_tokens=7,
        scheduling="static",
        keep_alive_seconds=0.5,
        port=0,
    )


@pytest.mark.parametrize(
    "argv",
    [["--dtype", "float64"], ["--quantize", "int2"], ["--port", "x"], ["--scheduling", "lazy"]],
)
def test_values_outside_the_annotation_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(argv)


def test_groups_in_the_order_of_their_first_field() -> None:
    groups = {
        g.title: [a.dest for a in g._group_actions]
        for g in parser()._action_groups
        if g.title not in ("positional arguments", "options")
    }
    assert list(groups) == ["model", "KV cache and batching", "TGI router limits", "HTTP"]
    assert groups["model"] == [
        "model", "model_id", "dtype", "quantize", "dequantize", "device", "torch_threads"
    ]  # fmt: skip
    assert groups["HTTP"] == ["host", "port", "keep_alive_seconds"]


def test_help_shows_defaults_unless_none_boolean_or_explained() -> None:
    text = " ".join(parser().format_help().split())  # unwrapped
    assert "tokens per KV block (default: 16)" in text
    assert "of float weights (default: none)" in text  # explained: not appended twice
    assert "(default: None)" not in text and "(default: True)" not in text
