"""What every section shares: the strict, frozen base class, the field types (names, durations,
ports, readable files) and `ConfigError`, with the way it writes a location (`backends[1].url`)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

__all__ = [
    "ConfigError",
    "Name",
    "Port",
    "PositiveInt",
    "ReadableFile",
    "Seconds",
    "Section",
    "dotted",
    "paths_relative_to",
    "resolve_path",
]


class ConfigError(Exception):
    """A configuration that cannot be used; the message lists every problem."""


def dotted(location: tuple[str | int, ...]) -> str:
    """A location in the configuration as error messages write it: `backends[1].url`."""
    out = ""
    for part in location:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out or "(top level)"


class Section(BaseModel):
    """A section of the configuration (or a part of one)."""

    # Unknown keys are errors (a typo must not silently keep a default); sections are values.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")


def _check_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(
            "must be 1-128 characters of letters, digits and . _ : / -, starting with a letter "
            "or digit"
        )
    return value


Name = Annotated[str, AfterValidator(_check_name)]
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Port = Annotated[int, Field(ge=0, le=65535)]
PositiveInt = Annotated[int, Field(ge=1)]

# Validators have no other way to learn where the config file is: pydantic-settings validates
# without a validation context.
_config_dir: ContextVar[Path | None] = ContextVar("streamgate_config_dir", default=None)


@contextmanager
def paths_relative_to(directory: Path | None) -> Iterator[None]:
    """Within the block, relative paths are relative to `directory` (the config file's; None:
    the working directory)."""
    token = _config_dir.set(directory)
    try:
        yield
    finally:
        _config_dir.reset(token)


def resolve_path(value: Path) -> Path:
    """`value` with `~` expanded, relative to the config file's directory (see
    `paths_relative_to`)."""
    return (_config_dir.get() or Path.cwd()) / value.expanduser()


def _readable_file(value: Path) -> Path:
    path = resolve_path(value)
    try:
        path.read_bytes()
    except OSError as err:
        raise ValueError(f"cannot read {path}: {err.strerror or err}") from None
    return path


ReadableFile = Annotated[Path, AfterValidator(_readable_file)]
"""A file that must be readable; relative to the config file's directory."""
