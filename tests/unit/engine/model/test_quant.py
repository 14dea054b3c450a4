"""Weight-only int8/int4 quantization: integer storage, sizes, accuracy, and kernel correctness.

Error metric: max |y - y_float| / max |y_float| over the outputs of one call, y_float being the
float32 module on the same input. Observed over 40 seeds x 3 shapes with N(0, 0.02) weights and
N(0, 1) inputs (1, 32 and 64 rows, float32 and bfloat16 activations): int8 <= 1.3%, int4 with
group 32 <= 12.8% (mean 8%); the bounds below leave some margin: 2% and 15%.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from streamgate.engine.model import quant
from streamgate.engine.model.config import ModelConfig
from streamgate.engine.model.llama import DecoderLayer, LlamaForCausalLM
from streamgate.engine.model.quant import (
    Int4Blocks,
    Int4Linear,
    Int8Embedding,
    Int8Linear,
    cpu_int4_block_n,
    quantize_model,
    weight_bytes,
)

INT8_MAX_REL_ERROR = 0.02
INT4_MAX_REL_ERROR = 0.15
BOUNDS = {"int8": INT8_MAX_REL_ERROR, "int4": INT4_MAX_REL_ERROR}
# (in, out): a fused qkv, a down projection whose 688 inputs are not a multiple of the int4
# group (padded), and a shape that neither CPU kernel takes as is (in % 16, out % 32).
SHAPES = [(256, 768), (688, 256), (100, 50)]


def float_linear(in_features: int, out_features: int, bias: bool = True) -> nn.Linear:
    torch.manual_seed(in_features * 1000 + out_features)
    linear = nn.Linear(in_features, out_features, bias=bias)
    nn.init.normal_(linear.weight, std=0.02)
    return linear.requires_grad_(False)


def quantized(linear: nn.Linear, mode: str) -> Int8Linear | Int4Linear:
    return Int8Linear.from_float(linear) if mode == "int8" else Int4Linear.from_float(linear, 32)


def rel_error(y: torch.Tensor, reference: torch.Tensor) -> float:
    return float((y.detach().float() - reference).abs().max() / reference.abs().max())


def force_kernel(monkeypatch: pytest.MonkeyPatch, use: bool) -> None:
    """Route every row count to the CPU kernels (where their shape rules allow) or to none."""
    limit = 1 << 30 if use else 0
    monkeypatch.setattr(quant, "INT8_KERNEL_MAX_ROWS", limit)
    monkeypatch.setattr(quant, "INT4_KERNEL_MAX_ROWS", limit)


def test_int8_linear_stores_int8_codes_and_scales() -> None:
    layer = Int8Linear.from_float(float_linear(256, 768))
    assert layer.weight.dtype == torch.int8 and layer.weight.shape == (768, 256)
    assert layer.scale.dtype == torch.bfloat16 and layer.scale.shape == (768,)
    assert layer.bias is not None and layer.bias.dtype == torch.float32
    assert not list(layer.parameters())  # no float weight left behind
    assert weight_bytes(layer) == 768 * 256 + 768 * 2 + 768 * 4


def test_int4_linear_packs_two_codes_per_byte() -> None:
    layer = Int4Linear.from_float(float_linear(256, 768), group_size=32)
    assert layer.packed.dtype == torch.uint8 and layer.packed.shape == (768, 128)
    assert layer.scales_and_zeros.dtype == torch.bfloat16
    assert layer.scales_and_zeros.shape == (256 // 32, 768, 2)
    assert not list(layer.parameters())
    # Padded shapes: in up to the group, out up to the layout's block of rows.
    odd = Int4Linear.from_float(float_linear(100, 50), group_size=32)
    block = odd.block_n
    padded_out = -(-50 // block) * block
    assert odd.packed.shape == (padded_out, 128 // 2)
    assert odd.scales_and_zeros.shape == (128 // 32, padded_out, 2)


def linear_stack() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(256, 768, bias=False), nn.Linear(256, 256), nn.Linear(688, 256, bias=False)
    )


@pytest.mark.parametrize(("mode", "max_ratio"), [("int8", 0.3), ("int4", 0.2)])
def test_weight_bytes_of_a_linear_stack(mode: str, max_ratio: float) -> None:
    model = linear_stack()
    float_bytes = weight_bytes(model)
    assert float_bytes == 4 * sum(p.numel() for p in model.parameters())
    quantize_model(model, mode)  # type: ignore[arg-type]
    # int8: 1 byte per weight + 2 per row; int4 (group 32, bfloat16 scale and zero): 1/2 byte
    # per weight + 4 bytes per 32 weights, i.e. 0.25x and 0.156x of float32 plus the biases.
    assert weight_bytes(model) <= max_ratio * float_bytes
    stored = {t.dtype for t in list(model.parameters()) + list(model.buffers())}
    assert stored <= {torch.int8, torch.uint8, torch.bfloat16, torch.float32}


@pytest.mark.parametrize("mode", ["int8", "int4"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 32])
@pytest.mark.parametrize("shape", SHAPES)
def test_outputs_close_to_float(
    mode: str, dtype: torch.dtype, rows: int, shape: tuple[int, int]
) -> None:
    linear = float_linear(*shape)
    layer = quantized(linear, mode)
    x = torch.randn(rows, shape[0], generator=torch.Generator().manual_seed(rows)).to(dtype)
    y = layer(x)
    assert y.dtype == dtype and y.shape == (rows, shape[1])
    assert rel_error(y, linear(x.float())) < BOUNDS[mode]


@pytest.mark.parametrize("mode", ["int8", "int4"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("rows", [1, 8, 64])
def test_kernel_and_dequantized_paths_agree(
    monkeypatch: pytest.MonkeyPatch, mode: str, dtype: torch.dtype, rows: int
) -> None:
    """Whatever path a row count picks, the layer computes x @ dequantize().T + bias."""
    # Slices of 100 rows (the last one partial): the sliced dequantization of big weights.
    monkeypatch.setattr(quant, "DEQUANT_SLICE_ELEMENTS", 100 * 256)
    linear = float_linear(256, 768)
    layer = quantized(linear, mode)
    x = torch.randn(rows, 256, generator=torch.Generator().manual_seed(0)).to(dtype)
    expected = F.linear(x.float(), layer.dequantize(), linear.bias)
    force_kernel(monkeypatch, True)
    kernel = layer(x)
    force_kernel(monkeypatch, False)
    dequantized = layer(x)
    assert kernel.dtype == dequantized.dtype == dtype
    # The kernels compute on bfloat16 activations and round their outputs to bfloat16.
    assert rel_error(kernel, expected) < 0.01
    tolerance = 1e-5 if dtype == torch.float32 else 0.01
    assert rel_error(dequantized, expected) < tolerance


def explicit_int4_weight(layer: Int4Linear) -> torch.Tensor:
    """Float weight decoded nibble by nibble from the layout documented in `pack_int4`."""
    data = layer.packed.flatten().tolist()
    block, half = layer.block_n, layer.block_n // 2
    padded_out, padded_in = layer.packed.shape[0], layer.packed.shape[1] * 2
    codes = torch.empty(padded_out, padded_in)
    for n in range(padded_out):
        block_index, j = divmod(n, block)
        for k in range(padded_in):
            byte = data[(block_index * padded_in + k) * half + j % half]
            codes[n, k] = byte & 15 if j < half else byte >> 4
    group = torch.arange(padded_in) // layer.group_size
    scale = layer.scales_and_zeros[group, :, 0].float().T
    zero = layer.scales_and_zeros[group, :, 1].float().T
    weight = (codes - 8) * scale + zero
    return weight[: layer.out_features, : layer.in_features]


@pytest.mark.parametrize("shape", [(128, 64), (100, 50)])
def test_int4_kernel_matches_explicit_dequantization(
    monkeypatch: pytest.MonkeyPatch, shape: tuple[int, int]
) -> None:
    linear = float_linear(*shape, bias=False)
    layer = Int4Linear.from_float(linear, group_size=32)
    reference = explicit_int4_weight(layer)
    assert torch.equal(layer.dequantize(), reference)
    # Round to nearest on the 16 levels: every weight within half a step of its group's level.
    step = layer.scales_and_zeros[..., 0].float().T.repeat_interleave(32, dim=1)
    error = (reference - linear.weight).abs()
    assert (error <= 0.5 * step[: shape[1], : shape[0]] * 1.01 + 1e-6).all()

    x = torch.randn(4, shape[0], generator=torch.Generator().manual_seed(0))
    force_kernel(monkeypatch, True)
    kernel = layer(x.bfloat16())
    force_kernel(monkeypatch, False)
    dequantized = layer(x)
    assert rel_error(dequantized, x @ reference.T) < 1e-5
    expected = x.bfloat16().float() @ reference.T
    assert rel_error(kernel, expected) < 0.01


@pytest.mark.skipif(cpu_int4_block_n() is None, reason="no int4 CPU kernel layout on this CPU")
def test_int4_layout_is_the_cpu_kernels_own() -> None:
    layer = Int4Linear.from_float(float_linear(256, 128, bias=False), group_size=32)
    codes = quant.unpack_int4(layer.packed, layer.block_n)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32), 1)
    assert torch.equal(packed, layer.packed)


def test_bias_is_kept_in_the_activation_dtype() -> None:
    linear = float_linear(256, 768).to(torch.bfloat16)
    for layer in (Int8Linear.from_float(linear), Int4Linear.from_float(linear)):
        assert layer.bias is not None and torch.equal(layer.bias, linear.bias)
        assert layer.bias.dtype == torch.bfloat16
        x = torch.zeros(3, 256, dtype=torch.bfloat16)
        assert torch.equal(layer(x), linear.bias.expand(3, -1))
    no_bias = Int8Linear.from_float(float_linear(256, 768, bias=False))
    assert no_bias.bias is None
    assert torch.equal(no_bias(torch.zeros(2, 256)), torch.zeros(2, 768))


def test_leading_dimensions_and_misaligned_bfloat16_inputs() -> None:
    layer = Int8Linear.from_float(float_linear(256, 768))
    x = torch.randn(2, 3, 256)
    assert layer(x).shape == (2, 3, 768)
    assert torch.allclose(layer(x).view(6, 768), layer(x.view(6, 256)))
    # A bfloat16 view starting at an odd element: the aligned-load kernel must not see it.
    flat = torch.randn(2 * 256 + 1).bfloat16()
    assert torch.equal(layer(flat[1:].view(2, 256)), layer(flat[1:].view(2, 256).clone()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_embedding_gathers_exact_dequantized_rows(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    embedding = nn.Embedding(300, 128).to(dtype).requires_grad_(False)
    table = Int8Embedding.from_float(embedding)
    assert table.weight.dtype == torch.int8 and table.weight.shape == (300, 128)
    assert table.scale.dtype == torch.bfloat16 and table.scale.shape == (300,)
    ids = torch.tensor([[0, 299, 7], [7, 7, 42]])
    rows = table(ids)
    assert rows.dtype == dtype and rows.shape == (2, 3, 128)
    assert torch.equal(rows, table.dequantize()[ids])
    reference = embedding.weight[ids].float()
    assert rel_error(rows, reference) < INT8_MAX_REL_ERROR


class Nested(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 64)
        self.blocks = nn.ModuleList(
            [nn.Sequential(nn.Linear(64, 128), nn.SiLU(), nn.Linear(128, 64)) for _ in range(2)]
        )
        self.heads = nn.ModuleDict({"out": nn.Linear(64, 50, bias=False)})

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        for block in self.blocks:
            x = x + block(x)
        out: torch.Tensor = self.heads["out"](x)
        return out


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_quantize_model_replaces_every_linear_and_embedding(mode: str) -> None:
    torch.manual_seed(0)
    model = Nested().requires_grad_(False)
    ids = torch.tensor([1, 2, 3, 49])
    expected = model(ids)
    quantize_model(model, mode)  # type: ignore[arg-type]
    kinds = [type(m) for m in model.modules()]
    assert nn.Linear not in kinds and nn.Embedding not in kinds
    linear_kind = Int8Linear if mode == "int8" else Int4Linear
    assert kinds.count(linear_kind) == 5 and kinds.count(Int8Embedding) == 1
    assert rel_error(model(ids), expected) < BOUNDS[mode]


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_tied_head_shares_the_embedding_table(mode: str) -> None:
    torch.manual_seed(0)
    model = nn.ModuleDict({"embed": nn.Embedding(256, 64), "head": nn.Linear(64, 256, False)})
    model["head"].weight = model["embed"].weight
    float_bytes = weight_bytes(model)
    assert float_bytes == 256 * 64 * 4  # counted once
    quantize_model(model, mode)  # type: ignore[arg-type]
    embed, head = model["embed"], model["head"]
    assert isinstance(embed, Int8Embedding) and isinstance(head, Int8Linear)
    assert head.weight is embed.weight and head.scale is embed.scale
    assert weight_bytes(model) == 256 * 64 + 256 * 2


def test_unknown_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="int8, int4"):
        quantize_model(linear_stack(), "int2")  # type: ignore[arg-type]


def tiny_llama() -> tuple[ModelConfig, LlamaForCausalLM]:
    config = ModelConfig(
        vocab_size=300,
        hidden_size=128,
        intermediate_size=352,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config, 64).eval().requires_grad_(False)
    for name, p in model.named_parameters():
        if "norm" not in name:
            nn.init.normal_(p, std=0.02 if "embed" not in name else 1.0)
    return config, model


def llama_logits(model: LlamaForCausalLM, ids: torch.Tensor) -> torch.Tensor:
    """Logits through every weight of the model, attention mixing left out.

    Attention has no weights of its own, and its paged batch layout belongs to the model's
    tests: here its output projection reads the query rows directly.
    """
    with torch.inference_mode():
        x = model.model.embed_tokens(ids)
        for layer in model.model.layers:
            assert isinstance(layer, DecoderLayer)
            attn = layer.self_attn
            qkv = attn.qkv_proj(layer.input_layernorm(x))
            x = x + attn.o_proj(qkv[:, : attn.num_heads * attn.head_dim])
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return model.logits(model.model.norm(x))


@pytest.mark.parametrize(("mode", "bound"), [("int8", 0.02), ("int4", 0.15)])
def test_quantized_llama_logits_stay_close(mode: str, bound: float) -> None:
    config, model = tiny_llama()
    ids = torch.randint(0, config.vocab_size, (20,), generator=torch.Generator().manual_seed(1))
    expected = llama_logits(model, ids)
    float_bytes = weight_bytes(model)
    quantize_model(model, mode)  # type: ignore[arg-type]
    assert weight_bytes(model) < float_bytes / 2
    assert rel_error(llama_logits(model, ids), expected) < bound
    kinds = {type(m) for m in model.modules()}
    assert nn.Linear not in kinds and nn.Embedding not in kinds


def random_blocks(out_features: int, in_features: int, seed: int = 0) -> Int4Blocks:
    """Q4_1-like blocks: random codes, float16 scales and minimums of weight-like sizes."""
    gen = torch.Generator().manual_seed(seed)
    groups = in_features // 32
    scales = (torch.rand(out_features, groups, generator=gen) * 0.01 + 1e-3).half()
    minimums = -8 * scales.float() + torch.randn(out_features, groups, generator=gen) * 1e-3
    codes = torch.randint(0, 16, (out_features, in_features), generator=gen, dtype=torch.uint8)
    return Int4Blocks(codes, scales, minimums.half())


@pytest.mark.parametrize("shape", [(96, 64), (50, 128)])  # 50 rows: padded to the layout's block
def test_int4_blocks_run_with_their_own_numbers(
    monkeypatch: pytest.MonkeyPatch, shape: tuple[int, int]
) -> None:
    """An Int4Linear made from blocks for torch's kernel holds their exact weight (scale * q +
    minimum in float32, as GGUF's reader computes it): bit for bit, not re-quantized. (The
    native kernel's layout: kernels/test_int4.py.)"""
    blocks = random_blocks(*shape)
    bias = torch.randn(shape[0])
    layer = Int4Linear.from_blocks(blocks, bias, kernel="aten")
    exact = blocks.dequantize()
    by_hand = blocks.codes.float() * blocks.scales.float().repeat_interleave(32, 1)
    by_hand += blocks.minimums.float().repeat_interleave(32, 1)
    assert torch.equal(exact, by_hand)
    assert torch.equal(layer.dequantize(), exact)
    assert layer.scales_and_minimums is not None
    assert layer.scales_and_minimums.dtype == torch.float16
    assert not list(layer.parameters())

    x = torch.randn(8, shape[1], generator=torch.Generator().manual_seed(1))
    expected = F.linear(x, exact, bias)
    force_kernel(monkeypatch, False)
    assert rel_error(layer(x), expected) < 1e-5  # the exact weight, float32 GEMM
    force_kernel(monkeypatch, True)
    # The kernel: bfloat16 activations, outputs, and copies of the scales and zeros.
    assert rel_error(layer(x), expected) < 0.01


def test_int4_blocks_reorder_and_concatenate_rows() -> None:
    a, b = random_blocks(64, 64, seed=1), random_blocks(32, 64, seed=2)
    both = Int4Blocks.cat([a, b])
    assert torch.equal(both.dequantize(), torch.cat([a.dequantize(), b.dequantize()]))
    order = torch.randperm(96, generator=torch.Generator().manual_seed(0))
    assert torch.equal(both.rows(order).dequantize(), both.dequantize()[order])
    mixed = quant.cat_rows([a, torch.ones(8, 64)])  # a float part: all dequantized
    assert isinstance(mixed, torch.Tensor)
    assert torch.equal(mixed, torch.cat([a.dequantize(), torch.ones(8, 64)]))
