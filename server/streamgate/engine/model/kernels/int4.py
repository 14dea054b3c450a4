"""y = x @ W.T for 4-bit weights in groups along the inputs, w = q * scale + minimum exactly.

`Int4Tiles` is the weight in the native kernel's layout (see int4_matmul.cpp): 8 outputs per
tile, one 32-bit word per tile and input holding the 8 codes, and the float16 scales and
minimums as given. Its float32 weight equals `Int4Blocks.dequantize`'s bit for bit (q * scale
is exact in float32 for a 4-bit q and a float16 scale), and the kernel differs from
dequantize-then-matmul only by float32 rounding, unlike the CPU int4 kernel of torch, which
takes bfloat16 scales, activations and outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from streamgate.engine.model.kernels.native import load_kernels

TILE = 8  # outputs per tile: the nibbles of one 32-bit word

Int4Path = Literal["fastest", "scalar", "gemm", "torch"]
"""fastest: the native kernel (AVX2 when the CPU has it) below GEMM_MIN_ROWS rows, `gemm` from
there; scalar: the native kernel without vectors; gemm: native dequantization, then a float32
GEMM; torch: no native code (dequantize with torch ops, then a float32 GEMM). `fastest` falls
back to torch when nothing is built."""

# Rows from which dequantizing the weight and a float32 GEMM beat the kernel (long prefills).
# Measured on SmolLM2-135M's projections (1 AVX2 thread, ms per 30 layers, kernel / GEMM):
# 64 rows 271 / 322, 128 rows 492 / 484, 256 rows 1013 / 819, 512 rows 2047 / 1498.
GEMM_MIN_ROWS = 128


@dataclass(frozen=True)
class Int4Tiles:
    """4-bit weights [out, in] with float16 scales and minimums per group of inputs."""

    codes: torch.Tensor  # int32 [tiles, in]: code of output 8 * tile + j in nibble j
    params: torch.Tensor  # int16 [tiles, groups, 2, 8]: float16 scales, then minimums, as bits
    out_features: int
    group_size: int

    @classmethod
    def from_blocks(
        cls,
        codes: torch.Tensor,
        scales: torch.Tensor,
        minimums: torch.Tensor,
        group_size: int,
    ) -> Int4Tiles:
        """From codes uint8 [out, in] (0..15) and float16 scales and minimums [out, groups].

        Outputs are zero-padded to whole tiles; the padding is never written to a result.
        """
        out, size = codes.shape
        if group_size % 8 or size % group_size:
            raise ValueError(
                f"{size} inputs in groups of {group_size}: the kernel needs whole groups of a "
                "multiple of 8 inputs"
            )
        pad = -out % TILE
        tiles = (out + pad) // TILE
        nibbles = F.pad(codes.to(torch.uint8), (0, 0, 0, pad)).view(tiles, TILE, size)
        nibbles = nibbles.transpose(1, 2)  # [tiles, in, 8]
        # Byte b of a little-endian word holds nibbles 2b (low) and 2b + 1 (high).
        words = (nibbles[..., 0::2] | (nibbles[..., 1::2] << 4)).contiguous().view(torch.int32)

        def per_tile(t: torch.Tensor) -> torch.Tensor:  # [out, groups] -> [tiles, groups, 8]
            return F.pad(t.to(torch.float16), (0, 0, 0, pad)).view(tiles, TILE, -1).transpose(1, 2)

        params = torch.stack([per_tile(scales), per_tile(minimums)], dim=2).contiguous()
        # As int16 bits: Module.to(dtype) converts floating-point buffers, never integer ones.
        return cls(words.view(tiles, size), params.view(torch.int16), out, group_size)

    @property
    def in_features(self) -> int:
        return self.codes.shape[1]

    def dequantize(self) -> torch.Tensor:
        """The float32 weight [out, in]: q * scale + minimum, rounded once (as GGUF's reader)."""
        tiles, size = self.codes.shape
        packed = self.codes.view(torch.uint8).view(tiles, size, TILE // 2)
        q = torch.stack([packed & 15, packed >> 4], dim=-1).view(tiles, size, TILE)
        groups = q.transpose(1, 2).reshape(tiles * TILE, size // self.group_size, self.group_size)
        params = self.params.view(torch.float16).float()
        scale, minimum = params.transpose(2, 3).unbind(dim=-1)  # [tiles, groups, 8]
        scale = scale.transpose(1, 2).reshape(tiles * TILE, -1, 1)
        minimum = minimum.transpose(1, 2).reshape(tiles * TILE, -1, 1)
        w = (groups.float() * scale + minimum).view(tiles * TILE, size)
        return w[: self.out_features]


def int4_mm(x: torch.Tensor, tiles: Int4Tiles, path: Int4Path = "fastest") -> torch.Tensor:
    """x float32 [rows, in] @ W.T -> float32 [rows, out] on the CPU."""
    if path != "torch" and load_kernels():
        ops = torch.ops.streamgate_kernels
        if path == "gemm" or (path == "fastest" and x.shape[0] >= GEMM_MIN_ROWS):
            weight = ops.int4_dequantize_t(
                tiles.codes, tiles.params, tiles.out_features, tiles.group_size
            )
            return torch.mm(x, weight)
        y: torch.Tensor = ops.int4_mm(
            x, tiles.codes, tiles.params, tiles.out_features, tiles.group_size, path == "fastest"
        )
        return y
    if path == "scalar":
        raise RuntimeError("the native kernels could not be built (see the log)")
    return torch.mm(x, tiles.dequantize().T)
