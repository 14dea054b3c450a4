"""TGI's `GenerateParameters`: the engine parses them, the adapter sends them; one declaration.

`None` everywhere means "not given": the server's default applies, and a client does not send
the field at all (`to_json`). The model is strict like serde (TGI v3.3, router/src/lib.rs): no
"5" -> 5 or 5.0 -> 5 coercion (floats still accept integers), Rust's integer widths, no NaN or
infinities (Python's json reads them, TGI's parser does not), and unknown keys are errors (TGI
ignores them; we reject them on purpose so that typos do not pass silently). An explicit JSON
`null` is accepted for every field, because the official `text-generation` client sends all of
them.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["I32", "STRICT", "U32", "U64", "GenerateParameters"]

# Rust integer widths of TGI's `GenerateParameters`: out-of-range values fail deserialization.
U32 = Annotated[int, Field(ge=0, le=2**32 - 1)]
I32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
U64 = Annotated[int, Field(ge=0, le=2**64 - 1)]

STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)
"""The configuration of TGI's request types (see the module doc)."""


class GenerateParameters(BaseModel):
    """TGI's `GenerateParameters`; build one by keyword, e.g.
    `GenerateParameters(max_new_tokens=20, stop=("\\n",))`.

    Grammars, LoRA adapters and watermarking are part of TGI's schema (so they parse), but the
    engine rejects them in validation.
    """

    model_config = STRICT

    best_of: U64 | None = None
    temperature: float | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    top_k: I32 | None = None
    top_p: float | None = None
    typical_p: float | None = None
    do_sample: bool | None = None
    max_new_tokens: U32 | None = None
    return_full_text: bool | None = None
    stop: tuple[str, ...] | None = None
    truncate: U64 | None = None
    watermark: bool | None = None
    details: bool | None = None
    decoder_input_details: bool | None = None
    seed: U64 | None = None
    top_n_tokens: U32 | None = None
    grammar: Any = None  # any JSON
    adapter_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON `parameters` object of a request: only the fields that are set."""
        out = {name: value for name, value in self.__dict__.items() if value is not None}
        if self.stop is not None:
            out["stop"] = list(self.stop)
        return out
