"""State of one request inside the engine, and the events it produces."""

from __future__ import annotations

import enum
import itertools
import time
from dataclasses import dataclass, field
from typing import Literal

import torch

FinishReason = Literal["length", "eos_token", "stop_sequence"]


@dataclass(frozen=True)
class SamplingParams:
    """Per-request decoding parameters, already validated (see server validation)."""

    max_new_tokens: int = 100
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0
    typical_p: float = 1.0
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    top_n_tokens: int = 0
    prefill_logprobs: bool = False  # TGI's decoder_input_details

    @property
    def sampling(self) -> bool:
        """TGI samples when asked to, or when any warper would change the distribution."""
        return (
            self.do_sample
            or self.temperature != 1.0
            or self.top_k > 0
            or self.top_p < 1.0
            or self.typical_p < 1.0
        )


@dataclass(frozen=True)
class TokenInfo:
    """One token as TGI reports it (`Token` / `PrefillToken`)."""

    id: int
    text: str
    logprob: float | None
    special: bool = False


@dataclass(frozen=True)
class FinishInfo:
    """What the last event of a request carries (TGI's `details` plus our own accounting)."""

    reason: FinishReason
    generated_text: str
    generated_tokens: int
    input_length: int
    seed: int | None
    cached_tokens: int  # prompt tokens whose prefill was skipped thanks to the prefix cache
    prefill: tuple[TokenInfo, ...]  # only with prefill_logprobs
    queue_time: float  # seconds from submit to first scheduling
    inference_time: float  # seconds from first scheduling to finish


@dataclass(frozen=True)
class TokenEvent:
    """One generated token, produced by one engine step."""

    index: int  # 0-based position in the generated text
    token: TokenInfo
    top_tokens: tuple[TokenInfo, ...]
    finish: FinishInfo | None = None


@dataclass(frozen=True)
class ErrorEvent:
    """The engine could not go on with this request (TGI's `generation` error)."""

    message: str


class SequenceStatus(enum.Enum):
    WAITING = enum.auto()
    RUNNING = enum.auto()
    FINISHED = enum.auto()


_ids = itertools.count()


@dataclass
class Sequence:
    """Tokens, KV blocks and progress of one request; owned by the engine thread."""

    prompt_ids: list[int]
    params: SamplingParams
    seq_id: int = field(default_factory=lambda: next(_ids))
    status: SequenceStatus = SequenceStatus.WAITING
    token_ids: list[int] = field(init=False)
    block_table: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0  # tokens whose K/V are in the cache
    block_hashes: list[int] = field(default_factory=list)  # chained hashes of its full blocks
    num_cached_tokens: int = 0  # of the prompt, found in the prefix cache at first admission
    seed: int | None = None
    arrival_time: float = field(default_factory=time.monotonic)
    first_scheduled_time: float | None = None
    generator: torch.Generator | None = None  # per-request RNG when sampling, seeded

    def __post_init__(self) -> None:
        self.token_ids = list(self.prompt_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_generated(self) -> int:
        return len(self.token_ids) - len(self.prompt_ids)

    @property
    def generated_ids(self) -> list[int]:
        return self.token_ids[len(self.prompt_ids) :]
