"""The config file as a pydantic-settings source: YAML (`.yaml`, `.yml`) or TOML (`.toml`), by
its extension. A file that cannot be read or parsed is a `ConfigError` naming it."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped, unused-ignore]
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from streamgate.config.base import ConfigError

__all__ = ["ConfigFileSource"]


class ConfigFileSource(PydanticBaseSettingsSource):
    """The sections of the config file, read when the source is made; without a file, none."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self.path = path
        self.data: dict[str, Any] = {} if path is None else _read(path)

    @property
    def directory(self) -> Path | None:
        """Where the file's relative paths start: its directory (None without a file)."""
        return None if self.path is None else self.path.resolve().parent

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """The file's value of one section."""
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        # Unknown sections too: validation reports them.
        return self.data


def _read(file: Path) -> dict[str, Any]:
    suffix = file.suffix.lower()
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read config file {file}: {err.strerror or err}") from None
    try:
        if suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        elif suffix == ".toml":
            data = tomllib.loads(text)
        else:
            raise ConfigError(
                f"{file}: unknown config format '{suffix}' (use .yaml, .yml or .toml)"
            )
    except yaml.YAMLError as err:
        raise ConfigError(f"{file}: invalid YAML: {err}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{file}: invalid TOML: {err}") from None
    if data is None:  # an empty YAML file
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: the top level must be a mapping of sections")
    return data
