"""`pools`, `routes` and `rules`: which replicas serve a request (the sections of routing/).

A route is the name clients put in `model`; it sends requests to a pool (its own list of
backends, a named pool, or a weighted split of pools). Rules, tried in order, may replace the
route's target by conditions on the request's metadata.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, field_validator, model_validator

from streamgate.config.base import Name, Section, resolve_path

__all__ = [
    "ConditionConfig",
    "PickerName",
    "PoolConfig",
    "PrefixConfig",
    "RouteConfig",
    "RuleConfig",
    "SplitArm",
]

PickerName = Literal["round_robin", "least_load", "power_of_two", "prefix_affinity"]


class PrefixConfig(Section):
    """The prefix index of `prefix_affinity` pools (routing.prefix, routing.pickers)."""

    block_bytes: Annotated[int, Field(ge=16, le=65536)] = 128
    """Prompt bytes per hashed block (about 32 tokens of English)."""
    max_blocks: Annotated[int, Field(ge=1, le=65536)] = 256
    """Leading blocks of a prompt that are hashed and compared."""
    max_blocks_per_replica: Annotated[int, Field(ge=1)] = 65536
    """Block hashes remembered per replica (least recently used forgotten first)."""
    balance_abs: Annotated[float, Field(ge=0)] = 32
    balance_rel: Annotated[float, Field(ge=1)] = 1.5
    """The pool is imbalanced (affinity yields to load) when the most and least loaded replicas
    differ by more than balance_abs requests and by more than balance_rel times."""
    min_match: Annotated[float, Field(ge=0, le=1)] = 0.3
    """Share of a prompt's blocks a replica must have seen to be chosen for affinity."""


class PoolConfig(Section):
    """A pool: replicas that serve the same model, and how one is picked."""

    name: Name
    backends: Annotated[list[Name], Field(min_length=1)]
    picker: PickerName = "prefix_affinity"
    prefix: PrefixConfig = Field(default_factory=PrefixConfig)


class SplitArm(Section):
    """One arm of a weighted split."""

    pool: Name
    weight: Annotated[float, Field(gt=0, allow_inf_nan=False)]


class _Target(Section):
    """Where requests go: one pool or a sticky weighted split, with an optional fallback pool
    (used when the chosen pool has no available replica) and shadow pool (gets a copy of each
    request; its output is discarded)."""

    pool: Name | None = None
    split: Annotated[list[SplitArm], Field(min_length=1)] | None = None
    """Each request's arm is stable per `x-user-id` (else per request), by weight."""
    fallback: Name | None = None
    shadow: Name | None = None

    def pool_names(self) -> list[str]:
        """Every pool the target names."""
        names = [self.pool] if self.pool else []
        names += [arm.pool for arm in self.split or ()]
        return names + [n for n in (self.fallback, self.shadow) if n]


class ConditionConfig(Section):
    """A rule's condition: `field` with one operator, or `all`/`any` of conditions."""

    field: str | None = None
    """`model`, `tenant`, `priority`, or a metadata key such as `x-user-id`."""
    equals: str | None = None
    in_: list[str] | None = Field(None, alias="in")
    prefix: str | None = None
    regex: str | None = None
    """A full match of the value."""
    exists: bool | None = None
    all: list[ConditionConfig] | None = None
    any: list[ConditionConfig] | None = None

    @model_validator(mode="after")
    def _one_form(self) -> Self:
        operators = [
            k
            for k in ("equals", "in_", "prefix", "regex", "exists")
            if getattr(self, k) is not None
        ]
        combined = [k for k in ("all", "any") if getattr(self, k) is not None]
        if combined:
            if len(combined) > 1 or self.field is not None or operators:
                raise ValueError("a condition is `all`, `any`, or a field test, one of them")
            return self
        if self.field is None or len(operators) != 1:
            raise ValueError("a field test needs `field` and exactly one of equals, in, prefix, "
                             "regex, exists")  # fmt: skip
        if self.field == "authorization":
            raise ValueError("rules cannot look at the authorization metadata")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as err:
                raise ValueError(f"regex: {err}") from None
        return self


class RuleConfig(_Target):
    """A routing rule: when its condition holds, its target replaces the route's."""

    name: Name
    when: ConditionConfig

    @model_validator(mode="after")
    def _one_target(self) -> Self:
        if (self.pool is None) == (self.split is None):
            raise ValueError("set pool or split, not both")
        return self


class RouteConfig(_Target):
    """A route: the name clients put in `model`, served by a pool of backends."""

    name: Name
    backends: Annotated[list[Name], Field(min_length=1)] | None = None
    """The route's own pool (named after the route, picker prefix_affinity), or `pool`, or
    `split`."""
    chat_template: str | None = None
    """HF chat_template (Jinja) for chat requests; default: a built-in ChatML template."""
    chat_template_file: Path | None = None
    """A file with the template instead (relative paths are relative to the config file)."""
    bos_token: str = ""
    eos_token: str = ""
    """`bos_token` and `eos_token` as the template sees them."""
    max_new_tokens: Annotated[int, Field(ge=1)] | None = None
    """Default when a request sets none; null: the backend's default (TGI: up to the context)."""

    @field_validator("chat_template_file")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        path = resolve_path(value)
        try:
            path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(f"cannot read {path}: {err}") from None
        return path

    @model_validator(mode="after")
    def _one_template(self) -> Self:
        if self.chat_template is not None and self.chat_template_file is not None:
            raise ValueError("set chat_template or chat_template_file, not both")
        chosen = [k for k in ("backends", "pool", "split") if getattr(self, k) is not None]
        if len(chosen) != 1:
            raise ValueError("set one of backends, pool and split")
        return self

    def pool_names(self) -> list[str]:
        """Every pool the route names (its own pool is named after it)."""
        own = [self.name] if self.backends is not None else []
        return own + super().pool_names()

    def template_text(self) -> str | None:
        """The configured template (inline or read from its file), None for the default."""
        if self.chat_template_file is not None:
            return self.chat_template_file.read_text(encoding="utf-8")
        return self.chat_template
