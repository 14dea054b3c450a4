"""Request validation: every bad field of a request, each as one `Violation`.

All fields are checked (not just up to the first problem), so a client fixes its request in one
round trip. Field paths are the proto's (`sampling.top_p`, `chat.messages[2].role`). Token-count
bounds on the prompt need the backend's tokenizer: the backend checks them (its validation error
becomes INVALID_ARGUMENT too); here the prompt is bounded in characters.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TypeAlias

from streamgate.gateway.pipeline.errors import Violation
from streamgate_client.v1 import generation_pb2 as pb

__all__ = [
    "GenerationRequest",
    "RequestLimits",
    "check_prompt_length",
    "validate_request",
]

GenerationRequest: TypeAlias = pb.GenerateStreamRequest | pb.GenerateRequest
"""The two request messages carry the same fields."""

_NAMESPACE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_CACHE_MODES = frozenset(pb.CacheMode.values())


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """The bounds a request is checked against (the route's backends' and the config's)."""

    max_prompt_chars: int
    max_new_tokens: int | None
    """Largest max_new_tokens (the backends' max_total_tokens - 1); None: unknown."""
    max_input_tokens: int | None
    """Largest truncate_input_tokens; None: unknown."""
    max_stop_sequences: int
    max_top_n_tokens: int
    max_cache_ttl_seconds: int


def validate_request(request: GenerationRequest, limits: RequestLimits) -> list[Violation]:
    """Every bad field of `request` (empty: the request is valid)."""
    out: list[Violation] = []
    _check_input(request, limits, out)
    if request.HasField("sampling"):
        _check_sampling(request.sampling, out)
    if request.HasField("stopping"):
        _check_stopping(request.stopping, limits, out)
    if request.response.top_n_tokens > limits.max_top_n_tokens:
        out.append(
            Violation(
                "response.top_n_tokens",
                f"must be at most {limits.max_top_n_tokens} (got {request.response.top_n_tokens})",
            )
        )
    if request.HasField("cache"):
        _check_cache(request.cache, limits, out)
    return out


def check_prompt_length(text: str, limits: RequestLimits, field: str) -> Violation | None:
    """The character bound on a prompt (also applied to the rendered chat prompt)."""
    if len(text) > limits.max_prompt_chars:
        return Violation(
            field, f"must be at most {limits.max_prompt_chars} characters (got {len(text)})"
        )
    return None


def _check_input(request: GenerationRequest, limits: RequestLimits, out: list[Violation]) -> None:
    which = request.WhichOneof("input")
    if which is None:
        out.append(Violation("prompt", "one of prompt or chat is required"))
    elif which == "prompt":
        if not request.prompt:
            out.append(Violation("prompt", "must not be empty"))
        elif (too_long := check_prompt_length(request.prompt, limits, "prompt")) is not None:
            out.append(too_long)
    else:
        messages = request.chat.messages
        if not messages:
            out.append(Violation("chat.messages", "must not be empty"))
        for i, message in enumerate(messages):
            if not message.role:
                out.append(Violation(f"chat.messages[{i}].role", "must not be empty"))


def _check_sampling(s: pb.SamplingParameters, out: list[Violation]) -> None:
    if s.HasField("temperature") and not (math.isfinite(s.temperature) and s.temperature > 0):
        out.append(Violation("sampling.temperature", f"must be > 0 (got {_f(s.temperature)})"))
    if s.HasField("top_k") and s.top_k == 0:
        out.append(Violation("sampling.top_k", "must be > 0 (leave it unset for no top-k)"))
    if s.HasField("top_p") and not (0 < s.top_p <= 1):  # NaN fails too
        out.append(Violation("sampling.top_p", f"must be in (0, 1] (got {_f(s.top_p)})"))
    if s.HasField("typical_p") and not (0 < s.typical_p <= 1):
        out.append(Violation("sampling.typical_p", f"must be in (0, 1] (got {_f(s.typical_p)})"))
    if s.HasField("repetition_penalty") and not (
        math.isfinite(s.repetition_penalty) and s.repetition_penalty > 0
    ):
        out.append(
            Violation(
                "sampling.repetition_penalty", f"must be > 0 (got {_f(s.repetition_penalty)})"
            )
        )
    if s.HasField("frequency_penalty") and not (-2 <= s.frequency_penalty <= 2):
        out.append(
            Violation(
                "sampling.frequency_penalty",
                f"must be in [-2, 2] (got {_f(s.frequency_penalty)})",
            )
        )


def _check_stopping(s: pb.StoppingCriteria, limits: RequestLimits, out: list[Violation]) -> None:
    if s.HasField("max_new_tokens"):
        if s.max_new_tokens == 0:
            out.append(Violation("stopping.max_new_tokens", "must be at least 1"))
        elif limits.max_new_tokens is not None and s.max_new_tokens > limits.max_new_tokens:
            out.append(
                Violation(
                    "stopping.max_new_tokens",
                    f"must be at most {limits.max_new_tokens} for this model "
                    f"(got {s.max_new_tokens})",
                )
            )
    stops = s.stop_sequences
    if len(stops) > limits.max_stop_sequences:
        out.append(
            Violation(
                "stopping.stop_sequences",
                f"at most {limits.max_stop_sequences} stop sequences (got {len(stops)})",
            )
        )
    for i, stop in enumerate(stops):
        if not stop:
            out.append(Violation(f"stopping.stop_sequences[{i}]", "must not be empty"))
    if (
        s.truncate_input_tokens
        and limits.max_input_tokens is not None
        and s.truncate_input_tokens > limits.max_input_tokens
    ):
        out.append(
            Violation(
                "stopping.truncate_input_tokens",
                f"must be at most {limits.max_input_tokens} (got {s.truncate_input_tokens})",
            )
        )


def _check_cache(c: pb.CacheControl, limits: RequestLimits, out: list[Violation]) -> None:
    if c.mode not in _CACHE_MODES:
        out.append(Violation("cache.mode", f"unknown cache mode {c.mode}"))
    if c.ttl_seconds > limits.max_cache_ttl_seconds:
        out.append(
            Violation(
                "cache.ttl_seconds",
                f"must be at most {limits.max_cache_ttl_seconds} (got {c.ttl_seconds})",
            )
        )
    if c.namespace and not _NAMESPACE.match(c.namespace):
        out.append(
            Violation(
                "cache.namespace",
                "must be 1-64 characters of letters, digits and . _ -, starting with a letter "
                "or digit",
            )
        )


def _f(value: float) -> str:
    """A float32 field as the client most likely wrote it (0.7, not 0.699999988)."""
    return f"{value:.7g}"
