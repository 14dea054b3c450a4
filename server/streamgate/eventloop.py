"""Running a server's event loop: uvloop where it is installed, asyncio's own loop otherwise.

uvloop runs the same asyncio code with a faster loop (libuv); on a shared 2-core machine it
took 0.3 to 1 ms off the time to first token through the gateway (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run"]

_T = TypeVar("_T")


def run(main: Coroutine[Any, Any, _T]) -> _T:
    """`asyncio.run(main)`, on uvloop when it is available."""
    try:
        import uvloop
    except ImportError:  # not built for this platform (Windows)
        return asyncio.run(main)
    return uvloop.run(main)
