"""Routing: route names to pools of backend replicas, and which replica serves a request."""

from streamgate.routing.picker import LeastInFlightPicker
from streamgate.routing.replica import Replica
from streamgate.routing.table import Route, RouteNotFound, RouteTable

__all__ = ["LeastInFlightPicker", "Replica", "Route", "RouteNotFound", "RouteTable"]
