"""Which chat template renders a route's messages: configured, else its backends' own (the
engine reports its model's in /info), else ChatML."""

from __future__ import annotations

from streamgate.gateway.pipeline.s03_prepare import ChatMessage, ChatTemplate, RouteTemplates
from streamgate.routing import Replica
from support.routes import backend_info, replica, route

MESSAGES = [ChatMessage("user", "hi")]
REPORTED = "{{ bos_token }}[{{ messages[0].role }}] {{ messages[0].content }}{{ eos_token }}"


def reporting(name: str, template: str | None, **tokens: str) -> Replica:
    """A replica whose /info reports `template` (None: no chat_template key)."""
    extra: dict[str, object] = dict(tokens)
    if template is not None:
        extra["chat_template"] = template
    return replica(name, info=backend_info(**extra))


def test_a_route_uses_the_template_its_backend_reports() -> None:
    r = route("r", reporting("e", REPORTED, bos_token="<s>", eos_token="</s>"))
    assert RouteTemplates({}).for_route(r).render(MESSAGES) == "<s>[user] hi</s>"


def test_the_configured_template_wins_over_the_reported_one() -> None:
    r = route("r", reporting("e", REPORTED))
    configured = ChatTemplate("configured {{ messages[0].content }}")
    assert RouteTemplates({"r": configured}).for_route(r).render(MESSAGES) == "configured hi"


def test_without_a_report_or_a_configuration_chatml_renders() -> None:
    r = route("r", reporting("tiny", None), replica("down"))
    text = RouteTemplates({}).for_route(r).render(MESSAGES)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_the_first_replica_that_reports_one_is_used() -> None:
    r = route("r", replica("no-info"), reporting("e", REPORTED))
    assert RouteTemplates({}).for_route(r).render(MESSAGES) == "[user] hi"


def test_a_reported_template_that_does_not_compile_falls_back_to_chatml() -> None:
    r = route("r", reporting("e", "{% for %}"))
    templates = RouteTemplates({})
    assert templates.for_route(r).render(MESSAGES).startswith("<|im_start|>user")
    assert templates.for_route(r) is templates.for_route(r)  # compiled (or refused) once
