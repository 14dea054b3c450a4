"""The prompt mix: what a load test sends, declared in a YAML file (loadtest/mixes/*.yaml).

A mix has tenants, each with a shared system prompt (the prefix a prefix-aware router and a
backend's prefix cache can reuse), and request classes drawn by weight. A class sets the
prompt's length after the prefix, the answer's length, the fraction of requests that repeat
one of a few fixed questions greedily (answers the response cache can serve), and what the
client does to the call: read it to the end, cancel it at a random point, or give it a deadline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Self

import yaml  # type: ignore[import-untyped, unused-ignore]
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = ["Mix", "MixError", "RequestClass", "load_mix"]

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Count = Annotated[int, Field(ge=1)]
Seconds = Annotated[float, Field(gt=0.0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _ordered(pair: tuple[float, float] | None, what: str) -> None:
    if pair is not None and pair[0] > pair[1]:
        raise ValueError(f"{what}: the low end {pair[0]:g} is above the high end {pair[1]:g}")


class RequestClass(_Strict):
    """One kind of request, drawn with probability weight / (sum of weights)."""

    name: Annotated[str, Field(min_length=1)]
    weight: Annotated[float, Field(gt=0.0)] = 1.0
    prompt_chars: tuple[Count, Count] = (32, 256)
    """Characters after the tenant's prefix, drawn uniformly in [low, high]."""
    max_new_tokens: tuple[Count, Count] = (16, 64)
    cacheable: Fraction = 0.0
    """Fraction that repeats one of the tenant's fixed questions, greedy (a response cache can
    answer it); the others are new prompts, sampled without a seed (never cached)."""
    cancel_after: tuple[Seconds, Seconds] | None = None
    """The client cancels the call at a random time in this range (seconds after sending)."""
    deadline: tuple[Seconds, Seconds] | None = None
    """The call's deadline, drawn in this range (seconds)."""
    expect: tuple[str, ...] | None = None
    """Status codes that are not errors for this class; default: OK, plus CANCELLED with
    `cancel_after`, DEADLINE_EXCEEDED with `deadline`."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        _ordered(self.prompt_chars, "prompt_chars")
        _ordered(self.max_new_tokens, "max_new_tokens")
        _ordered(self.cancel_after, "cancel_after")
        _ordered(self.deadline, "deadline")
        if self.cancel_after is not None and self.deadline is not None:
            raise ValueError("set at most one of cancel_after and deadline")
        return self

    def expected_codes(self) -> frozenset[str]:
        """The status codes this class's calls may end with."""
        if self.expect is not None:
            return frozenset(self.expect)
        if self.cancel_after is not None:
            return frozenset({"OK", "CANCELLED"})
        if self.deadline is not None:
            return frozenset({"DEADLINE_EXCEEDED"})
        return frozenset({"OK"})


class Mix(_Strict):
    """A whole mix file."""

    description: str = ""
    tenants: Count = 4
    prefix_chars: Annotated[int, Field(ge=0)] = 512
    """Length of each tenant's system prompt, which starts every prompt of the tenant."""
    users_per_tenant: Count = 8
    """Distinct `x-user-id` values per tenant."""
    questions_per_tenant: Count = 16
    """Fixed questions per tenant that cacheable requests repeat."""
    classes: Annotated[list[RequestClass], Field(min_length=1)]

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        names = [c.name for c in self.classes]
        if len(set(names)) != len(names):
            raise ValueError(f"class names repeat: {names}")
        return self

    def request_class(self, name: str) -> RequestClass:
        """The class called `name`."""
        return next(c for c in self.classes if c.name == name)


class MixError(ValueError):
    """A mix file that cannot be used; the message names the file and each problem."""


def load_mix(path: Path) -> Mix:
    """Read and check a mix file."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise MixError(f"{path}: {err}") from None
    try:
        return Mix.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
            for e in err.errors()
        )
        raise MixError(f"{path}: {problems}") from None
