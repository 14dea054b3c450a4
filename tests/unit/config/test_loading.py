"""The gateway config: YAML and TOML files, env overrides, defaults and error messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamgate.config import (
    EMBEDDED_BACKEND,
    ConfigError,
    EmbeddedConfig,
    GatewayConfig,
    load_config,
)

YAML = """
listen:
  host: 0.0.0.0
  port: 50052
  max_message_bytes: 8388608
  keepalive: {time_seconds: 30, max_ping_strikes: 2}
backends:
  - {name: a, url: "http://10.0.0.1:8080/", model: llama-8b, max_connections: 64}
  - {name: b, url: "https://tgi.example:443", idle_timeout_seconds: null}
routes:
  - name: llama
    backends: [a, b]
    max_new_tokens: 128
    chat_template: "{{ messages[0].content }}"
  - {name: only-b, backends: [b], chat_template_file: tpl.j2}
default_route: only-b
limits: {stall_timeout_seconds: 5, shutdown_grace_seconds: 0}
logging: {level: debug, json: false, log_prompts: true}
metrics: {port: 0, enabled: false}
"""

TOML = """
default_route = "r"

[listen]
port = 6000

[[backends]]
name = "x"
url = "http://127.0.0.1:3000"

[[routes]]
name = "r"
backends = ["x"]
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def errors(path: Path | None, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=env or {})
    return str(caught.value)


def test_defaults_serve_the_embedded_engine() -> None:
    config = load_config(None, env={})
    assert config.uses_embedded_engine
    assert config.listen.port == 50051
    assert config.listen.max_message_bytes == 4 * 1024 * 1024
    assert config.logging.json_lines and not config.logging.log_prompts
    [route] = config.effective_routes()
    assert config.embedded.model == "smollm2-135m-instruct"  # the packaged real model
    assert route.name == "smollm2-135m-instruct" and route.backends == [EMBEDDED_BACKEND]
    assert route.max_new_tokens == config.embedded.max_new_tokens
    assert config.effective_default_route() == "smollm2-135m-instruct"
    assert config.max_prompt_chars == config.listen.max_message_bytes
    assert config.limits.max_attempts == 2 and config.limits.stream_buffer_events == 256


def test_the_embedded_route_is_named_after_its_model_unless_named() -> None:
    def route(**embedded: str) -> str:
        return (
            load_config(None, env={})
            .model_copy(update={"embedded": EmbeddedConfig(**embedded)})
            .effective_routes()[0]
            .name
        )

    assert route(model="tiny") == "tiny"
    assert route(model="/models/Llama-3.2-1B.Q4_1.gguf") == "Llama-3.2-1B.Q4_1"
    assert route(model="/models/my model/") == "my-model"
    assert route(model="tiny", route="chat") == "chat"


def test_yaml_file(tmp_path: Path) -> None:
    write(tmp_path, "tpl.j2", "{{ bos_token }}{{ messages | length }}")
    config = load_config(write(tmp_path, "gw.yaml", YAML), env={})
    assert config.listen.host == "0.0.0.0" and config.listen.port == 50052
    assert config.listen.keepalive.time_seconds == 30
    assert config.listen.keepalive.max_ping_strikes == 2
    assert [b.name for b in config.backends] == ["a", "b"]
    assert config.backends[0].url == "http://10.0.0.1:8080"  # trailing slash dropped
    assert config.backends[0].model == "llama-8b"
    assert config.backends[1].idle_timeout_seconds is None
    assert not config.backends[0].count_prompt_tokens  # off unless asked for
    llama, only_b = config.routes
    assert llama.backends == ["a", "b"] and llama.max_new_tokens == 128
    assert llama.template_text() == "{{ messages[0].content }}"
    # The file is found next to the config, whatever the working directory.
    assert only_b.chat_template_file == tmp_path / "tpl.j2"
    assert only_b.template_text() == "{{ bos_token }}{{ messages | length }}"
    assert config.effective_default_route() == "only-b"
    assert config.limits.shutdown_grace_seconds == 0
    assert config.logging.level == "DEBUG" and not config.logging.json_lines
    assert not config.metrics.enabled


def test_toml_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "gw.toml", TOML), env={})
    assert config.listen.port == 6000
    assert config.routes[0].backends == ["x"]
    assert not config.uses_embedded_engine


def test_routes_default_to_one_per_backend(tmp_path: Path) -> None:
    text = "backends:\n  - {name: a, url: 'http://h:1'}\n  - {name: b, url: 'http://h:2'}\n"
    config = load_config(write(tmp_path, "gw.yaml", text), env={})
    assert [(r.name, r.backends) for r in config.effective_routes()] == [
        ("a", ["a"]),
        ("b", ["b"]),
    ]
    assert config.effective_default_route() == "a"


def test_env_overrides_file(tmp_path: Path) -> None:
    env = {
        "STREAMGATE_LISTEN__PORT": "50099",
        "STREAMGATE_LISTEN__KEEPALIVE__PERMIT_WITHOUT_CALLS": "false",
        "STREAMGATE_BACKENDS__0__URL": "http://other:9000",
        "STREAMGATE_BACKENDS__1__NAME": "y",  # index == length: appends an entry
        "STREAMGATE_BACKENDS__1__URL": "http://y:1",
        "STREAMGATE_ROUTES__0__BACKENDS": '["x", "y"]',  # JSON for lists
        "STREAMGATE_LOGGING__JSON": "false",
        "STREAMGATE_EMBEDDED__ARGS": '["--max-total-tokens", "1024"]',
        "STREAMGATE_ADDRESS": "127.0.0.1:1",  # not a section: someone else's variable
        "OTHER": "ignored",
    }
    config = load_config(write(tmp_path, "gw.toml", TOML), env=env)
    assert config.listen.port == 50099
    assert config.listen.keepalive.permit_without_calls is False
    assert [(b.name, b.url) for b in config.backends] == [
        ("x", "http://other:9000"),
        ("y", "http://y:1"),
    ]
    assert config.routes[0].backends == ["x", "y"]
    assert not config.logging.json_lines
    assert config.embedded.args == ["--max-total-tokens", "1024"]


def test_env_overrides_without_file() -> None:
    config = load_config(
        None, env={"STREAMGATE_METRICS__ENABLED": "0", "STREAMGATE_LIMITS__MAX_ATTEMPTS": "3"}
    )
    assert not config.metrics.enabled
    assert config.limits.max_attempts == 3


def test_env_errors_name_the_variable() -> None:
    message = errors(None, {"STREAMGATE_LISTEN__PORT": "seventy", "STREAMGATE_LISTEN__PROT": "1"})
    assert "listen.port: Input should be a valid integer" in message
    assert "[from STREAMGATE_LISTEN__PORT]" in message
    assert "listen.prot: Extra inputs are not permitted [from STREAMGATE_LISTEN__PROT]" in message
    message = errors(None, {"STREAMGATE_BACKENDS__3__URL": "http://h"})
    assert "STREAMGATE_BACKENDS__3__URL" in message and "index" in message


def test_every_bad_field_is_reported_with_its_path(tmp_path: Path) -> None:
    text = """
listen: {port: 70000, bogus: 1, keepalive: {time_seconds: 0}}
backends:
  - {name: a, url: "ftp://x"}
  - {name: "bad name", url: "http://x:1", max_connections: 0}
routes:
  - {name: r, backends: [], max_new_tokens: 0, chat_template_file: missing.j2}
logging: {level: verbose}
"""
    message = errors(write(tmp_path, "gw.yaml", text))
    assert message.startswith(f"invalid configuration ({tmp_path / 'gw.yaml'}):")
    for expected in (
        "listen.port: Input should be less than or equal to 65535 (got 70000)",
        "listen.bogus: Extra inputs are not permitted",
        "listen.keepalive.time_seconds: Input should be greater than 0",
        "backends[0].url: must be an http:// or https:// URL with a host",
        "backends[1].name: must be 1-128 characters",
        "backends[1].max_connections: Input should be greater than or equal to 1",
        "routes[0].backends: List should have at least 1 item",
        "routes[0].max_new_tokens: Input should be greater than or equal to 1",
        "routes[0].chat_template_file: cannot read",
        "logging.level: Input should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'",
    ):
        assert expected in message, message


def test_cross_references_are_checked(tmp_path: Path) -> None:
    text = """
backends:
  - {name: a, url: "http://h:1"}
  - {name: a, url: "http://h:2"}
routes:
  - {name: r, backends: [a, nope]}
default_route: missing
"""
    message = errors(write(tmp_path, "gw.yaml", text))
    assert "backends: duplicate names a" in message
    assert "routes[0].backends: unknown backend 'nope'" in message
    assert "default_route: unknown route 'missing' (routes: r)" in message


def test_routes_without_backends_may_only_use_the_embedded_engine(tmp_path: Path) -> None:
    ok = load_config(
        write(tmp_path, "ok.yaml", "routes: [{name: t, backends: [embedded]}]"), env={}
    )
    assert ok.uses_embedded_engine and ok.effective_routes()[0].name == "t"
    message = errors(write(tmp_path, "bad.yaml", "routes: [{name: t, backends: [gpu]}]"))
    assert "unknown backend 'gpu' (no backends are configured: only 'embedded' exists)" in message


def test_template_inline_and_file_are_exclusive(tmp_path: Path) -> None:
    write(tmp_path, "t.j2", "x")
    text = "routes: [{name: t, backends: [embedded], chat_template: y, chat_template_file: t.j2}]"
    assert "set chat_template or chat_template_file, not both" in errors(
        write(tmp_path, "gw.yaml", text)
    )


def test_embedded_args_cannot_override_owned_flags() -> None:
    message = errors(None, {"STREAMGATE_EMBEDDED__ARGS": '["--port", "1"]'})
    assert "--port is set by the gateway" in message


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("gw.json", "{}", "unknown config format '.json'"),
        ("gw.yaml", "listen: [unclosed", "invalid YAML"),
        ("gw.toml", "listen = ", "invalid TOML"),
        ("gw.yaml", "- a list", "the top level must be a mapping"),
    ],
)
def test_unreadable_files(tmp_path: Path, name: str, text: str, expected: str) -> None:
    assert expected in errors(write(tmp_path, name, text))


def test_missing_file(tmp_path: Path) -> None:
    assert "cannot read config file" in errors(tmp_path / "nope.yaml")


def test_empty_yaml_is_the_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "gw.yaml", ""), env={}) == GatewayConfig()


def test_env_can_append_many_list_entries() -> None:
    env = {}
    for i in range(12):  # __10__ and __11__ sort before __2__ as text
        env[f"STREAMGATE_BACKENDS__{i}__NAME"] = f"b{i}"
        env[f"STREAMGATE_BACKENDS__{i}__URL"] = f"http://h:{1000 + i}"
    config = load_config(None, env=env)
    assert [b.name for b in config.backends] == [f"b{i}" for i in range(12)]


def test_the_shared_cache_tier_is_off_unless_configured() -> None:
    assert load_config(None, env={}).cache.redis is None
    config = load_config(None, env={"STREAMGATE_CACHE__REDIS__URL": "rediss://:pw@h:6380/2"})
    assert config.cache.redis is not None and config.cache.redis.timeout_seconds == 0.05
    message = errors(
        None,
        {
            "STREAMGATE_CACHE__REDIS__URL": "http://h",
            "STREAMGATE_CACHE__REDIS__TIMEOUT_SECONDS": "9",
        },
    )
    assert "cache.redis.url: must be a redis://, rediss:// or unix:// URL" in message
    assert "cache.redis.timeout_seconds: Input should be less than or equal to 5" in message
