"""`tenants` and `auth`: who may call, with which API keys, which routes, and how much (the
sections of tenancy/ and of the per-tenant quotas in admission/)."""

from __future__ import annotations

import re
from typing import Annotated, Self

from pydantic import Field, field_validator, model_validator

from streamgate.config.base import Name, PositiveInt, ReadableFile, Section

__all__ = ["ApiKeyConfig", "AuthConfig", "KeyFileEntry", "QuotaConfig", "TenantConfig"]

Priority = Annotated[int, Field(ge=0, le=9)]
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class QuotaConfig(Section):
    """Rate limits of a tenant or of one key; null: no limit."""

    requests_per_minute: PositiveInt | None = None
    tokens_per_minute: PositiveInt | None = None
    """Prompt + generated tokens. A request reserves its prompt and max_new_tokens up front and
    is settled with its real usage when it ends."""
    max_concurrent_streams: PositiveInt | None = None


class ApiKeyConfig(Section):
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


class TenantConfig(Section):
    """A tenant: who may call what, how much, and how urgently."""

    name: Name
    keys: list[ApiKeyConfig] = Field(default_factory=list)
    routes: list[str] = Field(default_factory=lambda: ["*"])
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


class AuthConfig(Section):
    """API keys (`authorization: Bearer <key>`). Off: every call is tenant `default`."""

    enabled: bool = False
    keys_file: ReadableFile | None = None
    """A YAML list of more keys, each `{tenant, name, sha256 or key_env, limits}`, kept apart
    from the config."""
