"""Llama-family decoder (Llama, Mistral, Qwen2) whose attention reads a paged KV cache.

Module names follow transformers' checkpoints (`model.layers.N.self_attn.q_proj` ...) so that
safetensors load by name; q/k/v and gate/up are fused at load time (fewer kernel launches per step,
which dominate the cost of small models on a CPU).

Within the decoder, submodules are called through `.forward`: `nn.Module.__call__` looks for hooks
(none are used here) at a few microseconds a call, seven calls per layer per step: 0.9 ms of a
15 ms one-stream decode step of SmolLM2-135M.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from streamgate.engine.model.config import ModelConfig, ModelConfigError
from streamgate.engine.model.kernels import decoder
from streamgate.engine.model.kernels.decoder import Rope


@dataclass
class PrefillSpan:
    """A run of new tokens of one sequence, attending to its cached prefix and to itself."""

    start: int  # first row of this span in the step's flattened tokens
    length: int
    # Blocks of the whole context (cached prefix + this span); None when there is no prefix,
    # then the span attends causally to its own fresh K/V without touching the cache.
    context_blocks: torch.Tensor | None
    mask: torch.Tensor | None  # [length, blocks * block_size] bool, with a prefix only


@dataclass
class DecodeGroup:
    """Decode tokens of sequences with similar context lengths, attended in one batched call."""

    start: int  # first row of the group in the step's flattened tokens
    blocks: torch.Tensor  # [rows, max_blocks] block tables, padded
    lengths: torch.Tensor  # [rows] context length of each sequence, this step's token included


@dataclass
class AttentionBatch:
    """Layout of one engine step: prefill spans first, then one decode token per sequence."""

    block_size: int
    slot_mapping: torch.Tensor  # [T] cache slot (block * block_size + offset) of each new token
    prefills: list[PrefillSpan]
    decodes: list[DecodeGroup]  # after the prefill rows, one token per sequence


class KVCache:
    """Per-layer key and value tensors, addressed by slot = block * block_size + offset."""

    def __init__(
        self,
        config: ModelConfig,
        num_blocks: int,
        block_size: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        shape = (num_blocks * block_size, config.num_key_value_heads, config.dim_per_head)
        self.keys = [
            torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.num_hidden_layers)
        ]
        self.values = [
            torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.num_hidden_layers)
        ]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)


def rope_inverse_frequencies(config: ModelConfig) -> torch.Tensor:
    """RoPE frequencies with the config's theta and scaling: none, linear, dynamic-free llama3,
    or `factors` (one divisor per frequency, as GGUF files of Llama 3.1+ carry them)."""
    dim = config.dim_per_head
    # On the CPU, whatever the default device (a model built on the meta device computes these).
    steps = torch.arange(0, dim, 2, dtype=torch.float64, device="cpu")
    inv_freq = 1.0 / (config.rope_theta ** (steps / dim))
    scaling = config.rope_scaling
    if not scaling:
        return inv_freq
    kind = scaling.get("rope_type") or scaling.get("type")
    if kind in (None, "default"):
        return inv_freq
    if kind == "linear":
        return inv_freq / float(scaling["factor"])
    if kind == "factors":
        factors = torch.tensor(scaling["factors"], dtype=torch.float64, device="cpu")
        if factors.shape != inv_freq.shape:
            raise ModelConfigError(f"{len(factors)} RoPE factors for {len(inv_freq)} frequencies")
        return inv_freq / factors
    if kind == "llama3":
        factor = float(scaling["factor"])
        low = float(scaling.get("low_freq_factor", 1.0))
        high = float(scaling.get("high_freq_factor", 4.0))
        original = float(scaling["original_max_position_embeddings"])
        wavelen = 2 * math.pi / inv_freq
        smooth = (original / wavelen - low) / (high - low)
        scaled = torch.where(wavelen > original / low, inv_freq / factor, inv_freq)
        mid = (wavelen <= original / low) & (wavelen >= original / high)
        return torch.where(mid, (1 - smooth) * inv_freq / factor + smooth * inv_freq, scaled)
    raise ModelConfigError(f"unsupported rope_scaling type {kind!r} (none, linear, llama3)")


class RotaryEmbedding(nn.Module):
    """Precomputed cos/sin tables, applied in the rotate-half layout of HF Llama checkpoints."""

    cos: torch.Tensor
    sin: torch.Tensor

    def __init__(self, config: ModelConfig, max_positions: int) -> None:
        super().__init__()
        inv_freq = rope_inverse_frequencies(config)
        t = torch.arange(max_positions, dtype=torch.float64, device="cpu")
        freqs = torch.outer(t, inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos", emb.cos().float(), persistent=False)
        self.register_buffer("sin", emb.sin().float(), persistent=False)

    def at(self, positions: torch.Tensor, dtype: torch.dtype) -> Rope:
        """cos/sin rows for the step's positions, looked up once and shared by every layer."""
        cos = self.cos.index_select(0, positions).unsqueeze(1).to(dtype)
        sin = self.sin.index_select(0, positions).unsqueeze(1).to(dtype)
        return cos, sin


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return decoder.rms_norm(x, self.weight, self.eps)

    def add_forward(
        self, x: torch.Tensor, delta: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x + delta, the norm of it): a residual add and the norm after it, in one call."""
        return decoder.add_rms_norm(x, delta, self.weight, self.eps)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.dim_per_head
        q_size = self.num_heads * self.head_dim
        kv_size = self.num_kv_heads * self.head_dim
        self.qkv_proj = nn.Linear(config.hidden_size, q_size + 2 * kv_size, config.attention_bias)
        self.o_proj = nn.Linear(q_size, config.hidden_size, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        rope: Rope,
        batch: AttentionBatch,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
    ) -> torch.Tensor:
        rows = x.shape[0]
        heads = self.num_heads + 2 * self.num_kv_heads
        qkv = self.qkv_proj.forward(x).view(rows, heads, self.head_dim)
        qk = decoder.rope_and_cache(
            qkv, rope, batch.slot_mapping, k_cache, v_cache, self.num_heads, self.num_kv_heads
        )
        q, k = qk[:, : self.num_heads], qk[:, self.num_heads :]
        v = qkv[:, self.num_heads + self.num_kv_heads :]

        outputs = [self._prefill(q, k, v, span, batch, k_cache, v_cache) for span in batch.prefills]
        for group in batch.decodes:
            outputs.append(self._decode(q, group, batch.block_size, k_cache, v_cache))
        out = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
        out = out.reshape(rows, self.num_heads * self.head_dim)
        result: torch.Tensor = self.o_proj.forward(out)
        return result

    def _prefill(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        span: PrefillSpan,
        batch: AttentionBatch,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
    ) -> torch.Tensor:
        end = span.start + span.length
        query = q[span.start : end].transpose(0, 1)
        if span.context_blocks is None:
            keys, values = k[span.start : end], v[span.start : end]
            out = F.scaled_dot_product_attention(
                query, keys.transpose(0, 1), values.transpose(0, 1), is_causal=True, enable_gqa=True
            )
        else:
            keys = decoder.gather_blocks(k_cache, span.context_blocks, batch.block_size)
            values = decoder.gather_blocks(v_cache, span.context_blocks, batch.block_size)
            out = F.scaled_dot_product_attention(
                query,
                keys.transpose(0, 1),
                values.transpose(0, 1),
                attn_mask=span.mask,
                enable_gqa=True,
            )
        return out.transpose(0, 1)

    @staticmethod
    def _decode(
        q: torch.Tensor,
        group: DecodeGroup,
        block_size: int,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
    ) -> torch.Tensor:
        query = q[group.start : group.start + group.blocks.shape[0]]
        return decoder.paged_attention(
            query, k_cache, v_cache, group.blocks, group.lengths, block_size
        )


class MLP(nn.Module):
    """SwiGLU feed-forward with gate and up projections fused into one matrix."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.gate_up_proj = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.down_proj.forward(decoder.silu_mul(self.gate_up_proj.forward(x)))
        return out


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.self_attn = Attention(config)
        self.mlp = MLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(
        self,
        delta: torch.Tensor,
        residual: torch.Tensor | None,
        rope: Rope,
        batch: AttentionBatch,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(this layer's MLP output, the residual stream before it): the previous layer's
        output is added to the residual stream here, in one call with the norm after it (the
        first layer gets the embeddings as `delta` and no residual)."""
        if residual is None:
            residual, x = delta, self.input_layernorm(delta)
        else:
            residual, x = self.input_layernorm.add_forward(residual, delta)
        attended = self.self_attn.forward(x, rope, batch, k_cache, v_cache)
        residual, x = self.post_attention_layernorm.add_forward(residual, attended)
        return self.mlp.forward(x), residual


class LlamaBody(nn.Module):
    def __init__(self, config: ModelConfig, max_positions: int) -> None:
        super().__init__()
        self.rotary = RotaryEmbedding(config, max_positions)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList([DecoderLayer(config) for _ in range(config.num_hidden_layers)])
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class LlamaForCausalLM(nn.Module):
    """The whole decoder: token ids in, hidden states of the requested rows out, then logits."""

    def __init__(self, config: ModelConfig, max_positions: int) -> None:
        super().__init__()
        self.config = config
        self.model = LlamaBody(config, max_positions)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    @classmethod
    def from_checkpoint(
        cls,
        config: ModelConfig,
        max_positions: int,
        weights: Mapping[str, torch.Tensor],
        *,
        absent: Collection[str] = (),
        device: torch.device | str = "cpu",
    ) -> LlamaForCausalLM:
        """The model holding `weights` (fused names, see loader.fuse_checkpoint) as they are:
        their tensors become its parameters, with their dtype and device.

        Parameters are created on the meta device and replaced by the checkpoint's tensors, so
        no random initialization runs first. Parameters named in `absent` stay on the meta
        device, for the caller to replace with other modules (weights that run quantized). The
        RoPE tables are computed on `device`.
        """
        with torch.device("meta"):
            model = cls(config, max_positions)  # the RoPE tables are computed on the CPU
        model.model.rotary.to(device)
        result = model.load_state_dict(weights, strict=False, assign=True)
        missing = set(result.missing_keys) - set(absent)
        if missing or result.unexpected_keys:
            raise ModelConfigError(
                f"checkpoint does not match the architecture: missing {sorted(missing)[:5]}, "
                f"unexpected {result.unexpected_keys[:5]}"
            )
        if config.tie_word_embeddings:  # assign=True replaced the shared parameter twice
            model.lm_head.weight = model.model.embed_tokens.weight
        return model

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        batch: AttentionBatch,
        cache: KVCache,
    ) -> torch.Tensor:
        """Hidden states [T, hidden] after the final norm, for every new token of the step."""
        x: torch.Tensor = self.model.embed_tokens(input_ids)
        rope = self.model.rotary.at(positions, x.dtype)
        residual: torch.Tensor | None = None
        for layer, k_cache, v_cache in zip(
            self.model.layers, cache.keys, cache.values, strict=True
        ):
            x, residual = layer.forward(x, residual, rope, batch, k_cache, v_cache)
        if residual is None:  # a model without layers
            out: torch.Tensor = self.model.norm(x)
            return out
        return self.model.norm.add_forward(residual, x)[1]

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Float32 logits, whatever the model's dtype, so that sampling is numerically uniform."""
        logits: torch.Tensor = self.lm_head(hidden).float()
        return logits
