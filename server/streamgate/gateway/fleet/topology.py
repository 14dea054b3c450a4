"""The routing topology built from a configuration: replicas, pools, routes, rules, templates.

Built once at start and again on every reload. A reload keeps the objects whose configuration
did not change (a replica keeps its session, health, load and in-flight count; a pool keeps its
picker and prefix index), so that running streams and routing state survive it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from streamgate.backends import TGIBackend
from streamgate.config import (
    BackendConfig,
    ConditionConfig,
    ConfigError,
    GatewayConfig,
    PoolConfig,
    RouteConfig,
    RuleConfig,
)
from streamgate.gateway.pipeline.run import Routing
from streamgate.gateway.pipeline.s03_prepare import (
    ChatTemplate,
    RouteTemplates,
    TemplateSyntaxError,
)
from streamgate.routing import (
    AllOf,
    AnyOf,
    CircuitBreaker,
    Condition,
    FieldTest,
    LeastLoad,
    Picker,
    Pool,
    PowerOfTwo,
    PrefixAffinity,
    PrefixIndex,
    Replica,
    RoundRobin,
    Route,
    Router,
    RouteTable,
    Rule,
    Target,
)

__all__ = ["Topology", "build_topology"]


@dataclass
class Topology:
    """Everything that decides where a request goes."""

    backends: dict[str, BackendConfig]
    replicas: dict[str, Replica]
    pools: dict[str, Pool]
    pool_configs: dict[str, PoolConfig]
    routing: Routing
    """Routes, rules and chat templates: what the pipeline reads."""

    @property
    def routes(self) -> RouteTable:
        """The routes served."""
        return self.routing.routes

    def new_replicas(self, previous: Topology | None) -> list[Replica]:
        """Replicas that `previous` did not have (their sessions must be started)."""
        kept = set(map(id, previous.replicas.values())) if previous else set()
        return [r for r in self.replicas.values() if id(r) not in kept]

    def gone_replicas(self, previous: Topology) -> list[Replica]:
        """Replicas of `previous` that this topology does not use (to drain and close)."""
        kept = set(map(id, self.replicas.values()))
        return [r for r in previous.replicas.values() if id(r) not in kept]


def build_topology(
    config: GatewayConfig, backends: Sequence[BackendConfig], previous: Topology | None = None
) -> Topology:
    """The topology of `config` (whose backends are `backends`: the embedded engine's, when
    none are configured), reusing `previous`'s unchanged replicas and pools. Raises
    ConfigError (a chat template that does not compile)."""
    templates = _templates(config)
    replicas: dict[str, Replica] = {}
    for b in backends:
        old = previous.replicas.get(b.name) if previous else None
        before = previous.backends.get(b.name) if previous else None
        # Draining is a state of the same replica, not another replica.
        if (
            old is not None
            and before is not None
            and before.model_copy(update={"draining": b.draining}) == b
        ):
            old.draining = b.draining
            replicas[b.name] = old
        else:
            replicas[b.name] = _replica(b)
    pools: dict[str, Pool] = {}
    configs = {p.name: p for p in config.effective_pools()}
    for name, p in configs.items():
        kept = previous.pools.get(name) if previous else None
        members = tuple(replicas[n] for n in p.backends)
        unchanged = (
            kept is not None
            and previous is not None
            and previous.pool_configs.get(name) == p
            and kept.replicas == members
        )
        pools[name] = kept if unchanged and kept is not None else _pool(p, replicas)
    routes = RouteTable(
        [
            Route(
                name=r.name,
                target=_target(r, pools, own=r.name if r.backends is not None else None),
                default_max_new_tokens=r.max_new_tokens,
            )
            for r in config.effective_routes()
        ],
        default=config.effective_default_route(),
    )
    router = Router([Rule(r.name, _condition(r.when), _target(r, pools)) for r in config.rules])
    return Topology(
        backends={b.name: b for b in backends},
        replicas=replicas,
        pools=pools,
        pool_configs=configs,
        routing=Routing(routes, router, templates),
    )


def _replica(b: BackendConfig) -> Replica:
    backend = TGIBackend(b)
    # supports_tokenize False: never asked (None: probed by the first health check).
    tokenize = None if b.count_prompt_tokens else False
    c = b.circuit
    return Replica(
        name=b.name,
        backend=backend,
        model_label=b.model,
        supports_tokenize=tokenize,
        circuit=CircuitBreaker(c.failures, c.open_seconds, c.max_open_seconds),
        draining=b.draining,
    )


def _pool(p: PoolConfig, replicas: Mapping[str, Replica]) -> Pool:
    picker: Picker
    if p.picker == "prefix_affinity":
        picker = PrefixAffinity(
            PrefixIndex(p.prefix.max_blocks_per_replica),
            balance_abs=p.prefix.balance_abs,
            balance_rel=p.prefix.balance_rel,
            min_match=p.prefix.min_match,
        )
    elif p.picker == "round_robin":
        picker = RoundRobin()
    elif p.picker == "least_load":
        picker = LeastLoad()
    else:
        picker = PowerOfTwo()
    return Pool(
        name=p.name,
        replicas=tuple(replicas[name] for name in p.backends),
        picker=picker,
        block_bytes=p.prefix.block_bytes,
        max_blocks=p.prefix.max_blocks,
    )


def _target(
    t: RouteConfig | RuleConfig, pools: Mapping[str, Pool], own: str | None = None
) -> Target:
    """A route's or rule's target; `own`: the route lists its backends (its pool has its name)."""
    if t.split is not None:
        arms = tuple((pools[arm.pool], arm.weight) for arm in t.split)
    else:
        arms = ((pools[own or t.pool or ""], 1.0),)
    return Target(
        arms=arms,
        fallback=pools[t.fallback] if t.fallback else None,
        shadow=pools[t.shadow] if t.shadow else None,
    )


def _condition(c: ConditionConfig) -> Condition:
    if c.all is not None:
        return AllOf(tuple(_condition(p) for p in c.all))
    if c.any is not None:
        return AnyOf(tuple(_condition(p) for p in c.any))
    return FieldTest(
        field=(c.field or "").lower(),
        equals=c.equals,
        one_of=frozenset(c.in_) if c.in_ is not None else None,
        prefix=c.prefix,
        pattern=re.compile(c.regex) if c.regex is not None else None,
        exists=c.exists,
    )


def _templates(config: GatewayConfig) -> RouteTemplates:
    """Compile every configured chat template now: a broken one is a configuration error."""
    configured = {r.name: i for i, r in enumerate(config.routes)}
    out: dict[str, ChatTemplate] = {}
    problems: list[str] = []
    for route in config.effective_routes():
        source = route.template_text()
        if source is None:
            continue  # the backends' own, else ChatML (RouteTemplates)
        try:
            out[route.name] = ChatTemplate(
                source, bos_token=route.bos_token, eos_token=route.eos_token
            )
        except TemplateSyntaxError as err:
            where = f"routes[{configured.get(route.name, 0)}]"
            key = "chat_template_file" if route.chat_template_file else "chat_template"
            problems.append(f"  {where}.{key}: {err}")
    if problems:
        raise ConfigError("invalid configuration:\n" + "\n".join(problems))
    return RouteTemplates(out)
