"""Engine configuration: model choice, numeric formats and TGI's serving limits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Dtype = Literal["float32", "bfloat16", "float16"]
Quantize = Literal["int8", "int4"]


@dataclass
class EngineConfig:
    """Everything `streamgate engine` can be told; defaults mirror TGI's launcher."""

    model: str = "tiny"  # "tiny" (built in) or a local HF-format directory
    model_id: str | None = None  # name reported by /info; defaults to the model path
    dtype: Dtype = "float32"
    quantize: Quantize | None = None
    device: str | None = None  # None: cuda when torch sees a GPU, else cpu
    torch_threads: int = 1

    # Paged KV cache.
    block_size: int = 16
    # KV capacity in tokens; rounded down to whole blocks. None: max_batch_total_tokens.
    kv_cache_tokens: int | None = None
    enable_prefix_caching: bool = True

    # TGI router limits.
    max_concurrent_requests: int = 128
    max_best_of: int = 1
    max_stop_sequences: int = 4
    max_top_n_tokens: int = 5
    max_input_tokens: int | None = None  # None: max_total_tokens - 1
    max_total_tokens: int | None = None  # None: min(model context, 2048)
    max_batch_prefill_tokens: int | None = None  # None: max(max_input_tokens + 1, 4096)
    max_batch_total_tokens: int = 32768
    max_batch_size: int = 256  # sequences in one step
    # "static" is the baseline of the benchmarks: a batch runs to completion before the next.
    scheduling: Literal["continuous", "static"] = "continuous"

    # HTTP.
    host: str = "127.0.0.1"
    port: int = 3000
    keep_alive_seconds: float = 15.0
