"""TGI's HTTP API over the engine (aiohttp): generate, generate_stream, compat, info, health,
metrics and tokenize.

What the handlers promise, as TGI does (router/src/server.rs, infer/mod.rs, v3.3):
- streams answer HTTP 200 with `data:<json>\\n\\n` events; an error is the stream's last event;
  `:` keep-alive comments go out after `keep_alive_seconds` without an event;
- non-streams answer errors as `{"error", "error_type"}` with 422 / 424 / 429;
- past `max_concurrent_requests` generate requests in flight a request is refused at once with
  `Model is overloaded`; the check comes before validation, as TGI takes its permit first;
- a client that goes away (handler cancelled by aiohttp, or a failed write) aborts its sequence,
  which leaves the batch at the next engine step and frees its KV blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

import streamgate
from streamgate import tgi
from streamgate.engine.config import EngineConfig
from streamgate.engine.core.llm_engine import GenerationError, LLMEngine, RequestStream
from streamgate.engine.core.sequence import TokenInfo
from streamgate.engine.http.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from streamgate.engine.http.metrics import ServerMetrics
from streamgate.engine.http.responses import Completed, generate_json, stream_event_json
from streamgate.engine.http.validation import (
    Limits,
    ValidationError,
    ValidRequest,
    check_stream,
    validate,
    validate_best_of,
)

log = logging.getLogger(__name__)

# TGI's default `--payload-limit`.
MAX_BODY_BYTES = 2_000_000
# Inputs longer than this are tokenized off the event loop so that one huge prompt does not stall
# every running stream; short ones are cheaper to tokenize inline than to hand to a thread.
INLINE_TOKENIZE_CHARS = 8192
# The compat route (`POST /`) defaults return_full_text to true for text-generation models.
PIPELINE_TAG = "text-generation"


class _Failure(Exception):
    """A request that ends with TGI's `{"error", "error_type"}`."""

    def __init__(self, status: int, message: str, error_type: tgi.ErrorType) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type

    def json(self) -> tgi.ErrorJSON:
        return tgi.error_json(self.message, self.error_type)


def _validation_failure(err: ValidationError) -> _Failure:
    return _Failure(422, f"Input validation error: {err.message}", "validation")


def _generation_failure(err: GenerationError) -> _Failure:
    return _Failure(424, f"Request failed during generation: {err}", "generation")


def _overloaded() -> _Failure:
    # A new instance each time: re-raising one shared exception would grow its traceback.
    return _Failure(429, "Model is overloaded", "overloaded")


class EngineServer:
    """Request handlers bound to one engine, with its limits, metrics and in-flight count."""

    def __init__(self, engine: LLMEngine, *, drain_seconds: float = 10.0) -> None:
        self.engine = engine
        config = engine.config
        self.limits = Limits.from_config(config)
        self.keep_alive_seconds = config.keep_alive_seconds
        self.max_concurrent_requests = config.max_concurrent_requests
        self.drain_seconds = drain_seconds
        self.in_flight = 0  # sequences of generate requests holding a concurrency slot
        self._idle = asyncio.Event()  # set while in_flight == 0
        self._idle.set()
        self.compute_type = engine.model_info.device
        self.metrics = ServerMetrics(
            engine.stats,
            lambda: self.in_flight,
            max_input_tokens=self.limits.max_input_tokens,
            max_total_tokens=self.limits.max_total_tokens,
            max_batch_total_tokens=config.kv_cache_tokens or config.max_batch_total_tokens,
            weight_bytes=engine.model_info.weight_bytes,
        )
        self.info = self._info()
        self._started = False

    # ---- lifecycle ------------------------------------------------------------------------

    async def on_startup(self, app: web.Application) -> None:
        """Start the engine's step thread, delivering its events on this event loop."""
        if not self._started:
            self.engine.start(asyncio.get_running_loop())
            self._started = True

    async def on_shutdown(self, app: web.Application) -> None:
        """Let in-flight requests finish for a while, then stop the engine.

        Requests still running after `drain_seconds` end with a generation error event (the
        engine fails them on shutdown) instead of being cut mid-stream without a word.
        """
        if self.in_flight:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), self.drain_seconds)
        # shutdown() joins the step thread: not on the event loop, whose callbacks it may need.
        await asyncio.to_thread(self.engine.shutdown)

    # ---- routes ---------------------------------------------------------------------------

    async def generate(self, request: web.Request) -> web.StreamResponse:
        """`POST /generate`: one JSON `GenerateResponse`."""
        req = await _parse(request, tgi.GenerateRequest)
        if isinstance(req, web.Response):
            return req
        return await self._generate(request, req.inputs, req.params, compat=False)

    async def generate_stream(self, request: web.Request) -> web.StreamResponse:
        """`POST /generate_stream`: server-sent `StreamResponse` events."""
        req = await _parse(request, tgi.GenerateRequest)
        if isinstance(req, web.Response):
            return req
        return await self._stream(request, req.inputs, req.params, full_text_default=False)

    async def compat_generate(self, request: web.Request) -> web.StreamResponse:
        """`POST /`: a JSON list of one `GenerateResponse`, or SSE with `stream: true`."""
        req = await _parse(request, tgi.CompatGenerateRequest)
        if isinstance(req, web.Response):
            return req
        if req.stream:
            full_text = self.info["model_pipeline_tag"] == PIPELINE_TAG
            return await self._stream(request, req.inputs, req.params, full_text_default=full_text)
        return await self._generate(request, req.inputs, req.params, compat=True)

    async def tokenize(self, request: web.Request) -> web.StreamResponse:
        """`POST /tokenize`: the tokens of `inputs` with their character spans."""
        req = await _parse(request, tgi.GenerateRequest)
        if isinstance(req, web.Response):
            return req
        tokens = self.engine.tokenizer.encode_with_offsets(req.inputs)
        return _json(tgi.simple_tokens_json(tokens))

    async def get_info(self, request: web.Request) -> web.StreamResponse:
        """`GET /info`: TGI's `Info` plus the engine's own facts."""
        return _json(self.info)

    async def health(self, request: web.Request) -> web.StreamResponse:
        """`GET /health`: 200 while the engine's step thread runs, else 503."""
        if self.engine.alive:
            return web.Response(status=200)
        return _json(tgi.error_json("unhealthy", "healthcheck"), status=503)

    async def get_metrics(self, request: web.Request) -> web.StreamResponse:
        """`GET /metrics`: Prometheus text exposition."""
        return web.Response(
            body=self.metrics.render(), headers={"Content-Type": METRICS_CONTENT_TYPE}
        )

    # ---- non-streamed generation ----------------------------------------------------------

    async def _generate(
        self, request: web.Request, inputs: str, params: tgi.GenerateParameters, *, compat: bool
    ) -> web.StreamResponse:
        start = time.monotonic()
        self.metrics.request_received()
        best_of = params.best_of if params.best_of is not None else 1
        try:
            if best_of > 1:
                try:
                    validate_best_of(best_of, self.limits.max_best_of)
                except ValidationError as err:
                    self.metrics.request_failed("validation")
                    raise _validation_failure(err) from None
            n = max(best_of, 1)
            if not self._acquire(n):
                self.metrics.request_failed("overloaded")
                raise _overloaded()
            try:
                valid = await self._validate(inputs, params, full_text_default=compat)
                submitted = time.monotonic()
                results = await self._run_to_completion(valid, n)
            finally:
                self._release(n)
        except _Failure as failure:
            return _json(failure.json(), status=failure.status)

        best = max(results, key=lambda r: r.mean_logprob)
        body = generate_json(
            best,
            [r for r in results if r is not best],
            prefix=inputs if valid.return_full_text else "",
            details=valid.details,
            top_tokens=bool(valid.params.top_n_tokens),
        )

        finish = best.finish
        total = time.monotonic() - start
        self.metrics.request_succeeded(
            total=total,
            queue=finish.queue_time,
            inference=finish.inference_time,
            generated_tokens=finish.generated_tokens,
        )
        per_token = finish.inference_time / max(finish.generated_tokens, 1)
        headers = {
            "x-compute-type": self.compute_type,
            "x-compute-time": f"{total:.6f}",
            "x-compute-characters": str(len(inputs)),
            "x-total-time": str(int(total * 1000)),
            "x-validation-time": str(int((submitted - start) * 1000)),
            "x-queue-time": str(int(finish.queue_time * 1000)),
            "x-inference-time": str(int(finish.inference_time * 1000)),
            "x-time-per-token": str(int(per_token * 1000)),
            "x-prompt-tokens": str(finish.input_length),
            "x-generated-tokens": str(finish.generated_tokens),
        }
        return _json([body] if compat else body, headers=headers)

    async def _run_to_completion(self, valid: ValidRequest, n: int) -> list[Completed]:
        """Submit `n` copies of the request and collect each to its last token."""
        self._check_alive()
        streams = [self.engine.submit(valid.prompt_ids, valid.params) for _ in range(n)]
        tasks = [asyncio.ensure_future(_collect(s)) for s in streams]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException as err:
            # Unfinished sequences must leave the batch, and their collectors (waiting for
            # events that will no longer come) must stop; abort() of a finished one is a no-op.
            for stream in streams:
                stream.abort()
            for task in tasks:
                task.cancel()
            if isinstance(err, GenerationError):
                self.metrics.request_failed("generation")
                raise _generation_failure(err) from None
            if isinstance(err, asyncio.CancelledError):
                # aiohttp cancels the handler when the client disconnects.
                self.metrics.request_failed("dropped")
            elif isinstance(err, _Failure):
                self.metrics.request_failed("incomplete")
            raise
        return list(results)

    # ---- streamed generation --------------------------------------------------------------

    async def _stream(
        self,
        request: web.Request,
        inputs: str,
        params: tgi.GenerateParameters,
        *,
        full_text_default: bool,
    ) -> web.StreamResponse:
        self.metrics.request_received()
        response = web.StreamResponse(
            status=200,
            headers={
                **tgi.SSE_HEADERS,
                "x-compute-type": self.compute_type,
                "x-compute-characters": str(len(inputs)),
            },
        )
        with contextlib.suppress(ConnectionResetError):
            await response.prepare(request)
            try:
                await self._stream_events(response, inputs, params, full_text_default)
            except _Failure as failure:
                await response.write(tgi.sse_event(failure.json()))
            await response.write_eof()
        return response

    async def _stream_events(
        self,
        response: web.StreamResponse,
        inputs: str,
        params: tgi.GenerateParameters,
        full_text_default: bool,
    ) -> None:
        start = time.monotonic()
        try:
            check_stream(params)
        except ValidationError as err:
            self.metrics.request_failed("validation")
            raise _validation_failure(err) from None
        if not self._acquire(1):
            self.metrics.request_failed("overloaded")
            raise _overloaded()
        try:
            valid = await self._validate(inputs, params, full_text_default=full_text_default)
            self._check_alive()
            stream = self.engine.submit(valid.prompt_ids, valid.params)
            await self._pump(response, stream, valid, start)
        finally:
            self._release(1)

    async def _pump(
        self,
        response: web.StreamResponse,
        stream: RequestStream,
        valid: ValidRequest,
        start: float,
    ) -> None:
        """Write one event per token until the last one; abort the sequence if the client left."""
        last_write = time.monotonic()
        handler = asyncio.current_task()

        async def keep_alive() -> None:
            # A side task instead of a timeout per token: tokens then cost no timer at all.
            nonlocal last_write
            while True:
                idle = time.monotonic() - last_write
                if idle < self.keep_alive_seconds:
                    await asyncio.sleep(self.keep_alive_seconds - idle)
                    continue
                try:
                    await response.write(tgi.SSE_KEEP_ALIVE)
                except ConnectionResetError:
                    if handler is not None:
                        handler.cancel()  # the handler's except clause aborts the sequence
                    return
                last_write = time.monotonic()

        pinger = asyncio.ensure_future(keep_alive())
        finished = False
        prefix = valid.inputs if valid.return_full_text else ""
        try:
            async for event in stream:
                payload = stream_event_json(event, details=valid.details, prefix=prefix)
                finish = event.finish
                if finish is not None:
                    finished = True
                    self.metrics.request_succeeded(
                        total=time.monotonic() - start,
                        queue=finish.queue_time,
                        inference=finish.inference_time,
                        generated_tokens=finish.generated_tokens,
                    )
                await response.write(tgi.sse_event(payload))
                last_write = time.monotonic()
            if not finished:
                self.metrics.request_failed("incomplete")
                raise _Failure(500, "Incomplete generation stream", "incomplete_generation_stream")
        except GenerationError as err:
            self.metrics.request_failed("generation")
            raise _generation_failure(err) from None
        except (asyncio.CancelledError, ConnectionResetError):
            if not finished:
                stream.abort()
                self.metrics.request_failed("dropped")
            raise
        finally:
            pinger.cancel()

    # ---- shared ---------------------------------------------------------------------------

    async def _validate(
        self, inputs: str, params: tgi.GenerateParameters, *, full_text_default: bool
    ) -> ValidRequest:
        tokenizer = self.engine.tokenizer
        started = time.monotonic()
        try:
            if len(inputs) > INLINE_TOKENIZE_CHARS:
                valid = await asyncio.to_thread(
                    validate,
                    inputs,
                    params,
                    tokenizer,
                    self.limits,
                    default_return_full_text=full_text_default,
                )
            else:
                valid = validate(
                    inputs,
                    params,
                    tokenizer,
                    self.limits,
                    default_return_full_text=full_text_default,
                )
        except ValidationError as err:
            self.metrics.request_failed("validation")
            raise _validation_failure(err) from None
        self.metrics.request_validated(
            valid.input_length, valid.params.max_new_tokens, time.monotonic() - started
        )
        return valid

    def _check_alive(self) -> None:
        # A request given to a stopped step thread would wait forever: fail it instead.
        if not self.engine.alive:
            self.metrics.request_failed("generation")
            raise _Failure(
                424, "Request failed during generation: the engine is not running", "generation"
            )

    def _acquire(self, n: int) -> bool:
        # The event loop is single-threaded: check-and-increment needs no lock.
        if self.in_flight + n > self.max_concurrent_requests:
            return False
        self.in_flight += n
        self._idle.clear()
        return True

    def _release(self, n: int) -> None:
        self.in_flight -= n
        if not self.in_flight:
            self._idle.set()

    def _info(self) -> dict[str, Any]:
        config = self.engine.config
        model = self.engine.model_info
        tokenizer = self.engine.tokenizer
        return {
            # TGI's `Info`, in its order.
            "model_id": model.model_id,
            "model_sha": model.model_sha,
            "model_pipeline_tag": PIPELINE_TAG,
            "max_concurrent_requests": config.max_concurrent_requests,
            "max_best_of": config.max_best_of,
            "max_stop_sequences": config.max_stop_sequences,
            "max_input_tokens": self.limits.max_input_tokens,
            "max_total_tokens": self.limits.max_total_tokens,
            "validation_workers": 1,
            "max_client_batch_size": 1,
            "router": "text-generation-router",
            "version": streamgate.__version__,
            "sha": None,
            "docker_label": None,
            # Ours (the first two are names older TGI versions reported too).
            "model_dtype": model.dtype,
            "model_device_type": model.device,
            "quantize": model.quantize,
            "num_parameters": model.num_parameters,
            "weight_bytes": model.weight_bytes,
            "max_top_n_tokens": config.max_top_n_tokens,
            "block_size": config.block_size,
            "kv_cache_tokens": config.kv_cache_tokens,
            "prefix_caching": config.enable_prefix_caching,
            "max_batch_total_tokens": config.max_batch_total_tokens,
            "max_batch_prefill_tokens": config.max_batch_prefill_tokens,
            "max_batch_size": config.max_batch_size,
            # The model's chat template (a GGUF carries one; null for `tiny`) and the texts of
            # its BOS and EOS tokens, which templates use: TGI clients ignore unknown keys.
            "chat_template": tokenizer.chat_template,
            "bos_token": tokenizer.bos_token,
            "eos_token": tokenizer.eos_token,
        }


async def _collect(stream: RequestStream) -> Completed:
    tokens: list[TokenInfo] = []
    top_tokens: list[tuple[TokenInfo, ...]] = []
    async for event in stream:
        tokens.append(event.token)
        top_tokens.append(event.top_tokens)
        if event.finish is not None:
            return Completed(event.finish, tokens, top_tokens)
    raise _Failure(500, "Incomplete generation", "incomplete_generation")


_Req = TypeVar("_Req", tgi.GenerateRequest, tgi.CompatGenerateRequest)


async def _parse(request: web.Request, model: type[_Req]) -> _Req | web.Response:
    """The parsed body, or the 422 response TGI gives a body it cannot deserialize."""
    body = await request.read()
    try:
        return tgi.parse_request(model, body)
    except tgi.RequestParseError as err:
        return _json(tgi.error_json(str(err), "validation"), status=422)


def _json(obj: object, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=tgi.dumps(obj),
        status=status,
        headers={"Content-Type": "application/json", **(headers or {})},
    )


_SERVER_KEY = web.AppKey("streamgate_engine_server", EngineServer)


def create_app(engine: LLMEngine, *, drain_seconds: float = 10.0) -> web.Application:
    """The aiohttp application serving TGI's API over `engine`.

    The engine is started when the application starts (on this event loop) and shut down when
    it stops, after in-flight requests had up to `drain_seconds` to finish. Run it with
    `handler_cancellation=True` (as `serve` does) so that a client disconnect aborts its
    sequence at once.
    """
    server = EngineServer(engine, drain_seconds=drain_seconds)
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[_SERVER_KEY] = server
    routes: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
        ("POST", "/", server.compat_generate),
        ("POST", "/generate", server.generate),
        ("POST", "/generate_stream", server.generate_stream),
        ("POST", "/tokenize", server.tokenize),
        ("GET", "/info", server.get_info),
        ("GET", "/health", server.health),
        ("GET", "/metrics", server.get_metrics),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
    app.on_startup.append(server.on_startup)
    app.on_shutdown.append(server.on_shutdown)
    return app


async def serve(config: EngineConfig) -> None:
    """Load the engine, serve it on config.host:config.port until SIGTERM/SIGINT, then stop.

    Prints `streamgate engine listening on <url>` once requests are accepted (with `--port 0`
    the URL carries the port the system picked).
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Installed before the (slow) model load, so that a signal during it is a clean stop too.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        loading = asyncio.ensure_future(asyncio.to_thread(LLMEngine.from_config, config))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({loading, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if stop.is_set():
            log.info("stopped while loading the model")
            return
        app = create_app(loading.result())
        runner = web.AppRunner(app, handler_cancellation=True, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, config.host, config.port)
            await site.start()
            host, port = runner.addresses[0][:2]
            url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
            # Printed, not logged: launchers and tests wait for this line whatever the logging.
            print(f"streamgate engine listening on {url}", flush=True)
            await stop.wait()
            log.info("shutting down")
        finally:
            await runner.cleanup()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
