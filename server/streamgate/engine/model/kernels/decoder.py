"""The decoder layer's small operations: native when the library is built and the tensors are
float32 on the CPU, else the torch code here, which computes the same thing.

The native versions (decoder_ops.cpp) replace chains of 5-15 torch ops, each costing
microseconds of dispatch at one row per sequence, by one call; decode attention reads keys and
values through the block tables instead of gathering copies of whole blocks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from streamgate.engine.model.kernels.native import load_kernels

Rope = tuple[torch.Tensor, torch.Tensor]
"""cos and sin [rows, 1, dim] of each row's position (each frequency twice: rotate-half)."""


def native_for(x: torch.Tensor) -> bool:
    """Whether the native ops take `x`: float32 on the CPU, and the library is built."""
    return x.dtype == torch.float32 and x.is_cpu and load_kernels()


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x [rows, hidden] / sqrt(mean(x^2) + eps) * weight."""
    if native_for(x):
        out: torch.Tensor = torch.ops.streamgate_kernels.rms_norm(x, weight, eps)
        return out
    return F.rms_norm(x, (x.shape[-1],), weight, eps)


def add_rms_norm(
    x: torch.Tensor, delta: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x + delta, rms_norm(x + delta)): the residual stream and the next sublayer's input."""
    if native_for(x):
        total, normed = torch.ops.streamgate_kernels.add_rms_norm(x, delta, weight, eps)
        return total, normed
    total = x + delta
    return total, F.rms_norm(total, (total.shape[-1],), weight, eps)


def rotate(x: torch.Tensor, rope: Rope) -> torch.Tensor:
    """x [rows, heads, dim], every head of each row rotated by its position (torch ops)."""
    cos, sin = rope
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def rope_and_cache(
    qkv: torch.Tensor,
    rope: Rope,
    slots: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    heads: int,
    kv_heads: int,
) -> torch.Tensor:
    """Rotates the query and key heads of qkv [rows, heads + 2 * kv_heads, dim], writes the
    rotated keys and the values to the cache slots [rows]; returns the rotated query and key
    heads [rows, heads + kv_heads, dim]."""
    if native_for(qkv) and k_cache.dtype == torch.float32:
        cos, sin = rope
        out: torch.Tensor = torch.ops.streamgate_kernels.rope_and_cache(
            qkv.contiguous(), cos, sin, slots, k_cache, v_cache, heads, kv_heads
        )
        return out
    qk = rotate(qkv[:, : heads + kv_heads], rope)
    # index_copy_: several times faster than advanced indexing on CPU.
    k_cache.index_copy_(0, slots, qk[:, heads:])
    v_cache.index_copy_(0, slots, qkv[:, heads + kv_heads :])
    return qk


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up of gate_up [rows, 2 * size], gate first (the SwiGLU activation)."""
    if native_for(gate_up):
        out: torch.Tensor = torch.ops.streamgate_kernels.silu_mul(gate_up, True)
        return out
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


def gather_blocks(cache: torch.Tensor, blocks: torch.Tensor, block_size: int) -> torch.Tensor:
    """[slots, heads, dim] cache -> [len(blocks) * block_size, heads, dim], whole blocks."""
    per_block = cache.view(-1, block_size * cache.shape[1] * cache.shape[2])
    return per_block.index_select(0, blocks).view(-1, *cache.shape[1:])


def paged_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    tables: torch.Tensor,
    lengths: torch.Tensor,
    block_size: int,
) -> torch.Tensor:
    """One query row per sequence, q [batch, heads, dim], attending to the first `lengths[b]`
    cached positions of sequence b through its block table (tables [batch, width]); grouped
    query attention when there are fewer key/value heads. Returns [batch, heads, dim]."""
    if native_for(q) and k_cache.dtype == torch.float32:
        out: torch.Tensor = torch.ops.streamgate_kernels.paged_attention(
            q, k_cache, v_cache, tables, lengths, block_size, True
        )
        return out
    batch = tables.shape[0]
    keys = gather_blocks(k_cache, tables.flatten(), block_size).view(batch, -1, *k_cache.shape[1:])
    values = gather_blocks(v_cache, tables.flatten(), block_size)
    values = values.view(batch, -1, *v_cache.shape[1:])
    positions = torch.arange(keys.shape[1], device=q.device)
    mask = (positions.unsqueeze(0) < lengths.unsqueeze(1))[:, None, None]
    out = F.scaled_dot_product_attention(
        q.unsqueeze(2),
        keys.transpose(1, 2),
        values.transpose(1, 2),
        attn_mask=mask,
        enable_gqa=True,
    )
    return out.squeeze(2)
