"""Structured logs: JSON lines (or console text) on stderr, one line per request.

`configure_logging` is called once by the composition root (gateway/app.py); modules log with
`get_logger(__name__)`. Records of libraries that use the standard `logging` module (aiohttp,
grpc) are rendered the same way, so stderr holds one format.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any

import structlog

from streamgate.config import LoggingConfig

__all__ = ["compact", "configure_logging", "get_logger"]


def configure_logging(config: LoggingConfig) -> None:
    """Set up structlog and the standard logging root for the whole process."""
    level = logging.getLevelNamesMapping()[config.level]
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any
    if config.json_lines:
        shared.append(structlog.processors.dict_tracebacks)
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's access log is one line per metrics scrape: not worth it.
    logging.getLogger("aiohttp.access").setLevel(max(level, logging.WARNING))


def get_logger(name: str, **context: Any) -> Any:
    """A structlog logger whose lines carry `component` (the module name without the package).

    Lazy: the configuration applies when it first logs, so module-level loggers created at
    import time follow `configure_logging` called later.
    """
    return structlog.get_logger(component=name.removeprefix("streamgate."), **context)


def compact(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Fields without empty values (keeps log lines short)."""
    return {k: v for k, v in fields.items() if v not in (None, "", {}, [])}
