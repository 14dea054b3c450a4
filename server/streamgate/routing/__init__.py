"""Routing: route names to pools of backend replicas, and which replica serves a request."""

from streamgate.routing.circuit import CircuitBreaker, CircuitState
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
from streamgate.routing.replica import BackendLoad, Lease, Replica
from streamgate.routing.router import Router, Rule
from streamgate.routing.rules import AllOf, AnyOf, Condition, Facts, FieldTest
from streamgate.routing.split import choose_arm
from streamgate.routing.table import Route, RouteNotFound, RouteTable
from streamgate.routing.target import Target

__all__ = [
    "AllOf",
    "AnyOf",
    "BackendLoad",
    "CircuitBreaker",
    "CircuitState",
    "Condition",
    "Facts",
    "FieldTest",
    "Lease",
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
    "Router",
    "Rule",
    "Target",
    "block_hashes",
    "choose_arm",
]
