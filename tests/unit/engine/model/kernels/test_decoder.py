"""The decoder layer's native operations against the torch code that computes the same thing
(decoder.py's fallback, run here with the library switched off).

Bounds: the norm, the activation and attention sum in another order than torch (and use an
exp polynomial with ~1e-7 relative error), so they agree to a few float32 roundings; rotary
embedding and the cache writes are the same products and sums, so they agree exactly.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from streamgate.engine.model.kernels import decoder

ops = torch.ops.streamgate_kernels


@pytest.fixture(autouse=True)
def built() -> None:
    assert decoder.load_kernels(), "the native library must build on the test machine"


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def reference(fn: object, *args: object) -> object:
    """fn(*args) on decoder.py's torch path."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(decoder, "load_kernels", lambda: False)
        assert callable(fn)
        return fn(*args)


@pytest.mark.parametrize("rows", [1, 5])
def test_rms_norm_and_the_residual_add(rows: int) -> None:
    x = torch.randn(rows, 576, generator=gen()) * 3
    delta = torch.randn(rows, 576, generator=gen(1))
    weight = torch.randn(576, generator=gen(2))
    expected = F.rms_norm(x, (576,), weight, 1e-5)
    torch.testing.assert_close(decoder.rms_norm(x, weight, 1e-5), expected, rtol=1e-6, atol=1e-6)
    total, normed = decoder.add_rms_norm(x, delta, weight, 1e-5)
    assert torch.equal(total, x + delta)
    torch.testing.assert_close(normed, F.rms_norm(x + delta, (576,), weight, 1e-5))
    # A view of every other row (rows not adjacent in memory) reads the right rows.
    wide = torch.randn(2 * rows, 576, generator=gen(3))[::2]
    torch.testing.assert_close(
        decoder.rms_norm(wide, weight, 1e-5), F.rms_norm(wide, (576,), weight, 1e-5)
    )


@pytest.mark.parametrize("vectorized", [True, False])
def test_silu_mul(vectorized: bool) -> None:
    gate_up = torch.randn(3, 2 * 1539, generator=gen()) * 6  # a tail past the 8 lanes
    gate_up[0, :4] = torch.tensor([-100.0, 100.0, 0.0, -0.0])  # exp's clamps
    gate, up = gate_up.chunk(2, dim=-1)
    got = ops.silu_mul(gate_up, vectorized)
    torch.testing.assert_close(got, F.silu(gate) * up, rtol=2e-6, atol=1e-6)


def test_rope_and_cache_equals_the_torch_ops() -> None:
    heads, kv_heads, dim, rows = 9, 3, 64, 4
    qkv = torch.randn(rows, heads + 2 * kv_heads, dim, generator=gen())
    angles = torch.randn(rows, 1, dim // 2, generator=gen(1)) * 10
    angles = torch.cat([angles, angles], dim=-1)
    rope = (angles.cos(), angles.sin())
    slots = torch.tensor([7, 0, 12, 3])
    caches = [torch.zeros(16, kv_heads, dim) for _ in range(4)]
    got = decoder.rope_and_cache(qkv, rope, slots, caches[0], caches[1], heads, kv_heads)
    expected = reference(
        decoder.rope_and_cache, qkv, rope, slots, caches[2], caches[3], heads, kv_heads
    )
    assert isinstance(expected, torch.Tensor)
    assert torch.equal(got, expected)
    assert torch.equal(caches[0], caches[2]) and torch.equal(caches[1], caches[3])
    assert torch.equal(caches[1][slots], qkv[:, heads + kv_heads :])
    assert caches[0][1].abs().sum() == 0  # slots not written stay as they were


def paged_case(
    lengths: list[int], heads: int, kv_heads: int, dim: int, block_size: int = 4
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Query, caches with random contents and shuffled block tables for `lengths`."""
    width = -(-max(lengths) // block_size)
    num_blocks = len(lengths) * width + 3
    k_cache = torch.randn(num_blocks * block_size, kv_heads, dim, generator=gen(1))
    v_cache = torch.randn(num_blocks * block_size, kv_heads, dim, generator=gen(2))
    order = torch.randperm(num_blocks, generator=gen(3))
    tables = order[: len(lengths) * width].view(len(lengths), width).contiguous()
    # A strided query, as the model passes it (a view of the rotated q/k heads).
    q = torch.randn(len(lengths), heads + kv_heads, dim, generator=gen(4))[:, :heads]
    return q, k_cache, v_cache, tables, torch.tensor(lengths)


@pytest.mark.parametrize("vectorized", [True, False])
@pytest.mark.parametrize(
    ("heads", "kv_heads", "dim"), [(9, 3, 64), (4, 4, 32), (6, 2, 12), (16, 1, 8)]
)
def test_paged_attention_equals_gather_and_sdpa(
    vectorized: bool, heads: int, kv_heads: int, dim: int
) -> None:
    lengths = [1, 4, 5, 23, 37]  # within a block, whole blocks, a partial last block
    q, k_cache, v_cache, tables, lens = paged_case(lengths, heads, kv_heads, dim)
    got = ops.paged_attention(q, k_cache, v_cache, tables, lens, 4, vectorized)
    expected = reference(decoder.paged_attention, q, k_cache, v_cache, tables, lens, 4)
    assert isinstance(expected, torch.Tensor)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    # One sequence alone gives what it gave in the batch (no row depends on another).
    alone = ops.paged_attention(q[3:4], k_cache, v_cache, tables[3:4], lens[3:4], 4, vectorized)
    assert torch.equal(alone, got[3:4])


def test_paged_attention_with_peaked_scores() -> None:
    """Scores far apart (one key dominates): the maximum is subtracted before exp."""
    q, k_cache, v_cache, tables, lens = paged_case([9], 3, 3, 64)
    q = q * 40
    got = decoder.paged_attention(q, k_cache, v_cache, tables, lens, 4)
    expected = reference(decoder.paged_attention, q, k_cache, v_cache, tables, lens, 4)
    assert isinstance(expected, torch.Tensor)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_bad_inputs_are_refused_with_a_reason() -> None:
    q, k_cache, v_cache, tables, lens = paged_case([5], 3, 3, 64)
    with pytest.raises(RuntimeError, match="length 9 of sequence 0 does not fit its 2 blocks"):
        ops.paged_attention(q, k_cache, v_cache, tables, torch.tensor([9]), 4, True)
    with pytest.raises(RuntimeError, match="block 99 outside the cache"):
        ops.paged_attention(q, k_cache, v_cache, torch.tensor([[99, 0]]), lens, 4, True)
    with pytest.raises(RuntimeError, match="3 query heads cannot share 2"):
        ops.paged_attention(
            q, k_cache[:, :2].contiguous(), v_cache[:, :2].contiguous(), tables, lens, 4, True
        )
    qkv = torch.zeros(1, 5, 8)
    cos = sin = torch.ones(1, 1, 8)
    cache = torch.zeros(4, 1, 8)
    with pytest.raises(RuntimeError, match="slot 4 outside the cache's 4"):
        ops.rope_and_cache(qkv, cos, sin, torch.tensor([4]), cache, cache.clone(), 3, 1)
    with pytest.raises(RuntimeError, match="weight must be a contiguous float32"):
        ops.rms_norm(torch.ones(2, 8), torch.ones(7), 1e-5)


def test_other_dtypes_take_the_torch_path() -> None:
    x = torch.randn(2, 64, generator=gen()).to(torch.bfloat16)
    weight = torch.ones(64, dtype=torch.bfloat16)
    assert not decoder.native_for(x)
    assert torch.equal(decoder.rms_norm(x, weight, 1e-5), F.rms_norm(x, (64,), weight, 1e-5))
