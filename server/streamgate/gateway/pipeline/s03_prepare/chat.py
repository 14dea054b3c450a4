"""Chat messages → prompt text, with a Hugging Face `chat_template` (Jinja).

Templates are the `chat_template` format of tokenizer_config.json: they see `messages` (a list of
`{"role", "content"}`), `add_generation_prompt`, `bos_token`, `eos_token` and may call
`raise_exception(message)` to refuse a conversation. They run in jinja2's
`ImmutableSandboxedEnvironment`, as transformers does: a template cannot reach Python internals
(`''.__class__`) nor mutate the messages, and the sandbox caps `range()`.

Which template a route uses: templates.py.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from jinja2 import TemplateError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = [
    "DEFAULT_CHAT_TEMPLATE",
    "ChatMessage",
    "ChatTemplate",
    "ChatTemplateError",
    "TemplateSyntaxError",
]

DEFAULT_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] -%}"
    "{{- raise_exception('unknown role \"' ~ message['role'] ~ '\" (ChatML accepts system, "
    "user, assistant)') -}}"
    "{%- endif -%}"
    "{{- '<|im_start|>' ~ message['role'] ~ '\\n' ~ message['content'] ~ '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)
"""ChatML (`<|im_start|>role\\ncontent<|im_end|>`), roles system, user and assistant."""


class ChatTemplateError(Exception):
    """The template refused the conversation or failed while rendering it."""


class TemplateSyntaxError(Exception):
    """The template itself does not compile (a configuration error)."""


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of a conversation."""

    role: str
    content: str


def _raise_exception(message: str) -> NoReturn:
    # HF templates call this to reject a conversation (e.g. roles out of order).
    raise ChatTemplateError(message)


def _tojson(value: Any, indent: int | None = None) -> str:
    # transformers' `tojson` keeps non-ASCII text as is (jinja2's escapes it for HTML).
    return json.dumps(value, ensure_ascii=False, indent=indent)


class ChatTemplate:
    """A compiled chat template.

    Raises `TemplateSyntaxError` at construction for a template that does not compile.
    """

    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "") -> None:
        # As transformers: blocks do not leave their newline and indentation behind.
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise_exception
        env.filters["tojson"] = _tojson
        try:
            self._template = env.from_string(source)
        except TemplateError as err:
            raise TemplateSyntaxError(_describe(err)) from None
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token

    def render(self, messages: Sequence[ChatMessage], *, add_generation_prompt: bool = True) -> str:
        """The prompt text. Raises `ChatTemplateError` when the template refuses the messages,
        tries to escape its sandbox or fails in any other way."""
        context = {
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "add_generation_prompt": add_generation_prompt,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
        }
        try:
            return self._template.render(context)
        except ChatTemplateError:
            raise
        except SecurityError as err:
            raise ChatTemplateError(f"the template did something unsafe: {err}") from None
        except TemplateError as err:
            raise ChatTemplateError(_describe(err)) from None
        except (
            TypeError,
            ValueError,
            LookupError,
            AttributeError,
            ArithmeticError,
            RecursionError,
        ) as err:
            # Template code runs on request data: any Python error there is a bad conversation
            # for this template, not a server fault.
            raise ChatTemplateError(f"the template failed: {type(err).__name__}: {err}") from None


def _describe(err: TemplateError) -> str:
    line = getattr(err, "lineno", None)
    where = f" (line {line})" if line else ""
    return f"{type(err).__name__}{where}: {err.message or err}"
