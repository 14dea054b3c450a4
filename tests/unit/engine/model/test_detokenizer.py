"""Incremental detokenization: complete characters only, exact text, bounded work per step."""

import random
from collections.abc import Sequence

import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers

from streamgate.engine.model.detokenizer import IncrementalDetokenizer
from streamgate.engine.model.tokenizer import Tokenizer

BYTE = 3  # byte b is id b + 3 in the tiny tokenizer
EOS = 2


@pytest.fixture(scope="module")
def tiny() -> Tokenizer:
    return Tokenizer.tiny()


@pytest.fixture(scope="module")
def tiny_bpe() -> Tokenizer:
    return Tokenizer.tiny(vocab_size=8192)


def byte_ids(data: bytes) -> list[int]:
    return [b + BYTE for b in data]


def run(detok: IncrementalDetokenizer, ids: Sequence[int]) -> tuple[list[str], str]:
    """The text of every step, and the flushed rest."""
    return [detok.step(i) for i in ids], detok.flush()


def test_ascii_streams_one_char_per_token(tiny: Tokenizer) -> None:
    detok = IncrementalDetokenizer(tiny, tiny.encode("Say:"))
    steps, rest = run(detok, tiny.encode(" hi!\n", add_special_tokens=False))
    assert steps == [" ", "h", "i", "!", "\n"]
    assert rest == ""
    assert detok.text == " hi!\n"  # the prompt is context only


@pytest.mark.parametrize("char", ["é", "中", "😀"])
def test_multibyte_char_is_held_until_complete(tiny: Tokenizer, char: str) -> None:
    detok = IncrementalDetokenizer(tiny, tiny.encode("x"))
    ids = byte_ids(f"{char}a".encode())
    steps, rest = run(detok, ids)
    n = len(char.encode())
    assert steps == [""] * (n - 1) + [char, "a"]
    assert rest == ""


def test_zwj_emoji_streams_per_code_point(tiny: Tokenizer) -> None:
    text = "👩‍👧"  # woman, zero-width joiner, girl: three code points
    detok = IncrementalDetokenizer(tiny, [1])
    steps, rest = run(detok, byte_ids(text.encode()))
    assert [s for s in steps if s] == ["👩", "\u200d", "👧"]
    assert "".join(steps) + rest == text


def test_truncated_char_is_flushed_as_replacement(tiny: Tokenizer) -> None:
    detok = IncrementalDetokenizer(tiny, [1])
    steps, rest = run(detok, byte_ids("ok中".encode())[:-1])
    assert steps == ["o", "k", "", ""]
    assert rest == "\ufffd"
    assert detok.text == "ok\ufffd"


def test_stray_continuation_byte(tiny: Tokenizer) -> None:
    detok = IncrementalDetokenizer(tiny, [1])
    assert detok.step(0x80 + BYTE) == ""  # could not tell yet that it starts nothing
    assert detok.step(ord("a") + BYTE) == "\ufffda"
    assert detok.flush() == ""


def test_special_tokens_rendered_or_skipped(tiny: Tokenizer) -> None:
    ids = [*byte_ids(b"ok"), EOS]
    shown = IncrementalDetokenizer(tiny, [1])
    assert run(shown, ids) == (["o", "k", "</s>"], "")
    skipped = IncrementalDetokenizer(tiny, [1], skip_special_tokens=True)
    assert run(skipped, ids) == (["o", "k", ""], "")
    assert skipped.text == tiny.decode(ids, skip_special_tokens=True)


def test_special_token_inside_a_partial_char(tiny: Tokenizer) -> None:
    ids = [0xE4 + BYTE, EOS, 0xB8 + BYTE, 0xAD + BYTE]
    detok = IncrementalDetokenizer(tiny, [1])
    steps, rest = run(detok, ids)
    assert "".join(steps) + rest == tiny.decode(ids) == "\ufffd</s>\ufffd\ufffd"


def test_prompt_cut_inside_a_char_is_not_used_as_context(tiny: Tokenizer) -> None:
    prompt = [1, *byte_ids(b"a\xe4")]  # ends with the lead byte of 中
    gen = byte_ids(b"\xb8\xadz")
    detok = IncrementalDetokenizer(tiny, prompt)
    steps, rest = run(detok, gen)
    assert "".join(steps) + rest == tiny.decode(gen) == "\ufffd\ufffdz"


def test_invalid_run_is_not_held_back_forever(tiny: Tokenizer) -> None:
    detok = IncrementalDetokenizer(tiny, [1])
    steps, _ = run(detok, byte_ids(b"\x80" * 50))
    assert len("".join(steps)) >= 40
    assert detok.text + detok.flush() == "\ufffd" * 50


def _random_ids(rng: random.Random, vocab: int) -> list[int]:
    """Token ids as a broken model could sample them ("hypothesis-like", with a fixed seed)."""
    n = rng.randrange(0, 40)
    kind = rng.random()
    if kind < 0.4:  # mostly bytes >= 0x80: truncated, overlong, stray and valid sequences
        return [
            (rng.randrange(0x80, 0x100) if rng.random() < 0.7 else rng.randrange(0x100)) + BYTE
            for _ in range(n)
        ]
    if kind < 0.7:  # valid text cut at random points, with special tokens mixed in
        chars = [
            rng.choice([rng.randrange(0x20, 0x7F), rng.randrange(0xA0, 0x30000)]) for _ in range(n)
        ]
        data = "".join(map(chr, chars)).encode("utf-8", errors="replace")
        ids = byte_ids(data[rng.randrange(4) :][: rng.randrange(len(data) + 1)])
        for _ in range(rng.randrange(3)):
            ids.insert(rng.randrange(len(ids) + 1), rng.randrange(3))
        return ids
    return [rng.randrange(vocab) for _ in range(n)]


@pytest.mark.parametrize("skip", [False, True])
def test_random_sequences_concatenate_to_decode(
    tiny: Tokenizer, tiny_bpe: Tokenizer, skip: bool
) -> None:
    rng = random.Random(1234)
    for tok in (tiny, tiny_bpe):
        for _ in range(400):
            prompt = _random_ids(rng, tok.vocab_size)
            gen = _random_ids(rng, tok.vocab_size)
            detok = IncrementalDetokenizer(tok, prompt, skip_special_tokens=skip)
            shown = ""
            for k, token_id in enumerate(gen, 1):
                shown += detok.step(token_id)
                # What is shown never has to change: it is a prefix of this decode, and of all
                # the later ones.
                assert tok.decode(gen[:k], skip_special_tokens=skip).startswith(shown)
            expected = tok.decode(gen, skip_special_tokens=skip)
            assert shown + detok.flush() == expected, (prompt, gen)
            assert detok.text == expected


class _CountingTokenizer(Tokenizer):
    """Records the longest window decoded, to check that a step's work stays bounded."""

    longest = 0

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        self.longest = max(self.longest, len(ids))
        return super().decode(ids, skip_special_tokens)


@pytest.mark.parametrize("skip", [False, True])
def test_window_stays_bounded(skip: bool) -> None:
    tok = _CountingTokenizer.tiny()
    assert isinstance(tok, _CountingTokenizer)
    rng = random.Random(7)
    gen = byte_ids("長いテキスト 😀 text ".encode() * 50)
    gen += byte_ids(b"\x80\xbf\xe4" * 100)  # invalid UTF-8 for a long while
    gen += [rng.randrange(tok.vocab_size) for _ in range(2000)]
    gen += [0, 1, 2] * 50  # special tokens only (invisible when skipped)
    detok = IncrementalDetokenizer(tok, tok.encode("a prompt of some length"), skip)
    tok.longest = 0
    steps, rest = run(detok, gen)
    assert tok.longest <= 16
    assert "".join(steps) + rest == Tokenizer.decode(tok, gen, skip_special_tokens=skip)


def test_prompt_is_context_for_the_first_token() -> None:
    # A SentencePiece-style decoder drops the leading space of the first token it decodes; with
    # the prompt as context the first generated word keeps its space, as in TGI.
    vocab = {"<unk>": 0, "</s>": 1, "▁Hello": 2, "▁world": 3, "!": 4}
    hf = HFTokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    hf.pre_tokenizer = pre_tokenizers.Metaspace()
    hf.decoder = decoders.Metaspace()
    tok = Tokenizer(hf, eos_token_ids=[1])
    assert tok.decode([3]) == "world"
    detok = IncrementalDetokenizer(tok, [2])
    assert run(detok, [3, 4]) == ([" world", "!"], "")
    assert detok.text == " world!"
