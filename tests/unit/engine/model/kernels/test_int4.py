"""The 4-bit kernel against float32 dequantize-then-matmul of the same blocks.

Reference: float64 products of the blocks' exact float32 weight (`Int4Blocks.dequantize`).
Error metric per output: |y - reference| / sum_k |w_k x_k|, the scale float32 summation error
is bounded by. Observed <= 3e-7 (a few float32 unit roundoffs of 6e-8) on every path; the
bound, 1e-5, allows summation orders of 1,536 inputs (worst case K * 6e-8 = 9e-5 is never
approached by random signs) and still rejects bfloat16 scales, whose rounding (2^-9) gives
~1e-3 (checked below, so that the bound can fail).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch.utils import cpp_extension

from streamgate.engine.model.gguf_file import GGUFModel
from streamgate.engine.model.kernels import Int4Path, Int4Tiles, int4, int4_mm, native
from streamgate.engine.model.quant import Int4Blocks, Int4Linear

MAX_REL_ERROR = 1e-5
PATHS: list[Int4Path] = ["fastest", "scalar", "gemm", "torch"]
# (in, out): a decode projection, outputs not a multiple of the tile of 8, one group of inputs.
SHAPES = [(576, 192), (96, 203), (32, 5)]


def random_blocks(in_features: int, out_features: int, kind: str, seed: int = 0) -> Int4Blocks:
    """Blocks as a GGUF holds them: Q4_1 (any minimum) or Q4_0 (minimum = -8 * scale)."""
    g = torch.Generator().manual_seed(seed)
    groups = in_features // 32
    codes = torch.randint(0, 16, (out_features, in_features), generator=g, dtype=torch.uint8)
    scales = (torch.rand(out_features, groups, generator=g) * 0.01 + 1e-3).half()
    if kind == "Q4_0":
        minimums = -8 * scales
    else:
        minimums = -8 * scales.float() + 0.005 * torch.randn(out_features, groups, generator=g)
        minimums = minimums.half()
    return Int4Blocks(codes, scales, minimums)


def tiles_of(blocks: Int4Blocks) -> Int4Tiles:
    return Int4Tiles.from_blocks(blocks.codes, blocks.scales, blocks.minimums, blocks.group_size)


def rel_error(y: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> float:
    w, x64 = weight.double(), x.double()
    return float(((y.double() - x64 @ w.T).abs() / (x64.abs() @ w.abs().T)).max())


@pytest.mark.parametrize("kind", ["Q4_0", "Q4_1"])
@pytest.mark.parametrize("shape", SHAPES)
def test_tiles_hold_the_blocks_weight_bit_for_bit(kind: str, shape: tuple[int, int]) -> None:
    blocks = random_blocks(*shape, kind)
    assert torch.equal(tiles_of(blocks).dequantize(), blocks.dequantize())


@pytest.mark.parametrize("path", PATHS)
# 200 rows: `fastest` takes the GEMM path (int4.GEMM_MIN_ROWS).
@pytest.mark.parametrize("rows", [1, 3, 32, 100, 200])
@pytest.mark.parametrize("kind", ["Q4_0", "Q4_1"])
@pytest.mark.parametrize("shape", SHAPES)
def test_kernel_equals_float32_dequantize_then_matmul(
    path: Int4Path, rows: int, kind: str, shape: tuple[int, int]
) -> None:
    blocks = random_blocks(*shape, kind, seed=rows)
    x = torch.randn(rows, shape[0], generator=torch.Generator().manual_seed(rows))
    y = int4_mm(x, tiles_of(blocks), path)
    assert y.shape == (rows, shape[1]) and y.dtype == torch.float32
    assert rel_error(y, x, blocks.dequantize()) <= MAX_REL_ERROR


@pytest.mark.parametrize("kind", ["Q4_0", "Q4_1"])
@pytest.mark.parametrize("shape", SHAPES)
def test_native_dequantization_is_bit_exact(kind: str, shape: tuple[int, int]) -> None:
    blocks = random_blocks(*shape, kind)
    tiles = tiles_of(blocks)
    weight = torch.ops.streamgate_kernels.int4_dequantize_t(
        tiles.codes, tiles.params, tiles.out_features, tiles.group_size
    )
    assert torch.equal(weight, blocks.dequantize().T)


def test_the_bound_rejects_bfloat16_scales() -> None:
    blocks = random_blocks(576, 192, "Q4_1")
    coarse = Int4Tiles.from_blocks(
        blocks.codes,
        blocks.scales.to(torch.bfloat16),
        (blocks.minimums.float() + 8 * blocks.scales.float()).to(torch.bfloat16)
        - 8 * blocks.scales.to(torch.bfloat16).float(),
        32,
    )
    x = torch.randn(4, 576, generator=torch.Generator().manual_seed(1))
    assert rel_error(int4_mm(x, coarse), x, blocks.dequantize()) > 10 * MAX_REL_ERROR


@pytest.mark.parametrize("rows", [1, 32])
def test_kernel_is_exact_on_a_smollm2_layer(smollm2: Path, rows: int) -> None:
    weights = GGUFModel(smollm2).weights()
    blocks = weights["model.layers.0.mlp.down_proj.weight"]
    assert isinstance(blocks, Int4Blocks)
    x = torch.randn(rows, blocks.shape[1], generator=torch.Generator().manual_seed(rows))
    assert rel_error(int4_mm(x, tiles_of(blocks)), x, blocks.dequantize()) <= MAX_REL_ERROR


@pytest.mark.parametrize("path", PATHS)
def test_no_output_is_shared_between_calls(path: Int4Path) -> None:
    """Outputs are fresh tensors: a later call must not change an earlier result."""
    tiles = tiles_of(random_blocks(96, 203, "Q4_1"))
    x = torch.randn(3, 96)
    first = int4_mm(x, tiles, path)
    kept = first.clone()
    int4_mm(torch.randn(3, 96), tiles, path)
    assert torch.equal(first, kept)


def test_inputs_the_kernel_cannot_take_are_refused_clearly() -> None:
    tiles = tiles_of(random_blocks(96, 203, "Q4_1"))
    with pytest.raises(RuntimeError, match="x has 64 inputs, the weight 96"):
        int4_mm(torch.randn(2, 64), tiles)
    with pytest.raises(RuntimeError, match="x must be a 2-D float32 CPU tensor"):
        int4_mm(torch.randn(2, 96, dtype=torch.bfloat16), tiles)
    codes = torch.zeros(8, 36, dtype=torch.uint8)
    scales = torch.ones(8, 3, dtype=torch.float16)
    with pytest.raises(ValueError, match="36 inputs in groups of 12"):
        Int4Tiles.from_blocks(codes, scales, scales, 12)


def test_int4_linear_from_blocks_runs_on_the_native_kernel() -> None:
    blocks = random_blocks(96, 203, "Q4_1")
    bias = torch.randn(203)
    native_layer = Int4Linear.from_blocks(blocks, bias, kernel="native")
    aten_layer = Int4Linear.from_blocks(blocks, bias, kernel="aten")
    assert native_layer.tile_codes is not None and aten_layer.tile_codes is None
    assert native_layer.packed is None and aten_layer.packed is not None  # one copy each
    assert torch.equal(native_layer.dequantize(), aten_layer.dequantize())
    x = torch.randn(2, 5, 96)
    y = native_layer(x)
    assert y.shape == (2, 5, 203)
    rows = x.view(10, 96)
    assert rel_error(y.view(10, 203) - bias, rows, blocks.dequantize()) <= MAX_REL_ERROR
    # torch's kernel (bfloat16 scales, activations and outputs) is still there when asked for.
    assert rel_error(aten_layer(rows) - bias, rows, blocks.dequantize()) > 10 * MAX_REL_ERROR
    # A model converted to bfloat16 keeps the float16 scales (int16 bits) and computes in float32.
    half = native_layer.to(torch.bfloat16)
    assert half.tile_params is not None and half.tile_params.dtype == torch.int16
    assert half(rows.to(torch.bfloat16)).dtype == torch.bfloat16


def test_without_a_build_the_torch_path_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(int4, "load_kernels", lambda: False)
    blocks = random_blocks(96, 203, "Q4_0")
    x = torch.randn(5, 96)
    assert torch.equal(int4_mm(x, tiles_of(blocks)), int4_mm(x, tiles_of(blocks), "torch"))
    with pytest.raises(RuntimeError, match="could not be built"):
        int4_mm(x, tiles_of(blocks), "scalar")


def test_a_failed_build_is_a_warning_not_an_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_compiler(**_: object) -> None:
        raise RuntimeError("Ninja is required to load C++ extensions")

    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    native.load_kernels.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger=native.__name__):
            assert native.load_kernels() is False
        assert "Ninja is required" in caplog.text
    finally:
        native.load_kernels.cache_clear()
