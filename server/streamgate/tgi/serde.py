"""JSON the way TGI writes it (Rust's serde_json): compact, UTF-8, no NaN or infinities."""

from __future__ import annotations

import json
import math

__all__ = ["dumps", "finite_or_none"]


def dumps(obj: object) -> bytes:
    """Compact UTF-8 JSON like serde_json (no spaces, non-ASCII unescaped)."""
    # backslashreplace: a lone surrogate (never expected from a tokenizer) becomes a JSON
    # \\udcXX escape instead of failing the whole response.
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8", "backslashreplace")


def finite_or_none(value: float | None) -> float | None:
    """A float field's JSON value: serde_json writes NaN and +-inf as null, where Python's json
    would write invalid JSON."""
    if value is None or not math.isfinite(value):
        return None
    return value
