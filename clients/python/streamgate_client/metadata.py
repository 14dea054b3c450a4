"""gRPC metadata in both directions: what a caller may pass, and the text headers received."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TypeAlias

MetadataLike: TypeAlias = Mapping[str, str] | Sequence[tuple[str, str]]
"""Request metadata: a mapping or (key, value) pairs; keys are sent lower-cased (as gRPC needs)."""


def metadata_pairs(metadata: MetadataLike | None) -> list[tuple[str, str]]:
    """The (key, value) pairs to send, keys lower-cased."""
    items = metadata.items() if isinstance(metadata, Mapping) else (metadata or ())
    return [(k.lower(), v) for k, v in items]


def metadata_dict(metadata: Iterable[tuple[str, str | bytes]] | None) -> dict[str, str]:
    """Received metadata as a dict of its text values (binary `-bin` values are left out)."""
    return {k: v for k, v in (metadata or ()) if isinstance(v, str)}
