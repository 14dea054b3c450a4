"""The route table: route name → its pool and per-route settings."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from streamgate.routing.replica import Replica
from streamgate.routing.target import Target

__all__ = ["Route", "RouteNotFound", "RouteTable"]


class RouteNotFound(LookupError):
    """No route of that name."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name = name
        self.known = sorted(known)
        super().__init__(f"unknown model '{name}' (models: {', '.join(self.known)})")


@dataclass(eq=False)
class Route:
    """A route: the name clients put in `model` and the target that serves it (unless a
    routing rule picks another)."""

    name: str
    target: Target
    default_max_new_tokens: int | None = None
    """max_new_tokens of requests that set none (None: the backend's default)."""

    @property
    def replicas(self) -> tuple[Replica, ...]:
        """The replicas that may serve it (every pool of its target but the shadow)."""
        return self.target.replicas()

    @property
    def healthy(self) -> bool:
        """At least one replica is healthy."""
        return any(r.healthy for r in self.replicas)

    def model_ids(self) -> list[str]:
        """The distinct model ids of its replicas, in replica order."""
        return list(dict.fromkeys(r.model_id for r in self.replicas))

    @property
    def max_total_tokens(self) -> int | None:
        """The smallest context of the replicas that reported one (None: none did)."""
        known = [r.info.max_total_tokens for r in self.replicas if r.info is not None]
        values = [v for v in known if v is not None]
        return min(values) if values else None

    @property
    def max_input_tokens(self) -> int | None:
        """The smallest prompt limit of the replicas that reported one."""
        known = [r.info.max_input_tokens for r in self.replicas if r.info is not None]
        values = [v for v in known if v is not None]
        return min(values) if values else None

    def max_stop_sequences(self, default: int) -> int:
        """The smallest stop-sequence limit reported, else `default`."""
        known = [r.info.max_stop_sequences for r in self.replicas if r.info is not None]
        values = [v for v in known if v is not None]
        return min(values) if values else default


class RouteTable:
    """Routes by name, and the default route for requests that name none."""

    def __init__(self, routes: Iterable[Route], default: str) -> None:
        self._routes = {route.name: route for route in routes}
        if default not in self._routes:
            raise ValueError(f"default route '{default}' is not a route")
        self.default = default

    def resolve(self, name: str) -> Route:
        """The route called `name` ("" = the default). Raises `RouteNotFound`."""
        route = self._routes.get(name or self.default)
        if route is None:
            raise RouteNotFound(name, self._routes)
        return route

    def __iter__(self) -> Iterator[Route]:
        return iter(self._routes.values())

    def __len__(self) -> int:
        return len(self._routes)

    def replicas(self) -> list[Replica]:
        """Every replica, once, in route order."""
        return list({id(r): r for route in self for r in route.replicas}.values())
