"""y = x @ W.T for 8-bit weights with a float16 scale per group of inputs: w = d * q exactly.

`Int8Blocks` is GGUF's Q8_0 (blocks of 32 int8 codes and one float16 scale) unpacked, and the
native kernel's layout as it is (see int8_matmul.cpp). d * q is exact in float32, so its float32
weight equals `gguf.quants.dequantize`'s bit for bit, and the kernel differs from
dequantize-then-matmul only by float32 rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from streamgate.engine.model.kernels.native import load_kernels

Int8Path = Literal["fastest", "scalar", "torch"]
"""fastest: native, AVX2 when the CPU has it; scalar: native without vectors; torch: no native
code (dequantize, then a float32 GEMM). `fastest` falls back to torch when nothing is built."""


@dataclass(frozen=True)
class Int8Blocks:
    """8-bit weights [out, in]: w = d * q, one float16 d per group of `group_size` inputs."""

    codes: torch.Tensor  # int8 [out, in]
    scales: torch.Tensor  # int16 [out, in // group_size]: float16 bit patterns
    group_size: int = 32

    def __post_init__(self) -> None:
        if self.codes.dtype != torch.int8 or self.codes.dim() != 2:
            raise ValueError(f"Int8Blocks needs 2-D int8 codes, got {self.codes.dtype}")
        out, size = self.codes.shape
        if self.group_size <= 0 or size % self.group_size:
            raise ValueError(f"{size} inputs are not whole groups of {self.group_size}")
        # As int16 bits: Module.to(dtype) converts floating-point buffers, never integer ones.
        if self.scales.dtype != torch.int16 or self.scales.shape != (out, size // self.group_size):
            raise ValueError(
                f"Int8Blocks needs int16 scales [{out}, {size // self.group_size}] (float16 "
                f"bits), got {self.scales.dtype} {list(self.scales.shape)}"
            )

    @classmethod
    def from_float16(
        cls, codes: torch.Tensor, scales: torch.Tensor, group_size: int = 32
    ) -> Int8Blocks:
        """From int8 codes [out, in] and float16 scales [out, in // group_size]."""
        return cls(codes, scales.to(torch.float16).view(torch.int16), group_size)

    @property
    def shape(self) -> tuple[int, int]:
        """[out, in], as a Linear's weight."""
        return self.codes.shape[0], self.codes.shape[1]

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The weight [out, in]: d * q in float32 (exact), then in `dtype`."""
        return dequantize_rows(self.codes, self.scales, self.group_size).to(dtype)

    def rows(self, index: torch.Tensor) -> Int8Blocks:
        """These blocks with their rows (output features) in the order `index` gives."""
        return Int8Blocks(self.codes[index], self.scales[index], self.group_size)


def dequantize_rows(codes: torch.Tensor, scales: torch.Tensor, group_size: int) -> torch.Tensor:
    """float32 d * q of int8 codes [..., in] and int16 scales [..., in // group_size] (float16
    bits)."""
    groups = codes.view(*codes.shape[:-1], -1, group_size).float()
    w = groups * scales.view(torch.float16).float().unsqueeze(-1)
    return w.view(codes.shape)


def int8_mm(x: torch.Tensor, blocks: Int8Blocks, path: Int8Path = "fastest") -> torch.Tensor:
    """x float32 [rows, in] @ W.T -> float32 [rows, out] on the CPU."""
    if path != "torch" and load_kernels():
        y: torch.Tensor = torch.ops.streamgate_kernels.int8_mm(
            x, blocks.codes, blocks.scales, blocks.group_size, path == "fastest"
        )
        return y
    if path == "scalar":
        raise RuntimeError("the native kernels could not be built (see the log)")
    return torch.mm(x, blocks.dequantize().T)
