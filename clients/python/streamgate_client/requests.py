"""Building requests: keyword options in, a `GenerateStreamRequest` or `GenerateRequest` out.

Unset options (left out, or None) are left unset in the request, so the route's and backend's
defaults apply; 0 and False are sent as real values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, TypedDict, TypeVar, Unpack

from streamgate_client.metadata import MetadataLike
from streamgate_client.v1 import generation_pb2 as pb


class RequestOptions(TypedDict, total=False):
    """The request's fields, all optional; unset (or None) means "not sent": the route's and
    backend's defaults apply. Give `messages` instead of a prompt for a chat."""

    messages: Sequence[Mapping[str, str]] | None
    """Chat messages, each {"role": ..., "content": ...}, rendered with the route's template."""
    model: str
    """Route name; "" (the default) selects the default route."""
    max_new_tokens: int | None
    temperature: float | None
    top_k: int | None
    top_p: float | None
    typical_p: float | None
    repetition_penalty: float | None
    frequency_penalty: float | None
    seed: int | None
    do_sample: bool | None
    stop: Sequence[str] | None
    """Stop sequences (a single string counts as one sequence)."""
    truncate_input_tokens: int | None
    add_generation_prompt: bool | None
    """Chat only: append the template's assistant prefix (the server's default is true)."""
    tokens: bool
    """Include each token's id, text and logprob (default False)."""
    top_n_tokens: int
    """Alternatives per step (default 0); implies `tokens`."""
    cache_mode: Literal["bypass", "no_store", "only_if_cached"] | None
    cache_ttl_seconds: int
    cache_namespace: str


class CallOptions(TypedDict, total=False):
    """Per-call gRPC options."""

    request_id: str | None
    """Sent as `x-request-id` (the gateway makes one when absent)."""
    timeout: float | None
    """Deadline of the whole call in seconds, stream included (default: the client's)."""
    metadata: MetadataLike | None
    """Extra metadata for this call (labels such as `x-user-id`, `x-priority`)."""


class GenerateOptions(RequestOptions, CallOptions, total=False):
    """Keyword arguments of `generate()` and `generate_stream()`."""


_KNOWN_OPTIONS = GenerateOptions.__optional_keys__
_CACHE_MODES = {
    "bypass": pb.CACHE_MODE_BYPASS,
    "no_store": pb.CACHE_MODE_NO_STORE,
    "only_if_cached": pb.CACHE_MODE_ONLY_IF_CACHED,
}
GenerationRequest = TypeVar("GenerationRequest", pb.GenerateStreamRequest, pb.GenerateRequest)
"""Either request message: both have the same input, sampling, stopping, response and cache."""


def fill_request(
    request: GenerationRequest, prompt: str | None, options: RequestOptions
) -> GenerationRequest:
    """Set the fields `options` give on `request` (of either RPC) and return it.

    Raises TypeError for an unknown option, ValueError for a bad prompt/messages combination.
    """
    # Keyword arguments are typed for mypy, but nothing stops a typo at run time: catch it here
    # rather than silently generating with a default.
    unknown = set(options) - _KNOWN_OPTIONS
    if unknown:
        raise TypeError(f"unknown generate option(s): {', '.join(sorted(unknown))}")
    messages = options.get("messages")
    if (prompt is None) == (messages is None):
        raise ValueError("give either a prompt or messages (exactly one)")
    request.model = options.get("model", "")
    if prompt is not None:
        request.prompt = prompt
    else:
        request.chat.SetInParent()  # an empty conversation is still a chat (and rejected as such)
        for i, m in enumerate(messages or ()):
            try:
                request.chat.messages.add(role=m["role"], content=m["content"])
            except KeyError as err:
                raise ValueError(f"messages[{i}] needs 'role' and 'content'") from err
        if (add := options.get("add_generation_prompt")) is not None:
            request.chat.add_generation_prompt = add

    # Assigning a sub-field marks the sub-message present: only given values are assigned.
    s = request.sampling
    if (do_sample := options.get("do_sample")) is not None:
        s.do_sample = do_sample
    if (temperature := options.get("temperature")) is not None:
        s.temperature = temperature
    if (top_k := options.get("top_k")) is not None:
        s.top_k = top_k
    if (top_p := options.get("top_p")) is not None:
        s.top_p = top_p
    if (typical_p := options.get("typical_p")) is not None:
        s.typical_p = typical_p
    if (repetition_penalty := options.get("repetition_penalty")) is not None:
        s.repetition_penalty = repetition_penalty
    if (frequency_penalty := options.get("frequency_penalty")) is not None:
        s.frequency_penalty = frequency_penalty
    if (seed := options.get("seed")) is not None:
        s.seed = seed

    if (max_new_tokens := options.get("max_new_tokens")) is not None:
        request.stopping.max_new_tokens = max_new_tokens
    if (truncate := options.get("truncate_input_tokens")) is not None:
        request.stopping.truncate_input_tokens = truncate
    stop = options.get("stop")
    if stop:
        request.stopping.stop_sequences.extend([stop] if isinstance(stop, str) else stop)

    if options.get("tokens"):
        request.response.tokens = True
    if top_n := options.get("top_n_tokens", 0):
        request.response.top_n_tokens = top_n

    if (mode := options.get("cache_mode")) is not None:
        request.cache.mode = _CACHE_MODES[mode]
    if ttl := options.get("cache_ttl_seconds", 0):
        request.cache.ttl_seconds = ttl
    if namespace := options.get("cache_namespace", ""):
        request.cache.namespace = namespace
    return request


def build_request(
    prompt: str | None = None, **options: Unpack[RequestOptions]
) -> pb.GenerateStreamRequest:
    """The `GenerateStreamRequest` that `generate_stream(prompt, **options)` sends."""
    return fill_request(pb.GenerateStreamRequest(), prompt, options)
