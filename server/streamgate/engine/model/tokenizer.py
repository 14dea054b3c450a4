"""Typed wrapper over HF `tokenizers`, and the built-in byte-level `tiny` tokenizer.

A model directory is read the way TGI reads it: `tokenizer.json` does the work, the JSON files
next to it only name the special tokens, the end-of-sequence ids and the chat template.

The tiny tokenizer is built in code, never downloaded: `<unk>` `<s>` `</s>` are ids 0-2 and byte
`b` is id `b + 3`, so any string round-trips. With a larger `vocab_size` it also gets byte-level
BPE merges, trained on a fixed slice of the Python standard library's source (available offline,
deterministic for a given Python version).
"""

from __future__ import annotations

import functools
import json
import sysconfig
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, decoders, models, pre_tokenizers, processors, trainers
from tokenizers import Tokenizer as HFTokenizer

TINY_UNK, TINY_BOS, TINY_EOS = "<unk>", "<s>", "</s>"
TINY_SPECIALS = (TINY_UNK, TINY_BOS, TINY_EOS)
TINY_BYTE_VOCAB = len(TINY_SPECIALS) + 256  # 259: the byte tokenizer without merges

# ChatML, in the HF format (rendered with `messages`, `add_generation_prompt`, `bos_token`). It
# already starts with BOS, so a rendered chat prompt is encoded with add_special_tokens=False.
TINY_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Training text for the merges of a larger tiny vocabulary: enough for ~20k merges in ~1 s.
_CORPUS_CHARS = 2_000_000
_CORPUS_CHARS_PER_TOKEN = 100
# Named special tokens carried from tokenizer_config.json to save().
_NAMED_TOKENS = ("bos_token", "eos_token", "unk_token", "pad_token")
# Tokenizer classes for which TGI adds BOS itself when tokenizer.json has no post-processor.
_LLAMA_CLASSES = ("LlamaTokenizer", "LlamaTokenizerFast")


class Tokenizer:
    """Loaded from tokenizer.json (+ tokenizer_config.json: special tokens, add_bos, chat_template).

    `eos_token_id` is the tokenizer's own EOS; `eos_token_ids` also holds the ids that
    generation_config.json / config.json list (a model may stop on several).
    """

    def __init__(
        self,
        hf: HFTokenizer,
        *,
        eos_token_ids: Sequence[int],
        bos_token_id: int | None = None,
        chat_template: str | None = None,
        named_tokens: Mapping[str, str] | None = None,
    ) -> None:
        """Wrap `hf`; `eos_token_ids[0]` is the primary EOS (the one saved as `eos_token`)."""
        if not eos_token_ids:
            raise ValueError("a tokenizer needs at least one end-of-sequence token id")
        # A tokenizer.json may carry truncation/padding settings; the server validates lengths
        # itself and must never see a silently shortened prompt.
        hf.no_truncation()
        hf.no_padding()
        self._hf = hf
        self.vocab_size: int = hf.get_vocab_size(with_added_tokens=True)
        self.bos_token_id: int | None = bos_token_id
        self.eos_token_id: int = eos_token_ids[0]
        self.eos_token_ids: frozenset[int] = frozenset(eos_token_ids)
        self.chat_template: str | None = chat_template
        self._named_tokens = dict(named_tokens or {})
        specials = {i for i, tok in hf.get_added_tokens_decoder().items() if tok.special}
        self._special_ids = frozenset(
            specials | self.eos_token_ids | ({bos_token_id} if bos_token_id is not None else set())
        )

    @classmethod
    def from_dir(cls, path: str | Path) -> Tokenizer:
        """Read an HF model directory: tokenizer.json, and when present tokenizer_config.json,
        special_tokens_map.json, generation_config.json, config.json (for BOS/EOS ids)."""
        root = Path(path)
        file = root / "tokenizer.json"
        if not file.is_file():
            raise FileNotFoundError(f"{root} has no tokenizer.json")
        hf = HFTokenizer.from_file(str(file))
        config = _read_json(root / "tokenizer_config.json")
        special_map = _read_json(root / "special_tokens_map.json")
        generation = _read_json(root / "generation_config.json")
        model = _read_json(root / "config.json")

        named = {}
        for key in _NAMED_TOKENS:
            token = _token_content(config.get(key)) or _token_content(special_map.get(key))
            if token is not None:
                named[key] = token

        def token_id(key: str) -> int | None:
            token = named.get(key)
            return None if token is None else hf.token_to_id(token)

        # The tokenizer's own EOS first (TGI's `eos_token_id`), then what the model configs add.
        eos_ids = [i for i in [token_id("eos_token")] if i is not None]
        for source in (generation, model):
            for i in _ids(source.get("eos_token_id")):
                if i not in eos_ids:
                    eos_ids.append(i)
        bos_id = token_id("bos_token")
        if bos_id is None:
            bos_id = next(iter(_ids(generation.get("bos_token_id"))), None)
        if bos_id is None:
            bos_id = next(iter(_ids(model.get("bos_token_id"))), None)

        if hf.post_processor is None:
            _add_template_processor(hf, config, bos_id, eos_ids[0] if eos_ids else None)
        return cls(
            hf,
            eos_token_ids=eos_ids,
            bos_token_id=bos_id,
            chat_template=_chat_template(root, config),
            named_tokens=named,
        )

    @classmethod
    def tiny(cls, vocab_size: int = TINY_BYTE_VOCAB) -> Tokenizer:
        """The built-in byte-level tokenizer; above 259 ids it has trained BPE merges. It has
        no chat template of its own (`TINY_CHAT_TEMPLATE` is what a written tiny model gets)."""
        hf = HFTokenizer.from_str(_tiny_json(vocab_size))
        return cls(
            hf,
            eos_token_ids=[TINY_SPECIALS.index(TINY_EOS)],
            bos_token_id=TINY_SPECIALS.index(TINY_BOS),
            named_tokens={"bos_token": TINY_BOS, "eos_token": TINY_EOS, "unk_token": TINY_UNK},
        )

    @property
    def bos_token(self) -> str | None:
        """The text of the BOS token, if the tokenizer has one."""
        return None if self.bos_token_id is None else self._hf.id_to_token(self.bos_token_id)

    @property
    def eos_token(self) -> str | None:
        """The text of the primary EOS token."""
        token: str | None = self._hf.id_to_token(self.eos_token_id)
        return token

    def save(self, path: str | Path, chat_template: str | None = None) -> None:
        """Write tokenizer.json and tokenizer_config.json, as `from_dir` and transformers read;
        the chat template saved is `chat_template`, else the tokenizer's own."""
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        self._hf.save(str(root / "tokenizer.json"), pretty=True)
        named = dict(self._named_tokens)
        # The ids are authoritative: they may have come from config.json rather than a name.
        for key, token in (("bos_token", self.bos_token), ("eos_token", self.eos_token)):
            if token is not None:
                named[key] = token
        config: dict[str, Any] = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            **named,
            # Informational: tokenizer.json's post-processor is what adds BOS.
            "add_bos_token": self._adds_bos(),
            "add_eos_token": False,
            "clean_up_tokenization_spaces": False,
            "model_max_length": 1_000_000_000,
        }
        template = chat_template or self.chat_template
        if template is not None:
            config["chat_template"] = template
        (root / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of `text`; with add_special_tokens, BOS (etc.) as the post-processor adds them.

        Special-token strings in the text (e.g. a literal "</s>") become their special ids, like
        HF tokenizers and TGI.
        """
        ids: list[int] = self._hf.encode(text, add_special_tokens=add_special_tokens).ids
        return ids

    def encode_with_offsets(
        self, text: str, add_special_tokens: bool = True
    ) -> list[tuple[int, str, int, int]]:
        """(id, text[start:stop], start, stop) per token, offsets in characters (TGI's /tokenize).

        Tokens added by the post-processor (BOS) have start=stop=0 and empty text; the bytes of
        one multi-byte character each carry that whole character's span.
        """
        encoding = self._hf.encode(text, add_special_tokens=add_special_tokens)
        return [
            (token_id, text[start:stop], start, stop)
            for token_id, (start, stop) in zip(encoding.ids, encoding.offsets, strict=True)
        ]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """Text of `ids`; invalid UTF-8 becomes U+FFFD, ids outside the vocabulary are dropped."""
        text: str = self._hf.decode(list(ids), skip_special_tokens=skip_special_tokens)
        return text

    def token_text(self, token_id: int) -> str:
        """Text of one token alone (top tokens, prefill tokens): a partial UTF-8 byte is U+FFFD."""
        return self.decode([token_id])

    def is_special(self, token_id: int) -> bool:
        """Whether the id is a special token (added as special, or BOS / an EOS)."""
        return token_id in self._special_ids

    def _adds_bos(self) -> bool:
        if self.bos_token_id is None:
            return False
        ids: list[int] = self._hf.encode("", add_special_tokens=True).ids
        return ids[:1] == [self.bos_token_id]


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map, the alphabet of the ByteLevel pre-tokenizer."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = {b: chr(b) for b in printable}
    shifted = (b for b in range(256) if b not in chars)
    for n, b in enumerate(shifted):
        chars[b] = chr(256 + n)
    return dict(sorted(chars.items()))


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    # GPT-2's regex keeps merges inside words; every character falls in one of its classes, so
    # splitting loses nothing and the byte alphabet still round-trips any string.
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


@functools.lru_cache(maxsize=4)
def _tiny_json(vocab_size: int) -> str:
    """The serialized tiny tokenizer (cached: training the merges takes about a second)."""
    if vocab_size < TINY_BYTE_VOCAB:
        raise ValueError(f"the tiny tokenizer needs vocab_size >= {TINY_BYTE_VOCAB}")
    vocab = {token: i for i, token in enumerate(TINY_SPECIALS)}
    for b, char in bytes_to_unicode().items():
        vocab[char] = len(TINY_SPECIALS) + b
    merges: list[tuple[str, str]] = []
    if vocab_size > TINY_BYTE_VOCAB:
        # Rebuild the vocabulary from the merges (the trainer numbers its alphabet in its own
        # order) so byte b stays id b + 3 whatever the size.
        for left, right in _train_merges(vocab_size - TINY_BYTE_VOCAB):
            merged = left + right
            if left in vocab and right in vocab and merged not in vocab:
                vocab[merged] = len(vocab)
                merges.append((left, right))
            if len(vocab) == vocab_size:
                break
        if len(vocab) < vocab_size:
            raise ValueError(f"the built-in corpus gives only {len(vocab)} tokens < {vocab_size}")
    hf = HFTokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=TINY_UNK))
    hf.pre_tokenizer = _pre_tokenizer()
    hf.decoder = decoders.ByteLevel()
    bos_id = vocab[TINY_BOS]
    hf.post_processor = processors.TemplateProcessing(
        single=f"{TINY_BOS} $A",
        pair=f"{TINY_BOS} $A {TINY_BOS} $B",
        special_tokens=[(TINY_BOS, bos_id)],
    )
    hf.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in TINY_SPECIALS])
    text: str = hf.to_str()
    return text


def _train_merges(num_merges: int) -> list[tuple[str, str]]:
    """Byte-level BPE merges, in rank order, learned from the standard library's source."""
    hf = HFTokenizer(models.BPE(unk_token=TINY_UNK))
    hf.pre_tokenizer = _pre_tokenizer()
    trainer = trainers.BpeTrainer(
        # A little slack: a merge may be dropped when it recreates an existing token.
        vocab_size=TINY_BYTE_VOCAB + num_merges + 16,
        special_tokens=list(TINY_SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    budget = max(_CORPUS_CHARS, _CORPUS_CHARS_PER_TOKEN * (TINY_BYTE_VOCAB + num_merges))
    hf.train_from_iterator(_stdlib_corpus(budget), trainer)
    raw = json.loads(hf.to_str())["model"]["merges"]
    # tokenizers writes merges as [left, right] pairs (older versions: "left right").
    return [(m[0], m[1]) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in raw]


def _stdlib_corpus(max_chars: int) -> Iterator[str]:
    """Top-level stdlib modules in name order, up to about max_chars (same text on every run)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    total = 0
    for file in sorted(stdlib.glob("*.py"), key=lambda f: f.name):
        if total >= max_chars:
            return
        text = file.read_text(encoding="utf-8", errors="replace")[: max_chars - total]
        total += len(text)
        yield text


def _read_json(file: Path) -> dict[str, Any]:
    if not file.is_file():
        return {}
    data = json.loads(file.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def _token_content(value: Any) -> str | None:
    """A special token as tokenizer_config.json spells it: a string or an AddedToken dict."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        content: str = value["content"]
        return content
    return None


def _ids(value: Any) -> list[int]:
    """A token id field of a model config: an int, a list of ints, or null."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
    return []


def _chat_template(root: Path, config: Mapping[str, Any]) -> str | None:
    # Newer transformers save the template beside the config instead of inside it.
    jinja = root / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    template = config.get("chat_template")
    if template is None:
        template = _read_json(root / "chat_template.json").get("chat_template")
    if isinstance(template, list):  # named templates: [{"name": ..., "template": ...}]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    return template if isinstance(template, str) else None


def _add_template_processor(
    hf: HFTokenizer, config: Mapping[str, Any], bos_id: int | None, eos_id: int | None
) -> None:
    """Without a post-processor, add BOS/EOS from tokenizer_config's add_bos/add_eos_token.

    This is TGI's (and transformers' LlamaTokenizerFast) override; Llama classes add BOS unless
    told not to, other classes only when tokenizer_config says so.
    """
    default_bos = config.get("tokenizer_class") in _LLAMA_CLASSES
    add_bos = bool(config.get("add_bos_token", default_bos))
    add_eos = bool(config.get("add_eos_token", False))
    bos = hf.id_to_token(bos_id) if add_bos and bos_id is not None else None
    eos = hf.id_to_token(eos_id) if add_eos and eos_id is not None else None
    if bos is None and eos is None:
        return

    def sequence(name: str, type_id: int) -> str:
        parts = [f"{bos}:{type_id}"] if bos is not None else []
        parts.append(f"${name}:{type_id}")
        if eos is not None:
            parts.append(f"{eos}:{type_id}")
        return " ".join(parts)

    specials = {t: i for t, i in ((bos, bos_id), (eos, eos_id)) if t is not None and i is not None}
    hf.post_processor = processors.TemplateProcessing(
        single=sequence("A", 0),
        pair=f"{sequence('A', 0)} {sequence('B', 1)}",
        special_tokens=list(specials.items()),
    )
