"""Weight-only quantization of the model's Linear and Embedding modules (int8 and int4).

Weights are stored as integers (int8 codes, or two 4-bit codes per uint8 byte) with bfloat16
scales; activations stay in floating point. `quantize_model` swaps the modules in place;
`weight_bytes` reports the storage. int8 Linears take 0.25x the bytes of float32 plus 2 bytes per
output row, int4 (group 32) 0.156x.

Kernels are chosen per call:
- CPU, up to INT8_KERNEL_MAX_ROWS / INT4_KERNEL_MAX_ROWS rows: `aten._weight_int8pack_mm` and
  `aten._weight_int4pack_mm_for_cpu` on bfloat16 activations. Their float32/float16 variants
  are scalar loops on x86 (about 10x slower), so other dtypes are cast to bfloat16 and back.
  Both kernels dequantize the whole weight again for every block of 4 rows: their cost grows
  with the row count.
- More rows (prefill, big batches), or any other device: dequantize the weight transiently and
  run a float GEMM. On CPU that GEMM is float32 whatever the activation dtype: without
  AMX/AVX512-BF16, CPU bfloat16/float16 GEMMs are 5-8x slower than float32 ones.

Measured on 1 AVX2 thread (us/call, float32 activations, float32 nn.Linear first):
  256->768:  1 row 30 / int8 37 / int4 51,   8 rows 83 / 106 / 107,   32 rows 194 / 228 / 354
  256->8192: 1 row 292 / 209 / 338,   8 rows 1825 / 924 / 908,   32 rows 3507 / 2879 / 3715
Small weights that stay in cache cost 20-35% more per call in int8 (the casts and the dequant
pass); big ones are faster. A whole decode step of a hidden-128 model is at par with float32,
one of a hidden-256 model with an 8k vocabulary is 0.6-0.9x.

Weights that come quantized (GGUF's Q4_1 and Q4_0, as `Int4Blocks`) become Int4Linears with
their own codes, scales and minimums: nothing is quantized again. Their float16 scales and
minimums are kept as they are. On CPU they run on the native kernel (`kernels.int4_mm`: the
file's float16 numbers, float32 activations, exact to float32 rounding, one pass over the weight
for any row count) when it could be built; `Int4Linear.from_blocks(kernel="aten")` keeps torch's
kernel instead, which takes a bfloat16 copy of them (`Int4Linear.from_blocks` says what that
changes).

GGUF's Q8_0 tables (blocks of 32 int8 codes with a float16 scale: the token embedding and the
output head) come as `Int8Blocks` and stay so: `Q8Embedding` gathers and dequantizes only the
looked-up rows, `Q8Linear` runs the head on the native kernel (`kernels.int8_mm`, exact to
float32 rounding), and a head tied to the embedding shares its codes and scales.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from streamgate.engine.model.kernels import Int4Tiles, Int8Blocks, int4_mm, int8_mm
from streamgate.engine.model.kernels.int8 import dequantize_rows
from streamgate.engine.model.kernels.native import load_kernels

QuantMode = Literal["int8", "int4"]
Int4Kernel = Literal["native", "aten"]
"""The CPU kernel of an Int4Linear made from blocks: streamgate's own, or torch's."""

# Row counts up to which the CPU kernels beat dequantize + float32 GEMM (crossovers measured at
# 12-16 rows for int8 and about 64 for int4, on weights of 32K-2M elements, 1 AVX2 thread).
INT8_KERNEL_MAX_ROWS = 12
INT4_KERNEL_MAX_ROWS = 64
# Weights above twice this many elements are dequantized for the float GEMM in slices of it.
DEQUANT_SLICE_ELEMENTS = 1 << 18
# Group sizes the CPU int4 kernel accepts.
INT4_KERNEL_GROUP_SIZES = (32, 64, 128, 256)
# Int4 layout block when the CPU kernel is unusable (any block width dequantizes the same way).
_DEFAULT_INT4_BLOCK_N = 32
# Smallest scale: all-zero (or constant) rows and groups must not divide by zero.
_MIN_SCALE = 1e-12


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """Dtype of the dequantized GEMM: float32 on CPU (see the module docstring), else x's."""
    return torch.float32 if x.is_cpu else x.dtype


def _bf16(t: torch.Tensor) -> torch.Tensor:
    # Scales are stored in bfloat16; only a later model.to(dtype) can have converted them.
    return t if t.dtype == torch.bfloat16 else t.to(torch.bfloat16)


def _bf16_rows(rows: torch.Tensor) -> torch.Tensor:
    """Contiguous bfloat16 rows whose start is 32-byte aligned.

    The AVX2/AVX512 int8 kernel reads activations with aligned vector loads: a misaligned view
    (a bfloat16 input sliced at an odd element) would crash the process, not raise. A converted
    copy is a fresh, aligned allocation.
    """
    if rows.dtype != torch.bfloat16:
        return rows.to(torch.bfloat16).contiguous()
    rows = rows.contiguous()
    return rows if rows.data_ptr() % 32 == 0 else rows.clone()


def _finish(y: torch.Tensor, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Output [rows, out] of a quantized Linear back in x's dtype and leading shape, plus bias.

    Each tensor op costs microseconds of dispatch at these sizes, so no-op steps are skipped.
    """
    if y.dtype != x.dtype:
        y = y.to(x.dtype)
    if bias is not None:
        y = y.add_(bias if bias.dtype == y.dtype else bias.to(y.dtype))
    return y if x.dim() == 2 else y.view(*x.shape[:-1], y.shape[-1])


def quantize_rows_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8: (int8 codes [rows, cols], bfloat16 scale [rows]).

    The scale is rounded to bfloat16 before the codes are computed, so the codes are exact for
    the scale actually stored (and given to the bfloat16 kernel) rather than for a finer one.
    """
    w = weight.detach().float()
    scale = (w.abs().amax(dim=1) / 127).clamp_min(_MIN_SCALE).to(torch.bfloat16)
    codes = torch.round(w / scale.float().unsqueeze(1)).clamp_(-127, 127).to(torch.int8)
    return codes, scale


def pack_int4(codes: torch.Tensor, block_n: int) -> torch.Tensor:
    """Pack 4-bit codes [N, K] (values 0..15, N % block_n == 0) into uint8 [N, K // 2].

    Layout of the CPU int4 kernel (`aten._convert_weight_to_int4pack_for_cpu`): the rows come in
    blocks of `block_n`; a block is stored k-major as [K, block_n // 2] bytes, and byte j of
    column k holds row j of the block in its low nibble and row j + block_n // 2 in its high one.
    The returned 2-D shape is only the kernel's expected view of those bytes.
    """
    n, k = codes.shape
    half = block_n // 2
    blocks = codes.to(torch.uint8).view(n // block_n, block_n, k).transpose(1, 2)
    packed = blocks[..., :half] | (blocks[..., half:] << 4)
    return packed.contiguous().view(n, k // 2)


def unpack_int4(packed: torch.Tensor, block_n: int) -> torch.Tensor:
    """Inverse of `pack_int4`: uint8 [N, K // 2] to codes uint8 [N, K] (plain, not fast)."""
    n, k = packed.shape[0], packed.shape[1] * 2
    blocks = packed.view(n // block_n, k, block_n // 2)
    codes = torch.cat([blocks & 15, blocks >> 4], dim=2)  # [N / block_n, K, block_n]
    return codes.transpose(1, 2).reshape(n, k)


@functools.cache
def cpu_int4_block_n() -> int | None:
    """Block width of the CPU int4 kernel's weight layout (32 AVX2, 64 AVX512), None if unusable.

    Found by packing a probe with the kernel's own packer and matching it against `pack_int4`:
    the layout depends on the CPU the kernel was compiled for (ARM and non-vector builds pair
    adjacent rows instead), and those layouts are left to the dequantizing path.
    """
    aten = torch.ops.aten
    if not all(
        hasattr(aten, op)
        for op in ("_convert_weight_to_int4pack_for_cpu", "_weight_int4pack_mm_for_cpu")
    ):
        return None  # torch < 2.6
    probe = torch.randint(0, 16, (128, 64), generator=torch.Generator().manual_seed(0))
    kernel_packed = aten._convert_weight_to_int4pack_for_cpu(probe.to(torch.int32), 1)
    for block_n in (32, 64):
        if torch.equal(kernel_packed.view(-1), pack_int4(probe, block_n).view(-1)):
            return block_n
    return None


class Int8Linear(nn.Module):
    """Linear layer with per-output-channel symmetric int8 weights: y = (x @ q.T) * scale + b."""

    weight: torch.Tensor  # int8 [out, in]
    scale: torch.Tensor  # bfloat16 [out]
    bias: torch.Tensor | None  # activation dtype [out]

    def __init__(
        self, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None
    ) -> None:
        super().__init__()
        if weight.dtype != torch.int8 or weight.dim() != 2:
            raise ValueError(f"Int8Linear needs a 2-D int8 weight, got {weight.dtype}")
        self.in_features = weight.shape[1]
        self.out_features = weight.shape[0]
        self.register_buffer("weight", weight)
        self.register_buffer("scale", scale)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    @classmethod
    def from_float(cls, linear: nn.Linear) -> Int8Linear:
        """Quantize a float Linear (its bias is kept as is)."""
        weight, scale = quantize_rows_int8(linear.weight)
        return cls(weight, scale, linear.bias)

    def dequantize(self) -> torch.Tensor:
        """The float32 weight [out, in] this layer computes with."""
        return self.weight.float() * self.scale.float().unsqueeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Buffers straight from their dict: nn.Module.__getattr__ costs about 1 us per buffer,
        # which shows when a whole call takes 10-40 us.
        buffers = self._buffers
        weight, scale = buffers["weight"], buffers["scale"]
        assert weight is not None and scale is not None
        rows = x if x.dim() == 2 else x.reshape(-1, self.in_features)
        # The kernel's vector loop has no remainder: in_features must be a multiple of 16.
        if x.is_cpu and rows.shape[0] <= INT8_KERNEL_MAX_ROWS and self.in_features % 16 == 0:
            y = torch.ops.aten._weight_int8pack_mm(_bf16_rows(rows), weight, _bf16(scale))
        else:
            dtype = _compute_dtype(x)
            if rows.dtype != dtype:
                rows = rows.to(dtype)
            # Scaling the [rows, out] output is cheaper than scaling the [out, in] weight; the
            # in-place product promotes the bfloat16 scale by itself (one op less than .to()).
            y = self._dequantized_linear(rows, dtype).mul_(scale)
        return _finish(y, x, buffers["bias"])

    def _dequantized_linear(self, rows: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """rows @ codes.T in `dtype` (unscaled), dequantizing big weights slice by slice.

        A multi-MB float copy of the weight falls out of the cache before the GEMM reads it;
        slices of ~1 MiB of float32 stay in it (15-25% faster on 2M-4M weights). Smaller weights
        go in one piece, as each slice costs a few microseconds of dispatch.
        """
        if self.weight.numel() <= 2 * DEQUANT_SLICE_ELEMENTS:
            return F.linear(rows, self.weight.to(dtype))
        slice_rows = max(1, DEQUANT_SLICE_ELEMENTS // self.in_features)
        parts = [F.linear(rows, w.to(dtype)) for w in torch.split(self.weight, slice_rows)]
        return torch.cat(parts, dim=-1)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


@dataclass(frozen=True)
class Int4Blocks:
    """4-bit weights that arrive quantized: w = scale * q + minimum per group of input features.

    The unpacked form of GGUF's Q4_1 blocks (and of Q4_0, whose minimum is -8 * scale): codes q
    in 0..15, and per group of `group_size` consecutive inputs of a row a float16 scale and
    minimum, the file's own numbers. Rows can be reordered and concatenated (the fused q/k/v and
    gate/up projections) without touching a number.
    """

    codes: torch.Tensor  # uint8 [out, in], values 0..15
    scales: torch.Tensor  # float16 [out, in // group_size]
    minimums: torch.Tensor  # float16 [out, in // group_size]
    group_size: int = 32

    @property
    def shape(self) -> tuple[int, int]:
        """[out, in], as a Linear's weight."""
        return self.codes.shape[0], self.codes.shape[1]

    def dequantize(self) -> torch.Tensor:
        """The float32 weight [out, in]: scale * q, then + minimum, rounded as GGUF's reader does
        (so the result equals `gguf.quants.dequantize` bit for bit)."""
        out, size = self.shape
        groups = self.codes.view(out, size // self.group_size, self.group_size).float()
        w = groups * self.scales.float().unsqueeze(-1) + self.minimums.float().unsqueeze(-1)
        return w.view(out, size)

    def rows(self, index: torch.Tensor) -> Int4Blocks:
        """These blocks with their rows (output features) in the order `index` gives."""
        return Int4Blocks(
            self.codes[index], self.scales[index], self.minimums[index], self.group_size
        )

    @staticmethod
    def cat(parts: Sequence[Int4Blocks]) -> Int4Blocks:
        """The blocks of `parts` stacked along the rows (same inputs, same group size)."""
        group_size = parts[0].group_size
        if any(p.group_size != group_size for p in parts):
            raise ValueError("cannot concatenate Int4Blocks of different group sizes")
        return Int4Blocks(
            torch.cat([p.codes for p in parts]),
            torch.cat([p.scales for p in parts]),
            torch.cat([p.minimums for p in parts]),
            group_size,
        )


Blocks = Int4Blocks | Int8Blocks
"""Weights that arrive quantized and run as they are."""
Weight = torch.Tensor | Blocks
"""A weight of a checkpoint: a float tensor, or blocks to run as they are."""


def cat_rows(parts: Sequence[Weight]) -> Weight:
    """Weights stacked along their rows (fused projections). 4-bit blocks stay blocks when all
    parts are; anything else is dequantized (exactly, in float32)."""
    if all(isinstance(p, Int4Blocks) for p in parts):
        return Int4Blocks.cat([p for p in parts if isinstance(p, Int4Blocks)])
    return torch.cat([p if isinstance(p, torch.Tensor) else p.dequantize() for p in parts])


class Int4Linear(nn.Module):
    """Linear layer with group-wise 4-bit weights, held in the layout of the kernel that runs it.

    - torch's CPU kernel (`from_float`, and `from_blocks(kernel="aten")`): two codes per uint8
      byte in `pack_int4`'s layout with `block_n` rows per block (`packed`), and per group of
      `group_size` inputs of a row a bfloat16 scale and zero (`scales_and_zeros`); a code q in
      0..15 stands for (q - 8) * scale + zero. Shapes the layout cannot hold exactly are
      zero-padded (in_features to whole groups, out_features to whole blocks); the padding is
      real storage and is counted. A layer made from `Int4Blocks` also keeps their float16
      scales and minimums (`scales_and_minimums`, w = q * scale + minimum), which the
      dequantizing path computes with; only torch's kernel uses the bfloat16 copy.
    - the native kernel (`from_blocks`, by default when it builds): `Int4Tiles` (`tile_codes`,
      `tile_params`) with the blocks' own float16 scales and minimums, for every row count.
    """

    packed: torch.Tensor | None  # uint8 [padded out, padded in // 2]
    scales_and_zeros: torch.Tensor | None  # bfloat16 [padded in // group_size, padded out, 2]
    scales_and_minimums: torch.Tensor | None  # float16, same shape; from Int4Blocks only
    tile_codes: torch.Tensor | None  # Int4Tiles.codes
    tile_params: torch.Tensor | None  # Int4Tiles.params
    bias: torch.Tensor | None

    def __init__(
        self,
        bias: torch.Tensor | None,
        in_features: int,
        out_features: int,
        group_size: int,
        *,
        packed: torch.Tensor | None = None,
        scales_and_zeros: torch.Tensor | None = None,
        block_n: int = _DEFAULT_INT4_BLOCK_N,
        scales_and_minimums: torch.Tensor | None = None,
        tiles: Int4Tiles | None = None,
    ) -> None:
        super().__init__()
        if (tiles is None) == (packed is None or scales_and_zeros is None):
            raise ValueError("Int4Linear needs either packed weights with scales, or tiles")
        if packed is not None and packed.dtype != torch.uint8:
            raise ValueError(f"Int4Linear needs uint8 packed weights, got {packed.dtype}")
        self.in_features = in_features
        self.out_features = out_features
        self.group_size = group_size
        self.block_n = block_n
        self.register_buffer("packed", packed)
        self.register_buffer("scales_and_zeros", scales_and_zeros)
        self.register_buffer("scales_and_minimums", scales_and_minimums)
        self.register_buffer("tile_codes", None if tiles is None else tiles.codes)
        self.register_buffer("tile_params", None if tiles is None else tiles.params)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    @classmethod
    def from_float(cls, linear: nn.Linear, group_size: int = 32) -> Int4Linear:
        """Quantize a float Linear with min/max groups of `group_size` input features."""
        if group_size <= 0 or group_size % 2:
            raise ValueError(f"group_size must be a positive even number, got {group_size}")
        block_n = cpu_int4_block_n() or _DEFAULT_INT4_BLOCK_N
        out_features, in_features = linear.weight.shape
        padded_in = -(-in_features // group_size) * group_size
        padded_out = -(-out_features // block_n) * block_n
        w = F.pad(
            linear.weight.detach().float(),
            (0, padded_in - in_features, 0, padded_out - out_features),
        )
        groups = w.view(padded_out, padded_in // group_size, group_size)
        low, high = groups.amin(dim=-1), groups.amax(dim=-1)
        scale = ((high - low) / 15).clamp_min(_MIN_SCALE).to(torch.bfloat16)
        zero = (low + 8 * scale.float()).to(torch.bfloat16)
        # Codes against the stored (bfloat16-rounded) scale and zero, not the exact ones.
        codes = (groups - zero.float().unsqueeze(-1)) / scale.float().unsqueeze(-1) + 8
        codes = torch.round(codes).clamp_(0, 15).view(padded_out, padded_in)
        scales_and_zeros = torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous()
        return cls(
            linear.bias,
            in_features,
            out_features,
            group_size,
            packed=pack_int4(codes, block_n),
            scales_and_zeros=scales_and_zeros,
            block_n=block_n,
        )

    @classmethod
    def from_blocks(
        cls,
        blocks: Int4Blocks,
        bias: torch.Tensor | None = None,
        kernel: Int4Kernel | None = None,
    ) -> Int4Linear:
        """A layer computing with `blocks` as they are: their codes, scales and minimums.

        `kernel` runs its CPU calls: "native" (the default when it builds; exact to float32
        rounding) or "aten" (torch's kernel, on bfloat16 copies of scales and zeros, as follows).

        torch's zero is minimum + 8 * scale, exact in float32 (two float16 numbers of nearby
        magnitude). Its bfloat16 copies of scale and zero keep 8 of float16's 11 significant
        bits: on SmolLM2-135M-Instruct's Q4_1 weights a kernel weight differs from the blocks'
        by at most 0.046 of its group's scale (a code step), where Q4_1 itself rounds by up to
        0.5 of it; that kernel also rounds activations and outputs to bfloat16.
        """
        out_features, in_features = blocks.shape
        group_size = blocks.group_size
        if in_features % group_size:
            raise ValueError(f"{in_features} inputs are not whole groups of {group_size}")
        if kernel == "native" or (kernel is None and load_kernels()):
            tiles = Int4Tiles.from_blocks(blocks.codes, blocks.scales, blocks.minimums, group_size)
            return cls(bias, in_features, out_features, group_size, tiles=tiles)
        block_n = cpu_int4_block_n() or _DEFAULT_INT4_BLOCK_N
        pad = -(-out_features // block_n) * block_n - out_features
        codes = F.pad(blocks.codes, (0, 0, 0, pad))
        scales = F.pad(blocks.scales, (0, 0, 0, pad)).T  # [groups, padded out]
        minimums = F.pad(blocks.minimums, (0, 0, 0, pad)).T
        zeros = minimums.float() + 8 * scales.float()
        scales_and_zeros = torch.stack([scales.to(torch.bfloat16), zeros.to(torch.bfloat16)], -1)
        return cls(
            bias,
            in_features,
            out_features,
            group_size,
            packed=pack_int4(codes, block_n),
            scales_and_zeros=scales_and_zeros.contiguous(),
            block_n=block_n,
            scales_and_minimums=torch.stack([scales, minimums], -1).contiguous(),
        )

    def _tiles(self) -> Int4Tiles | None:
        """The weight as the native kernel's tiles, if this layer is held that way."""
        codes, params = self._buffers["tile_codes"], self._buffers["tile_params"]
        if codes is None or params is None:
            return None
        return Int4Tiles(codes, params, self.out_features, self.group_size)

    def _packed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """torch's layout: `packed` and `scales_and_zeros` (present whenever tiles are not)."""
        packed, scales_and_zeros = self._buffers["packed"], self._buffers["scales_and_zeros"]
        assert packed is not None and scales_and_zeros is not None
        return packed, scales_and_zeros

    def dequantize(self) -> torch.Tensor:
        """The float32 weight [out, in] of this layer (from Int4Blocks: theirs, bit for bit)."""
        tiles = self._tiles()
        if tiles is not None:
            return tiles.dequantize()
        codes = unpack_int4(self._packed()[0], self.block_n).float()
        scale, offset = self._scale_and_offset(torch.float32)
        w = codes * scale.repeat_interleave(self.group_size, 0).T
        w += offset.repeat_interleave(self.group_size, 0).T
        return w[: self.out_features, : self.in_features]

    def _scale_and_offset(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """[groups, padded out] scale and offset in `dtype` with w = q * scale + offset."""
        exact = self._buffers["scales_and_minimums"]
        if exact is not None:
            pair = exact.to(dtype)
            return pair[..., 0], pair[..., 1]
        sz = self._packed()[1].to(dtype)
        return sz[..., 0], sz[..., 1] - 8 * sz[..., 0]  # folds the "- 8" of the codes

    def _dequantize_transposed(self, dtype: torch.dtype) -> torch.Tensor:
        """The weight as [in, out] in `dtype`, built with few full-size passes.

        Straight from the packed layout: reading 4 bytes as an int32 separates 8 nibbles with one
        mask (a quarter of the elements of a byte-wise unpack), and writing the two nibble
        halves into a [K, blocks, 2, block_n / 2] buffer yields the transposed weight, whose
        rows are contiguous over the output features as the GEMM wants them.
        """
        packed = self._packed()[0]
        padded_out, padded_in = packed.shape[0], packed.shape[1] * 2
        blocks = padded_out // self.block_n
        words = packed.view(blocks, padded_in, self.block_n // 2).view(torch.int32)
        codes = torch.empty(
            padded_in, blocks, 2, words.shape[-1], dtype=torch.int32, device=words.device
        )
        mask = 0x0F0F0F0F
        torch.bitwise_and(words, mask, out=codes[:, :, 0].transpose(0, 1))
        torch.bitwise_and(words >> 4, mask, out=codes[:, :, 1].transpose(0, 1))
        codes_u8 = codes.view(torch.uint8).view(-1, self.group_size, padded_out)
        scale, offset = self._scale_and_offset(dtype)
        w = torch.addcmul(offset.unsqueeze(1), codes_u8, scale.unsqueeze(1))
        w = w.view(padded_in, padded_out)
        return w[: self.in_features, : self.out_features]

    def _kernel_usable(self, x: torch.Tensor, rows: int) -> bool:
        return (
            x.is_cpu
            and rows <= INT4_KERNEL_MAX_ROWS
            and self.group_size in INT4_KERNEL_GROUP_SIZES
            and self.block_n == cpu_int4_block_n()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x if x.dim() == 2 else x.reshape(-1, self.in_features)
        tiles = self._tiles()
        if tiles is not None:
            # Other devices dequantize (exactly) and multiply in float32.
            y = int4_mm(rows.float(), tiles, "fastest" if x.is_cpu else "torch")
        elif self._kernel_usable(x, rows.shape[0]):
            packed, scales_and_zeros = self._packed()
            xb = rows.to(torch.bfloat16)
            padded_in = packed.shape[1] * 2
            if padded_in != self.in_features:
                xb = F.pad(xb, (0, padded_in - self.in_features))
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(
                xb.contiguous(), packed, self.group_size, _bf16(scales_and_zeros)
            )
            if y.shape[1] != self.out_features:
                y = y[:, : self.out_features].contiguous()
        else:
            dtype = _compute_dtype(x)
            if rows.dtype != dtype:
                rows = rows.to(dtype)
            y = torch.mm(rows, self._dequantize_transposed(dtype))
        # Buffers straight from their dict: see Int8Linear.forward.
        return _finish(y, x, self._buffers["bias"])

    def extra_repr(self) -> str:
        kernel = "native" if self._buffers["tile_codes"] is not None else "aten"
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"int4, group_size={self.group_size}, kernel={kernel}"
        )


class Int8Embedding(nn.Module):
    """Embedding table with per-row symmetric int8 codes; only the gathered rows are dequantized.

    Its codes and scales have the layout of `Int8Linear`, so a head tied to this table shares
    them (see `quantize_model`).
    """

    weight: torch.Tensor  # int8 [num_embeddings, embedding_dim]
    scale: torch.Tensor  # bfloat16 [num_embeddings]

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> None:
        super().__init__()
        if weight.dtype != torch.int8 or weight.dim() != 2:
            raise ValueError(f"Int8Embedding needs a 2-D int8 table, got {weight.dtype}")
        self.num_embeddings, self.embedding_dim = weight.shape
        self.dtype = dtype  # of the outputs: the float table's dtype
        self.register_buffer("weight", weight)
        self.register_buffer("scale", scale)

    @classmethod
    def from_float(cls, embedding: nn.Embedding) -> Int8Embedding:
        """Quantize a float Embedding; outputs keep its dtype."""
        weight, scale = quantize_rows_int8(embedding.weight)
        return cls(weight, scale, embedding.weight.dtype)

    def dequantize(self) -> torch.Tensor:
        """The whole table in the output dtype (what each gathered row equals)."""
        return (self.weight.float() * self.scale.float().unsqueeze(1)).to(self.dtype)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = F.embedding(ids, self.weight).to(self.dtype)  # int8 codes are exact in any float
        scale = self.scale.index_select(0, ids.reshape(-1)).view(*ids.shape, 1)
        # The in-place product promotes the bfloat16 scale, multiplies exactly in float32 and
        # rounds once to the output dtype: equal to the matching row of `dequantize()`.
        return rows.mul_(scale)


class _Int8BlocksModule(nn.Module):
    """The buffers of an `Int8Blocks` weight; modules built from the same blocks share them."""

    codes: torch.Tensor  # Int8Blocks.codes
    scales: torch.Tensor  # Int8Blocks.scales: int16, so that Module.to(dtype) leaves them alone

    def __init__(self, blocks: Int8Blocks) -> None:
        super().__init__()
        self.group_size = blocks.group_size
        self.register_buffer("codes", blocks.codes)
        self.register_buffer("scales", blocks.scales)

    def blocks(self) -> Int8Blocks:
        buffers = self._buffers  # see Int8Linear.forward
        codes, scales = buffers["codes"], buffers["scales"]
        assert codes is not None and scales is not None
        return Int8Blocks(codes, scales, self.group_size)

    def extra_repr(self) -> str:
        out, size = self.codes.shape
        return f"{size}, {out}, int8, group_size={self.group_size}"


class Q8Embedding(_Int8BlocksModule):
    """Embedding table of 8-bit blocks (GGUF's Q8_0): only the gathered rows are dequantized,
    exactly (d * q in float32), then rounded once to the output dtype."""

    def __init__(self, blocks: Int8Blocks, dtype: torch.dtype) -> None:
        super().__init__(blocks)
        self.num_embeddings, self.embedding_dim = blocks.shape
        self.dtype = dtype  # of the outputs: the model's dtype

    def dequantize(self) -> torch.Tensor:
        """The whole table in the output dtype (what each gathered row equals)."""
        return self.blocks().dequantize(self.dtype)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        codes = F.embedding(ids, self.codes)
        scales = F.embedding(ids, self.scales)
        return dequantize_rows(codes, scales, self.group_size).to(self.dtype)


class Q8Linear(_Int8BlocksModule):
    """Linear layer without bias on 8-bit blocks (GGUF's Q8_0 output head): the native kernel
    on the CPU, dequantize-then-matmul elsewhere; float32 inside, outputs in x's dtype."""

    def __init__(self, blocks: Int8Blocks) -> None:
        super().__init__(blocks)
        self.out_features, self.in_features = blocks.shape

    def dequantize(self) -> torch.Tensor:
        """The float32 weight [out, in]."""
        return self.blocks().dequantize()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x if x.dim() == 2 else x.reshape(-1, self.in_features)
        if x.is_cpu:
            y = int8_mm(rows.float(), self.blocks())
        else:
            y = F.linear(rows, self.blocks().dequantize(x.dtype))
        return _finish(y, x, None)


QuantizedModule = Int8Linear | Int4Linear | Int8Embedding


def quantize_model(model: nn.Module, mode: QuantMode, group_size: int = 32) -> None:
    """Replace every nn.Linear and nn.Embedding below `model` in place by a quantized module.

    Linears become Int8Linear (mode "int8") or Int4Linear with `group_size` (mode "int4"), and
    Embeddings become Int8Embedding in both modes. A Linear whose weight is an Embedding's
    weight (tied input and output embeddings) becomes an Int8Linear sharing that table's codes
    and scales, in both modes: one int8 copy is smaller than int8 + int4 copies and more
    accurate. A module registered in several places is replaced by one shared quantized module.
    `model` itself is not replaced, so a bare nn.Linear must be wrapped first.
    """
    if mode not in ("int8", "int4"):
        raise ValueError(f"unknown quantization mode {mode!r} (int8, int4)")
    replaced: dict[int, QuantizedModule] = {}  # id(float module) -> its replacement
    tables: dict[int, Int8Embedding] = {}  # id(float embedding weight) -> quantized table

    def replace(kind: type[nn.Module]) -> None:
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if not isinstance(child, kind):
                    continue
                if id(child) not in replaced:
                    replaced[id(child)] = convert(child)
                setattr(parent, name, replaced[id(child)])

    def convert(module: nn.Module) -> QuantizedModule:
        if isinstance(module, nn.Embedding):
            table = Int8Embedding.from_float(module)
            tables[id(module.weight)] = table
            return table
        assert isinstance(module, nn.Linear)
        tied = tables.get(id(module.weight))
        if tied is not None:
            return Int8Linear(tied.weight, tied.scale, module.bias)
        if mode == "int8":
            return Int8Linear.from_float(module)
        return Int4Linear.from_float(module, group_size)

    # Embeddings first, so that a tied head finds its table.
    replace(nn.Embedding)
    replace(nn.Linear)


def load_blocks(
    model: nn.Module, weights: Mapping[str, Blocks], device: torch.device, dtype: torch.dtype
) -> None:
    """Replace the module of each weight name (`...mlp.down_proj.weight`) by one computing with
    its blocks as they are, on `device`: a Linear by an Int4Linear (keeping its bias) or a
    Q8Linear, an Embedding by a Q8Embedding with outputs in `dtype`. Modules made from the same
    `Int8Blocks` (a head tied to the embedding) share their codes and scales."""
    placed: dict[int, Int8Blocks] = {}  # id(blocks as given) -> on the device, made once

    def on_device(blocks: Int8Blocks) -> Int8Blocks:
        if id(blocks) not in placed:
            placed[id(blocks)] = Int8Blocks(
                blocks.codes.to(device), blocks.scales.to(device), blocks.group_size
            )
        return placed[id(blocks)]

    for name, blocks in weights.items():
        parent_name, _, child = name.removesuffix(".weight").rpartition(".")
        parent = model.get_submodule(parent_name)
        module = getattr(parent, child)
        shape = module.weight.shape if isinstance(module, (nn.Linear, nn.Embedding)) else None
        if shape is None or tuple(shape) != blocks.shape:
            raise ValueError(f"{name}: {blocks.shape} blocks do not fit {module}")
        replacement: nn.Module
        if isinstance(module, nn.Embedding) and isinstance(blocks, Int8Blocks):
            replacement = Q8Embedding(on_device(blocks), dtype)
        elif isinstance(module, nn.Linear) and isinstance(blocks, Int4Blocks):
            replacement = Int4Linear.from_blocks(blocks, module.bias).to(device)
        elif (
            isinstance(module, nn.Linear) and isinstance(blocks, Int8Blocks) and module.bias is None
        ):
            replacement = Q8Linear(on_device(blocks))
        else:
            raise ValueError(f"{name}: {type(blocks).__name__} cannot replace {module}")
        setattr(parent, child, replacement)


def weight_bytes(model: nn.Module) -> int:
    """Bytes of all parameters and buffers: the real storage, quantized or not.

    Each storage is counted once, so tied weights (and buffers shared by quantized modules)
    are not double counted.
    """
    seen: set[tuple[torch.device, int]] = set()
    total = 0
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        storage = tensor.untyped_storage()
        key = (tensor.device, storage.data_ptr())
        if key[1] == 0:  # no memory behind it (meta or empty): count the tensor itself
            total += tensor.numel() * tensor.element_size()
            continue
        if key not in seen:
            seen.add(key)
            total += storage.nbytes()
    return total
