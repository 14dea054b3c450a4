"""The `streamgate` command line: one subcommand per tool.

- `streamgate engine ...`            serve the TGI-compatible engine
- `streamgate write-tiny-model DIR`  write a tiny random Llama as a Hugging Face directory

Heavy imports (torch, the engine) happen inside the subcommands, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import sys
from collections.abc import Sequence
from typing import get_args

from streamgate import __version__
from streamgate.engine.config import Dtype, EngineConfig, Quantize


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
        asyncio.run(serve(_engine_config(args)))
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
    _engine_parser(sub)
    _tiny_model_parser(sub)
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
