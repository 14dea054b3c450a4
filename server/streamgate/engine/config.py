"""Engine configuration: model choice, numeric formats and TGI's serving limits.

`EngineConfig` is the one declaration of every setting: its fields carry their command-line
help, group and (where it differs from `--<field-name>`) flag in their metadata, from which
`streamgate.engine.cli` derives the flags of `streamgate engine`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Dtype", "EngineConfig", "Quantize", "Scheduling", "flag"]

Dtype = Literal["float32", "bfloat16", "float16"]
Quantize = Literal["int8", "int4"]
Scheduling = Literal["continuous", "static"]


def flag(help: str, group: str, *, name: str | None = None) -> Mapping[str, Any]:
    """The metadata of a field of `EngineConfig` that makes its command-line flag: `help` (the
    default is appended unless the help speaks of it, or it is None or a boolean), `group` (the
    help section) and `name` (default `--<field-name>`; a boolean field's flag switches it to
    the other value)."""
    return {"help": help, "group": group, "flag": name}


_MODEL = "model"
_KV_CACHE = "KV cache and batching"
_LIMITS = "TGI router limits"
_HTTP = "HTTP"


@dataclass
class EngineConfig:
    """Everything `streamgate engine` can be told; defaults mirror TGI's launcher."""

    model: str = field(
        default="tiny",
        metadata=flag(
            '"tiny" (built in), a packaged model (smollm2-135m-instruct), a .gguf file, or a '
            "directory (HF format, or holding one .gguf file); see docs/models.md",
            _MODEL,
        ),
    )
    model_id: str | None = field(
        default=None, metadata=flag("name in /info (default: --model)", _MODEL)
    )
    dtype: Dtype = field(default="float32", metadata=flag("weights and KV", _MODEL))
    quantize: Quantize | None = field(
        default=None,
        metadata=flag("weight-only quantization of float weights (default: none)", _MODEL),
    )
    dequantize: bool = field(
        default=False,
        metadata=flag(
            "run a GGUF's 4-bit weights as floats of --dtype instead of as they are", _MODEL
        ),
    )
    # None: cuda when torch sees a GPU, else cpu.
    device: str | None = field(
        default=None, metadata=flag("cpu, cuda, cuda:1 (default: auto)", _MODEL)
    )
    torch_threads: int = field(default=1, metadata=flag("intra-op threads", _MODEL))

    block_size: int = field(default=16, metadata=flag("tokens per KV block", _KV_CACHE))
    # Rounded down to whole blocks.
    kv_cache_tokens: int | None = field(
        default=None,
        metadata=flag("KV cache capacity in tokens (default: --max-batch-total-tokens)", _KV_CACHE),
    )
    enable_prefix_caching: bool = field(
        default=True,
        metadata=flag(
            "do not reuse KV blocks of identical prompt prefixes",
            _KV_CACHE,
            name="--no-prefix-caching",
        ),
    )
    max_batch_prefill_tokens: int | None = field(
        default=None,
        metadata=flag(
            "prompt tokens prefilled in one step (default: max(max_input_tokens + 1, 4096))",
            _KV_CACHE,
        ),
    )
    max_batch_total_tokens: int = field(
        default=32768, metadata=flag("tokens held by the running batch", _KV_CACHE)
    )
    max_batch_size: int = field(default=256, metadata=flag("sequences in one step", _KV_CACHE))
    scheduling: Scheduling = field(
        default="continuous",
        metadata=flag(
            "static: a batch runs to completion before the next (benchmark baseline)", _KV_CACHE
        ),
    )

    max_concurrent_requests: int = field(
        default=128,
        metadata=flag("generate requests in flight; beyond: `overloaded` at once", _LIMITS),
    )
    max_best_of: int = field(default=1, metadata=flag("largest `best_of` accepted", _LIMITS))
    max_stop_sequences: int = field(default=4, metadata=flag("per request", _LIMITS))
    max_top_n_tokens: int = field(default=5, metadata=flag("largest `top_n_tokens`", _LIMITS))
    max_input_tokens: int | None = field(
        default=None, metadata=flag("default: max_total_tokens - 1", _LIMITS)
    )
    max_total_tokens: int | None = field(
        default=None, metadata=flag("default: min(model context, 2048)", _LIMITS)
    )

    host: str = field(default="127.0.0.1", metadata=flag("address to listen on", _HTTP))
    port: int = field(default=3000, metadata=flag("0: any free port (printed)", _HTTP))
    keep_alive_seconds: float = field(
        default=15.0, metadata=flag("idle time before a `:` keep-alive comment in a stream", _HTTP)
    )
