"""The tokenizer of a GGUF file, built with `tokenizers` as llama.cpp reads the file.

`tokenizer.ggml.model` says which kind:
- `gpt2`: byte-level BPE from `tokens` and `merges`. The text is split before merging by the
  pre-tokenizer `tokenizer.ggml.pre` names (`PRE_TOKENIZERS`: the splits of llama.cpp's
  regular expressions for that name, e.g. `smollm` = every digit alone, then GPT-2's split);
- `llama`: SentencePiece BPE (Llama 2, Mistral): `tokens` ranked by `scores` (merges are made
  from the scores, as transformers does), spaces written `▁`, unknown bytes as `<0xNN>` tokens.
Other kinds, and pre-tokenizers not listed, are refused with the name and what is supported.

Token types: CONTROL tokens are special (found whole in a text, skipped by
`skip_special_tokens`); USER_DEFINED ones are found whole too but are ordinary text.
Generation ends at the EOS, EOT and EOM ids the file names, and at every token llama.cpp takes
for an end of turn by its text (`END_OF_TURN_TEXTS`): SmolLM2's EOS is `<|im_end|>`, and its
`<|endoftext|>` ends a generation too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import gguf
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers import Tokenizer as HFTokenizer

from streamgate.engine.model.gguf_file import GGUFModel
from streamgate.engine.model.tokenizer import Tokenizer

__all__ = ["END_OF_TURN_TEXTS", "PRE_TOKENIZERS", "tokenizer_from_gguf"]

# llama.cpp's list (llama-vocab.cpp): control tokens that end a turn, whatever the ids say.
END_OF_TURN_TEXTS = frozenset(
    {
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>",
        "<EOT>", "_<EOT>", "<|end_of_text|>", "<|return|>", "<end_of_utterance>",
    }
)  # fmt: skip

_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@dataclass(frozen=True)
class PreTokenizer:
    """How a `gpt2` GGUF's text is split before BPE, as llama.cpp does for its `pre` name."""

    build: Callable[[], pre_tokenizers.PreTokenizer]
    ignore_merges: bool = False  # a whole word in the vocabulary is one token (Llama 3)
    add_bos: bool = False  # when the file does not say (tokenizer.ggml.add_bos_token)


def _gpt2() -> pre_tokenizers.PreTokenizer:
    # ByteLevel's own split is GPT-2's expression.
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def _digits_then_gpt2() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), _gpt2()])


def _split_then_bytes(expression: str) -> Callable[[], pre_tokenizers.PreTokenizer]:
    def build() -> pre_tokenizers.PreTokenizer:
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(expression), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )

    return build


_LLAMA3 = PreTokenizer(_split_then_bytes(_LLAMA3_SPLIT), ignore_merges=True, add_bos=True)
_QWEN2 = PreTokenizer(_split_then_bytes(_QWEN2_SPLIT))
PRE_TOKENIZERS: dict[str, PreTokenizer] = {
    "gpt-2": PreTokenizer(_gpt2),
    "mpt": PreTokenizer(_gpt2),
    "olmo": PreTokenizer(_gpt2),
    "smollm": PreTokenizer(_digits_then_gpt2),
    "starcoder": PreTokenizer(_digits_then_gpt2),
    "refact": PreTokenizer(_digits_then_gpt2),
    "codeshell": PreTokenizer(_digits_then_gpt2),
    "llama-bpe": _LLAMA3,
    "llama3": _LLAMA3,
    "llama-v3": _LLAMA3,
    "dbrx": _LLAMA3,
    "smaug-bpe": _LLAMA3,
    "qwen2": _QWEN2,
    "stablelm2": _QWEN2,
}

_SPACE = "▁"  # SentencePiece's space


def tokenizer_from_gguf(model: GGUFModel) -> Tokenizer:
    """The tokenizer `model`'s metadata describes, with its special tokens, end-of-generation
    ids and chat template."""
    kind = model.value("tokenizer.ggml.model")
    tokens: list[str] = model.value("tokenizer.ggml.tokens")
    types: list[int] = model.value("tokenizer.ggml.token_type", [])
    if kind == "gpt2":
        hf, add_bos = _byte_level_bpe(model, tokens)
    elif kind == "llama":
        hf, add_bos = _sentencepiece_bpe(model, tokens), True
    else:
        raise model.error(f"tokenizer.ggml.model {kind!r} is not supported (gpt2, llama)")

    def token_id(key: str) -> int | None:
        value = model.value(f"tokenizer.ggml.{key}", None)
        return int(value) if value is not None and 0 <= value < len(tokens) else None

    def added(token_type: int, special: bool) -> list[AddedToken]:
        return [
            AddedToken(text, special=special, normalized=False)
            for text, its_type in zip(tokens, types, strict=False)
            if its_type == token_type
        ]

    hf.add_special_tokens(added(gguf.TokenType.CONTROL, special=True))
    hf.add_tokens(added(gguf.TokenType.USER_DEFINED, special=False))
    bos, eos = token_id("bos_token_id"), token_id("eos_token_id")
    add_bos = bool(model.value("tokenizer.ggml.add_bos_token", add_bos)) and bos is not None
    add_eos = bool(model.value("tokenizer.ggml.add_eos_token", False)) and eos is not None
    _add_post_processor(hf, tokens, bos if add_bos else None, eos if add_eos else None)

    ends = [i for i in (eos, token_id("eot_token_id"), token_id("eom_token_id")) if i is not None]
    ends += [i for i, text in enumerate(tokens) if text in END_OF_TURN_TEXTS and i not in ends]
    if not ends:
        raise model.error("the tokenizer names no end-of-sequence token")
    named = {
        key: tokens[i]
        for key, i in (
            ("bos_token", bos),
            ("eos_token", ends[0]),
            ("unk_token", token_id("unknown_token_id")),
            ("pad_token", token_id("padding_token_id")),
        )
        if i is not None
    }
    template = model.value("tokenizer.chat_template", None)
    return Tokenizer(
        hf,
        eos_token_ids=ends,
        bos_token_id=bos,
        chat_template=template if isinstance(template, str) else None,
        named_tokens=named,
    )


def _byte_level_bpe(model: GGUFModel, tokens: Sequence[str]) -> tuple[HFTokenizer, bool]:
    """GPT-2-style BPE, and whether BOS is added when the file does not say."""
    pre = model.value("tokenizer.ggml.pre", None)
    spec = PRE_TOKENIZERS.get(pre) if isinstance(pre, str) else None
    if spec is None:
        raise model.error(
            f"tokenizer.ggml.pre {pre!r} is not supported ({', '.join(sorted(PRE_TOKENIZERS))})"
        )
    merges = [tuple(m.split(" ", 1)) for m in model.value("tokenizer.ggml.merges")]
    vocab = {text: i for i, text in enumerate(tokens)}
    hf = HFTokenizer(models.BPE(vocab, merges, ignore_merges=spec.ignore_merges))
    hf.pre_tokenizer = spec.build()
    hf.decoder = decoders.ByteLevel()
    return hf, spec.add_bos


def _sentencepiece_bpe(model: GGUFModel, tokens: Sequence[str]) -> HFTokenizer:
    """SentencePiece BPE as transformers converts it: merges from the token scores."""
    scores: list[float] = model.value("tokenizer.ggml.scores")
    vocab = {text: i for i, text in enumerate(tokens)}
    unk = model.value("tokenizer.ggml.unknown_token_id", None)
    hf = HFTokenizer(
        models.BPE(
            vocab,
            _merges_from_scores(tokens, scores),
            unk_token=tokens[unk] if unk is not None else None,
            fuse_unk=True,
            byte_fallback=True,
        )
    )
    prefix = bool(model.value("tokenizer.ggml.add_space_prefix", True))
    steps: list[normalizers.Normalizer] = [normalizers.Prepend(_SPACE)] if prefix else []
    hf.normalizer = normalizers.Sequence([*steps, normalizers.Replace(" ", _SPACE)])
    decoding: list[decoders.Decoder] = [
        decoders.ByteFallback(),
        decoders.Fuse(),
        decoders.Replace(_SPACE, " "),
    ]
    if prefix:
        decoding.append(decoders.Strip(" ", 1, 0))
    hf.decoder = decoders.Sequence(decoding)
    return hf


def _merges_from_scores(tokens: Sequence[str], scores: Sequence[float]) -> list[tuple[str, str]]:
    """Every split of a token into two tokens, as transformers derives SentencePiece merges:
    ranked by the score of the token they make (ties: in token order), the splits of one token
    by the scores of their left, then right, pieces."""
    score = {text: scores[i] for i, text in enumerate(tokens)}
    found: list[tuple[float, str, str]] = []
    for text, merged in score.items():
        splits = [(text[:cut], text[cut:]) for cut in range(1, len(text))]
        pairs = [(left, right) for left, right in splits if left in score and right in score]
        pairs.sort(key=lambda pair: (score[pair[0]], score[pair[1]]), reverse=True)
        found += [(merged, left, right) for left, right in pairs]
    found.sort(key=lambda merge: merge[0], reverse=True)  # stable: ties keep token order
    return [(left, right) for _, left, right in found]


def _add_post_processor(
    hf: HFTokenizer, tokens: Sequence[str], bos: int | None, eos: int | None
) -> None:
    """BOS before (EOS after) the text, when the file asks for them."""
    if bos is None and eos is None:
        return
    before = [tokens[bos]] if bos is not None else []
    after = [tokens[eos]] if eos is not None else []
    specials = {tokens[i]: i for i in (bos, eos) if i is not None}
    hf.post_processor = processors.TemplateProcessing(
        single=[*before, "$A", *after], special_tokens=list(specials.items())
    )
