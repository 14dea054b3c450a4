"""Stage 3, prepare: validate every field, render chat messages with the route's template, and
map the request to TGI's parameters.

- validate: every bad field of a request (BadRequest violations)
- chat: Hugging Face chat templates in jinja2's immutable sandbox
- templates: which template renders a route's chat messages (configured, reported, ChatML)
- prepare: the validated, rendered request (`PreparedRequest`)
"""

from streamgate.gateway.pipeline.s03_prepare.chat import (
    DEFAULT_CHAT_TEMPLATE,
    ChatMessage,
    ChatTemplate,
    ChatTemplateError,
    TemplateSyntaxError,
)
from streamgate.gateway.pipeline.s03_prepare.prepare import (
    PreparedRequest,
    prepare,
    tgi_parameters,
)
from streamgate.gateway.pipeline.s03_prepare.templates import RouteTemplates
from streamgate.gateway.pipeline.s03_prepare.validate import (
    GenerationRequest,
    RequestLimits,
    validate_request,
)

__all__ = [
    "DEFAULT_CHAT_TEMPLATE",
    "ChatMessage",
    "ChatTemplate",
    "ChatTemplateError",
    "GenerationRequest",
    "PreparedRequest",
    "RequestLimits",
    "RouteTemplates",
    "TemplateSyntaxError",
    "prepare",
    "tgi_parameters",
    "validate_request",
]
