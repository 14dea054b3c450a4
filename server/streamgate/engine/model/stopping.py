"""Stop sequences, matched in the generated text across token boundaries."""

from __future__ import annotations

from collections.abc import Sequence


class StopMatcher:
    """Stop sequences matched in the generated text across token boundaries.

    Only a bounded tail of the text is kept: a match that ends in the new text starts at most
    `len(stop) - 1` characters before it, and matches that end earlier were already reported.
    Like TGI, the caller keeps the stop sequence in the generated text (nothing is trimmed).
    Empty strings never match (they would stop every request at its first token).
    """

    def __init__(self, stop_sequences: Sequence[str]) -> None:
        self._stops = tuple(s for s in stop_sequences if s)
        self._keep = max((len(s) for s in self._stops), default=1) - 1
        self._tail = ""
        self._stopped = False

    def push(self, new_text: str) -> bool:
        """Append generated text; True once any stop sequence occurs in the text so far."""
        if self._stopped or not self._stops:
            return self._stopped
        window = self._tail + new_text
        self._stopped = any(stop in window for stop in self._stops)
        self._tail = window[-self._keep :] if self._keep else ""
        return self._stopped
