"""SmolLM2-135M-Instruct's Q4_1 GGUF, run by the engine, against transformers' GGUF loader
(which dequantizes every tensor to float32 with the gguf package, then runs its Llama).

Each model and tokenizer is loaded once for the module: transformers takes about 30 s to read
the file (its tokenizer and model each parse the metadata again), the engine about 6 s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import torch

from streamgate.engine.config import EngineConfig
from streamgate.engine.model import quant
from streamgate.engine.model.loader import LoadedModel, load_model
from streamgate.engine.model.quant import Int4Linear, Q8Embedding, Q8Linear

transformers = pytest.importorskip("transformers")

CORPUS = [
    "def fib(n: int) -> int:\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    "x = [1, 22, 333, 4444, 55555]; y = 3.14159e-10; z = 0x1F",
    "Numbers: 1234567890, 2024-12-07, 1,000,000.50 and -42.",
    "   leading spaces\tand\ttabs\n\n\n  trailing   ",
    "  \n \t  \r\n  ",
    "Café déjà vu, naïve façade, Ångström, Straße, ÉCOLE",
    "中文分词测试，日本語のテキスト、한국어 문장.",
    "Emoji 🎉🚀👍🏽 and 👨‍👩‍👧‍👦 family, flags 🇫🇷",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "it's, we're, they'll, I'd, you've, she'S",
    "<|endoftext|><repo_name>x<file_sep>",
    "",
]
FRANCE = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n<|im_start|>user\nWhat is the capital of France? Answer in one sentence."
    "<|im_end|>\n<|im_start|>assistant\n"
)
MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def theirs(smollm2: Path) -> tuple[Any, Any]:
    """transformers' tokenizer and float32 model of the file."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(smollm2.parent, gguf_file=smollm2.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        smollm2.parent, gguf_file=smollm2.name, dtype=torch.float32
    )
    return tokenizer, model.eval()


@pytest.fixture(scope="module")
def native() -> LoadedModel:
    """The engine's model as it runs (4-bit layers on the native kernel when it builds)."""
    return load_model(EngineConfig(model=MODEL), max_positions=256)


@pytest.fixture(scope="module")
def on_aten() -> LoadedModel:
    """The same model with its 4-bit layers on torch's CPU kernel (its Q8_0 head stays native)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(quant, "load_kernels", lambda: False)
        return load_model(EngineConfig(model=MODEL), max_positions=256)


@pytest.fixture(scope="module")
def reader(smollm2: Path) -> gguf.GGUFReader:
    return gguf.GGUFReader(smollm2)


def test_token_ids_equal_transformers(native: LoadedModel, theirs: tuple[Any, Any]) -> None:
    """Code, numbers, whitespace runs, accents, CJK, emoji, chat markup: the same ids.

    transformers puts a BOS in front that the file says not to add (add_bos_token false, as
    llama.cpp does), so its ids are taken without special tokens; ours add none either way.
    """
    tokenizer, _ = theirs
    for text in CORPUS:
        ids = native.tokenizer.encode(text)
        assert ids == tokenizer(text, add_special_tokens=False)["input_ids"], text
        assert native.tokenizer.decode(ids) == text


def test_special_tokens_end_of_generation_and_template(native: LoadedModel) -> None:
    tokenizer = native.tokenizer
    assert (tokenizer.bos_token, tokenizer.eos_token) == ("<|im_start|>", "<|im_end|>")
    assert tokenizer.eos_token_id == 2
    assert tokenizer.eos_token_ids == {2, 0}  # <|im_end|>, and <|endoftext|> (llama.cpp's list)
    assert tokenizer.chat_template is not None and "<|im_start|>" in tokenizer.chat_template
    assert tokenizer.encode("<|im_start|>user")[:1] == [1]  # found whole, a special token
    assert native.info.model_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert native.info.quantize == "Q4_1"


def hf_rows(weight: np.ndarray[Any, Any], heads: int) -> torch.Tensor:
    """Q/K rows back in HF order (transformers' reverse of llama.cpp's permute)."""
    rows = weight.shape[0]
    w = weight.reshape(heads, rows // heads // 2, 2, *weight.shape[1:]).swapaxes(2, 1)
    return torch.from_numpy(w.reshape(weight.shape).copy())


def layer_weights(reader: gguf.GGUFReader, layer: int, heads: tuple[int, int]) -> Iterator[Any]:
    """(name, float32 weight) of one layer's fused projections, dequantized by the gguf package."""
    tensors = {t.name: t for t in reader.tensors if t.name.startswith(f"blk.{layer}.")}

    def deq(part: str) -> np.ndarray[Any, Any]:
        t = tensors[f"blk.{layer}.{part}.weight"]
        return gguf.quants.dequantize(np.asarray(t.data), t.tensor_type)

    q, k = hf_rows(deq("attn_q"), heads[0]), hf_rows(deq("attn_k"), heads[1])
    yield "self_attn.qkv_proj", torch.cat([q, k, torch.from_numpy(deq("attn_v"))])
    yield "self_attn.o_proj", torch.from_numpy(deq("attn_output"))
    yield "mlp.gate_up_proj", torch.from_numpy(np.concatenate([deq("ffn_gate"), deq("ffn_up")]))
    yield "mlp.down_proj", torch.from_numpy(deq("ffn_down"))


def test_every_q4_1_weight_runs_with_the_files_numbers(
    native: LoadedModel, on_aten: LoadedModel, reader: gguf.GGUFReader
) -> None:
    """Dequantized both ways, bit for bit: the gguf package's float32 weights (d * q + m) and
    the engine's Int4Linear (its codes with the file's own float16 scales and minimums), in the
    native kernel's layout and in torch's.

    torch's kernel takes bfloat16 copies of scale and zero (m + 8d): its weights differ from
    the file's by at most 0.046 of the group's scale (a code step); bound here: 0.05.
    """
    config = native.config
    heads = (config.num_attention_heads, config.num_key_value_heads)
    worst = 0.0
    for i, layer in enumerate(native.model.model.layers):
        for name, expected in layer_weights(reader, i, heads):
            module = layer.get_submodule(name)
            assert isinstance(module, Int4Linear), name
            assert torch.equal(module.dequantize(), expected), (i, name)
            module = on_aten.model.model.layers[i].get_submodule(name)
            assert isinstance(module, Int4Linear), name
            assert module.packed is not None and module.scales_and_zeros is not None
            assert torch.equal(module.dequantize(), expected), (i, name)
            codes = quant.unpack_int4(module.packed, module.block_n).float()
            kernel_sz = module.scales_and_zeros.float().repeat_interleave(32, 0).transpose(0, 1)
            kernel_w = (codes - 8) * kernel_sz[..., 0] + kernel_sz[..., 1]
            step = kernel_sz[..., 0]
            out = module.out_features
            error = (kernel_w[:out] - expected).abs() / step[:out]
            worst = max(worst, float(error.max()))
    assert worst < 0.05, worst


def test_the_q8_0_embedding_and_tied_head_run_with_the_files_numbers(
    native: LoadedModel, reader: gguf.GGUFReader
) -> None:
    """One int8 table with float16 scales for both, equal to the gguf package's float32
    dequantization bit for bit (d * q is exact in float32), at a quarter of its bytes."""
    tensor = next(t for t in reader.tensors if t.name == "token_embd.weight")
    assert tensor.tensor_type == gguf.GGMLQuantizationType.Q8_0
    expected = torch.from_numpy(gguf.quants.dequantize(np.asarray(tensor.data), tensor.tensor_type))
    embedding, head = native.model.model.embed_tokens, native.model.lm_head
    assert isinstance(embedding, Q8Embedding) and isinstance(head, Q8Linear)
    assert head.codes is embedding.codes and head.scales is embedding.scales
    assert torch.equal(embedding.dequantize(), expected)
    assert torch.equal(head.dequantize(), expected)
    assert embedding.codes.nbytes + embedding.scales.nbytes == expected.nbytes * 34 // 128
    for rows in (1, 32):  # the kernel's one-row and multi-row loops on the real table
        x = torch.randn(rows, 576, generator=torch.Generator().manual_seed(rows))
        reference = x.double() @ expected.double().T
        bound = x.double().abs() @ expected.double().abs().T  # float32 rounding scales with it
        assert ((head(x).double() - reference).abs() / bound).max() <= 1e-5


def test_logits_match_transformers(
    native: LoadedModel,
    on_aten: LoadedModel,
    theirs: tuple[Any, Any],
    monkeypatch: pytest.MonkeyPatch,
    model_logits: Callable[[LoadedModel, list[int]], torch.Tensor],
) -> None:
    """Logits of a 40-token chat prompt, every position, against transformers' float32 model.

    - Dequantized weights (`--dequantize`), the native kernels (4-bit layers, Q8_0 head), and
      torch's kernel's layers on their dequantizing path (more than 64 rows): the same float32
      weights, so only the order of float32 sums differs; measured max |difference| 6e-5 on
      logits up to 35. Bound: 1e-3 (a wrong permutation, scale or norm gives differences of
      several units).
    - torch's CPU int4 kernel (prefills up to 64 tokens and every decode step): it rounds
      activations, outputs and its scales to bfloat16 (8 significant bits), layer after layer;
      measured max |difference| 0.77 (2% of the largest logit). Bound: 1.5, and the greedy
      token of every position is one of transformers' top 3.
    """
    _, model = theirs
    ids = native.tokenizer.encode(FRANCE)
    assert len(ids) <= quant.INT4_KERNEL_MAX_ROWS  # torch's prefill runs on its kernel
    with torch.inference_mode():
        reference = model(torch.tensor([ids])).logits[0].float()
    dequantized = load_model(EngineConfig(model=MODEL, dequantize=True), max_positions=256)
    assert (model_logits(dequantized, ids) - reference).abs().max() < 1e-3
    assert (model_logits(native, ids) - reference).abs().max() < 1e-3
    kernel = model_logits(on_aten, ids)
    monkeypatch.setattr(quant, "INT4_KERNEL_MAX_ROWS", 0)
    exact = model_logits(on_aten, ids)
    assert (exact - reference).abs().max() < 1e-3
    assert (kernel - reference).abs().max() < 1.5
    top3 = reference.topk(3, dim=-1).indices
    assert (top3 == kernel.argmax(-1, keepdim=True)).any(-1).all()
    assert kernel[-1].argmax() == reference[-1].argmax()  # the answer's first token
