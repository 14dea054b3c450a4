"""The 8-bit kernel against float32 dequantize-then-matmul of the same blocks.

Reference: float64 products of the blocks' exact float32 weight (`Int8Blocks.dequantize`, d * q
is exact in float32). Error metric per output: |y - reference| / sum_k |w_k x_k|, the scale
float32 summation error is bounded by. Observed <= 3e-7 on every path; the bound, 1e-5, as
for the 4-bit kernel (test_int4.py), still rejects bfloat16 scales (checked below).
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch

from streamgate.engine.model.kernels import Int8Blocks, Int8Path, int8, int8_mm
from streamgate.engine.model.quant import Q8Embedding, Q8Linear

MAX_REL_ERROR = 1e-5
PATHS: list[Int8Path] = ["fastest", "scalar", "torch"]
# (in, out, group): SmolLM2's hidden size, outputs not a multiple of the tiles or of the pair of
# outputs the multi-row loop takes, one group of inputs, a group size other than Q8_0's.
SHAPES = [(576, 192, 32), (96, 203, 32), (32, 5, 32), (64, 37, 16)]


def random_blocks(in_features: int, out_features: int, group: int, seed: int = 0) -> Int8Blocks:
    """Blocks as a Q8_0 file holds them: codes over the whole int8 range, small float16 scales."""
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(-128, 128, (out_features, in_features), generator=g, dtype=torch.int8)
    scales = torch.rand(out_features, in_features // group, generator=g) * 0.01 + 1e-4
    return Int8Blocks.from_float16(codes, scales.half(), group)


def rel_error(y: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> float:
    w, x64 = weight.double(), x.double()
    return float(((y.double() - x64 @ w.T).abs() / (x64.abs() @ w.abs().T)).max())


def test_blocks_dequantize_as_gguf_does_bit_for_bit() -> None:
    weight = np.random.default_rng(0).standard_normal((40, 96)).astype(np.float32)
    data = gguf.quants.quantize(weight, gguf.GGMLQuantizationType.Q8_0)
    expected = gguf.quants.dequantize(data, gguf.GGMLQuantizationType.Q8_0)
    blocks = data.reshape(40, 3, 34)  # per block: float16 d, 32 int8 codes
    scales = torch.from_numpy(blocks[..., :2].copy().view(np.int16)[..., 0])
    codes = torch.from_numpy(blocks[..., 2:].copy().view(np.int8).reshape(40, 96))
    assert torch.equal(Int8Blocks(codes, scales).dequantize(), torch.from_numpy(expected))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("rows", [1, 3, 32, 100])
@pytest.mark.parametrize("shape", SHAPES)
def test_kernel_equals_float32_dequantize_then_matmul(
    path: Int8Path, rows: int, shape: tuple[int, int, int]
) -> None:
    blocks = random_blocks(*shape, seed=rows)
    x = torch.randn(rows, shape[0], generator=torch.Generator().manual_seed(rows))
    y = int8_mm(x, blocks, path)
    assert y.shape == (rows, shape[1]) and y.dtype == torch.float32
    assert rel_error(y, x, blocks.dequantize()) <= MAX_REL_ERROR


def test_the_bound_rejects_bfloat16_scales() -> None:
    blocks = random_blocks(576, 192, 32)
    coarse = Int8Blocks.from_float16(
        blocks.codes, blocks.scales.view(torch.float16).to(torch.bfloat16).half()
    )
    x = torch.randn(4, 576, generator=torch.Generator().manual_seed(1))
    assert rel_error(int8_mm(x, coarse), x, blocks.dequantize()) > 10 * MAX_REL_ERROR


@pytest.mark.parametrize("path", PATHS)
def test_no_output_is_shared_between_calls(path: Int8Path) -> None:
    """Outputs are fresh tensors: a later call must not change an earlier result."""
    blocks = random_blocks(96, 203, 32)
    x = torch.randn(3, 96)
    first = int8_mm(x, blocks, path)
    kept = first.clone()
    int8_mm(torch.randn(3, 96), blocks, path)
    assert torch.equal(first, kept)


def test_inputs_the_kernel_cannot_take_are_refused_clearly() -> None:
    blocks = random_blocks(96, 203, 32)
    with pytest.raises(RuntimeError, match="x has 64 inputs, the weight 96"):
        int8_mm(torch.randn(2, 64), blocks)
    with pytest.raises(RuntimeError, match="x must be a 2-D float32 CPU tensor"):
        int8_mm(torch.randn(2, 96, dtype=torch.bfloat16), blocks)
    with pytest.raises(RuntimeError, match="group_size must be a multiple of 8"):
        int8_mm(torch.randn(2, 96), random_blocks(96, 8, 12))
    with pytest.raises(ValueError, match="36 inputs are not whole groups of 32"):
        Int8Blocks(torch.zeros(8, 36, dtype=torch.int8), torch.zeros(8, 1, dtype=torch.int16))
    with pytest.raises(ValueError, match=r"int16 scales \[8, 1\] \(float16 bits\)"):
        Int8Blocks(torch.zeros(8, 32, dtype=torch.int8), torch.zeros(8, 1, dtype=torch.float16))
    with pytest.raises(ValueError, match=r"2-D int8 codes, got torch\.uint8"):
        Int8Blocks(torch.zeros(8, 32, dtype=torch.uint8), torch.zeros(8, 1, dtype=torch.int16))


def test_embedding_and_head_share_one_table() -> None:
    blocks = random_blocks(96, 203, 32)
    embedding, head = Q8Embedding(blocks, torch.float32), Q8Linear(blocks)
    ids = torch.tensor([[0, 202], [7, 7]])
    assert torch.equal(embedding(ids), blocks.dequantize()[ids])  # exact rows
    x = torch.randn(2, 5, 96)
    y = head(x)
    assert y.shape == (2, 5, 203)
    assert rel_error(y.view(10, 203), x.view(10, 96), blocks.dequantize()) <= MAX_REL_ERROR
    # A model converted to bfloat16 keeps the float16 scales (int16 bits), computes in float32.
    half = head.to(torch.bfloat16)
    assert half.scales.dtype == torch.int16 and half.codes.dtype == torch.int8
    assert half(x.to(torch.bfloat16)).dtype == torch.bfloat16


def test_without_a_build_the_torch_path_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(int8, "load_kernels", lambda: False)
    blocks = random_blocks(96, 203, 32)
    x = torch.randn(5, 96)
    assert torch.equal(int8_mm(x, blocks), int8_mm(x, blocks, "torch"))
    with pytest.raises(RuntimeError, match="could not be built"):
        int8_mm(x, blocks, "scalar")
