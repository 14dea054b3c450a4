"""The client's commands against a streamgate gateway: `generate`, `chat` and `models`.

`streamgate-client COMMAND` (this module's `main`, also `python -m streamgate_client`) and
`streamgate COMMAND` (the server's command line registers the same commands with
`add_commands`) run the very same code: same flags, output and exit codes. An error prints one
line on stderr, `<program> <command>: CODE REASON: message ...`, and exits 1. Ctrl-C cancels
the call under way and exits 130, except in `chat`, where it stops the reply and the chat goes on.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import io
import os
import sys
import time
from collections.abc import Callable, Sequence

from streamgate_client import __version__
from streamgate_client.client import Client
from streamgate_client.connection import DEFAULT_TARGET, tls_credentials
from streamgate_client.errors import StreamgateError
from streamgate_client.events import StreamDelta, StreamEnd, StreamStart
from streamgate_client.requests import GenerateOptions

__all__ = ["add_commands", "build_parser", "main"]

_Command = Callable[[argparse.Namespace], int]
_INTERRUPTED = 130  # 128 + SIGINT: what a shell reports for a command stopped with Ctrl-C


def _add_connection_flags(p: argparse.ArgumentParser) -> None:
    c = p.add_argument_group("connection")
    c.add_argument(
        "--target",
        default=os.environ.get("STREAMGATE_TARGET", DEFAULT_TARGET),
        help=f"gateway host:port (default: env STREAMGATE_TARGET, else {DEFAULT_TARGET})",
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
    credentials = None
    if args.ca_file or args.cert_file or args.key_file:
        try:
            credentials = tls_credentials(args.ca_file, args.cert_file, args.key_file)
        except (ValueError, OSError) as err:
            raise SystemExit(f"{args.prog}: {err}") from None
    return Client(
        args.target,
        api_key=args.api_key or None,
        timeout=args.timeout,
        tls=args.tls,
        credentials=credentials,
    )


def _generation_options(args: argparse.Namespace) -> GenerateOptions:
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


def _stream_reply(
    client: Client, reply: _Reply, prompt: str | None, options: GenerateOptions
) -> None:
    """Print a reply's text as it streams (flushed per Delta) and record it in `reply`.

    Raises StreamgateError, and KeyboardInterrupt after cancelling the call.
    """
    began = time.perf_counter()
    with client.generate_stream(prompt, **options) as stream:
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


def _print_error(args: argparse.Namespace, err: StreamgateError) -> None:
    print(f"{args.prog}: {err}", file=sys.stderr)


def _quiet_on_ctrl_c(run: _Command) -> _Command:
    """Ends the command with 130 and no traceback on a Ctrl-C the command does not handle
    itself (e.g. while `generate -` reads its prompt, or while `models` waits)."""

    @functools.wraps(run)
    def command(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except KeyboardInterrupt:
            print(file=sys.stderr)  # the shell's prompt then starts after the echoed ^C
            return _INTERRUPTED

    return command


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
    p.set_defaults(func=_quiet_on_ctrl_c(_run_generate), prog=p.prog)


def _run_generate(args: argparse.Namespace) -> int:
    _replace_unencodable_output()
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    reply = _Reply()
    code = 0
    with _client(args) as client:
        try:
            _stream_reply(client, reply, prompt, _generation_options(args))
        except StreamgateError as err:
            if reply.text:  # end the partial output's line before the error
                print()
            _print_error(args, err)
            return 1
        except KeyboardInterrupt:  # the stream was cancelled on the way out
            code = _INTERRUPTED
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
    p.set_defaults(func=_quiet_on_ctrl_c(_run_chat), prog=p.prog)


def _run_chat(args: argparse.Namespace) -> int:
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
            options: GenerateOptions = {**_generation_options(args), "messages": history}
            stopped = False
            try:
                _stream_reply(client, reply, None, options)
            except StreamgateError as err:
                if reply.text:
                    print()
                _print_error(args, err)
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
    p.set_defaults(func=_quiet_on_ctrl_c(_run_models), prog=p.prog)


def _run_models(args: argparse.Namespace) -> int:
    with _client(args) as client:
        try:
            models = client.list_models()
        except StreamgateError as err:
            _print_error(args, err)
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


# --- the command line --------------------------------------------------------------------------


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `generate`, `chat` and `models` on a command line's subcommands.

    Each sets `func` (run it with the parsed arguments; it returns the exit code) and `prog`
    (the program and command, which starts its error lines).
    """
    _generate_parser(sub)
    _chat_parser(sub)
    _models_parser(sub)


def build_parser() -> argparse.ArgumentParser:
    """The `streamgate-client` argument parser."""
    parser = argparse.ArgumentParser(
        prog="streamgate-client", description="Talk to a streamgate gateway over gRPC"
    )
    parser.add_argument("--version", action="version", version=f"streamgate-client {__version__}")
    add_commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `streamgate-client` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code
