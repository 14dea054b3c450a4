"""The engine: a step loop in its own thread, fed and drained by asyncio request handlers.

Handlers call `submit()` and iterate the returned `RequestStream`; the step thread takes its
inbox's commands (`Add`, `Abort`, `Stop`) before every step, runs the step, and hands each
step's tokens back to the event loop in one `call_soon_threadsafe` call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import queue
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import torch

from streamgate.engine.config import EngineConfig
from streamgate.engine.core.block_manager import BlockManager
from streamgate.engine.core.runner import ModelRunner, StepOutput
from streamgate.engine.core.scheduler import ScheduledBatch, Scheduler
from streamgate.engine.core.sequence import (
    ErrorEvent,
    FinishInfo,
    FinishReason,
    SamplingParams,
    Sequence,
    TokenEvent,
    TokenInfo,
)
from streamgate.engine.model.config import ModelConfigError
from streamgate.engine.model.detokenizer import IncrementalDetokenizer
from streamgate.engine.model.loader import DTYPES, LoadedModel, ModelInfo, open_model
from streamgate.engine.model.stopping import StopMatcher
from streamgate.engine.model.tokenizer import Tokenizer

log = logging.getLogger(__name__)

Event = TokenEvent | ErrorEvent


class GenerationError(Exception):
    """The engine failed a request after accepting it (TGI's `generation` error type)."""


@dataclass(frozen=True)
class EngineStats:
    """A consistent snapshot, replaced by the step thread after every step."""

    waiting: int = 0
    running: int = 0
    batch_tokens: int = 0
    kv_blocks_total: int = 0
    kv_blocks_used: int = 0
    kv_blocks_cached: int = 0
    prefix_cache_hit_tokens_total: int = 0
    prompt_tokens_total: int = 0
    generated_tokens_total: int = 0
    preemptions_total: int = 0
    steps_total: int = 0
    aborted_total: int = 0


class RequestStream:
    """The handler's side of one request: iterate its tokens, or abort it.

    `abort` is told the sequence id when the handler gives up before the last event.
    """

    def __init__(self, seq_id: int, abort: Callable[[int], None]) -> None:
        self.seq_id = seq_id
        self._abort = abort
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._finished = False

    def deliver(self, event: Event) -> None:
        """Hand the stream its next event (the engine does, on the event loop)."""
        self._events.put_nowait(event)

    def __aiter__(self) -> AsyncIterator[TokenEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[TokenEvent]:
        while True:
            event = await self._events.get()
            if isinstance(event, ErrorEvent):
                self._finished = True
                raise GenerationError(event.message)
            if event.finish is not None:
                self._finished = True  # before yielding: a consumer may stop at the last event
                yield event
                return
            yield event

    def abort(self) -> None:
        """Drop the request: it leaves the batch at the next step and its blocks are freed."""
        if not self._finished:
            self._finished = True
            self._abort(self.seq_id)


@dataclass
class _Request:
    """Engine-thread state of one request besides its Sequence."""

    seq: Sequence
    stream: RequestStream
    detokenizer: IncrementalDetokenizer
    stops: StopMatcher
    prefill: tuple[TokenInfo, ...] = ()
    # Text of the non-special tokens as streamed; TGI's generated_text (keeps a leading space
    # that decoding the generated ids alone would drop with SentencePiece tokenizers).
    text: list[str] = dataclasses.field(default_factory=list)


# ---- the step thread's inbox: what the asyncio side may ask of it -------------------------------


@dataclass(frozen=True, slots=True)
class Add:
    """Take a new request into the batch."""

    request: _Request


@dataclass(frozen=True, slots=True)
class Abort:
    """Drop a request (its client left): it leaves the batch before the next step and its
    blocks are freed. A request that already finished is not affected."""

    seq_id: int


@dataclass(frozen=True, slots=True)
class Stop:
    """End the step loop; requests still in flight end with an error."""


Command = Add | Abort | Stop


def resolve_limits(config: EngineConfig, max_positions: int, block_size: int) -> EngineConfig:
    """Fill TGI's derived limits and reject combinations that could never be served."""
    total = config.max_total_tokens or min(max_positions, 2048)
    if total > max_positions:
        raise ModelConfigError(
            f"max_total_tokens ({total}) exceeds the model's context ({max_positions})"
        )
    max_input = config.max_input_tokens or total - 1
    if max_input >= total:
        raise ModelConfigError(
            f"max_input_tokens ({max_input}) must be < max_total_tokens ({total})"
        )
    prefill = config.max_batch_prefill_tokens or max(max_input + 1, 4096)
    if prefill < max_input:
        raise ModelConfigError(
            f"max_batch_prefill_tokens ({prefill}) must be >= max_input_tokens ({max_input})"
        )
    kv_tokens = (config.kv_cache_tokens or config.max_batch_total_tokens) // block_size * block_size
    if kv_tokens < total:
        raise ModelConfigError(
            f"the KV cache ({kv_tokens} tokens) must hold one full request "
            f"(max_total_tokens {total})"
        )
    return dataclasses.replace(
        config,
        max_total_tokens=total,
        max_input_tokens=max_input,
        max_batch_prefill_tokens=prefill,
        kv_cache_tokens=kv_tokens,
    )


class LLMEngine:
    """Continuous-batching engine over one model; thread-safe `submit` and `abort`."""

    def __init__(self, config: EngineConfig, loaded: LoadedModel) -> None:
        self.config = config
        self.tokenizer: Tokenizer = loaded.tokenizer
        self.model_info: ModelInfo = loaded.info
        assert config.kv_cache_tokens is not None and config.max_batch_prefill_tokens is not None
        num_blocks = config.kv_cache_tokens // config.block_size
        self.blocks = BlockManager(num_blocks, config.block_size, config.enable_prefix_caching)
        self.scheduler = Scheduler(
            self.blocks,
            config.max_batch_prefill_tokens,
            config.max_batch_size,
            static_batching=config.scheduling == "static",
        )
        self.runner = ModelRunner(loaded.model, num_blocks, config.block_size, DTYPES[config.dtype])
        self.eos_ids = self.tokenizer.eos_token_ids
        self._inbox: queue.SimpleQueue[Command] = queue.SimpleQueue()
        self._requests: dict[int, _Request] = {}
        self._outbox: list[tuple[RequestStream, Event]] = []  # this step's events, in order
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._counters = {"prefix": 0, "prompt": 0, "generated": 0, "steps": 0, "aborted": 0}
        self._stats = EngineStats(kv_blocks_total=num_blocks)

    @classmethod
    def from_config(cls, config: EngineConfig) -> LLMEngine:
        """Load the model, resolve limits and allocate the KV cache."""
        torch.set_num_threads(config.torch_threads)
        source = open_model(config)
        positions = source.config.max_position_embeddings
        if source.config.sliding_window:
            positions = min(positions, source.config.sliding_window)
        resolved = resolve_limits(config, positions, config.block_size)
        # RoPE tables are sized for what is served, not for the model's whole context.
        return cls(resolved, source.load(resolved, max_positions=resolved.max_total_tokens))

    # ---- asyncio side -------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the step thread; events are delivered on `loop`."""
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="engine-step", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        """Stop the step thread; requests still in flight end with an error."""
        if self._thread is None:
            return
        self._inbox.put(Stop())
        self._thread.join(timeout=30)
        self._thread = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def submit(self, prompt_ids: list[int], params: SamplingParams) -> RequestStream:
        """Queue a validated request; never blocks."""
        seq = Sequence(prompt_ids=list(prompt_ids), params=params)
        if params.sampling:
            seq.seed = params.seed if params.seed is not None else secrets.randbits(63)
            seq.generator = torch.Generator(device=self.runner.device).manual_seed(seq.seed)
        stream = RequestStream(seq.seq_id, self.abort)
        request = _Request(
            seq=seq,
            stream=stream,
            detokenizer=IncrementalDetokenizer(self.tokenizer, seq.prompt_ids),
            stops=StopMatcher(params.stop),
        )
        self._inbox.put(Add(request))
        return stream

    def abort(self, seq_id: int) -> None:
        """Drop the request `seq_id` (a no-op once it finished); never blocks."""
        self._inbox.put(Abort(seq_id))

    def stats(self) -> EngineStats:
        return self._stats

    # ---- step thread --------------------------------------------------------------------

    def _run(self) -> None:
        torch.set_num_threads(self.config.torch_threads)
        try:
            while self._take_inbox(block=not self.scheduler.has_work()):
                if self.scheduler.has_work():
                    self._step()
                self._publish_stats()
        finally:
            for request in list(self._requests.values()):
                self._finish(request, ErrorEvent("the engine is shutting down"))
            self._flush_events()

    def _take_inbox(self, block: bool) -> bool:
        """Apply the queued commands; False when told to stop."""
        try:
            command = self._inbox.get(timeout=0.5) if block else self._inbox.get_nowait()
        except queue.Empty:
            return True
        while True:
            match command:
                case Add(request):
                    self._requests[request.seq.seq_id] = request
                    self.scheduler.add(request.seq)
                case Abort(seq_id):
                    aborted = self._requests.pop(seq_id, None)
                    if aborted is not None:
                        self.scheduler.remove(aborted.seq)
                        self._counters["aborted"] += 1
                case Stop():
                    return False
            try:
                command = self._inbox.get_nowait()
            except queue.Empty:
                return True

    def _step(self) -> None:
        batch = self.scheduler.schedule()
        if not batch:
            self._reject_unschedulable()
            return
        now = time.monotonic()
        for seq in batch.prefills:
            if seq.first_scheduled_time is None:
                seq.first_scheduled_time = now
                seq.num_cached_tokens = seq.num_computed_tokens
                self._counters["prefix"] += seq.num_cached_tokens
                self._counters["prompt"] += seq.num_prompt_tokens
        try:
            output = self.runner.run(batch)
        except Exception:
            log.exception("engine step failed; failing its %d requests", len(batch.sequences))
            for seq in batch.sequences:
                self._finish(self._requests[seq.seq_id], ErrorEvent("the engine step failed"))
        else:
            self._postprocess(batch, output)
        self._counters["steps"] += 1
        self._flush_events()

    def _reject_unschedulable(self) -> None:
        # Only reachable when the head of the queue cannot fit even into an empty cache.
        if self.scheduler.running or not self.scheduler.waiting:
            return
        seq = self.scheduler.waiting[0]
        self._finish(self._requests[seq.seq_id], ErrorEvent("request does not fit the KV cache"))
        self._flush_events()

    def _postprocess(self, batch: ScheduledBatch, output: StepOutput) -> None:
        result = output.sample
        for row, seq in enumerate(output.seqs):
            request = self._requests[seq.seq_id]
            seq.num_computed_tokens = seq.num_tokens
            self.blocks.commit(seq)
            if seq.seq_id in output.prefill_logprobs:
                request.prefill = self._prefill_tokens(seq, output.prefill_logprobs[seq.seq_id])
            token_id = result.token_ids[row]
            seq.token_ids.append(token_id)
            self._counters["generated"] += 1
            text = request.detokenizer.step(token_id)
            reason = self._finish_reason(seq, token_id, request.stops.push(text))
            if reason is not None:
                text += request.detokenizer.flush()
            top = tuple(
                self._token_info(tid, lp)
                for tid, lp in zip(result.top_ids[row], result.top_logprobs[row], strict=True)
            )
            special = self.tokenizer.is_special(token_id)
            if not special:
                request.text.append(text)
            token = TokenInfo(token_id, text, result.logprobs[row], special)
            event = TokenEvent(seq.num_generated - 1, token, top)
            if reason is None:
                self._outbox.append((request.stream, event))
            else:
                finish = self._finish_info(request, reason)
                self._finish(request, dataclasses.replace(event, finish=finish))

    def _finish_reason(self, seq: Sequence, token_id: int, stopped: bool) -> FinishReason | None:
        # TGI's order: length first, then EOS, then stop sequences.
        if seq.num_generated >= seq.params.max_new_tokens:
            return "length"
        if token_id in self.eos_ids:
            return "eos_token"
        if stopped:
            return "stop_sequence"
        return None

    def _finish_info(self, request: _Request, reason: FinishReason) -> FinishInfo:
        seq = request.seq
        started = seq.first_scheduled_time or seq.arrival_time
        return FinishInfo(
            reason=reason,
            generated_text="".join(request.text),
            generated_tokens=seq.num_generated,
            input_length=seq.num_prompt_tokens,
            seed=seq.seed,
            cached_tokens=seq.num_cached_tokens,
            prefill=request.prefill,
            queue_time=started - seq.arrival_time,
            inference_time=time.monotonic() - started,
        )

    def _token_info(self, token_id: int, logprob: float | None) -> TokenInfo:
        return TokenInfo(
            token_id,
            self.tokenizer.token_text(token_id),
            logprob,
            self.tokenizer.is_special(token_id),
        )

    def _prefill_tokens(self, seq: Sequence, logprobs: list[float]) -> tuple[TokenInfo, ...]:
        ids = seq.prompt_ids
        first = TokenInfo(ids[0], self.tokenizer.token_text(ids[0]), None)
        rest = (
            TokenInfo(tid, self.tokenizer.token_text(tid), lp)
            for tid, lp in zip(ids[1:], logprobs, strict=True)
        )
        return (first, *rest)

    def _finish(self, request: _Request, last: Event) -> None:
        self._outbox.append((request.stream, last))
        self._requests.pop(request.seq.seq_id, None)
        self.scheduler.remove(request.seq)

    def _flush_events(self) -> None:
        """Hand every event of this step to the event loop in one thread hop."""
        batch, self._outbox = self._outbox, []
        if batch and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(_deliver, batch)

    def _publish_stats(self) -> None:
        running = self.scheduler.running
        c = self._counters
        self._stats = EngineStats(
            waiting=len(self.scheduler.waiting),
            running=len(running),
            batch_tokens=sum(seq.num_tokens for seq in running),
            kv_blocks_total=self.blocks.num_blocks,
            kv_blocks_used=self.blocks.num_blocks - self.blocks.num_free,
            kv_blocks_cached=self.blocks.num_cached_free,
            prefix_cache_hit_tokens_total=c["prefix"],
            prompt_tokens_total=c["prompt"],
            generated_tokens_total=c["generated"],
            preemptions_total=self.scheduler.preemptions_total,
            steps_total=c["steps"],
            aborted_total=c["aborted"],
        )


def _deliver(batch: list[tuple[RequestStream, Event]]) -> None:
    for stream, event in batch:
        stream.deliver(event)
