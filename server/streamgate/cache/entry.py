"""A cached response: what is needed to replay the stream step by step."""

from __future__ import annotations

from dataclasses import dataclass

from streamgate.backends import StreamEvent

__all__ = ["CachedResponse"]


@dataclass(frozen=True)
class CachedResponse:
    """The backend events of one finished generation, in order (the last one has the details),
    and who produced it."""

    events: tuple[StreamEvent, ...]
    scope: str
    """The cache scope it was stored under (for invalidation by namespace or tenant)."""
    model: str
    backend: str
    pool: str
    input_tokens: int
    seed: int | None

    @property
    def size(self) -> int:
        """An estimate of its memory in bytes (for the byte bound of the cache)."""
        text = sum(len(e.token.text) + 64 for e in self.events)
        final = self.events[-1].generated_text if self.events else None
        return 256 + text + len(final or "")
