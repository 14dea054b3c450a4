"""The `streamgate` command line: one subcommand per tool.

- `streamgate serve [--config PATH]`  serve the gRPC gateway
- `streamgate generate "prompt"`      stream one reply from a gateway
- `streamgate chat`                   interactive chat with a gateway
- `streamgate models`                 list a gateway's routes
- `streamgate engine ...`             serve the TGI-compatible engine
- `streamgate write-tiny-model DIR`   write a tiny random Llama as a Hugging Face directory

Heavy imports (torch, the engine, grpc, the gateway) happen inside the subcommands, so `--help`
stays fast and each command works without the others' dependencies.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, get_args

from streamgate import __version__, eventloop
from streamgate.engine.config import Dtype, EngineConfig, Quantize

if TYPE_CHECKING:
    from streamgate.client import Client, StreamEnd, StreamgateError, StreamStart


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default unless it is None/boolean or the help already explains it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text or action.default is None or isinstance(action.default, bool):
            return text
        return super()._get_help_string(action)


def _engine_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    d = EngineConfig()
    p = sub.add_parser(
        "engine",
        help="serve the TGI-compatible torch engine",
        description="Serve a Llama-family model over TGI's HTTP API (generate, generate_stream, "
        "info, health, metrics, tokenize) with continuous batching and a paged KV cache.",
        formatter_class=_HelpFormatter,
    )
    # Every flag's dest is an EngineConfig field name: _engine_config() relies on it.
    m = p.add_argument_group("model")
    m.add_argument("--model", default=d.model, help='"tiny" (built in) or a local HF directory')
    m.add_argument("--model-id", default=d.model_id, help="name in /info (default: --model)")
    m.add_argument("--dtype", default=d.dtype, choices=get_args(Dtype), help="weights and KV")
    m.add_argument(
        "--quantize",
        default=d.quantize,
        choices=get_args(Quantize),
        help="weight-only quantization (default: none)",
    )
    m.add_argument("--device", default=d.device, help="cpu, cuda, cuda:1 (default: auto)")
    m.add_argument("--torch-threads", type=int, default=d.torch_threads, help="intra-op threads")

    k = p.add_argument_group("KV cache and batching")
    k.add_argument("--block-size", type=int, default=d.block_size, help="tokens per KV block")
    k.add_argument(
        "--kv-cache-tokens",
        type=int,
        default=d.kv_cache_tokens,
        help="KV cache capacity in tokens (default: --max-batch-total-tokens)",
    )
    k.add_argument(
        "--no-prefix-caching",
        dest="enable_prefix_caching",
        action="store_false",
        help="do not reuse KV blocks of identical prompt prefixes",
    )
    k.add_argument(
        "--max-batch-prefill-tokens",
        type=int,
        default=d.max_batch_prefill_tokens,
        help="prompt tokens prefilled in one step (default: max(max_input_tokens + 1, 4096))",
    )
    k.add_argument(
        "--max-batch-total-tokens",
        type=int,
        default=d.max_batch_total_tokens,
        help="tokens held by the running batch",
    )
    k.add_argument(
        "--max-batch-size", type=int, default=d.max_batch_size, help="sequences in one step"
    )
    k.add_argument(
        "--scheduling",
        default=d.scheduling,
        choices=["continuous", "static"],
        help="static: a batch runs to completion before the next (benchmark baseline)",
    )

    r = p.add_argument_group("TGI router limits")
    r.add_argument(
        "--max-concurrent-requests",
        type=int,
        default=d.max_concurrent_requests,
        help="generate requests in flight; beyond: `overloaded` at once",
    )
    r.add_argument(
        "--max-best-of", type=int, default=d.max_best_of, help="largest `best_of` accepted"
    )
    r.add_argument(
        "--max-stop-sequences", type=int, default=d.max_stop_sequences, help="per request"
    )
    r.add_argument(
        "--max-top-n-tokens", type=int, default=d.max_top_n_tokens, help="largest `top_n_tokens`"
    )
    r.add_argument(
        "--max-input-tokens",
        type=int,
        default=d.max_input_tokens,
        help="default: max_total_tokens - 1",
    )
    r.add_argument(
        "--max-total-tokens",
        type=int,
        default=d.max_total_tokens,
        help="default: min(model context, 2048)",
    )

    h = p.add_argument_group("HTTP")
    h.add_argument("--host", default=d.host, help="address to listen on")
    h.add_argument("--port", type=int, default=d.port, help="0: any free port (printed)")
    h.add_argument(
        "--keep-alive-seconds",
        type=float,
        default=d.keep_alive_seconds,
        help="idle time before a `:` keep-alive comment in a stream",
    )
    p.set_defaults(func=_run_engine)


def _engine_config(args: argparse.Namespace) -> EngineConfig:
    return EngineConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(EngineConfig)})


def _run_engine(args: argparse.Namespace) -> int:
    from streamgate.engine.model_config import ModelConfigError
    from streamgate.engine.server import serve

    try:
        eventloop.run(serve(_engine_config(args)))
    except (ModelConfigError, OSError) as err:  # a bad model, or the port is taken
        print(f"streamgate engine: {err}", file=sys.stderr)
        return 2
    return 0


# write-tiny-model flag -> TinyShape field; unset flags keep the built-in `tiny` shape.
_SHAPE_FLAGS = {
    "vocab_size": int,
    "hidden_size": int,
    "intermediate_size": int,
    "num_layers": int,
    "num_heads": int,
    "num_kv_heads": int,
    "max_position_embeddings": int,
    "seed": int,
}


def _tiny_model_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "write-tiny-model",
        help="write a tiny random Llama model as a Hugging Face directory",
        description="Write config.json, model.safetensors and the tokenizer files of a tiny "
        "random Llama (deterministic for a given shape and seed). Unset flags keep the shape "
        "of the built-in `tiny` model.",
    )
    p.add_argument("dir", help="output directory (created)")
    for name, kind in _SHAPE_FLAGS.items():
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, default=None)
    p.add_argument("--tie-word-embeddings", action="store_true", default=None)
    p.set_defaults(func=_run_write_tiny_model)


def _run_write_tiny_model(args: argparse.Namespace) -> int:
    from streamgate.engine.loader import TinyShape, write_tiny_model

    given = {
        name: getattr(args, name)
        for name in [*_SHAPE_FLAGS, "tie_word_embeddings"]
        if getattr(args, name) is not None
    }
    out = write_tiny_model(args.dir, TinyShape(**given))
    print(f"wrote {out}")
    return 0


# --- serve -----------------------------------------------------------------------------------


def _serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="serve the gRPC gateway",
        description="Serve streamgate.v1.GenerationService. Without configured backends the "
        "gateway starts the embedded engine with the tiny model. Settings come from the config "
        "file and STREAMGATE_* environment variables (e.g. STREAMGATE_LISTEN__PORT).",
    )
    p.add_argument("--config", metavar="PATH", help="YAML or TOML config file")
    p.set_defaults(func=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    try:
        from streamgate.config import ConfigError, load_config
        from streamgate.gateway.app import serve
        from streamgate.gateway.embedded import EmbeddedEngineError
    except ModuleNotFoundError as err:  # an install without the gateway's dependencies
        print(f"streamgate serve: the gateway is not available: {err}", file=sys.stderr)
        return 2
    try:
        eventloop.run(serve(load_config(args.config), lambda: load_config(args.config)))
    except KeyboardInterrupt:  # Ctrl-C before the gateway took over SIGINT: a requested stop
        return 0
    except (ConfigError, EmbeddedEngineError, OSError) as err:  # e.g. a bad config, port taken
        print(f"streamgate serve: {err}", file=sys.stderr)
        return 2
    return 0


# --- client commands ---------------------------------------------------------------------------

_DEFAULT_TARGET = "127.0.0.1:50051"  # the same as streamgate.client.DEFAULT_TARGET


def _add_connection_flags(p: argparse.ArgumentParser) -> None:
    c = p.add_argument_group("connection")
    c.add_argument(
        "--target",
        default=os.environ.get("STREAMGATE_TARGET", _DEFAULT_TARGET),
        help=f"gateway host:port (default: env STREAMGATE_TARGET, else {_DEFAULT_TARGET})",
    )
    c.add_argument(
        "--api-key",
        default=os.environ.get("STREAMGATE_API_KEY"),
        help="sent as `authorization: Bearer KEY` (default: env STREAMGATE_API_KEY)",
    )
    c.add_argument("--timeout", type=float, help="deadline of each call in seconds")
    c.add_argument("--tls", action="store_true", help="connect with TLS (system roots)")
    c.add_argument("--ca-file", help="PEM certificates to trust (implies --tls)")
    c.add_argument("--cert-file", help="client certificate for mutual TLS (PEM; implies --tls)")
    c.add_argument("--key-file", help="the client certificate's private key (PEM)")


def _add_generation_flags(p: argparse.ArgumentParser, *, stats_default: bool) -> None:
    g = p.add_argument_group("generation (unset: the route's defaults)")
    g.add_argument("--model", default="", help="route name (default: the default route)")
    g.add_argument("--max-new-tokens", type=int)
    g.add_argument("--temperature", type=float)
    g.add_argument("--top-k", type=int)
    g.add_argument("--top-p", type=float)
    g.add_argument("--repetition-penalty", type=float)
    g.add_argument("--seed", type=int)
    g.add_argument(
        "--stop", action="append", metavar="TEXT", help="stop sequence (repeat for more)"
    )
    p.add_argument(
        "--stats",
        action=argparse.BooleanOptionalAction,
        default=stats_default,
        help=f"print token counts and timings to stderr (default: {stats_default})",
    )


def _client(args: argparse.Namespace) -> Client:
    from streamgate.client import Client, tls_credentials

    credentials = None
    if args.ca_file or args.cert_file or args.key_file:
        try:
            credentials = tls_credentials(args.ca_file, args.cert_file, args.key_file)
        except (ValueError, OSError) as err:
            raise SystemExit(f"streamgate {args.command}: {err}") from None
    return Client(
        args.target,
        api_key=args.api_key or None,
        timeout=args.timeout,
        tls=args.tls,
        credentials=credentials,
    )


def _generation_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "model": args.model,
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "repetition_penalty": args.repetition_penalty,
        "seed": args.seed,
        "stop": args.stop,
    }


def _replace_unencodable_output() -> None:
    # Model output can hold any character; a terminal or pipe in a narrow encoding must not turn
    # a reply into a UnicodeEncodeError halfway through.
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="replace")


@dataclasses.dataclass
class _Reply:
    """What one streamed reply showed so far (kept when it is interrupted)."""

    text: str = ""
    start: StreamStart | None = None
    end: StreamEnd | None = None
    first_token_seconds: float | None = None
    total_seconds: float = 0.0


def _stream_reply(client: Client, reply: _Reply, options: dict[str, Any]) -> None:
    """Print a reply's text as it streams (flushed per Delta) and record it in `reply`.

    Raises StreamgateError, and KeyboardInterrupt after cancelling the call.
    """
    from streamgate.client import StreamDelta, StreamEnd, StreamStart

    began = time.perf_counter()
    with client.generate_stream(**options) as stream:
        for event in stream:
            if isinstance(event, StreamDelta):
                if reply.first_token_seconds is None:
                    reply.first_token_seconds = time.perf_counter() - began
                reply.text += event.text
                sys.stdout.write(event.text)
                sys.stdout.flush()
            elif isinstance(event, StreamStart):
                reply.start = event
            elif isinstance(event, StreamEnd):
                reply.end = event
            reply.total_seconds = time.perf_counter() - began


def _stats_line(reply: _Reply) -> str:
    """`[5 prompt + 16 generated tokens | TTFT 41.2 ms | total 210.3 ms | length]`, measured
    by this client (TTFT: until the first Delta)."""
    parts = ["interrupted"] if reply.end is None else []
    if reply.end is not None:
        usage = reply.end.usage
        prompt = usage.prompt_tokens or (reply.start.input_tokens if reply.start else 0)
        parts.append(f"{prompt} prompt + {usage.completion_tokens} generated tokens")
    if reply.first_token_seconds is not None:
        parts.append(f"TTFT {reply.first_token_seconds * 1e3:.1f} ms")
    parts.append(f"total {reply.total_seconds * 1e3:.1f} ms")
    if reply.end is not None and reply.end.finish_reason:
        parts.append(reply.end.finish_reason)
    return "[" + " | ".join(parts) + "]"


def _print_error(command: str, err: StreamgateError) -> None:
    print(f"streamgate {command}: {err}", file=sys.stderr)


# --- generate ----------------------------------------------------------------------------------


def _generate_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "generate",
        help="stream one reply from a gateway",
        description="Send a prompt to a streamgate gateway and print the reply as it streams; "
        "token counts and timings go to stderr. Errors print one line with the status code and "
        "reason, and exit 1.",
    )
    p.add_argument("prompt", help='the prompt ("-": read it from stdin)')
    _add_connection_flags(p)
    _add_generation_flags(p, stats_default=True)
    p.set_defaults(func=_run_generate)


def _run_generate(args: argparse.Namespace) -> int:
    from streamgate.client import StreamgateError

    _replace_unencodable_output()
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    reply = _Reply()
    code = 0
    with _client(args) as client:
        try:
            _stream_reply(client, reply, {"prompt": prompt, **_generation_options(args)})
        except StreamgateError as err:
            code = 1
            if reply.text:  # end the partial output's line before the error
                print()
            _print_error("generate", err)
            return code
        except KeyboardInterrupt:  # the stream was cancelled on the way out
            code = 130
        if not reply.text.endswith("\n"):
            print()
        if args.stats:
            print(_stats_line(reply), file=sys.stderr)
    return code


# --- chat --------------------------------------------------------------------------------------


def _chat_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "chat",
        help="interactive chat with a gateway",
        description="Chat in the terminal, keeping the conversation (sent as chat messages). "
        "/exit or EOF (Ctrl-D) quits, /reset forgets the conversation, Ctrl-C stops the reply "
        "being written. With stdin not a terminal, each line is one turn and an error exits 1.",
    )
    p.add_argument("--system", help="system message that starts the conversation")
    _add_connection_flags(p)
    _add_generation_flags(p, stats_default=False)
    p.set_defaults(func=_run_chat)


def _run_chat(args: argparse.Namespace) -> int:
    from streamgate.client import StreamgateError

    _replace_unencodable_output()
    interactive = sys.stdin.isatty()
    if interactive:
        with contextlib.suppress(ImportError):  # not on every platform
            import readline  # noqa: F401  (line editing and history for input())
        print(
            f"chatting with {args.target}: /exit or Ctrl-D quits, /reset forgets, "
            "Ctrl-C stops a reply",
            file=sys.stderr,
        )
    opening = [{"role": "system", "content": args.system}] if args.system else []
    history = list(opening)
    with _client(args) as client:
        while True:
            try:
                line = input("> " if interactive else "")
            except EOFError:
                if interactive:
                    print()
                return 0
            except KeyboardInterrupt:  # at the prompt: drop the line, as Python's REPL does
                print()
                continue
            command = line.strip()
            if not command:
                continue
            if command in ("/exit", "/quit"):
                return 0
            if command == "/reset":
                history = list(opening)
                continue
            history.append({"role": "user", "content": line})
            reply = _Reply()
            options = {**_generation_options(args), "messages": history}
            stopped = False
            try:
                _stream_reply(client, reply, options)
            except StreamgateError as err:
                if reply.text:
                    print()
                _print_error("chat", err)
                history.pop()  # the turn failed: the user may send it again
                if not interactive:
                    return 1
                continue
            except KeyboardInterrupt:  # the call was cancelled on the way out
                stopped = True
            if reply.text:
                # An interrupted reply is kept as far as it was shown: that is the conversation
                # the user saw and answers to.
                history.append({"role": "assistant", "content": reply.text})
            elif stopped:
                history.pop()
            if not reply.text.endswith("\n"):
                print()
            if stopped:
                print("[stopped]", file=sys.stderr)
            elif args.stats:
                print(_stats_line(reply), file=sys.stderr)


# --- models ------------------------------------------------------------------------------------


def _models_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "models",
        help="list a gateway's routes",
        description="List the routes (model names) a gateway serves; * marks the default.",
    )
    _add_connection_flags(p)
    p.set_defaults(func=_run_models)


def _run_models(args: argparse.Namespace) -> int:
    from streamgate.client import StreamgateError

    with _client(args) as client:
        try:
            models = client.list_models()
        except StreamgateError as err:
            _print_error("models", err)
            return 1
    rows = [("ROUTE", "", "BACKEND MODELS", "MAX INPUT", "MAX TOTAL")]
    rows += [
        (
            m.name,
            "*" if m.default else "",
            ",".join(m.backend_models) or "-",
            str(m.max_input_tokens or "-"),
            str(m.max_total_tokens or "-"),
        )
        for m in models
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


# --- hash-key ----------------------------------------------------------------------------------


def _hash_key_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "hash-key",
        help="make an API key and print its sha256 for the config",
        description="Print a new random API key (or hash the one read from stdin with --stdin) "
        "and the sha256 to put in a tenant's keys. The gateway keeps only the hash.",
    )
    p.add_argument("--stdin", action="store_true", help="hash the key read from stdin")
    p.set_defaults(func=_run_hash_key)


def _run_hash_key(args: argparse.Namespace) -> int:
    from streamgate.tenancy import hash_key, new_key

    if args.stdin:
        key = sys.stdin.readline().strip()
        if not key:
            print("streamgate hash-key: no key on stdin", file=sys.stderr)
            return 2
    else:
        key = new_key()
        print(f"key:    {key}")
    print(f"sha256: {hash_key(key)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The `streamgate` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="streamgate", description="gRPC streaming LLM gateway and its TGI-compatible engine"
    )
    parser.add_argument("--version", action="version", version=f"streamgate {__version__}")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _serve_parser(sub)
    _generate_parser(sub)
    _chat_parser(sub)
    _models_parser(sub)
    _engine_parser(sub)
    _tiny_model_parser(sub)
    _hash_key_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `streamgate` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
