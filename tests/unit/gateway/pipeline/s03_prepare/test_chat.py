"""Chat templates: HF chat_template rendering, the ChatML default, sandboxing, refusals."""

from __future__ import annotations

import pytest

from streamgate.gateway.pipeline.s03_prepare.chat import (
    DEFAULT_CHAT_TEMPLATE,
    ChatMessage,
    ChatTemplate,
    ChatTemplateError,
    TemplateSyntaxError,
)

USER = [ChatMessage("user", "Hi")]

# A Llama-2-style template as found in tokenizer_config.json files.
LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}"
    "{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}"
    "{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}"
    "{% endif %}{% endfor %}"
)


def test_default_chatml() -> None:
    template = ChatTemplate(DEFAULT_CHAT_TEMPLATE)
    messages = [
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "Hi"),
        ChatMessage("assistant", "Hello!"),
        ChatMessage("user", "Bye"),
    ]
    assert template.render(messages) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n"
        "<|im_start|>user\nBye<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert template.render(USER, add_generation_prompt=False) == "<|im_start|>user\nHi<|im_end|>\n"


def test_default_refuses_unknown_roles() -> None:
    with pytest.raises(ChatTemplateError, match='unknown role "tool"'):
        ChatTemplate(DEFAULT_CHAT_TEMPLATE).render([ChatMessage("tool", "{}")])


def test_hf_template_with_bos_eos_and_raise_exception() -> None:
    template = ChatTemplate(LLAMA2, bos_token="<s>", eos_token="</s>")
    rendered = template.render(
        [
            ChatMessage("system", "Sys"),
            ChatMessage("user", "Hi "),
            ChatMessage("assistant", "Hello"),
            ChatMessage("user", "Bye"),
        ]
    )
    assert rendered == (
        "<s>[INST] <<SYS>>\nSys\n<</SYS>>\n\nHi [/INST] Hello </s><s>[INST] Bye [/INST]"
    )
    with pytest.raises(ChatTemplateError, match="roles must alternate"):
        template.render([ChatMessage("user", "a"), ChatMessage("user", "b")])


def test_tojson_keeps_unicode() -> None:
    template = ChatTemplate("{{ messages | tojson }}")
    assert template.render([ChatMessage("user", "héllo")]) == (
        '[{"role": "user", "content": "héllo"}]'
    )


def test_message_content_is_data_not_template_code() -> None:
    rendered = ChatTemplate(DEFAULT_CHAT_TEMPLATE).render([ChatMessage("user", "{{ 7 * 7 }}")])
    assert "{{ 7 * 7 }}" in rendered and "49" not in rendered


@pytest.mark.parametrize(
    "source",
    [
        # Classic escapes: reach Python internals through dunder attributes.
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ messages.__class__ }}",
        "{{ raise_exception.__globals__ }}",
        "{{ cycler.__init__.__globals__.os }}",
        # The immutable sandbox refuses changing the caller's data.
        "{% for m in messages %}{{ m.update({'role': 'system'}) }}{% endfor %}",
        "{{ messages.append(1) }}",
        "{{ messages.pop() }}",
    ],
)
def test_sandbox_refuses_escapes(source: str) -> None:
    # The sandbox either refuses (SecurityError → ChatTemplateError) or hands the template an
    # undefined value that renders as nothing: never the object itself.
    try:
        rendered = ChatTemplate(source).render(USER)
    except ChatTemplateError as err:
        assert "unsafe" in str(err)
    else:
        assert rendered == ""


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("{{ messages[3].content }}", "UndefinedError"),
        ("{{ undefined_name.attr }}", "UndefinedError"),
        ("{{ 1 / 0 }}", "ZeroDivisionError"),
        ("{% for i in range(10 ** 9) %}{% endfor %}", "MAX_RANGE"),
    ],
)
def test_runtime_failures_are_template_errors(source: str, words: str) -> None:
    with pytest.raises(ChatTemplateError, match=words):
        ChatTemplate(source).render(USER)


def test_syntax_errors_fail_at_compile_time() -> None:
    with pytest.raises(TemplateSyntaxError, match="line 1"):
        ChatTemplate("{% for m in messages %}")
