"""The tokenizer wrapper: the built-in byte-level tokenizer, HF directories, offsets, specials."""

import json
from pathlib import Path

import pytest

from streamgate.engine.model.tokenizer import TINY_CHAT_TEMPLATE, Tokenizer, _tiny_json

BYTE = 3  # byte b is id b + 3 in the tiny tokenizer

TEXTS = [
    "",
    "Hello, world!",
    "  leading and trailing spaces  ",
    "line one\nline two\r\n\ttabbed\n\n",
    "control \x00\x01\x1b\x7f chars",
    "héllo wörld ñ",
    "e\u0301 a\u0308\u0323 combining marks",
    "中文字符和日本語のテキスト, 한국어",
    "emoji 😀 👩‍👩‍👧‍👦 🇫🇷 👍🏽",
    "שלום עולם مرحبا",
    "def f(x):\n    return {'a': [1, 2.5e-3]}  # comment",
    "\U0010ffff\ue000 edge code points",
]


@pytest.fixture(scope="module")
def tiny() -> Tokenizer:
    return Tokenizer.tiny()


@pytest.fixture(scope="module")
def tiny_bpe() -> Tokenizer:
    return Tokenizer.tiny(vocab_size=8192)


def test_tiny_layout(tiny: Tokenizer) -> None:
    assert tiny.vocab_size == 259
    assert (tiny.bos_token_id, tiny.eos_token_id, tiny.eos_token_ids) == (1, 2, frozenset({2}))
    assert [tiny.token_text(i) for i in range(3)] == ["<unk>", "<s>", "</s>"]
    assert all(tiny.is_special(i) for i in range(3))
    assert not any(tiny.is_special(i) for i in range(3, 259))
    assert tiny.encode("A") == [1, ord("A") + BYTE]
    assert tiny.encode("\x00\xff", add_special_tokens=False) == [BYTE, 0xC3 + BYTE, 0xBF + BYTE]


@pytest.mark.parametrize("text", TEXTS)
def test_tiny_round_trips_every_string(tiny: Tokenizer, tiny_bpe: Tokenizer, text: str) -> None:
    for tok in (tiny, tiny_bpe):
        ids = tok.encode(text)
        assert ids[0] == 1
        assert tok.decode(ids, skip_special_tokens=True) == text
        assert tok.decode(tok.encode(text, add_special_tokens=False)) == text


def test_tiny_has_one_token_per_byte(tiny: Tokenizer) -> None:
    for text in TEXTS:
        ids = tiny.encode(text, add_special_tokens=False)
        assert ids == [b + BYTE for b in text.encode("utf-8")]
    assert len(tiny.encode("😀", add_special_tokens=False)) == 4


def test_bos_added_only_with_special_tokens(tiny: Tokenizer) -> None:
    assert tiny.encode("hi") == [1, ord("h") + BYTE, ord("i") + BYTE]
    assert tiny.encode("hi", add_special_tokens=False) == [ord("h") + BYTE, ord("i") + BYTE]
    assert tiny.encode("") == [1]


def test_special_token_strings_in_text_become_special_ids(tiny: Tokenizer) -> None:
    ids = tiny.encode("a</s>b", add_special_tokens=False)
    assert ids == [ord("a") + BYTE, 2, ord("b") + BYTE]
    assert tiny.decode(ids) == "a</s>b"
    assert tiny.decode(ids, skip_special_tokens=True) == "ab"


def test_decode_special_tokens(tiny: Tokenizer) -> None:
    ids = [1, *tiny.encode("ok", add_special_tokens=False), 2]
    assert tiny.decode(ids) == "<s>ok</s>"
    assert tiny.decode(ids, skip_special_tokens=True) == "ok"


def test_decode_invalid_utf8_gives_replacement_chars(tiny: Tokenizer) -> None:
    assert tiny.decode([0xE4 + BYTE, 0xB8 + BYTE]) == "\ufffd"  # truncated character
    assert tiny.decode([0x80 + BYTE, ord("a") + BYTE]) == "\ufffda"  # stray continuation byte
    assert tiny.decode([0xE4 + BYTE, 0xB8 + BYTE, 0xAD + BYTE]) == "中"


def test_token_text(tiny: Tokenizer) -> None:
    assert tiny.token_text(ord("a") + BYTE) == "a"
    assert tiny.token_text(ord(" ") + BYTE) == " "
    assert tiny.token_text(ord("\n") + BYTE) == "\n"
    assert tiny.token_text(0xE4 + BYTE) == "\ufffd"  # a lone lead byte, as TGI shows it
    assert tiny.token_text(2) == "</s>"


def test_offsets_are_character_offsets(tiny: Tokenizer) -> None:
    text = "a é😀\n"
    tokens = tiny.encode_with_offsets(text)
    assert tokens[0] == (1, "", 0, 0)  # BOS from the post-processor
    assert [t[0] for t in tokens] == tiny.encode(text)
    assert tokens[1:] == [
        (ord("a") + BYTE, "a", 0, 1),
        (ord(" ") + BYTE, " ", 1, 2),
        (0xC3 + BYTE, "é", 2, 3),
        (0xA9 + BYTE, "é", 2, 3),
        *[(b + BYTE, "😀", 3, 4) for b in "😀".encode()],
        (ord("\n") + BYTE, "\n", 4, 5),
    ]
    assert tiny.encode_with_offsets("x", add_special_tokens=False) == [(ord("x") + BYTE, "x", 0, 1)]


def test_offsets_of_merged_tokens(tiny_bpe: Tokenizer) -> None:
    text = "import os\nprint(os.path)  # 中文"
    tokens = tiny_bpe.encode_with_offsets(text)
    assert [t[0] for t in tokens] == tiny_bpe.encode(text)
    assert len(tokens) < len(text)  # merges did something
    for _, piece, start, stop in tokens[1:]:
        assert piece == text[start:stop]
    assert tokens[-1][3] == len(text)


def test_bpe_vocab(tiny_bpe: Tokenizer) -> None:
    assert tiny_bpe.vocab_size == 8192
    assert (tiny_bpe.bos_token_id, tiny_bpe.eos_token_id) == (1, 2)
    # Byte ids are the same at every size, and every id decodes to something.
    assert [tiny_bpe.token_text(b + BYTE) for b in range(0x20, 0x7F)] == [
        chr(b) for b in range(0x20, 0x7F)
    ]
    assert all(tiny_bpe.token_text(i) for i in range(8192))
    assert tiny_bpe.decode([8192]) == ""  # outside the vocabulary
    code = "def main() -> None:\n    return self.value\n"
    assert len(tiny_bpe.encode(code, add_special_tokens=False)) < len(code) / 2


def test_tiny_bpe_is_deterministic() -> None:
    assert _tiny_json.__wrapped__(300) == _tiny_json(300)
    assert Tokenizer.tiny(300).vocab_size == 300


def test_tiny_rejects_a_vocab_smaller_than_the_bytes() -> None:
    with pytest.raises(ValueError):
        Tokenizer.tiny(vocab_size=100)


@pytest.mark.parametrize("vocab_size", [259, 8192])
def test_save_and_from_dir_are_identical(tmp_path: Path, vocab_size: int) -> None:
    original = Tokenizer.tiny(vocab_size)
    assert original.chat_template is None  # the built-in tiny model has none
    original.save(tmp_path, chat_template=TINY_CHAT_TEMPLATE)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["bos_token"] == "<s>" and config["eos_token"] == "</s>"
    assert config["chat_template"] == TINY_CHAT_TEMPLATE
    loaded = Tokenizer.from_dir(tmp_path)
    assert loaded.vocab_size == original.vocab_size
    assert (loaded.bos_token_id, loaded.eos_token_id) == (1, 2)
    assert (loaded.bos_token, loaded.eos_token) == ("<s>", "</s>")
    assert loaded.eos_token_ids == original.eos_token_ids
    assert loaded.chat_template == TINY_CHAT_TEMPLATE
    for text in [*TEXTS, "a</s>b"]:
        assert loaded.encode(text) == original.encode(text)
        assert loaded.encode_with_offsets(text) == original.encode_with_offsets(text)
    ids = list(range(vocab_size))
    assert loaded.decode(ids) == original.decode(ids)
    assert [loaded.is_special(i) for i in ids] == [original.is_special(i) for i in ids]


def test_from_dir_reads_eos_ids_from_model_configs(tmp_path: Path) -> None:
    Tokenizer.tiny().save(tmp_path)
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 7]}))
    (tmp_path / "config.json").write_text(json.dumps({"eos_token_id": 9, "bos_token_id": 1}))
    tok = Tokenizer.from_dir(tmp_path)
    assert tok.eos_token_id == 2  # the tokenizer's own EOS stays the primary one
    assert tok.eos_token_ids == frozenset({2, 7, 9})
    assert tok.is_special(7)


def test_from_dir_special_tokens_as_dicts_and_from_the_map(tmp_path: Path) -> None:
    Tokenizer.tiny().save(tmp_path)
    config = {"eos_token": {"content": "<unk>", "special": True}}  # odd but legal: EOS is id 0
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    (tmp_path / "special_tokens_map.json").write_text(json.dumps({"bos_token": "</s>"}))
    tok = Tokenizer.from_dir(tmp_path)
    assert (tok.bos_token_id, tok.eos_token_id, tok.chat_template) == (2, 0, None)


def test_from_dir_falls_back_to_config_ids(tmp_path: Path) -> None:
    Tokenizer.tiny().save(tmp_path)
    (tmp_path / "tokenizer_config.json").unlink()
    (tmp_path / "config.json").write_text(json.dumps({"eos_token_id": [2, 0], "bos_token_id": 1}))
    tok = Tokenizer.from_dir(tmp_path)
    assert (tok.bos_token_id, tok.eos_token_id, tok.eos_token_ids) == (1, 2, frozenset({0, 2}))


def test_from_dir_without_any_eos_fails(tmp_path: Path) -> None:
    Tokenizer.tiny().save(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text("{}")
    with pytest.raises(ValueError):
        Tokenizer.from_dir(tmp_path)


def test_from_dir_needs_tokenizer_json(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Tokenizer.from_dir(tmp_path)


def _without_post_processor(path: Path, config: dict[str, object]) -> Tokenizer:
    Tokenizer.tiny().save(path)
    raw = json.loads((path / "tokenizer.json").read_text())
    raw["post_processor"] = None
    (path / "tokenizer.json").write_text(json.dumps(raw))
    full = {"bos_token": "<s>", "eos_token": "</s>", **config}
    (path / "tokenizer_config.json").write_text(json.dumps(full))
    return Tokenizer.from_dir(path)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"tokenizer_class": "LlamaTokenizerFast"}, [1, 3 + ord("x")]),
        ({"tokenizer_class": "LlamaTokenizerFast", "add_bos_token": False}, [3 + ord("x")]),
        ({"tokenizer_class": "PreTrainedTokenizerFast"}, [3 + ord("x")]),
        ({"add_bos_token": True, "add_eos_token": True}, [1, 3 + ord("x"), 2]),
    ],
)
def test_add_bos_token_without_post_processor(
    tmp_path: Path, config: dict[str, object], expected: list[int]
) -> None:
    tok = _without_post_processor(tmp_path, config)
    assert tok.encode("x") == expected
    assert tok.encode("x", add_special_tokens=False) == [3 + ord("x")]


def test_chat_template_renders_chatml(tiny: Tokenizer) -> None:
    jinja2 = pytest.importorskip("jinja2")
    template = jinja2.Environment().from_string(TINY_CHAT_TEMPLATE)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    text = template.render(messages=messages, add_generation_prompt=True, bos_token="<s>")
    assert text == (
        "<s><|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    ids = tiny.encode(text, add_special_tokens=False)  # the template already has BOS
    assert ids[0] == 1 and ids.count(1) == 1


def test_saved_dir_loads_in_transformers(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    Tokenizer.tiny(8192).save(tmp_path, chat_template=TINY_CHAT_TEMPLATE)
    ours = Tokenizer.from_dir(tmp_path)
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert (theirs.bos_token_id, theirs.eos_token_id) == (1, 2)
    for text in TEXTS:
        assert theirs(text)["input_ids"] == ours.encode(text)
    messages = [{"role": "user", "content": "Hi"}]
    rendered = theirs.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == "<s><|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
