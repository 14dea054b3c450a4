"""Tokenizers built from GGUF metadata: byte-level BPE with its pre-tokenizer, SentencePiece BPE
from scores, special tokens, BOS, the end-of-generation ids and the chat template.

The reference is transformers' GGUF tokenizer on the same file (its converter reads the same
metadata); SmolLM2's own file is compared in test_gguf_reference.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import pytest

from streamgate.engine.model.gguf_file import GGUFError, GGUFModel
from streamgate.engine.model.gguf_vocab import tokenizer_from_gguf
from streamgate.engine.model.tokenizer import TINY_CHAT_TEMPLATE, Tokenizer

WriteGGUF = Callable[..., Any]  # the `gguf_file` fixture (conftest.py)
TEXTS = [
    "Hello, world! It's 2024-12-07 and we've 1,234.5 reasons.",
    "def f(x):\n    return x ** 2  # square\n\n\n",
    "   leading spaces, trailing\t\ttabs   ",
    "Café déjà vu, naïve façade, Straße",
    "中文分词，日本語のテキスト、한국어",
    "emoji 🎉👍🏽 family 👨‍👩‍👧",
    "</s> inside <s> text",
    "",
]


def test_byte_level_bpe_equals_the_tokenizer_it_was_written_from(
    gguf_file: WriteGGUF,
) -> None:
    ours = tokenizer_from_gguf(GGUFModel(gguf_file().path))
    tiny = Tokenizer.tiny(512)
    for text in TEXTS:
        assert ours.encode(text) == tiny.encode(text), text  # BOS first: add_bos_token
        assert ours.decode(ours.encode(text, add_special_tokens=False)) == text
    assert ours.encode("x")[0] == 1
    assert (ours.bos_token, ours.eos_token, ours.eos_token_ids) == ("<s>", "</s>", frozenset({2}))
    assert ours.chat_template == TINY_CHAT_TEMPLATE
    assert [ours.is_special(i) for i in range(5)] == [True, True, True, False, False]


def test_end_of_turn_tokens_end_generation_too(gguf_file: WriteGGUF, tiny_vocab: Any) -> None:
    """EOS first, then EOT/EOM ids and the control tokens llama.cpp ends a turn at by text."""
    control = {5: "<|im_end|>", 6: "<|endoftext|>", 7: "<|eot_id|>"}
    vocabulary = with_control_tokens(tiny_vocab, control)
    written = gguf_file(vocabulary=vocabulary, metadata={"tokenizer.ggml.eot_token_id": 9})
    ours = tokenizer_from_gguf(GGUFModel(written.path))
    assert ours.eos_token_id == 2
    assert ours.eos_token_ids == {2, 9, 5, 6, 7}
    assert ours.encode("a<|im_end|>b", add_special_tokens=False)[1] == 5  # found whole
    assert ours.decode([5, 70], skip_special_tokens=True) == ours.decode([70])


def test_add_bos_token_false_adds_nothing(gguf_file: WriteGGUF, tiny_vocab: Any) -> None:
    vocabulary = dataclasses.replace(tiny_vocab, add_bos=False)
    ours = tokenizer_from_gguf(GGUFModel(gguf_file(vocabulary=vocabulary).path))
    assert ours.encode("abc") == ours.encode("abc", add_special_tokens=False)
    assert ours.bos_token == "<s>"  # still named: templates use it


def test_sentencepiece_bpe_equals_transformers(
    gguf_file: WriteGGUF, sentencepiece_vocab: Any, tmp_path: Path
) -> None:
    transformers = pytest.importorskip("transformers")
    written = gguf_file("spm.gguf", vocabulary=sentencepiece_vocab)
    ours = tokenizer_from_gguf(GGUFModel(written.path))
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path), gguf_file="spm.gguf")
    for text in [*TEXTS, " x", "x  y"]:
        ids = ours.encode(text, add_special_tokens=False)
        assert ids == theirs(text, add_special_tokens=False)["input_ids"], text
        assert ours.decode(ids) == theirs.decode(ids), text
    assert ours.encode("hi")[0] == 1  # SentencePiece models add BOS unless told otherwise


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"pre": "tekken"}, r"tokenizer\.ggml\.pre 'tekken' is not supported \(codeshell, "),
        ({"pre": None}, r"tokenizer\.ggml\.pre None is not supported"),
        ({"model": "bert"}, r"tokenizer\.ggml\.model 'bert' is not supported \(gpt2, llama\)"),
    ],
)
def test_unsupported_tokenizers_are_refused(
    gguf_file: WriteGGUF, tiny_vocab: Any, change: dict[str, Any], message: str
) -> None:
    written = gguf_file(vocabulary=dataclasses.replace(tiny_vocab, **change))
    with pytest.raises(GGUFError, match=message):
        tokenizer_from_gguf(GGUFModel(written.path))


def with_control_tokens(vocabulary: Any, control: dict[int, str]) -> Any:
    """`vocabulary` with some tokens replaced by control tokens of the given texts."""
    for i, text in control.items():
        vocabulary.tokens[i] = text
        vocabulary.types[i] = gguf.TokenType.CONTROL
    return vocabulary
