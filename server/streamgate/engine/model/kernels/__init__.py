"""Native CPU kernels of the model, each with a pure-torch path that computes the same thing.

native (compiles the C++ sources with the system compiler on first use, cached by torch; None
when that is impossible) -> int4 (4-bit group-quantized matmul on the file's own scales and
minimums).
"""

from streamgate.engine.model.kernels.int4 import Int4Path, Int4Tiles, int4_mm

__all__ = ["Int4Path", "Int4Tiles", "int4_mm"]
