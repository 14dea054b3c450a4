"""The gateway's configuration: one pydantic model, read from YAML or TOML, with env overrides.

    config = load_config("gateway.yaml")   # or None: defaults (the embedded engine) + env

The file format follows the extension (`.yaml`/`.yml` or `.toml`). Environment variables named
`STREAMGATE_<SECTION>__<KEY>...` override the file, `__` separating the levels and list entries
addressed by index: `STREAMGATE_LISTEN__PORT=50052`, `STREAMGATE_BACKENDS__0__URL=http://h:80`.
Values are strings that pydantic converts (`"50052"`, `"true"`); a value starting with `[` or
`{` is JSON (`STREAMGATE_EMBEDDED__ARGS='["--max-total-tokens", "1024"]'`). Only variables whose
first level is a section of the config are read, so other `STREAMGATE_*` variables (a client's
address, ...) do not clash; inside a section, unknown keys are errors like in the file.

Every problem is reported at once as a `ConfigError` naming the path of each bad field
(`backends[1].url: ...`) and, for overrides, the variable that set it.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

import yaml  # type: ignore[import-untyped, unused-ignore]
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

__all__ = [
    "EMBEDDED_BACKEND",
    "ENV_PREFIX",
    "AdmissionConfig",
    "ApiKeyConfig",
    "AuthConfig",
    "BackendConfig",
    "CacheConfig",
    "ConditionConfig",
    "ConfigError",
    "EmbeddedConfig",
    "GatewayConfig",
    "KeepaliveConfig",
    "KeyFileEntry",
    "LimitsConfig",
    "ListenConfig",
    "LoggingConfig",
    "MetricsConfig",
    "PickerName",
    "PoolConfig",
    "PrefixConfig",
    "QuotaConfig",
    "RedisConfig",
    "RouteConfig",
    "RuleConfig",
    "SplitArm",
    "TLSConfig",
    "TenantConfig",
    "load_config",
]

ENV_PREFIX = "STREAMGATE_"
EMBEDDED_BACKEND = "embedded"
"""The backend name of the embedded engine (routes may name it when no backends are given)."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")


def _check_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(
            "must be 1-128 characters of letters, digits and . _ : / -, starting with a letter "
            "or digit"
        )
    return value


Name = Annotated[str, AfterValidator(_check_name)]
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Port = Annotated[int, Field(ge=0, le=65535)]


class ConfigError(Exception):
    """A configuration that cannot be used; the message lists every problem."""


class _Section(BaseModel):
    # Unknown keys are errors (a typo must not silently keep a default); sections are values.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class KeepaliveConfig(_Section):
    """HTTP/2 keepalive policy: long quiet streams (a long prefill) must survive client pings."""

    time_seconds: Seconds = 60.0
    """The server pings a connection after this much silence (grpc.keepalive_time_ms)."""
    timeout_seconds: Seconds = 20.0
    """...and closes it if the ping is not answered within this (grpc.keepalive_timeout_ms)."""
    permit_without_calls: bool = True
    """Accept client pings on connections without calls (grpc.keepalive_permit_without_calls)."""
    min_ping_interval_seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 5.0
    """Client pings closer than this count as abuse (grpc.http2.min_recv_ping_interval_without_
    data_ms); clients' keepalive interval must be at least this."""
    max_ping_strikes: Annotated[int, Field(ge=0)] = 0
    """Abusive pings tolerated before GOAWAY (grpc.http2.max_ping_strikes); 0: unlimited."""


def _readable_file(value: Path, info: ValidationInfo) -> Path:
    """`value` resolved against the config file's directory; it must be readable."""
    base = (info.context or {}).get("base_dir") or Path.cwd()
    path = Path(base) / value.expanduser()
    try:
        path.read_bytes()
    except OSError as err:
        raise ValueError(f"cannot read {path}: {err.strerror or err}") from None
    return path


ReadableFile = Annotated[Path, AfterValidator(_readable_file)]


class TLSConfig(_Section):
    """TLS for the gRPC port; with `client_ca_file`, mutual TLS."""

    cert_file: ReadableFile
    """The server's certificate chain (PEM)."""
    key_file: ReadableFile
    """Its private key (PEM)."""
    client_ca_file: ReadableFile | None = None
    """CA certificates (PEM) that client certificates must chain to."""
    require_client_cert: bool | None = None
    """Refuse clients without a valid certificate; default: true when client_ca_file is set."""

    @model_validator(mode="after")
    def _ca_for_client_certs(self) -> Self:
        if self.require_client_cert and self.client_ca_file is None:
            raise ValueError("require_client_cert needs client_ca_file")
        return self

    @property
    def mutual(self) -> bool:
        """Client certificates are required."""
        if self.require_client_cert is None:
            return self.client_ca_file is not None
        return self.require_client_cert


class ListenConfig(_Section):
    """Where and how the gRPC server listens."""

    host: str = "127.0.0.1"
    port: Port = 50051
    """0: any free port (printed in the `listening on` line)."""
    max_message_bytes: Annotated[int, Field(ge=1024, le=2**31 - 1)] = 4 * 1024 * 1024
    """Largest request and response message; also bounds the prompt (limits.max_prompt_chars)."""
    max_concurrent_streams: Annotated[int, Field(ge=1)] = 1024
    """HTTP/2 streams (calls) per client connection (grpc.max_concurrent_streams)."""
    keepalive: KeepaliveConfig = Field(default_factory=KeepaliveConfig)
    tls: TLSConfig | None = None
    """null: plaintext (local use)."""


class CircuitConfig(_Section):
    """Passive ejection: failed requests open a backend's circuit (routing/circuit.py)."""

    failures: Annotated[int, Field(ge=1)] = 5
    """Consecutive failed requests (unreachable, timeout, broken stream) that open it."""
    open_seconds: Seconds = 5.0
    """No requests for this long; then one probe request decides."""
    max_open_seconds: Seconds = 60.0
    """A failed probe doubles the time, up to this."""


class BackendConfig(_Section):
    """One TGI backend (a replica)."""

    name: Name
    url: str
    model: str | None = None
    """The model id shown to clients; default: the backend's /info model_id."""
    max_connections: Annotated[int, Field(ge=1)] = 256
    """Pooled HTTP connections, i.e. streams in flight to this backend."""
    connect_timeout_seconds: Seconds = 5.0
    idle_timeout_seconds: Seconds | None = 60.0
    """Longest silence within a stream (TGI sends keep-alives every 15 s); null: no bound."""
    request_timeout_seconds: Seconds = 30.0
    """Bound on /info and /tokenize."""
    health_timeout_seconds: Seconds = 2.0
    health_interval_seconds: Seconds = 2.0
    """Time between two /health checks."""
    load_interval_seconds: Seconds = 1.0
    """Time between two reads of its /metrics load gauges (queue, batch) for the pickers."""
    health_rise: Annotated[int, Field(ge=1)] = 2
    health_fall: Annotated[int, Field(ge=1)] = 2
    """Consecutive passed (failed) checks that make a down (up) backend healthy (unhealthy);
    the first check decides alone."""
    circuit: CircuitConfig = Field(default_factory=lambda: CircuitConfig())
    draining: bool = False
    """Send it no new requests; running ones finish (apply with a reload: SIGHUP)."""
    count_prompt_tokens: bool = False
    """Ask POST /tokenize, in parallel with each generation, for Start.input_tokens. Off by
    default: it doubles the requests (and the tokenizing) a backend serves, which costs time to
    first token under load; Start.input_tokens is then 0, End's usage has the count anyway."""

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        try:
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError as err:
            raise ValueError(f"bad port: {err}") from None
        return value.rstrip("/")


PickerName = Literal["round_robin", "least_load", "power_of_two", "prefix_affinity"]


class PrefixConfig(_Section):
    """The prefix index of `prefix_affinity` pools (routing.prefix, routing.pickers)."""

    block_bytes: Annotated[int, Field(ge=16, le=65536)] = 128
    """Prompt bytes per hashed block (about 32 tokens of English)."""
    max_blocks: Annotated[int, Field(ge=1, le=65536)] = 256
    """Leading blocks of a prompt that are hashed and compared."""
    max_blocks_per_replica: Annotated[int, Field(ge=1)] = 65536
    """Block hashes remembered per replica (least recently used forgotten first)."""
    balance_abs: Annotated[float, Field(ge=0)] = 32
    balance_rel: Annotated[float, Field(ge=1)] = 1.5
    """The pool is imbalanced (affinity yields to load) when the most and least loaded replicas
    differ by more than balance_abs requests and by more than balance_rel times."""
    min_match: Annotated[float, Field(ge=0, le=1)] = 0.3
    """Share of a prompt's blocks a replica must have seen to be chosen for affinity."""


class PoolConfig(_Section):
    """A pool: replicas that serve the same model, and how one is picked."""

    name: Name
    backends: Annotated[list[Name], Field(min_length=1)]
    picker: PickerName = "prefix_affinity"
    prefix: PrefixConfig = Field(default_factory=PrefixConfig)


class SplitArm(_Section):
    """One arm of a weighted split."""

    pool: Name
    weight: Annotated[float, Field(gt=0, allow_inf_nan=False)]


class _Target(_Section):
    """Where requests go: one pool or a sticky weighted split, with an optional fallback pool
    (used when the chosen pool has no available replica) and shadow pool (gets a copy of each
    request; its output is discarded)."""

    pool: Name | None = None
    split: Annotated[list[SplitArm], Field(min_length=1)] | None = None
    """Each request's arm is stable per `x-user-id` (else per request), by weight."""
    fallback: Name | None = None
    shadow: Name | None = None

    def pool_names(self) -> list[str]:
        """Every pool the target names."""
        names = [self.pool] if self.pool else []
        names += [arm.pool for arm in self.split or ()]
        return names + [n for n in (self.fallback, self.shadow) if n]


class ConditionConfig(_Section):
    """A rule's condition: `field` with one operator, or `all`/`any` of conditions."""

    field: str | None = None
    """`model`, `tenant`, `priority`, or a metadata key such as `x-user-id`."""
    equals: str | None = None
    in_: list[str] | None = Field(None, alias="in")
    prefix: str | None = None
    regex: str | None = None
    """A full match of the value."""
    exists: bool | None = None
    all: list[ConditionConfig] | None = None
    any: list[ConditionConfig] | None = None

    @model_validator(mode="after")
    def _one_form(self) -> Self:
        operators = [
            k
            for k in ("equals", "in_", "prefix", "regex", "exists")
            if getattr(self, k) is not None
        ]
        combined = [k for k in ("all", "any") if getattr(self, k) is not None]
        if combined:
            if len(combined) > 1 or self.field is not None or operators:
                raise ValueError("a condition is `all`, `any`, or a field test, one of them")
            return self
        if self.field is None or len(operators) != 1:
            raise ValueError("a field test needs `field` and exactly one of equals, in, prefix, "
                             "regex, exists")  # fmt: skip
        if self.field == "authorization":
            raise ValueError("rules cannot look at the authorization metadata")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as err:
                raise ValueError(f"regex: {err}") from None
        return self


class RuleConfig(_Target):
    """A routing rule: when its condition holds, its target replaces the route's."""

    name: Name
    when: ConditionConfig

    @model_validator(mode="after")
    def _one_target(self) -> Self:
        if (self.pool is None) == (self.split is None):
            raise ValueError("set pool or split, not both")
        return self


class RouteConfig(_Target):
    """A route: the name clients put in `model`, served by a pool of backends."""

    name: Name
    backends: Annotated[list[Name], Field(min_length=1)] | None = None
    """The route's own pool (named after the route, picker prefix_affinity), or `pool`, or
    `split`."""
    chat_template: str | None = None
    """HF chat_template (Jinja) for chat requests; default: a built-in ChatML template."""
    chat_template_file: Path | None = None
    """A file with the template instead (relative paths are relative to the config file)."""
    bos_token: str = ""
    eos_token: str = ""
    """`bos_token` and `eos_token` as the template sees them."""
    max_new_tokens: Annotated[int, Field(ge=1)] | None = None
    """Default when a request sets none; null: the backend's default (TGI: up to the context)."""

    @field_validator("chat_template_file")
    @classmethod
    def _readable(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        base = (info.context or {}).get("base_dir") or Path.cwd()
        path = Path(base) / value.expanduser()
        try:
            path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(f"cannot read {path}: {err}") from None
        return path

    @model_validator(mode="after")
    def _one_template(self) -> Self:
        if self.chat_template is not None and self.chat_template_file is not None:
            raise ValueError("set chat_template or chat_template_file, not both")
        chosen = [k for k in ("backends", "pool", "split") if getattr(self, k) is not None]
        if len(chosen) != 1:
            raise ValueError("set one of backends, pool and split")
        return self

    def pool_names(self) -> list[str]:
        """Every pool the route names (its own pool is named after it)."""
        own = [self.name] if self.backends is not None else []
        return own + super().pool_names()

    def template_text(self) -> str | None:
        """The configured template (inline or read from its file), None for the default."""
        if self.chat_template_file is not None:
            return self.chat_template_file.read_text(encoding="utf-8")
        return self.chat_template


class LimitsConfig(_Section):
    """Per-request limits and the timing of streams and shutdown."""

    stream_buffer_events: Annotated[int, Field(ge=1)] = 256
    """Backend events buffered per stream while the client reads slower than they arrive
    (merged into one Delta when the client catches up)."""
    stall_timeout_seconds: Seconds = 30.0
    """A client that takes nothing for this long with the buffer full: the backend stream is
    cancelled and the call ends with RESOURCE_EXHAUSTED (CLIENT_TOO_SLOW)."""
    shutdown_grace_seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 30.0
    """On SIGTERM/SIGINT, running streams may finish within this; then they are cancelled."""
    max_attempts: Annotated[int, Field(ge=1, le=10)] = 2
    """Backends tried per request (another one only before the first token, for retryable
    failures: overloaded, unavailable)."""
    retry_backoff_seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.02
    retry_backoff_max_seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 1.0
    """Wait before attempt n+1: backoff * 2^(n-1), at most the max, times a random 0.5-1
    (jitter), and never past the caller's deadline."""
    max_prompt_chars: Annotated[int, Field(ge=1)] | None = None
    """Longest prompt (after the chat template) in characters; null: listen.max_message_bytes."""
    max_stop_sequences: Annotated[int, Field(ge=0)] = 4
    """Used when a backend's /info does not say."""
    max_top_n_tokens: Annotated[int, Field(ge=0)] = 5
    max_cache_ttl_seconds: Annotated[int, Field(ge=0)] = 86400


PositiveInt = Annotated[int, Field(ge=1)]
Priority = Annotated[int, Field(ge=0, le=9)]
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class QuotaConfig(_Section):
    """Rate limits of a tenant or of one key; null: no limit."""

    requests_per_minute: PositiveInt | None = None
    tokens_per_minute: PositiveInt | None = None
    """Prompt + generated tokens. A request reserves its prompt and max_new_tokens up front and
    is settled with its real usage when it ends."""
    max_concurrent_streams: PositiveInt | None = None


class ApiKeyConfig(_Section):
    """One API key of a tenant. Only its SHA-256 is kept: from the config (`sha256`, see
    `streamgate hash-key`) or from an environment variable holding the key (`key_env`)."""

    name: Name
    """Shown in logs and metrics instead of the key."""
    sha256: str | None = None
    key_env: str | None = None
    limits: QuotaConfig = Field(default_factory=QuotaConfig)
    """Limits of this key alone, on top of its tenant's."""

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str | None) -> str | None:
        if value is not None and not _SHA256.match(value.lower()):
            raise ValueError("must be 64 hex digits (streamgate hash-key prints it)")
        return None if value is None else value.lower()

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.sha256 is None) == (self.key_env is None):
            raise ValueError("set exactly one of sha256 and key_env")
        return self


class KeyFileEntry(ApiKeyConfig):
    """One entry of `auth.keys_file`: a key and the tenant it belongs to."""

    tenant: Name


class TenantConfig(_Section):
    """A tenant: who may call what, how much, and how urgently."""

    name: Name
    keys: list[ApiKeyConfig] = []
    routes: list[str] = ["*"]
    """Routes the tenant may use ("*": all)."""
    priority: Priority = 5
    """Place in the admission queue: higher goes first (0-9)."""
    allow_priority_header: bool = False
    """Requests may set their own priority with `x-priority` (0 to `priority`)."""
    cache_namespace: Name | None = None
    """Tenants sharing a namespace share cached responses; default: the tenant's own."""
    admin: bool = False
    """May call the admin API."""
    limits: QuotaConfig = Field(default_factory=QuotaConfig)


class AuthConfig(_Section):
    """API keys (`authorization: Bearer <key>`). Off: every call is tenant `default`."""

    enabled: bool = False
    keys_file: ReadableFile | None = None
    """A YAML list of more keys, each `{tenant, name, sha256 or key_env, limits}`, kept apart
    from the config."""


class AdmissionConfig(_Section):
    """The gateway-wide bound on upstream streams and the queue in front of it."""

    max_active_streams: PositiveInt = 256
    """Streams to backends at once; more requests wait in the queue."""
    max_queued: Annotated[int, Field(ge=0)] = 1024
    """Requests waiting at once; beyond it: RESOURCE_EXHAUSTED (QUEUE_FULL)."""
    max_queue_wait_seconds: Seconds = 30.0
    """Longest wait (the caller's deadline may cut it shorter): RESOURCE_EXHAUSTED."""


class RedisConfig(_Section):
    """The shared cache tier: entries written through to Redis, read when the local tier misses.

    Redis is never on a request's critical path for longer than `timeout_seconds`: on an error
    or a timeout the tier is marked down and skipped (requests see misses) until a background
    ping succeeds again.
    """

    url: str = "redis://127.0.0.1:6379/0"
    """`redis://[user:password@]host:port/db` (or `rediss://` for TLS, `unix://` for a socket)."""
    timeout_seconds: Annotated[float, Field(gt=0, le=5)] = 0.05
    """Bound of one lookup or write; past it the request goes on without Redis."""
    admin_timeout_seconds: Seconds = 30.0
    """Bound of an InvalidateCache on Redis (it scans the gateway's keys)."""
    reconnect_seconds: Seconds = 1.0
    """Interval of the pings that bring a down tier back."""
    max_connections: Annotated[int, Field(ge=1)] = 64
    key_prefix: str = "streamgate:"
    """Every key the gateway writes starts with this (several fleets may share a Redis)."""

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value


class CacheConfig(_Section):
    """The exact response cache: the in-process tier, and optionally a shared Redis tier."""

    enabled: bool = True
    max_entries: Annotated[int, Field(ge=1)] = 10000
    max_bytes: Annotated[int, Field(ge=1024)] = 256 * 1024 * 1024
    default_ttl_seconds: Annotated[int, Field(ge=1)] = 3600
    """Lifetime of an entry whose request set none (at most limits.max_cache_ttl_seconds)."""
    redis: RedisConfig | None = None
    """The shared tier (off when absent)."""


class LoggingConfig(_Section):
    """structlog output on stderr: one line per request, plus events."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_lines: bool = Field(True, alias="json")
    """JSON lines (true) or human-readable console output (false)."""
    log_prompts: bool = False
    """Include prompt text in request lines (off: prompts may be personal data)."""

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class MetricsConfig(_Section):
    """Prometheus metrics over HTTP (`GET /metrics`)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: Port = 9464


class EmbeddedConfig(_Section):
    """The engine started as a child process when no backends are configured."""

    model: str = "tiny"
    route: Name = "tiny"
    """Name of the route served by the embedded engine when no routes are given."""
    args: list[str] = []
    """Extra `streamgate engine` flags, e.g. ["--max-total-tokens", "1024"]."""
    startup_timeout_seconds: Seconds = 180.0
    stop_timeout_seconds: Seconds = 10.0
    """SIGTERM, then SIGKILL after this."""
    max_new_tokens: Annotated[int, Field(ge=1)] | None = 256
    """Default max_new_tokens of the embedded route."""

    @field_validator("args")
    @classmethod
    def _no_owned_flags(cls, value: list[str]) -> list[str]:
        for arg in value:
            flag = arg.split("=", 1)[0]
            if flag in ("--host", "--port", "--model"):
                raise ValueError(f"{flag} is set by the gateway (use embedded.model)")
        return value


class GatewayConfig(_Section):
    """Everything `streamgate serve` reads; every section has defaults."""

    listen: ListenConfig = Field(default_factory=ListenConfig)
    backends: list[BackendConfig] = []
    pools: list[PoolConfig] = []
    routes: list[RouteConfig] = []
    rules: list[RuleConfig] = []
    """Tried in order; the first that matches picks the target (otherwise the route's)."""
    default_route: Name | None = None
    """The route of requests with an empty `model`; default: the first route."""
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    # model_validate: mypy (without the pydantic plugin) does not see aliased fields' defaults.
    logging: LoggingConfig = Field(default_factory=lambda: LoggingConfig.model_validate({}))
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    embedded: EmbeddedConfig = Field(default_factory=EmbeddedConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    tenants: list[TenantConfig] = []
    """Without auth, the tenant named `default` (if any) applies to every call."""
    admission: AdmissionConfig = Field(default_factory=AdmissionConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)

    @property
    def uses_embedded_engine(self) -> bool:
        """No backends configured: the gateway starts and serves the embedded engine."""
        return not self.backends

    @property
    def max_prompt_chars(self) -> int:
        """The longest prompt accepted, in characters."""
        return self.limits.max_prompt_chars or self.listen.max_message_bytes

    def effective_routes(self) -> list[RouteConfig]:
        """The routes served: as configured, else one per backend (named after it), else the
        embedded engine's route."""
        if self.routes:
            return list(self.routes)
        if self.backends:
            return [RouteConfig(name=b.name, backends=[b.name]) for b in self.backends]
        return [
            RouteConfig(
                name=self.embedded.route,
                backends=[EMBEDDED_BACKEND],
                max_new_tokens=self.embedded.max_new_tokens,
            )
        ]

    def effective_pools(self) -> list[PoolConfig]:
        """The pools: as configured, plus one per route that lists its own backends."""
        own = [
            PoolConfig(name=r.name, backends=r.backends)
            for r in self.effective_routes()
            if r.backends is not None
        ]
        return [*self.pools, *own]

    def effective_default_route(self) -> str:
        """The name of the default route."""
        return self.default_route or self.effective_routes()[0].name

    @model_validator(mode="after")
    def _references(self) -> Self:
        problems: list[str] = []
        for kind, names in (
            ("backends", [b.name for b in self.backends]),
            ("routes", [r.name for r in self.routes]),
            ("pools (named or a route's own)", [p.name for p in self.effective_pools()]),
            ("tenants", [t.name for t in self.tenants]),
            ("keys", [f"{t.name}/{k.name}" for t in self.tenants for k in t.keys]),
        ):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                problems.append(f"{kind}: duplicate names {', '.join(dupes)}")
        known = {b.name for b in self.backends} or {EMBEDDED_BACKEND}
        pools = {p.name for p in self.pools}
        for i, pool in enumerate(self.pools):
            for name in pool.backends:
                if name not in known:
                    problems.append(f"pools[{i}].backends: unknown backend '{name}'")
        pools |= {r.name for r in self.routes if r.backends is not None}
        for kind, targets in (("routes", self.routes), ("rules", self.rules)):
            for i, target in enumerate(targets):
                for name in target.pool_names():
                    if name not in pools:
                        problems.append(f"{kind}[{i}]: unknown pool '{name}'")
        for i, route in enumerate(self.routes):
            for name in route.backends or ():
                if name not in known:
                    hint = (
                        ""
                        if self.backends
                        else f" (no backends are configured: only '{EMBEDDED_BACKEND}' exists)"
                    )
                    problems.append(f"routes[{i}].backends: unknown backend '{name}'{hint}")
        route_names = [r.name for r in self.effective_routes()]
        if self.default_route is not None and self.default_route not in route_names:
            problems.append(
                f"default_route: unknown route '{self.default_route}' "
                f"(routes: {', '.join(route_names)})"
            )
        for i, tenant in enumerate(self.tenants):
            for name in tenant.routes:
                if name != "*" and name not in route_names:
                    problems.append(f"tenants[{i}].routes: unknown route '{name}'")
        if problems:
            raise ValueError("; ".join(problems))
        return self


# ---- loading -----------------------------------------------------------------------------------


def load_config(
    path: str | os.PathLike[str] | None, env: Mapping[str, str] | None = None
) -> GatewayConfig:
    """Read the config file (None: defaults only), apply `STREAMGATE_*` overrides from `env`
    (default: os.environ) and validate. Raises `ConfigError` listing every problem."""
    env = os.environ if env is None else env
    source = "defaults"
    base_dir = Path.cwd()
    data: dict[str, Any] = {}
    if path is not None:
        file = Path(path)
        source = str(file)
        base_dir = file.resolve().parent
        data = _read_file(file)
    overrides = _apply_env(data, env)
    try:
        return GatewayConfig.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as err:
        raise ConfigError(_describe(err, source, overrides)) from None


def _read_file(file: Path) -> dict[str, Any]:
    suffix = file.suffix.lower()
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read config file {file}: {err.strerror or err}") from None
    try:
        if suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        elif suffix == ".toml":
            data = tomllib.loads(text)
        else:
            raise ConfigError(
                f"{file}: unknown config format '{suffix}' (use .yaml, .yml or .toml)"
            )
    except yaml.YAMLError as err:
        raise ConfigError(f"{file}: invalid YAML: {err}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{file}: invalid TOML: {err}") from None
    if data is None:  # an empty YAML file
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: the top level must be a mapping of sections")
    return data


def _apply_env(data: dict[str, Any], env: Mapping[str, str]) -> dict[tuple[str | int, ...], str]:
    """Write the overrides into `data`; returns {location: variable name} for error messages."""
    sections = set(GatewayConfig.model_fields)
    applied: dict[tuple[str | int, ...], str] = {}
    found: list[tuple[list[str], str]] = []
    for var in env:
        if not var.startswith(ENV_PREFIX):
            continue
        keys = var[len(ENV_PREFIX) :].lower().split("__")
        if keys[0] not in sections or any(not k for k in keys):
            continue  # someone else's variable (STREAMGATE_ADDRESS, ...)
        found.append((keys, var))
    # Indexes in numeric order: entries appended by index (…__9__…, …__10__…) arrive in order.
    found.sort(key=lambda item: [(0, int(k), "") if k.isdigit() else (1, 0, k) for k in item[0]])
    for keys, var in found:
        location = _set_path(data, keys, _env_value(env[var]), var)
        applied[location] = var
    return applied


def _env_value(raw: str) -> Any:
    text = raw.strip()
    if text.startswith(("[", "{")):
        try:
            return json.loads(text)
        except ValueError:
            return raw
    if text == "null":
        return None
    return raw


def _set_path(data: dict[str, Any], keys: list[str], value: Any, var: str) -> tuple[str | int, ...]:
    node: dict[str, Any] | list[Any] = data
    location: list[str | int] = []
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(node, list):
            if not key.isdigit() or int(key) > len(node):
                raise ConfigError(
                    f"{var}: '{key}' is not an index of {_dotted(tuple(location))} "
                    f"(0 to {len(node)}; {len(node)} appends an entry)"
                )
            index = int(key)
            if index == len(node):
                node.append(None)
            location.append(index)
            if last:
                node[index] = value
                break
            if node[index] is None:
                node[index] = {}
            child = node[index]
        else:
            location.append(key)
            if last:
                node[key] = value
                break
            if node.get(key) is None:
                # A list section gets a list; anything else a mapping.
                node[key] = [] if _is_list_field(location) else {}
            child = node[key]
        if not isinstance(child, dict | list):
            raise ConfigError(f"{var}: {_dotted(tuple(location))} is not a section")
        node = child
    return tuple(location)


def _is_list_field(location: list[str | int]) -> bool:
    return len(location) == 1 and location[0] in (
        "backends",
        "pools",
        "routes",
        "rules",
        "tenants",
    )


def _dotted(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out or "(top level)"


def _describe(
    err: ValidationError, source: str, overrides: Mapping[tuple[str | int, ...], str]
) -> str:
    lines = [f"invalid configuration ({source}):"]
    for problem in err.errors(include_url=False):
        # Pydantic adds the validator kind to some locations ("function-after[...]"): drop it.
        loc = tuple(p for p in problem["loc"] if not (isinstance(p, str) and "[" in p))
        message = problem["msg"].removeprefix("Value error, ")
        detail = ""
        if problem["type"] not in ("missing", "extra_forbidden", "value_error") and loc:
            detail = f" (got {problem['input']!r})"
        var = next((v for at, v in overrides.items() if loc[: len(at)] == at), None)
        if var is None:
            var = next((v for at, v in overrides.items() if at[: len(loc)] == loc and loc), None)
        if var is not None:
            detail += f" [from {var}]"
        if not loc:  # cross-field problems (GatewayConfig._references) name their own paths
            lines.extend(f"  {part}" for part in message.split("; "))
            continue
        lines.append(f"  {_dotted(loc)}: {message}{detail}")
    return "\n".join(lines)
