"""Reading GGUF files: metadata to the model config, tensors back to the numbers stored (HF names,
HF row order), and a clear error, naming the file, for whatever the engine cannot run."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import gguf
import numpy as np
import pytest
import torch

from streamgate.engine.model.gguf_file import GGUFError, GGUFModel
from streamgate.engine.model.kernels import Int8Blocks
from streamgate.engine.model.llama import rope_inverse_frequencies
from streamgate.engine.model.loader import TinyShape
from streamgate.engine.model.quant import Int4Blocks

Q = gguf.GGMLQuantizationType
WriteGGUF = Callable[..., Any]  # the `gguf_file` fixture (conftest.py)


@pytest.mark.parametrize("kind", [Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1])
def test_tensors_read_back_as_stored(gguf_file: WriteGGUF, kind: Q) -> None:
    """Every parameter, in HF names and row order, equals what the file's type stores (the
    weight rounded through that type by the gguf package), bit for bit. Q4_0/Q4_1 linears and
    Q8_0 embedding and head come as blocks, to run as they are."""
    written = gguf_file(linear_type=kind, embedding_type=kind)
    model = GGUFModel(written.path)
    weights = model.weights()
    assert weights.keys() == written.expected.keys()
    for name, expected in written.expected.items():
        weight = weights[name]
        if kind in (Q.Q4_0, Q.Q4_1) and name.endswith(("_proj.weight", "lm_head.weight")):
            assert isinstance(weight, Int4Blocks), name  # runs as it is
            weight = weight.dequantize()
        if kind == Q.Q8_0 and name in ("model.embed_tokens.weight", "lm_head.weight"):
            assert isinstance(weight, Int8Blocks), name
            weight = weight.dequantize()
        assert isinstance(weight, torch.Tensor) and weight.dtype == torch.float32
        assert torch.equal(weight, expected), name
    for name, weight in model.weights(dequantize=True).items():
        assert isinstance(weight, torch.Tensor), name
        assert torch.equal(weight, written.expected[name]), name
    assert model.quantized == (kind not in (Q.F32, Q.F16, Q.BF16))
    assert model.file_type == kind.name  # no general.file_type: the matrices' type


def test_metadata_becomes_the_model_config(gguf_file: WriteGGUF, gguf_shape: TinyShape) -> None:
    config = GGUFModel(gguf_file().path).config
    assert config.rms_norm_eps == pytest.approx(1e-6)  # stored as a float32
    expected = dataclasses.replace(gguf_shape.model_config(), rms_norm_eps=config.rms_norm_eps)
    assert config == expected  # layers, heads, sizes, theta, BOS/EOS, untied
    tied = GGUFModel(gguf_file("tied.gguf", skip=["output.weight"]).path).config
    assert tied.tie_word_embeddings


def test_qwen2_keeps_hf_row_order(gguf_file: WriteGGUF) -> None:
    written = gguf_file(arch="qwen2")
    model = GGUFModel(written.path)
    assert model.config.architecture == "Qwen2ForCausalLM"
    for name, weight in model.weights().items():
        assert torch.equal(weight, written.expected[name]), name  # type: ignore[arg-type]


def test_rope_scaling_from_metadata_and_factor_tensors(gguf_file: WriteGGUF) -> None:
    linear = GGUFModel(
        gguf_file(
            "linear.gguf",
            metadata={"{arch}.rope.scaling.type": "linear", "{arch}.rope.scaling.factor": 4.0},
        ).path
    )
    assert linear.config.rope_scaling == {"rope_type": "linear", "factor": 4.0}
    factors = np.linspace(1.0, 8.0, 8, dtype=np.float32)  # one per frequency (head dim 16)
    model = GGUFModel(gguf_file("llama3.gguf", extra_tensors={"rope_freqs.weight": factors}).path)
    plain = rope_inverse_frequencies(GGUFModel(gguf_file("plain.gguf").path).config)
    scaled = rope_inverse_frequencies(model.config)
    assert torch.allclose(scaled, plain / torch.from_numpy(factors).double())
    with pytest.raises(GGUFError, match=r"yarn\.gguf: RoPE scaling 'yarn' is not supported"):
        GGUFModel(gguf_file("yarn.gguf", metadata={"{arch}.rope.scaling.type": "yarn"}).path)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"arch": "phi3"}, r"architecture 'phi3' is not supported \(supported: llama, qwen2\)"),
        (
            {"linear_type": Q.Q5_0},
            r"tensor 'blk\.0\.attn_q\.weight' is Q5_0; the engine runs F32, F16, BF16, Q4_0, "
            r"Q4_1, Q8_0",
        ),
        ({"metadata": {"{arch}.expert_count": 8}}, "mixture-of-experts models are not supported"),
        ({"metadata": {"{arch}.attention.head_count_kv": [2, 1]}}, "varies per layer"),
        ({"skip": ["token_embd.weight"]}, r"tensor 'token_embd\.weight' is missing"),
        (
            {"extra_tensors": {"blk.0.attn_rot_embd": np.zeros(4, np.float32)}},
            r"unexpected tensor 'blk\.0\.attn_rot_embd' for architecture 'llama'",
        ),
    ],
)
def test_what_cannot_run_is_refused_when_opened(
    gguf_file: WriteGGUF, options: dict[str, Any], message: str
) -> None:
    written = gguf_file(**options)
    with pytest.raises(GGUFError, match=message) as err:
        GGUFModel(written.path)
    assert str(err.value).startswith(f"{written.path}: ")
