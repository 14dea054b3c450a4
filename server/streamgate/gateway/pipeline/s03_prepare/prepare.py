"""Pre-processing: a validated request as the backend call to make.

Validates every field (INVALID_ARGUMENT with one violation per bad field), renders chat
messages with the route's template and maps the request's parameters to TGI's.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamgate.config import LimitsConfig
from streamgate.gateway.pipeline.errors import GatewayError, Reason, Violation, invalid
from streamgate.gateway.pipeline.s03_prepare.chat import (
    ChatMessage,
    ChatTemplate,
    ChatTemplateError,
)
from streamgate.gateway.pipeline.s03_prepare.validate import (
    GenerationRequest,
    RequestLimits,
    check_prompt_length,
    validate_request,
)
from streamgate.routing import Route
from streamgate.tgi import GenerateParameters

__all__ = ["PreparedRequest", "prepare", "tgi_parameters"]


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """What the pipeline sends upstream and how it answers."""

    inputs: str
    """The prompt text (chat messages rendered)."""
    parameters: GenerateParameters
    chat: bool
    """The input was chat messages (errors about the prompt name `chat.messages`)."""
    tokens: bool
    """Include per-token details in Delta.tokens / GenerateResponse.tokens."""
    seed: int | None
    """The seed the request gave."""


def prepare(
    request: GenerationRequest,
    route: Route,
    template: ChatTemplate,
    limits: LimitsConfig,
    max_prompt_chars: int,
) -> PreparedRequest:
    """Validate and pre-process `request` for `route`. Raises GatewayError (INVALID_ARGUMENT)."""
    total = route.max_total_tokens
    bounds = RequestLimits(
        max_prompt_chars=max_prompt_chars,
        max_new_tokens=None if total is None else total - 1,
        max_input_tokens=route.max_input_tokens,
        max_stop_sequences=route.max_stop_sequences(limits.max_stop_sequences),
        max_top_n_tokens=limits.max_top_n_tokens,
        max_cache_ttl_seconds=limits.max_cache_ttl_seconds,
    )
    violations = validate_request(request, bounds)
    if violations:
        raise invalid(violations)
    chat = request.WhichOneof("input") == "chat"
    inputs = _render(request, template, bounds) if chat else request.prompt
    sampling = request.sampling
    return PreparedRequest(
        inputs=inputs,
        parameters=tgi_parameters(request, route.default_max_new_tokens),
        chat=chat,
        tokens=request.response.tokens or request.response.top_n_tokens > 0,
        seed=sampling.seed if sampling.HasField("seed") else None,
    )


def _render(request: GenerationRequest, template: ChatTemplate, bounds: RequestLimits) -> str:
    """The chat messages as prompt text, bounded like a prompt."""
    messages = [ChatMessage(m.role, m.content) for m in request.chat.messages]
    chat = request.chat
    add = chat.add_generation_prompt if chat.HasField("add_generation_prompt") else True
    try:
        inputs = template.render(messages, add_generation_prompt=add)
    except ChatTemplateError as err:
        raise GatewayError(
            Reason.CHAT_TEMPLATE_ERROR,
            f"the chat template refused the messages: {err}",
            violations=(Violation("chat.messages", str(err)),),
        ) from None
    too_long = check_prompt_length(inputs, bounds, "chat.messages")
    if too_long is not None:
        raise invalid([too_long])
    if not inputs:
        raise invalid([Violation("chat.messages", "the chat template rendered nothing")])
    return inputs


def tgi_parameters(
    request: GenerationRequest, default_max_new_tokens: int | None
) -> GenerateParameters:
    """TGI's parameters for a valid request; unset fields stay unset (the backend's default)."""
    s = request.sampling
    stopping = request.stopping
    top_p = _f32(s.top_p) if s.HasField("top_p") else None
    typical_p = _f32(s.typical_p) if s.HasField("typical_p") else None
    return GenerateParameters(
        do_sample=s.do_sample if s.HasField("do_sample") else None,
        temperature=_f32(s.temperature) if s.HasField("temperature") else None,
        top_k=s.top_k if s.HasField("top_k") else None,
        # 1.0 means "no filtering": the same as unset, and TGI refuses it explicitly.
        top_p=top_p if top_p is not None and top_p < 1 else None,
        typical_p=typical_p if typical_p is not None and typical_p < 1 else None,
        repetition_penalty=(
            _f32(s.repetition_penalty) if s.HasField("repetition_penalty") else None
        ),
        frequency_penalty=_f32(s.frequency_penalty) if s.HasField("frequency_penalty") else None,
        seed=s.seed if s.HasField("seed") else None,
        max_new_tokens=(
            stopping.max_new_tokens
            if stopping.HasField("max_new_tokens")
            else default_max_new_tokens
        ),
        stop=tuple(stopping.stop_sequences) or None,
        truncate=stopping.truncate_input_tokens or None,
        top_n_tokens=request.response.top_n_tokens or None,
    )


def _f32(value: float) -> float:
    """A proto float as the client most likely wrote it: 0.7, not 0.699999988079071."""
    return float(f"{value:.7g}")
