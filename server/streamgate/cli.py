"""The `streamgate` command line: one subcommand per tool.

- `streamgate serve [--config PATH]`  serve the gRPC gateway
- `streamgate generate "prompt"`      stream one reply from a gateway
- `streamgate chat`                   interactive chat with a gateway
- `streamgate models`                 list a gateway's routes
- `streamgate engine ...`             serve the TGI-compatible engine
- `streamgate write-tiny-model DIR`   write a tiny random Llama as a Hugging Face directory

Heavy imports (torch, the engine, the gateway) happen inside the subcommands, so `--help`
stays fast and each command works without the others' dependencies. generate, chat and models
are the client distribution's commands (`streamgate_client.cli`), registered here unchanged.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from streamgate import __version__, eventloop
from streamgate.engine import cli as engine_cli
from streamgate_client import cli as client_cli


def _engine_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "engine",
        help="serve the TGI-compatible torch engine",
        description="Serve a Llama-family model over TGI's HTTP API (generate, generate_stream, "
        "info, health, metrics, tokenize) with continuous batching and a paged KV cache.",
        formatter_class=engine_cli.HelpFormatter,
    )
    engine_cli.add_engine_arguments(p)  # a flag per EngineConfig field
    p.set_defaults(func=_run_engine)


def _run_engine(args: argparse.Namespace) -> int:
    from streamgate.engine.http.server import serve
    from streamgate.engine.model.config import ModelConfigError

    try:
        eventloop.run(serve(engine_cli.engine_config(args)))
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
    from streamgate.engine.model.loader import TinyShape, write_tiny_model

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
        "gateway starts the embedded engine with its packaged model (embedded.model). "
        "Settings come from the config file and STREAMGATE_* environment variables "
        "(e.g. STREAMGATE_LISTEN__PORT).",
    )
    p.add_argument("--config", metavar="PATH", help="YAML or TOML config file")
    p.set_defaults(func=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    try:
        from streamgate.config import ConfigError, load_config
        from streamgate.gateway.app import serve
        from streamgate.gateway.fleet.embedded import EmbeddedEngineError
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
    client_cli.add_commands(sub)  # generate, chat, models
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
