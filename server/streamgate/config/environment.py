"""`STREAMGATE_*` environment variables: overrides of the file's keys, as pydantic-settings sources.

`STREAMGATE_<SECTION>__<KEY>...=value` sets one key, `__` separating the levels and list entries
addressed by index: `STREAMGATE_LISTEN__PORT=50052`, `STREAMGATE_BACKENDS__0__URL=http://h:80`;
the index after the last entry appends one. Values are strings that validation converts
(`"50052"`, `"true"`); `null` is None, and a value starting with `[` or `{` is JSON
(`STREAMGATE_EMBEDDED__ARGS='["--max-total-tokens", "1024"]'`). A JSON object is merged into what
the file has at that key, as pydantic-settings merges its sources; any other value replaces it.

Only variables whose first level is a section of the config are read, so other `STREAMGATE_*`
variables (a client's target, an API key) do not clash; inside a section, unknown keys are
errors like in the file.

Two sources read them, each a different set of sections:
- `SectionKeys`, pydantic-settings' own env source (`EnvSettingsSource`, levels split at `__`),
  for the sections whose variables name keys only;
- `ListEntries` for the sections where a variable addresses a list entry, which the built-in
  source cannot do (it makes `{"0": {...}}` of `BACKENDS__0__...`, and one source's list replaces
  another's whole): the file's section with the section's variables applied in order.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource
from pydantic_settings.sources.utils import parse_env_vars

from streamgate.config.base import ConfigError, dotted

__all__ = ["ENV_PREFIX", "ListEntries", "Override", "SectionKeys", "env_sources", "read_overrides"]

ENV_PREFIX = "STREAMGATE_"
_DELIMITER = "__"
_NULL = "null"


@dataclass(frozen=True)
class Override:
    """One variable that sets a key of the configuration."""

    variable: str
    value: str
    keys: tuple[str, ...]
    """Its levels in lower case: `("backends", "0", "url")`."""
    indexes: tuple[bool, ...]
    """Per level: the level above is a list, so this key is an index."""

    @property
    def section(self) -> str:
        """The first level: a field of the config."""
        return self.keys[0]

    @property
    def location(self) -> tuple[str | int, ...]:
        """Where it lands, as pydantic's errors locate a value: `("backends", 0, "url")`."""
        return tuple(
            int(key) if index and key.isdigit() else key
            for key, index in zip(self.keys, self.indexes, strict=True)
        )


def read_overrides(env: Mapping[str, str], config: type[BaseModel]) -> list[Override]:
    """The variables of `env` that set keys of `config`, in the order they apply: by their
    levels, indexes in numeric order (entries appended by index, …__9__ then …__10__, arrive in
    order; a key set as JSON comes before the keys inside it)."""
    found: list[Override] = []
    for variable, value in env.items():
        if not variable.startswith(ENV_PREFIX):
            continue
        keys = tuple(variable[len(ENV_PREFIX) :].lower().split(_DELIMITER))
        if keys[0] not in config.model_fields or not all(keys):
            continue  # someone else's variable (STREAMGATE_TARGET, ...)
        found.append(Override(variable, value, keys, _indexes(config, keys)))
    found.sort(key=lambda o: [(0, int(k), "") if k.isdigit() else (1, 0, k) for k in o.keys])
    return found


def env_sources(
    settings_cls: type[BaseSettings], overrides: Sequence[Override], file: Mapping[str, Any]
) -> tuple[PydanticBaseSettingsSource, ...]:
    """The sources of `overrides`, each section read by one of them; `file` is the data they
    override."""
    listed = {o.section for o in overrides if any(o.indexes)}
    entries = [o for o in overrides if o.section in listed]
    keys = [o for o in overrides if o.section not in listed]
    # A source without variables is left out: it would still walk every field, at each load.
    sources: list[PydanticBaseSettingsSource] = []
    if entries:
        sources.append(ListEntries(settings_cls, entries, file))
    if keys:
        sources.append(SectionKeys(settings_cls, keys))
    return tuple(sources)


class SectionKeys(EnvSettingsSource):
    """pydantic-settings' env source over the given variables (instead of os.environ), with the
    value rule of this module for every key."""

    def __init__(self, settings_cls: type[BaseSettings], overrides: Sequence[Override]) -> None:
        # Set before the base class's __init__, which reads them through _load_env_vars.
        # Spelling `null` exactly lets pydantic-settings mark it: a None it keeps at the top level.
        self._variables = {o.variable: _NULL if _is_null(o.value) else o.value for o in overrides}
        super().__init__(
            settings_cls,
            case_sensitive=False,
            env_prefix=ENV_PREFIX,
            env_nested_delimiter=_DELIMITER,
            env_parse_none_str=_NULL,
        )

    def _load_env_vars(self) -> Mapping[str, str | None]:
        # The hook pydantic-settings' own secret-store sources override to read another mapping.
        return parse_env_vars(
            self._variables, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )

    def field_is_complex(self, field: FieldInfo) -> bool:
        """Every value may be JSON: its first character decides, not the field's type."""
        return True

    def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
        """`value` by the rule of this module (never an error: validation reports bad values)."""
        return _decoded(value)


class ListEntries(PydanticBaseSettingsSource):
    """Whole sections: the file's, with the section's variables applied in order."""

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        overrides: Sequence[Override],
        file: Mapping[str, Any],
    ) -> None:
        super().__init__(settings_cls)
        self._overrides = overrides
        self._file = file

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Unused (abstract in the base class): `__call__` builds whole sections."""
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        # Copies: the file's data is the file source's too.
        sections = {o.section: copy.deepcopy(self._file.get(o.section)) for o in self._overrides}
        for override in self._overrides:
            _apply(sections, override)
        return sections


def _apply(sections: dict[str, Any], override: Override) -> None:
    """Set `override`'s key in `sections`, making the entries and sections on its way."""
    last = len(override.keys) - 1
    node: dict[str, Any] | list[Any] = sections
    for i, key in enumerate(override.keys):
        slot: Any = key
        if isinstance(node, list):
            if not key.isdigit() or int(key) > len(node):
                raise ConfigError(
                    f"{override.variable}: '{key}' is not an index of "
                    f"{dotted(override.location[:i])} "
                    f"(0 to {len(node)}; {len(node)} appends an entry)"
                )
            slot = int(key)
            if slot == len(node):
                node.append(None)
        current = node[slot] if isinstance(node, list) else node.get(slot)
        if i == last:
            node[slot] = _merged(current, _decoded(override.value))
            return
        if not isinstance(current, dict | list):
            # Nothing there, or a value (replaced, as pydantic-settings replaces it).
            current = [] if override.indexes[i + 1] else {}
            node[slot] = current
        node = current


def _merged(old: Any, new: Any) -> Any:
    """`new` over `old`: objects merged key by key, anything else replaced."""
    if isinstance(old, dict) and isinstance(new, dict):
        return {**old, **{key: _merged(old.get(key), value) for key, value in new.items()}}
    return new


def _is_null(raw: str) -> bool:
    return raw.strip() == _NULL


def _decoded(raw: str) -> Any:
    """A variable's value: None for `null`; JSON when it starts with `[` or `{` (the string
    if it is not valid JSON: validation reports it); otherwise the string."""
    if _is_null(raw):
        return None
    text = raw.strip()
    if text.startswith(("[", "{")):
        try:
            return json.loads(text)
        except ValueError:
            return raw
    return raw


def _indexes(config: type[BaseModel], keys: tuple[str, ...]) -> tuple[bool, ...]:
    """Per key: the level above it is a list (by the config's field types)."""
    indexes: list[bool] = []
    annotation: Any = config
    for key in keys:
        annotation = _concrete(annotation)
        if get_origin(annotation) is list:
            indexes.append(True)
            (annotation,) = get_args(annotation)
        else:
            indexes.append(False)
            annotation = _field_annotation(annotation, key)
    return tuple(indexes)


def _concrete(annotation: Any) -> Any:
    """`annotation` without Annotated metadata and without `| None` (None for other unions)."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin is Union or origin is UnionType:
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return None
            annotation = members[0]
        else:
            return annotation


def _field_annotation(annotation: Any, key: str) -> Any:
    """The annotation of the field named (or aliased) `key` of a model; None if there is none."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        for name, field in annotation.model_fields.items():
            if key in (name, field.alias):
                return field.annotation
    return None
