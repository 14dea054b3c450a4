"""`GatewayConfig`: the whole configuration, one field per section, and the checks that span
sections (names that must exist, names that must be unique)."""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from streamgate.config.admission import AdmissionConfig
from streamgate.config.backends import BackendConfig
from streamgate.config.base import Name, Section
from streamgate.config.cache import CacheConfig
from streamgate.config.embedded import EMBEDDED_BACKEND, EmbeddedConfig
from streamgate.config.limits import LimitsConfig
from streamgate.config.listen import ListenConfig
from streamgate.config.routing import PoolConfig, RouteConfig, RuleConfig
from streamgate.config.telemetry import LoggingConfig, MetricsConfig
from streamgate.config.tenancy import AuthConfig, TenantConfig

__all__ = ["GatewayConfig"]


class GatewayConfig(Section):
    """Everything `streamgate serve` reads; every section has defaults."""

    listen: ListenConfig = Field(default_factory=ListenConfig)
    backends: list[BackendConfig] = Field(default_factory=list)
    pools: list[PoolConfig] = Field(default_factory=list)
    routes: list[RouteConfig] = Field(default_factory=list)
    rules: list[RuleConfig] = Field(default_factory=list)
    """Tried in order; the first that matches picks the target (otherwise the route's)."""
    default_route: Name | None = None
    """The route of requests with an empty `model`; default: the first route."""
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    # model_validate: mypy (without the pydantic plugin) does not see aliased fields' defaults.
    logging: LoggingConfig = Field(default_factory=lambda: LoggingConfig.model_validate({}))
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    embedded: EmbeddedConfig = Field(default_factory=EmbeddedConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    tenants: list[TenantConfig] = Field(default_factory=list)
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
                name=self.embedded.route_name,
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
        # One message, problems joined by "; ": the loader lists them one per line.
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
