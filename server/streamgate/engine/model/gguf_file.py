"""A GGUF file (llama.cpp's format) as the engine's model: architecture, weights, tokenizer facts.

Read with the `gguf` package (llama.cpp's own reader: the file is memory-mapped and its header
parsed once, by `GGUFModel`). What runs:
- architectures `llama` (Llama 1-3, Mistral, SmolLM and other Llama-shaped models) and `qwen2`;
- F32, F16 and BF16 tensors, loaded as float32 (exactly);
- Q4_1 and Q4_0 tensors of the linear layers, kept as `Int4Blocks` and run by the int4 kernel as
  they are (an embedding table in these types is dequantized, exactly);
- Q8_0 tensors: the token embedding and the output head as `Int8Blocks`, run as they are (by
  `Q8Embedding` and `Q8Linear`); Q8_0 projections of the layers are dequantized (exactly).
Anything else is refused as soon as the file is opened, naming the file and the key or tensor.

llama.cpp's converter reorders the rows of the Q and K projections of `llama` models for its
interleaved RoPE (`permute` in convert_hf_to_gguf.py); the engine rotates halves as HF
checkpoints do, so that order is undone here. `qwen2` files keep HF's order.
"""

from __future__ import annotations

import mmap
import re
from collections import Counter
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch
import xxhash

from streamgate.engine.model.config import ModelConfig, ModelConfigError
from streamgate.engine.model.kernels import Int8Blocks
from streamgate.engine.model.quant import Int4Blocks, Weight

__all__ = ["SUPPORTED_TENSOR_TYPES", "GGUFError", "GGUFModel"]

Q = gguf.GGMLQuantizationType
# GGUF architecture -> the engine's (HF) architecture name.
ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}
# Architectures whose converter permuted the Q/K rows (llama.cpp's rope type "norm").
_PERMUTED_ROPE = {"llama"}
FLOAT_TYPES = (Q.F32, Q.F16, Q.BF16)
INT4_TYPES = (Q.Q4_0, Q.Q4_1)
INT8_TYPES = (Q.Q8_0,)
SUPPORTED_TENSOR_TYPES = (*FLOAT_TYPES, *INT4_TYPES, *INT8_TYPES)
_GROUP = 32  # values per block of Q4_0, Q4_1 and Q8_0

_TOP_LEVEL = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LAYER = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_LAYER_TENSOR = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")
# The tables kept as Int8Blocks when in Q8_0 (HF names).
_INT8_TABLES = ("model.embed_tokens.weight", "lm_head.weight")
# Per-frequency RoPE divisors (Llama 3.1+ files): folded into the config, not a parameter.
_ROPE_FACTORS = "rope_freqs.weight"
_REQUIRED = object()


class GGUFError(ModelConfigError):
    """A GGUF file the engine cannot run; the message names the file and what is wrong."""


class GGUFModel:
    """An opened GGUF file: its metadata and config are read, its weights decoded on demand."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._reader = gguf.GGUFReader(self.path)
        except (OSError, ValueError) as err:
            raise GGUFError(f"{self.path}: not a readable GGUF file ({err})") from None
        self._tensors = {t.name: t for t in self._reader.tensors}
        arch = self.value("general.architecture")
        if arch not in ARCHITECTURES:
            raise self.error(
                f"architecture {arch!r} is not supported (supported: {', '.join(ARCHITECTURES)})"
            )
        self.architecture: str = arch
        self._check_tensors()
        self.config = self._model_config()

    # ---- metadata -------------------------------------------------------------------------

    def error(self, message: str) -> GGUFError:
        return GGUFError(f"{self.path}: {message}")

    def value(self, key: str, default: Any = _REQUIRED) -> Any:
        """The metadata value of `key` (a scalar, a string or a list), or `default`."""
        field = self._reader.fields.get(key)
        if field is None:
            if default is _REQUIRED:
                raise self.error(f"metadata key {key!r} is missing")
            return default
        return field.contents()

    @property
    def tensor_types(self) -> Counter[str]:
        """How many tensors of each GGML type the file holds, e.g. {"Q4_1": 210, "F32": 61}."""
        return Counter(t.tensor_type.name for t in self._tensors.values())

    @property
    def quantized(self) -> bool:
        """Whether any tensor is quantized (then `--quantize` does not apply)."""
        return any(t.tensor_type not in FLOAT_TYPES for t in self._tensors.values())

    @property
    def file_type(self) -> str:
        """The file's type as llama.cpp names it (`Q4_1`, `F16`...): `general.file_type`, else
        the type of most of its matrices."""
        try:
            return gguf.LlamaFileType(self.value("general.file_type", None)).name.removeprefix(
                "MOSTLY_"
            )
        except ValueError:  # absent, or a type newer than the gguf package
            matrices = Counter(
                t.tensor_type.name for t in self._tensors.values() if len(t.shape) > 1
            )
            return matrices.most_common(1)[0][0]

    def sha(self) -> str:
        """Content hash of the whole file (xxh3-128)."""
        h = xxhash.xxh3_128()
        with self.path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            h.update(m)
        return h.hexdigest()

    def _arch(self, key: str, default: Any = _REQUIRED) -> Any:
        value = self.value(f"{self.architecture}.{key}", default)
        if isinstance(value, list):
            raise self.error(f"{self.architecture}.{key} varies per layer; not supported")
        return value

    def _model_config(self) -> ModelConfig:
        if self._arch("expert_count", 0):
            raise self.error("mixture-of-experts models are not supported")
        hidden = int(self._arch("embedding_length"))
        heads = int(self._arch("attention.head_count"))
        head_dim = int(self._arch("attention.key_length", hidden // heads))
        if int(self._arch("attention.value_length", head_dim)) != head_dim:
            raise self.error("keys and values of different sizes are not supported")
        rotary = int(self._arch("rope.dimension_count", head_dim))
        if rotary != head_dim:
            raise self.error(f"RoPE over {rotary} of {head_dim} head dimensions: not supported")
        embedding = self._tensor("token_embd.weight")
        sliding = self._arch("attention.sliding_window", None)
        return ModelConfig(
            vocab_size=int(embedding.shape[1]),
            hidden_size=hidden,
            intermediate_size=int(self._arch("feed_forward_length")),
            num_hidden_layers=int(self._arch("block_count")),
            num_attention_heads=heads,
            num_key_value_heads=int(self._arch("attention.head_count_kv", heads)),
            max_position_embeddings=int(self._arch("context_length")),
            rms_norm_eps=float(self._arch("attention.layer_norm_rms_epsilon")),
            rope_theta=float(self._arch("rope.freq_base", 10000.0)),
            rope_scaling=self._rope_scaling(),
            head_dim=head_dim if head_dim != hidden // heads else None,
            attention_bias="blk.0.attn_q.bias" in self._tensors,
            tie_word_embeddings="output.weight" not in self._tensors,
            bos_token_id=self.value("tokenizer.ggml.bos_token_id", None),
            eos_token_id=self.value("tokenizer.ggml.eos_token_id", None),
            sliding_window=int(sliding) if sliding else None,
            architecture=ARCHITECTURES[self.architecture],
        )

    def _rope_scaling(self) -> dict[str, Any] | None:
        if _ROPE_FACTORS in self._tensors:
            factors = self._float(self._tensor(_ROPE_FACTORS)).flatten().tolist()
            return {"rope_type": "factors", "factors": factors}
        kind = self._arch("rope.scaling.type", None)
        factor = self._arch("rope.scaling.factor", None) or self._arch("rope.scale_linear", None)
        if kind in (None, "none") and factor in (None, 1.0):
            return None
        if kind in (None, "linear"):
            return {"rope_type": "linear", "factor": float(factor)}
        raise self.error(f"RoPE scaling {kind!r} is not supported (none, linear)")

    # ---- tensors --------------------------------------------------------------------------

    def _tensor(self, name: str) -> gguf.ReaderTensor:
        tensor = self._tensors.get(name)
        if tensor is None:
            raise self.error(f"tensor {name!r} is missing")
        return tensor

    def _check_tensors(self) -> None:
        """Every tensor has a known name and a supported type, before anything is decoded."""
        for name, tensor in self._tensors.items():
            if name != _ROPE_FACTORS:
                self._hf_name(name)
            if tensor.tensor_type not in SUPPORTED_TENSOR_TYPES:
                supported = ", ".join(t.name for t in SUPPORTED_TENSOR_TYPES)
                raise self.error(
                    f"tensor {name!r} is {tensor.tensor_type.name}; the engine runs {supported} "
                    "(docs/models.md)"
                )

    def _hf_name(self, name: str) -> str:
        if name in _TOP_LEVEL:
            return _TOP_LEVEL[name]
        match = _LAYER_TENSOR.fullmatch(name)
        if match is None or match.group(2) not in _LAYER:
            raise self.error(f"unexpected tensor {name!r} for architecture {self.architecture!r}")
        layer, part, kind = match.groups()
        return f"model.layers.{layer}.{_LAYER[part]}.{kind}"

    def weights(self, dequantize: bool = False) -> dict[str, Weight]:
        """Every parameter in HF checkpoint names, Q/K rows in HF order.

        Linear weights in Q4_0/Q4_1 are `Int4Blocks`, the embedding and head in Q8_0
        `Int8Blocks`; everything else (and everything with `dequantize`) is a float32 tensor.
        """
        out: dict[str, Weight] = {}
        for name, tensor in self._tensors.items():
            if name == _ROPE_FACTORS:
                continue
            hf_name = self._hf_name(name)
            weight: Weight
            if (
                tensor.tensor_type in INT4_TYPES
                and not dequantize
                and hf_name.endswith(("_proj.weight", "lm_head.weight"))
            ):
                weight = self._int4_blocks(tensor)
            elif tensor.tensor_type in INT4_TYPES:
                weight = self._int4_blocks(tensor).dequantize().reshape(self._shape(tensor))
            elif tensor.tensor_type in INT8_TYPES and not dequantize and hf_name in _INT8_TABLES:
                weight = self._int8_blocks(tensor)
            else:
                weight = self._float(tensor)
            out[hf_name] = self._rope_order(name, weight)
        return out

    def _rope_order(self, name: str, weight: Weight) -> Weight:
        """Undo llama.cpp's Q/K row permutation (`permute` in its converter)."""
        if self.architecture not in _PERMUTED_ROPE:
            return weight
        if ".attn_q." in name:
            heads = self.config.num_attention_heads
        elif ".attn_k." in name:
            heads = self.config.num_key_value_heads
        else:
            return weight
        rows = weight.shape[0]
        # GGUF row h*hd + 2i + j holds HF row h*hd + j*hd/2 + i (per head h, pair i, half j).
        index = torch.arange(rows).view(heads, rows // heads // 2, 2).transpose(1, 2).reshape(-1)
        return weight[index] if isinstance(weight, torch.Tensor) else weight.rows(index)

    def _float(self, tensor: gguf.ReaderTensor) -> torch.Tensor:
        """A float, BF16 or Q8_0 tensor as float32 [rows, columns] (1-D stays 1-D), exactly."""
        data = np.asarray(tensor.data)
        kind = tensor.tensor_type
        if kind == Q.BF16:
            bits = torch.from_numpy(data.view(np.int16).copy())
            values = bits.view(torch.bfloat16).float()
        elif kind in INT8_TYPES:
            values = torch.from_numpy(gguf.quants.dequantize(data, kind))
        else:
            values = torch.from_numpy(data.astype(np.float32))  # a copy, out of the memory map
        return values.reshape(self._shape(tensor))

    @staticmethod
    def _shape(tensor: gguf.ReaderTensor) -> list[int]:
        return [int(d) for d in reversed(tensor.shape)]  # GGUF lists the fastest dimension first

    def _int4_blocks(self, tensor: gguf.ReaderTensor) -> Int4Blocks:
        """Q4_1 blocks (f16 d, f16 m, 16 bytes: w = d*q + m) or Q4_0 blocks (f16 d, 16 bytes:
        w = d*(q - 8)); in each block the low nibbles are values 0-15, the high ones 16-31."""
        raw = np.asarray(tensor.data)
        raw = raw.reshape(-1, raw.shape[-1])  # rows of blocks (a 1-D tensor is one row)
        rows = raw.shape[0]
        has_minimum = tensor.tensor_type == Q.Q4_1
        header = 4 if has_minimum else 2
        blocks = raw.reshape(rows, -1, header + _GROUP // 2)
        scales = torch.from_numpy(blocks[..., 0:2].copy().view(np.float16)[..., 0])
        packed = torch.from_numpy(blocks[..., header:].copy())
        codes = torch.cat([packed & 15, packed >> 4], dim=-1).reshape(rows, -1)
        if has_minimum:
            minimums = torch.from_numpy(blocks[..., 2:4].copy().view(np.float16)[..., 0])
        else:
            minimums = -8 * scales  # exact: a power of two times a float16
            if not torch.isfinite(minimums).all():
                raise self.error(f"tensor {tensor.name!r}: a Q4_0 scale too large for float16")
        return Int4Blocks(codes, scales, minimums, _GROUP)

    def _int8_blocks(self, tensor: gguf.ReaderTensor) -> Int8Blocks:
        """Q8_0 blocks of a matrix: f16 d, then 32 int8 codes q (w = d*q)."""
        raw = np.asarray(tensor.data)
        rows = self._shape(tensor)[0]
        blocks = raw.reshape(rows, -1, 2 + _GROUP)
        scales = torch.from_numpy(blocks[..., 0:2].copy().view(np.int16)[..., 0])
        codes = torch.from_numpy(blocks[..., 2:].copy().view(np.int8).reshape(rows, -1))
        return Int8Blocks(codes, scales, _GROUP)
