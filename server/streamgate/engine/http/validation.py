"""TGI's request validation (router/src/validation.rs, v3.3): same checks, order and messages.

`validate` turns a parsed request into the prompt token ids and a `SamplingParams`, or raises
`ValidationError` with TGI's message (the server prefixes it with "Input validation error: ", as
TGI's `InferError` does). Parameters TGI supports but this engine does not (grammar, LoRA
adapters, watermarking) are rejected with a validation error instead of being ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from streamgate.engine.config import EngineConfig
from streamgate.engine.core.sequence import SamplingParams
from streamgate.tgi import GenerateParameters

# TGI schedules at most this many new tokens at once and re-queues the request for more; its
# length check uses this chunk, not the whole `max_new_tokens` (validate_input, TGI >= 3.2).
DEFAULT_GENERATION_LENGTH = 1024


class ValidationError(Exception):
    """A request TGI would answer with 422 / `error_type: validation`."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Encoder(Protocol):
    """What validation needs from the tokenizer."""

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]: ...


@dataclass(frozen=True)
class Limits:
    """TGI router limits the validation enforces."""

    max_best_of: int
    max_stop_sequences: int
    max_top_n_tokens: int
    max_input_tokens: int
    max_total_tokens: int

    @classmethod
    def from_config(cls, config: EngineConfig) -> Limits:
        """Limits of a config whose token limits are already resolved (after from_config)."""
        if config.max_input_tokens is None or config.max_total_tokens is None:
            raise ValueError("token limits must be resolved (use LLMEngine.from_config)")
        return cls(
            max_best_of=config.max_best_of,
            max_stop_sequences=config.max_stop_sequences,
            max_top_n_tokens=config.max_top_n_tokens,
            max_input_tokens=config.max_input_tokens,
            max_total_tokens=config.max_total_tokens,
        )


@dataclass(frozen=True)
class ValidRequest:
    """A request ready for `LLMEngine.submit`, plus what the response needs."""

    inputs: str
    prompt_ids: list[int]  # after truncation
    params: SamplingParams
    best_of: int
    details: bool
    decoder_input_details: bool
    return_full_text: bool

    @property
    def input_length(self) -> int:
        return len(self.prompt_ids)


def check_stream(params: GenerateParameters) -> None:
    """Checks TGI makes before anything else on streaming routes."""
    if (params.best_of if params.best_of is not None else 1) != 1:
        raise ValidationError("`best_of` != 1 is not supported when streaming tokens")
    if params.decoder_input_details:
        raise ValidationError(
            "`decoder_input_details` == true is not supported when streaming tokens"
        )


def validate_best_of(best_of: int, max_best_of: int) -> int:
    """TGI's `validate_best_of`, checked before best_of > 1 requests are fanned out."""
    if max_best_of == 1 and best_of != 1:
        raise ValidationError("`best_of` != 1 is not allowed for this endpoint")
    if best_of > max_best_of:
        raise ValidationError(f"`best_of` must be > 0 and <= {max_best_of}. Given: {best_of}")
    return best_of


def validate(
    inputs: str,
    params: GenerateParameters,
    tokenizer: Encoder,
    limits: Limits,
    *,
    default_return_full_text: bool = False,
) -> ValidRequest:
    """Validate one request in TGI's order; raises `ValidationError` with TGI's message."""
    best_of = params.best_of if params.best_of is not None else 1
    do_sample = bool(params.do_sample)
    # TGI counts any given warper as sampling, whatever its value.
    sampling = do_sample or any(
        v is not None for v in (params.temperature, params.top_k, params.top_p, params.typical_p)
    )
    if best_of > 1 and not sampling:
        raise ValidationError("you must use sampling when `best_of` is > 1")

    temperature = 1.0 if params.temperature is None else params.temperature
    if temperature <= 0.0:
        raise ValidationError("`temperature` must be strictly positive")

    repetition_penalty = 1.0 if params.repetition_penalty is None else params.repetition_penalty
    if repetition_penalty <= 0.0:
        raise ValidationError("`repetition_penalty` must be strictly positive")

    frequency_penalty = 0.0 if params.frequency_penalty is None else params.frequency_penalty
    if not -2.0 <= frequency_penalty <= 2.0:
        raise ValidationError("`frequency_penalty` must be >= -2.0 and <= 2.0")

    # 1.0 is the "off" value once resolved, but asking for it explicitly is an error in TGI.
    top_p = 1.0
    if params.top_p is not None:
        if params.top_p <= 0.0 or params.top_p >= 1.0:
            raise ValidationError("`top_p` must be > 0.0 and < 1.0")
        top_p = params.top_p

    typical_p = 1.0
    if params.typical_p is not None:
        if params.typical_p <= 0.0 or params.typical_p >= 1.0:
            raise ValidationError("`typical_p` must be > 0.0 and < 1.0")
        typical_p = params.typical_p

    top_k = 0
    if params.top_k is not None:
        if params.top_k <= 0:
            raise ValidationError("`top_k` must be strictly positive")
        top_k = params.top_k

    if params.max_new_tokens == 0:
        raise ValidationError("`max_new_tokens` must be strictly positive")

    stop = params.stop or ()
    if len(stop) > limits.max_stop_sequences:
        raise ValidationError(
            f"`stop` supports up to {limits.max_stop_sequences} stop sequences. Given: {len(stop)}"
        )

    if params.seed is not None and best_of > 1:
        raise ValidationError("`seed` must not be set when `best_of` > 1")

    top_n_tokens = 0
    if params.top_n_tokens is not None:
        if params.top_n_tokens > limits.max_top_n_tokens:
            raise ValidationError(
                f"`top_n_tokens` must be >= 0 and <= {limits.max_top_n_tokens}. "
                f"Given: {params.top_n_tokens}"
            )
        top_n_tokens = params.top_n_tokens

    if not inputs:
        raise ValidationError("`inputs` cannot be empty")

    truncate = params.truncate
    if truncate is not None and (truncate == 0 or truncate > limits.max_input_tokens):
        raise ValidationError(
            "`truncate` must be strictly positive and less than "
            f"{limits.max_input_tokens}. Given: {truncate}"
        )

    ids = tokenizer.encode(inputs, add_special_tokens=True)
    if not ids:
        # A non-empty string always has tokens with TGI's tokenizers; ours may not (an empty
        # vocabulary match), and the engine cannot prefill nothing.
        raise ValidationError("`inputs` cannot be empty")
    input_length = min(len(ids), truncate) if truncate is not None else len(ids)

    room = max(limits.max_total_tokens - input_length, 0)
    if params.max_new_tokens is not None:
        chunk = min(params.max_new_tokens, DEFAULT_GENERATION_LENGTH)
        # TGI re-queues a request in chunks until max_new_tokens or the context is full; one
        # sequence that stops at the context reaches the same end.
        max_new_tokens = min(params.max_new_tokens, room)
    else:
        chunk = min(room, DEFAULT_GENERATION_LENGTH)
        max_new_tokens = room
    if input_length + chunk > limits.max_total_tokens:
        raise ValidationError(
            f"`inputs` tokens + `max_new_tokens` must be <= {limits.max_total_tokens}. "
            f"Given: {input_length} `inputs` tokens and {chunk} `max_new_tokens`"
        )
    if input_length > limits.max_input_tokens:
        raise ValidationError(
            f"`inputs` must have less than {limits.max_input_tokens} tokens. Given: {input_length}"
        )

    # TGI validates the grammar last; the rest is ours: what this engine cannot do.
    if params.grammar is not None:
        raise ValidationError("grammar is not supported")
    if params.adapter_id is not None:
        raise ValidationError("`adapter_id` is not supported: this engine serves no adapters")
    if params.watermark:
        raise ValidationError("`watermark` is not supported by this engine")

    prompt_ids = ids[len(ids) - input_length :]  # truncation keeps the end of the prompt
    sampling_params = SamplingParams(
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        typical_p=typical_p,
        repetition_penalty=repetition_penalty,
        frequency_penalty=frequency_penalty,
        seed=params.seed,
        stop=tuple(stop),
        top_n_tokens=top_n_tokens,
        prefill_logprobs=bool(params.decoder_input_details),
    )
    return ValidRequest(
        inputs=inputs,
        prompt_ids=prompt_ids,
        params=sampling_params,
        best_of=best_of,
        details=bool(params.details) or bool(params.decoder_input_details),
        decoder_input_details=bool(params.decoder_input_details),
        return_full_text=(
            default_return_full_text if params.return_full_text is None else params.return_full_text
        ),
    )
