"""Tenants, their keys and the caller of one request, built once from the configuration.

With auth off every call is the tenant `default` (its settings come from a configured tenant
of that name, else the defaults: every route, no limits). With auth on, a call names its key in
`authorization: Bearer <key>` and is its key's tenant.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml  # type: ignore[import-untyped, unused-ignore]
from pydantic import TypeAdapter, ValidationError

from streamgate.admission import Quota, QuotaLimits
from streamgate.config import (
    ApiKeyConfig,
    ConfigError,
    GatewayConfig,
    KeyFileEntry,
    QuotaConfig,
    TenantConfig,
)
from streamgate.tenancy.keys import KeyStore, hash_key

__all__ = ["DEFAULT_TENANT", "ApiKey", "Caller", "Tenancy", "Tenant"]

DEFAULT_TENANT = "default"


@dataclass(eq=False)
class Tenant:
    """A tenant's settings and its quota."""

    name: str
    routes: frozenset[str] | None
    """Routes it may use (None: all)."""
    priority: int
    allow_priority_header: bool
    cache_namespace: str
    admin: bool
    quota: Quota

    def may_use(self, route: str) -> bool:
        """The tenant may call `route` (whether the route exists or not)."""
        return self.routes is None or route in self.routes


@dataclass(eq=False)
class ApiKey:
    """One key: its hash, its tenant, and its own quota (None: only the tenant's applies)."""

    name: str
    sha256: str
    tenant: Tenant
    quota: Quota | None = None

    @property
    def label(self) -> str:
        """`tenant/name`: how logs and metrics name the key."""
        return f"{self.tenant.name}/{self.name}"


@dataclass(frozen=True)
class Caller:
    """Who makes one request."""

    tenant: Tenant
    key: ApiKey | None = None
    """None when auth is off."""

    @property
    def quotas(self) -> tuple[Quota, ...]:
        """The quotas the request counts against: the tenant's, then the key's."""
        if self.key is not None and self.key.quota is not None:
            return (self.tenant.quota, self.key.quota)
        return (self.tenant.quota,)


@dataclass
class Tenancy:
    """Every tenant and key of the gateway (one instance, from the composition root)."""

    auth_enabled: bool
    tenants: dict[str, Tenant]
    keys: KeyStore
    anonymous: Caller
    """The caller of every request when auth is off: the tenant `default`."""

    @classmethod
    def from_config(cls, config: GatewayConfig, env: Mapping[str, str] | None = None) -> Tenancy:
        """Build tenants and keys; plaintext keys from `key_env` variables are hashed here and
        not kept. Raises ConfigError (a missing variable, a bad keys file, a key twice)."""
        env = os.environ if env is None else env
        tenants = {t.name: _tenant(t) for t in config.tenants}
        default = tenants.get(DEFAULT_TENANT) or _tenant(TenantConfig(name=DEFAULT_TENANT))
        problems: list[str] = []
        keys: list[ApiKey] = []
        for i, t in enumerate(config.tenants):
            for j, k in enumerate(t.keys):
                key = _api_key(k, tenants[t.name], env, f"tenants[{i}].keys[{j}]", problems)
                if key is not None:
                    keys.append(key)
        if config.auth.keys_file is not None:
            for where, entry in _keys_file(config.auth.keys_file, problems):
                tenant = tenants.get(entry.tenant)
                if tenant is None:
                    problems.append(f"{where}.tenant: unknown tenant '{entry.tenant}'")
                    continue
                key = _api_key(entry, tenant, env, where, problems)
                if key is not None:
                    keys.append(key)
        store = KeyStore([])
        try:
            store = KeyStore(keys)
        except ValueError as err:
            problems.append(str(err))
        if config.auth.enabled and not keys and not problems:
            problems.append(
                "auth.enabled: no API keys are configured (tenants[].keys or auth.keys_file)"
            )
        if problems:
            raise ConfigError("invalid configuration:\n" + "\n".join(f"  {p}" for p in problems))
        return cls(config.auth.enabled, tenants, store, Caller(default))


def _tenant(t: TenantConfig) -> Tenant:
    return Tenant(
        name=t.name,
        routes=None if "*" in t.routes else frozenset(t.routes),
        priority=t.priority,
        allow_priority_header=t.allow_priority_header,
        cache_namespace=t.cache_namespace or f"tenant:{t.name}",
        admin=t.admin,
        quota=Quota(f"tenant {t.name}", _limits(t.limits)),
    )


def _limits(limits: QuotaConfig) -> QuotaLimits:
    return QuotaLimits(
        requests_per_minute=limits.requests_per_minute,
        tokens_per_minute=limits.tokens_per_minute,
        max_concurrent_streams=limits.max_concurrent_streams,
    )


def _api_key(
    k: ApiKeyConfig, tenant: Tenant, env: Mapping[str, str], where: str, problems: list[str]
) -> ApiKey | None:
    if k.sha256 is not None:
        digest = k.sha256
    else:
        plain = env.get(k.key_env or "", "")
        if not plain:
            problems.append(f"{where}.key_env: the variable {k.key_env} is not set")
            return None
        digest = hash_key(plain)
    quota = (
        None
        if k.limits == QuotaConfig()
        else Quota(f"key {tenant.name}/{k.name}", _limits(k.limits))
    )
    return ApiKey(k.name, digest, tenant, quota)


_ENTRIES = TypeAdapter(list[KeyFileEntry])


def _keys_file(path: Path, problems: list[str]) -> list[tuple[str, KeyFileEntry]]:
    """The entries of `auth.keys_file` with their location (problems go to `problems`)."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    except (OSError, yaml.YAMLError) as err:
        problems.append(f"auth.keys_file: cannot read {path}: {err}")
        return []
    try:
        entries = _ENTRIES.validate_python(raw)
    except ValidationError as err:
        for e in err.errors(include_url=False):
            loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"])
            message = e["msg"].removeprefix("Value error, ")
            problems.append(f"auth.keys_file{loc}: {message}")
        return []
    return [(f"auth.keys_file[{i}]", entry) for i, entry in enumerate(entries)]
