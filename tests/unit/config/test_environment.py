"""STREAMGATE_* overrides: which variables count, how values and list entries apply, and what
an override of a file's key does to the rest of the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamgate.config import ConfigError, load_config

FILE = """
listen: {host: 0.0.0.0, port: 7000, keepalive: {time_seconds: 30}}
backends: [{name: a, url: "http://h:1"}]
routes: [{name: r, backends: [a]}]
default_route: r
tenants: [{name: t}]
"""


@pytest.fixture
def gateway_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "gw.yaml"
    path.write_text(FILE)
    return path


def test_only_variables_naming_a_section_are_read(gateway_yaml: Path) -> None:
    env = {
        "STREAMGATE_TARGET": "127.0.0.1:1",  # a client's
        "STREAMGATE_LISTENER__PORT": "1",
        "STREAMGATE_LISTEN____PORT": "1",  # an empty level
        "streamgate_listen__port": "1",  # the prefix is upper case
    }
    assert load_config(gateway_yaml, env=env) == load_config(gateway_yaml, env={})


def test_null_replaces_a_value_of_the_file(gateway_yaml: Path) -> None:
    config = load_config(
        gateway_yaml,
        env={"STREAMGATE_DEFAULT_ROUTE": "null", "STREAMGATE_BACKENDS__0__MODEL": " null "},
    )
    assert config.default_route is None
    assert config.backends[0].model is None


def test_a_json_object_is_merged_into_the_files_section(gateway_yaml: Path) -> None:
    config = load_config(
        gateway_yaml,
        env={
            "STREAMGATE_LISTEN": '{"port": 9, "keepalive": {"timeout_seconds": 7}}',
            "STREAMGATE_LISTEN__KEEPALIVE__MAX_PING_STRIKES": "3",
        },
    )
    assert (config.listen.host, config.listen.port) == ("0.0.0.0", 9)
    keepalive = config.listen.keepalive
    assert (keepalive.time_seconds, keepalive.timeout_seconds) == (30, 7)
    assert keepalive.max_ping_strikes == 3


def test_a_json_list_replaces_the_files_list_and_takes_entries(gateway_yaml: Path) -> None:
    config = load_config(
        gateway_yaml,
        env={
            "STREAMGATE_BACKENDS": '[{"name": "x", "url": "http://x:1"}]',
            "STREAMGATE_BACKENDS__1__NAME": "y",
            "STREAMGATE_BACKENDS__1__URL": "http://y:1",
            "STREAMGATE_ROUTES__0__BACKENDS": '["x", "y"]',
        },
    )
    assert [b.name for b in config.backends] == ["x", "y"]
    assert config.routes[0].backends == ["x", "y"]


def test_lists_inside_entries_take_entries_too(gateway_yaml: Path) -> None:
    config = load_config(
        gateway_yaml,
        env={
            "STREAMGATE_TENANTS__0__KEYS__0__NAME": "ci",
            "STREAMGATE_TENANTS__0__KEYS__0__KEY_ENV": "CI_KEY",
            "STREAMGATE_EMBEDDED__ARGS__0": "--quantize=int8",
        },
    )
    [key] = config.tenants[0].keys
    assert (key.name, key.key_env) == ("ci", "CI_KEY")
    assert config.embedded.args == ["--quantize=int8"]


def test_an_index_past_the_end_names_the_list(gateway_yaml: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(gateway_yaml, env={"STREAMGATE_TENANTS__0__KEYS__1__NAME": "ci"})
    assert str(caught.value) == (
        "STREAMGATE_TENANTS__0__KEYS__1__NAME: '1' is not an index of tenants[0].keys "
        "(0 to 0; 0 appends an entry)"
    )


def test_a_key_below_a_value_is_reported_at_the_value(gateway_yaml: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(gateway_yaml, env={"STREAMGATE_LISTEN__PORT__X": "1"})
    assert (
        "listen.port: Input should be a valid integer (got {'x': '1'}) "
        "[from STREAMGATE_LISTEN__PORT__X]"
    ) in str(caught.value)


def test_relative_paths_of_overrides_start_at_the_config_file(
    gateway_yaml: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("cert.pem", "key.pem"):
        (gateway_yaml.parent / name).write_text(name)
    monkeypatch.chdir(gateway_yaml.parent.parent)
    config = load_config(
        gateway_yaml,
        env={
            "STREAMGATE_LISTEN__TLS__CERT_FILE": "cert.pem",
            "STREAMGATE_LISTEN__TLS__KEY_FILE": "key.pem",
        },
    )
    assert config.listen.tls is not None
    assert config.listen.tls.cert_file == gateway_yaml.parent / "cert.pem"
