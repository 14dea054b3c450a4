"""GGUF files for the model tests: tiny models written the way llama.cpp's converter writes them,
and the packaged SmolLM2-135M-Instruct.

`write_gguf` spells llama.cpp's tensor names and Q/K row order here, independently of the
engine's reader, so that a wrong mapping in the reader fails the tests.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import torch
from tokenizers import SentencePieceBPETokenizer

from streamgate.engine.config import EngineConfig
from streamgate.engine.model.llama import AttentionBatch, KVCache, PrefillSpan
from streamgate.engine.model.loader import LoadedModel, TinyShape, load_model, tiny_checkpoint
from streamgate.engine.model.packaged import PACKAGED_MODELS
from streamgate.engine.model.tokenizer import TINY_CHAT_TEMPLATE, _tiny_json

Q = gguf.GGMLQuantizationType

# A tiny shape whose every matrix has whole blocks of 32 inputs (GGUF's quantized types need it).
SHAPE = TinyShape(
    vocab_size=512, hidden_size=64, intermediate_size=96, num_layers=2, num_heads=4,
    num_kv_heads=2, max_position_embeddings=256, seed=7,
)  # fmt: skip

_LAYER_NAMES = {
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def gguf_name(hf_name: str) -> str:
    """llama.cpp's name of an HF parameter."""
    top = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    if hf_name in top:
        return top[hf_name]
    _, _, layer, rest = hf_name.split(".", 3)
    module, kind = rest.rsplit(".", 1)
    return f"blk.{layer}.{_LAYER_NAMES[module]}.{kind}"


def llama_cpp_permute(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """The row order llama.cpp's converter gives Q and K (`LlamaModel.permute`)."""
    rows = weight.shape[0]
    return (
        weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def round_through(weight: torch.Tensor, kind: Q) -> torch.Tensor:
    """The float32 values `weight` has once stored as `kind` (what a reader must give back)."""
    if kind == Q.F32:
        return weight
    data = gguf.quants.quantize(weight.numpy(), kind)
    return torch.from_numpy(gguf.quants.dequantize(data, kind)).reshape(weight.shape)


@dataclass
class Written:
    """A GGUF written by `write_gguf` and the float32 weights a reader must find in it."""

    path: Path
    expected: dict[str, torch.Tensor]  # HF names, HF row order, rounded through the file's types
    types: dict[str, Q] = field(default_factory=dict)  # GGUF tensor name -> type written


@dataclass
class Vocabulary:
    """The tokenizer metadata of a GGUF (`tokenizer.ggml.*`)."""

    model: str
    tokens: list[str]
    types: list[int]
    merges: list[str] | None = None  # gpt2
    scores: list[float] | None = None  # llama (SentencePiece)
    pre: str | None = None
    bos: int = 1
    eos: int = 2
    add_bos: bool = True


def tiny_vocabulary(vocab_size: int = SHAPE.vocab_size) -> Vocabulary:
    """The built-in tiny tokenizer (byte-level BPE, GPT-2's split) as GGUF metadata."""
    raw = json.loads(_tiny_json(vocab_size))
    vocab: dict[str, int] = raw["model"]["vocab"]
    tokens = sorted(vocab, key=vocab.__getitem__)
    merges = [" ".join(m) if isinstance(m, list) else m for m in raw["model"]["merges"]]
    types: list[int] = [
        gguf.TokenType.CONTROL if i < 3 else gguf.TokenType.NORMAL for i in range(len(tokens))
    ]
    return Vocabulary("gpt2", tokens, types, merges=merges, pre="gpt-2")


def sentencepiece_vocabulary(size: int = SHAPE.vocab_size) -> Vocabulary:
    """A SentencePiece-style BPE vocabulary of `size` tokens as llama.cpp's converter writes
    Llama 2's: <unk> <s> </s>, 256 byte tokens <0xNN>, then pieces scored by merge rank
    (trained here on the gguf package's source and a few non-ASCII words)."""
    trainer = SentencePieceBPETokenizer()
    corpus = [Path(gguf.__file__).read_text(), "Café déjà vu, naïve façade, Straße 中文 日本語"]
    trainer.train_from_iterator(corpus * 5, vocab_size=2000)
    trained = trainer.get_vocab()
    pieces = sorted(trained, key=trained.__getitem__)[: size - 3 - 256]
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256)), *pieces]
    kinds = gguf.TokenType
    types: list[int] = [kinds.UNKNOWN, kinds.CONTROL, kinds.CONTROL]
    types += [kinds.BYTE] * 256 + [kinds.NORMAL] * len(pieces)
    scores = [0.0] * 259 + [-float(i) for i in range(len(pieces))]
    return Vocabulary("llama", tokens, types, scores=scores)


def _add_vocabulary(writer: gguf.GGUFWriter, vocabulary: Vocabulary) -> None:
    writer.add_tokenizer_model(vocabulary.model)
    if vocabulary.pre is not None:
        writer.add_tokenizer_pre(vocabulary.pre)
    writer.add_token_list(vocabulary.tokens)
    writer.add_token_types(vocabulary.types)
    if vocabulary.merges is not None:
        writer.add_token_merges(vocabulary.merges)
    if vocabulary.scores is not None:
        writer.add_token_scores(vocabulary.scores)
    writer.add_bos_token_id(vocabulary.bos)
    writer.add_eos_token_id(vocabulary.eos)
    writer.add_add_bos_token(vocabulary.add_bos)


def write_gguf(
    path: Path,
    *,
    linear_type: Q = Q.F32,
    embedding_type: Q = Q.F32,
    arch: str = "llama",
    metadata: dict[str, Any] | None = None,
    skip: Iterable[str] = (),
    extra_tensors: dict[str, np.ndarray[Any, Any]] | None = None,
    vocabulary: Vocabulary | None = None,
    shape: TinyShape = SHAPE,
) -> Written:
    """The tiny model of `shape` as a GGUF file: linear weights stored as `linear_type`, the
    embedding as `embedding_type`, norms as F32, Q/K rows in llama.cpp's order for `llama`.

    `metadata` adds or replaces keys (`{arch}` in a key is the architecture); tensors named in
    `skip` (GGUF names) are left out, `extra_tensors` are added as they are. The tokenizer is
    `vocabulary` (default: the tiny tokenizer's), which must have `shape.vocab_size` tokens.
    """
    config = shape.model_config()
    writer = gguf.GGUFWriter(path, arch)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(config.rope_theta)
    _add_vocabulary(writer, vocabulary or tiny_vocabulary(shape.vocab_size))
    writer.add_chat_template(TINY_CHAT_TEMPLATE)
    for key, value in (metadata or {}).items():
        key = key.format(arch=arch)
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        elif isinstance(value, str):
            writer.add_string(key, value)
        else:
            writer.add_array(key, value)

    written = Written(path, {})
    for hf_name, weight in tiny_checkpoint(shape).items():
        name = gguf_name(hf_name)
        if name in skip:
            continue
        if name == "token_embd.weight":
            kind = embedding_type
        elif weight.dim() == 2:
            kind = linear_type
        else:
            kind = Q.F32
        stored = weight
        if arch == "llama" and ".attn_q." in name:
            stored = llama_cpp_permute(weight, config.num_attention_heads)
        elif arch == "llama" and ".attn_k." in name:
            stored = llama_cpp_permute(weight, config.num_key_value_heads)
        if kind == Q.F32:
            writer.add_tensor(name, stored.numpy())
        elif kind == Q.F16:
            writer.add_tensor(name, stored.numpy().astype(np.float16))
        else:
            data = gguf.quants.quantize(stored.numpy(), kind)
            writer.add_tensor(name, data, raw_dtype=kind)
        written.expected[hf_name] = round_through(weight, kind)
        written.types[name] = kind
    for name, data in (extra_tensors or {}).items():
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return written


@pytest.fixture
def gguf_shape() -> TinyShape:
    """The shape of the tiny models `gguf_file` writes."""
    return SHAPE


@pytest.fixture
def tiny_vocab() -> Vocabulary:
    """A fresh copy of the tiny tokenizer's GGUF metadata (tests change it)."""
    return tiny_vocabulary()


@pytest.fixture(scope="session")
def sentencepiece_vocab() -> Vocabulary:
    """A SentencePiece vocabulary of the tiny models' size (see `sentencepiece_vocabulary`)."""
    return sentencepiece_vocabulary()


@pytest.fixture
def gguf_file(tmp_path: Path) -> Callable[..., Written]:
    """`gguf_file(name="model.gguf", **write_gguf options)`: a tiny GGUF in the test's folder."""

    def write(name: str = "model.gguf", **options: Any) -> Written:
        return write_gguf(tmp_path / name, **options)

    return write


def _prefill_logits(loaded: LoadedModel, ids: list[int]) -> torch.Tensor:
    """Float32 logits [len(ids), vocab] of one prompt, prefilled in one step."""
    model = loaded.model
    dtype = next(model.parameters(), torch.empty(0)).dtype
    cache = KVCache(loaded.config, -(-len(ids) // 16), 16, dtype, torch.device("cpu"))
    n = len(ids)
    batch = AttentionBatch(16, torch.arange(n), [PrefillSpan(0, n, None, None)], [])
    with torch.inference_mode():
        return model.logits(model(torch.tensor(ids), torch.arange(n), batch, cache))


@pytest.fixture
def logits() -> Callable[..., torch.Tensor]:
    """`logits(config, ids)`: the logits of `ids` from the model `config` loads."""

    def of(config: EngineConfig, ids: list[int]) -> torch.Tensor:
        return _prefill_logits(load_model(config, max_positions=64), ids)

    return of


@pytest.fixture
def model_logits() -> Callable[[LoadedModel, list[int]], torch.Tensor]:
    """`model_logits(loaded, ids)`: the logits of `ids` from a loaded model."""
    return _prefill_logits


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """The packaged SmolLM2-135M-Instruct Q4_1 GGUF (`make` installs its wheel)."""
    return PACKAGED_MODELS["smollm2-135m-instruct"].path()
