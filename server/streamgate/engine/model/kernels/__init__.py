"""Native CPU kernels of the model, each with a pure-torch path that computes the same thing.

native (builds the C++ files here with the system compiler, cached by torch; `load_kernels`
is False when that is impossible) -> int4 (4-bit group-quantized matmul on the file's own scales
and minimums), int8 (8-bit codes with a float16 scale per group: GGUF's Q8_0), decoder (the
decoder layer's norms, rotary embedding + KV cache write, SwiGLU and decode attention).
"""

from streamgate.engine.model.kernels.int4 import Int4Path, Int4Tiles, int4_mm
from streamgate.engine.model.kernels.int8 import Int8Blocks, Int8Path, int8_mm

__all__ = ["Int4Path", "Int4Tiles", "Int8Blocks", "Int8Path", "int4_mm", "int8_mm"]
