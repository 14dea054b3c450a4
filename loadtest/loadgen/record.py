"""What the client saw of one request: when it was sent, when each token-carrying message
arrived and how many tokens it carried, and how the call ended."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["Expected", "Record", "is_expected"]

Expected = Mapping[str, frozenset[str]]
"""The status codes each request class may end with; a class not listed: OK only."""


@dataclass
class Record:
    """One request. Times are seconds since the run began, from one monotonic clock."""

    index: int
    request_class: str
    start: float
    arrivals: list[float] = field(default_factory=list)
    """When each message with tokens arrived."""
    sizes: list[int] = field(default_factory=list)
    """How many tokens each of those messages carried (more than one: steps were merged)."""
    end: float | None = None
    code: str = ""
    """How the call ended: a gRPC status name (OK, CANCELLED, ...), or for a TGI target OK,
    CANCELLED, DEADLINE_EXCEEDED, the in-stream error_type or HTTP_<status>."""
    detail: str = ""

    def token(self, now: float, count: int) -> None:
        """A message with `count` tokens arrived at `now`."""
        self.arrivals.append(now)
        self.sizes.append(count)

    def finish(self, now: float, code: str, detail: str = "") -> None:
        self.end = now
        self.code = code
        self.detail = detail

    @property
    def tokens(self) -> int:
        return sum(self.sizes)

    @property
    def ttft(self) -> float | None:
        """Time to the first token, if one came."""
        return self.arrivals[0] - self.start if self.arrivals else None

    @property
    def gaps(self) -> list[float]:
        """The time between consecutive token-carrying messages (inter-token latency)."""
        return [b - a for a, b in zip(self.arrivals, self.arrivals[1:], strict=False)]

    @property
    def merged(self) -> int:
        """Messages that carried more than one token."""
        return sum(1 for n in self.sizes if n > 1)

    def row(self) -> dict[str, object]:
        """The request in a run's JSON (without its arrival times)."""
        return {
            "index": self.index,
            "class": self.request_class,
            "start": self.start,
            "end": self.end,
            "code": self.code,
            "detail": self.detail,
            "ttft": self.ttft,
            "tokens": self.tokens,
            "messages": len(self.sizes),
            "merged": self.merged,
        }


def is_expected(record: Record, expected: Expected) -> bool:
    """Whether `record` ended as its class may (else it counts as an error)."""
    return record.code in expected.get(record.request_class, frozenset({"OK"}))
