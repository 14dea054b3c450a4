"""Which chat template renders a route's chat messages.

The route's configured template (`routes[].chat_template` or `chat_template_file`) wins. Else the
template its backends report: a TGI `/info` has none, but the engine reports its model's in
extension fields (`chat_template`, `bos_token`, `eos_token`: a GGUF carries them), and the first
replica of the route that reports one is used. Else ChatML (`DEFAULT_CHAT_TEMPLATE`).
"""

from __future__ import annotations

from collections.abc import Mapping

from streamgate.gateway.pipeline.s03_prepare.chat import (
    DEFAULT_CHAT_TEMPLATE,
    ChatTemplate,
    TemplateSyntaxError,
)
from streamgate.routing import Replica, Route
from streamgate.telemetry.logging import get_logger

__all__ = ["RouteTemplates"]

log = get_logger(__name__)


class RouteTemplates:
    """The chat template of every route (see the module doc); reported templates are compiled
    once per distinct source."""

    def __init__(self, configured: Mapping[str, ChatTemplate]) -> None:
        self.configured = dict(configured)
        """The routes' configured templates, by route name."""
        self._default = ChatTemplate(DEFAULT_CHAT_TEMPLATE)
        self._reported: dict[tuple[str, str, str], ChatTemplate] = {}

    def for_route(self, route: Route) -> ChatTemplate:
        """The template that renders `route`'s chat messages now."""
        configured = self.configured.get(route.name)
        if configured is not None:
            return configured
        for replica in route.replicas:
            template = self._reported_by(replica)
            if template is not None:
                return template
        return self._default

    def _reported_by(self, replica: Replica) -> ChatTemplate | None:
        raw = replica.info.raw if replica.info is not None else {}
        source = raw.get("chat_template")
        if not isinstance(source, str) or not source:
            return None
        bos, eos = raw.get("bos_token"), raw.get("eos_token")
        key = (source, bos if isinstance(bos, str) else "", eos if isinstance(eos, str) else "")
        template = self._reported.get(key)
        if template is None:
            try:
                template = ChatTemplate(source, bos_token=key[1], eos_token=key[2])
            except TemplateSyntaxError as err:
                # The backend's own template does not compile here: ChatML rather than nothing.
                log.warning("a backend's chat template does not compile; using ChatML",
                            backend=replica.name, error=str(err))  # fmt: skip
                template = self._default
            self._reported[key] = template
        return template
