"""The paged-attention model gives the same logits as transformers' reference implementation.

Same random weights in both; our model runs the sequence as a prefill, a prefill on top of a
cached prefix, then token-by-token decodes over a shuffled block table.
"""

from typing import Any

import pytest
import torch
import transformers

from streamgate.engine.model.config import ModelConfig
from streamgate.engine.model.llama import (
    AttentionBatch,
    DecodeGroup,
    KVCache,
    LlamaForCausalLM,
    PrefillSpan,
)
from streamgate.engine.model.loader import fuse_checkpoint

BASE: dict[str, Any] = {
    "vocab_size": 300,
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "hidden_act": "silu",
    "tie_word_embeddings": False,
}
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 32,
}
CASES: dict[str, dict[str, Any]] = {
    "llama": {"architectures": ["LlamaForCausalLM"]},
    "llama3-rope-tied": {
        "architectures": ["LlamaForCausalLM"],
        "rope_scaling": LLAMA3_ROPE,
        "rope_theta": 500000.0,
        "tie_word_embeddings": True,
    },
    "linear-rope": {
        "architectures": ["LlamaForCausalLM"],
        "rope_scaling": {"type": "linear", "factor": 2.0},
    },
    "qwen2-bias": {"architectures": ["Qwen2ForCausalLM"]},
    "mistral": {"architectures": ["MistralForCausalLM"], "sliding_window": None},
    "no-gqa": {"architectures": ["LlamaForCausalLM"], "num_key_value_heads": 4},
}
HF_CONFIGS = {
    "LlamaForCausalLM": transformers.LlamaConfig,
    "Qwen2ForCausalLM": transformers.Qwen2Config,
    "MistralForCausalLM": transformers.MistralConfig,
}


def reference_model(raw: dict[str, Any]) -> torch.nn.Module:
    arch = raw["architectures"][0]
    hf_config = HF_CONFIGS[arch](**{k: v for k, v in raw.items() if k != "architectures"})
    torch.manual_seed(0)
    model: torch.nn.Module = getattr(transformers, arch)(hf_config).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return model


@pytest.mark.parametrize("case", sorted(CASES))
def test_paged_model_matches_transformers(case: str) -> None:
    raw = {**BASE, **CASES[case]}
    reference = reference_model(raw)
    config = ModelConfig.from_dict(raw)
    ours = LlamaForCausalLM(config, max_positions=256)
    result = ours.load_state_dict(fuse_checkpoint(reference.state_dict(), config), strict=True)
    assert not result.missing_keys

    ids = torch.randint(0, config.vocab_size, (37,), generator=torch.Generator().manual_seed(1))
    bs, num_blocks = 4, 20
    cache = KVCache(config, num_blocks, bs, torch.float32, torch.device("cpu"))
    table = list(reversed(range(num_blocks)))  # a non-contiguous block table

    def slots(positions: range) -> torch.Tensor:
        return torch.tensor([table[p // bs] * bs + p % bs for p in positions])

    def blocks(num_tokens: int) -> torch.Tensor:
        return torch.tensor(table[: (num_tokens + bs - 1) // bs])

    outputs = []
    with torch.no_grad():
        expected = reference(ids.unsqueeze(0)).logits[0]
        first = AttentionBatch(bs, slots(range(20)), [PrefillSpan(0, 20, None, None)], [])
        outputs.append(ours.logits(ours(ids[:20], torch.arange(20), first, cache)))
        # 30 tokens span 8 blocks of 4: the mask also hides the 2 slots past the context.
        mask = torch.arange(32).unsqueeze(0) <= torch.arange(20, 30).unsqueeze(1)
        span = PrefillSpan(0, 10, blocks(30), mask)
        second = AttentionBatch(bs, slots(range(20, 30)), [span], [])
        outputs.append(ours.logits(ours(ids[20:30], torch.arange(20, 30), second, cache)))
        for p in range(30, 37):
            context = blocks(p + 1).unsqueeze(0)
            group = DecodeGroup(0, context, torch.tensor([p + 1]))
            step = AttentionBatch(bs, slots(range(p, p + 1)), [], [group])
            outputs.append(ours.logits(ours(ids[p : p + 1], torch.tensor([p]), step, cache)))
    got = torch.cat(outputs)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4), (got - expected).abs().max()
