"""`load_config`: the file, the environment and the defaults, assembled by pydantic-settings,
and the `ConfigError` that lists every problem of the result at once.

Each problem names its path (`backends[1].url: ...`) and, when a variable set it, the variable
(`[from STREAMGATE_BACKENDS__1__URL]`); problems between sections come one per line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from pathlib import Path

from pydantic import ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from streamgate.config.base import ConfigError, dotted, paths_relative_to
from streamgate.config.environment import Override, env_sources, read_overrides
from streamgate.config.file import ConfigFileSource
from streamgate.config.gateway import GatewayConfig

__all__ = ["load_config"]

# settings_customise_sources is a classmethod: a call's own inputs can only reach it from outside
# its arguments (pydantic-settings issue 250).
_inputs: ContextVar[tuple[ConfigFileSource, Sequence[Override]]] = ContextVar(
    "streamgate_config_inputs"
)


class _GatewaySettings(GatewayConfig, BaseSettings):
    """GatewayConfig as pydantic-settings builds it from the sources of one `load_config`.

    GatewayConfig itself stays a plain model, so that making one in code never reads the
    environment.
    """

    # As GatewayConfig: defaults are not validated.
    model_config = SettingsConfigDict(validate_default=False)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment over the file; what neither sets keeps its default.
        file, overrides = _inputs.get()
        return (*env_sources(settings_cls, overrides, file.data), file)


def load_config(
    path: str | os.PathLike[str] | None, env: Mapping[str, str] | None = None
) -> GatewayConfig:
    """Read the config file (None: defaults only), apply `STREAMGATE_*` overrides from `env`
    (default: os.environ) and validate. Raises `ConfigError` listing every problem."""
    file = ConfigFileSource(_GatewaySettings, None if path is None else Path(path))
    overrides = read_overrides(os.environ if env is None else env, GatewayConfig)
    token = _inputs.set((file, overrides))
    try:
        with paths_relative_to(file.directory):
            loaded = _GatewaySettings()
    except ValidationError as err:
        raise ConfigError(_describe(err, str(file.path or "defaults"), overrides)) from None
    finally:
        _inputs.reset(token)
    # Validated already: the same values, as the plain model.
    return GatewayConfig.model_construct(loaded.model_fields_set, **dict(loaded))


def _describe(err: ValidationError, source: str, overrides: Sequence[Override]) -> str:
    variables = {o.location: o.variable for o in overrides}
    lines = [f"invalid configuration ({source}):"]
    for problem in err.errors(include_url=False):
        # Pydantic adds the validator kind to some locations ("function-after[...]"): drop it.
        loc = tuple(p for p in problem["loc"] if not (isinstance(p, str) and "[" in p))
        message = problem["msg"].removeprefix("Value error, ")
        if not loc:  # cross-field problems (GatewayConfig._references) name their own paths
            lines.extend(f"  {part}" for part in message.split("; "))
            continue
        detail = ""
        if problem["type"] not in ("missing", "extra_forbidden", "value_error"):
            detail = f" (got {problem['input']!r})"
        # The variable that set the value or a section around it, else one that set a key in it.
        variable = next((v for at, v in variables.items() if loc[: len(at)] == at), None)
        if variable is None:
            variable = next((v for at, v in variables.items() if at[: len(loc)] == loc), None)
        if variable is not None:
            detail += f" [from {variable}]"
        lines.append(f"  {dotted(loc)}: {message}{detail}")
    return "\n".join(lines)
