"""Routing: route names to pools of backend replicas, and which replica serves a request."""

from streamgate.routing.pickers import (
    LeastLoad,
    Picker,
    PickerName,
    PickRequest,
    PowerOfTwo,
    PrefixAffinity,
    RoundRobin,
)
from streamgate.routing.pool import Pool
from streamgate.routing.prefix import block_hashes
from streamgate.routing.prefix_index import PrefixIndex
from streamgate.routing.replica import BackendLoad, Replica
from streamgate.routing.table import Route, RouteNotFound, RouteTable

__all__ = [
    "BackendLoad",
    "LeastLoad",
    "PickRequest",
    "Picker",
    "PickerName",
    "Pool",
    "PowerOfTwo",
    "PrefixAffinity",
    "PrefixIndex",
    "Replica",
    "RoundRobin",
    "Route",
    "RouteNotFound",
    "RouteTable",
    "block_hashes",
]
