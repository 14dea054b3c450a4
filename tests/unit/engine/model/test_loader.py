"""Model loading: the tiny model, HF directories written to disk, and clear errors."""

import json
from pathlib import Path

import pytest
import torch

from streamgate.engine.config import EngineConfig
from streamgate.engine.model.config import ModelConfigError
from streamgate.engine.model.llama import AttentionBatch, KVCache, PrefillSpan
from streamgate.engine.model.loader import DTYPES, TinyShape, load_model, write_tiny_model


def logits_of(config: EngineConfig, ids: list[int]) -> torch.Tensor:
    loaded = load_model(config, max_positions=64)
    model = loaded.model
    cache = KVCache(loaded.config, 4, 16, DTYPES[config.dtype], torch.device("cpu"))
    n = len(ids)
    batch = AttentionBatch(16, torch.arange(n), [PrefillSpan(0, n, None, None)], [])
    with torch.inference_mode():
        return model.logits(model(torch.tensor(ids), torch.arange(n), batch, cache))


def test_tiny_is_deterministic_and_equals_its_directory(tmp_path: Path) -> None:
    ids = [1, 40, 41, 42, 43]
    builtin = logits_of(EngineConfig(model="tiny"), ids)
    assert torch.equal(builtin, logits_of(EngineConfig(model="tiny"), ids))
    directory = write_tiny_model(tmp_path / "tiny")
    assert {p.name for p in directory.iterdir()} >= {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    }
    assert torch.equal(builtin, logits_of(EngineConfig(model=str(directory)), ids))
    a = load_model(EngineConfig(model="tiny"), max_positions=64)
    b = load_model(EngineConfig(model=str(directory)), max_positions=64)
    assert a.info.model_sha == b.info.model_sha
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


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_stays_close_to_float32(dtype: str) -> None:
    ids = [1, 50, 60, 70, 80, 90]
    full = logits_of(EngineConfig(), ids)
    half = logits_of(EngineConfig(dtype=dtype), ids)  # type: ignore[arg-type]
    assert half.dtype == torch.float32  # logits are always float32
    assert (half - full).abs().max() < 0.05 * full.abs().max()


def test_unsupported_architecture_is_a_clear_error(tmp_path: Path) -> None:
    directory = write_tiny_model(tmp_path / "gpt")
    config = json.loads((directory / "config.json").read_text())
    config["architectures"] = ["GPT2LMHeadModel"]
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelConfigError, match="unsupported architecture 'GPT2LMHeadModel'"):
        load_model(EngineConfig(model=str(directory)))


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelConfigError, match=r"no config\.json"):
        load_model(EngineConfig(model=str(tmp_path / "nope")))
