"""`listen.http`, the browser door's section: off by default, and origins checked when read."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from streamgate.config import GatewayConfig, ListenConfig


def test_off_by_default_on_loopback() -> None:
    http = GatewayConfig().listen.http
    assert not http.enabled
    assert (http.host, http.port, http.cors_origins, http.tls) == ("127.0.0.1", 8080, [], None)


def test_origins_are_normalised() -> None:
    config = ListenConfig.model_validate(
        {"http": {"cors_origins": ["https://Chat.Example.com", "http://localhost:5173"]}}
    )
    assert config.http.cors_origins == ["https://chat.example.com", "http://localhost:5173"]


@pytest.mark.parametrize(
    "origin",
    ["*", "chat.example.com", "https://chat.example.com/", "https://x.com/app", "ftp://x.com"],
)
def test_what_is_not_an_origin_is_refused(origin: str) -> None:
    with pytest.raises(ValidationError, match="is not an origin"):
        ListenConfig.model_validate({"http": {"cors_origins": [origin]}})
