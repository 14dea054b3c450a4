"""Live counts while a run goes: a progress bar on a terminal, a line every few seconds in a
log (CI), and nothing else: the numbers that matter are in the summary and the report."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as Bar

from loadtest.loadgen.runner import Progress

__all__ = ["show_progress"]

LOG_INTERVAL = 10.0  # seconds between lines when the output is not a terminal


def _counts(progress: Progress, tokens_per_s: float) -> str:
    return f"{progress.in_flight} in flight, {progress.errors} errors, {tokens_per_s:,.0f} tokens/s"


@asynccontextmanager
async def show_progress(progress: Progress, title: str) -> AsyncIterator[None]:
    """Show `progress` until the block ends."""
    console = Console(file=sys.stderr)
    task = asyncio.create_task(
        _bar(progress, title, console) if console.is_terminal else _lines(progress, title)
    )
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _bar(progress: Progress, title: str, console: Console) -> None:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[counts]}"),
    )
    with Bar(*columns, console=console, transient=False) as bar:
        task = bar.add_task(title, total=progress.planned, counts="")
        async for tokens_per_s in _rates(progress, 0.25):
            bar.update(task, completed=progress.finished, counts=_counts(progress, tokens_per_s))


async def _lines(progress: Progress, title: str) -> None:
    async for tokens_per_s in _rates(progress, LOG_INTERVAL):
        print(
            f"{title}: {progress.finished}/{progress.planned} done, "
            + _counts(progress, tokens_per_s),
            file=sys.stderr,
            flush=True,
        )


async def _rates(progress: Progress, interval: float) -> AsyncIterator[float]:
    """Every `interval` seconds: the tokens per second since the last time."""
    last_tokens, last_time = progress.tokens, time.monotonic()
    while True:
        await asyncio.sleep(interval)
        now = time.monotonic()
        yield (progress.tokens - last_tokens) / (now - last_time)
        last_tokens, last_time = progress.tokens, now
