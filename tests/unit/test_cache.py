"""The exact cache: keys, the in-process tier, and the cache plan of a request."""

from __future__ import annotations

import pytest

from streamgate.backends import StreamDetails, StreamEvent, TGIBackend, TGIParameters
from streamgate.backends.tgi import Token
from streamgate.cache import CachedResponse, CacheKeyParts, LocalCache, cache_key
from streamgate.cache.codec import decode, encode
from streamgate.config import GatewayConfig
from streamgate.gateway.caching import deterministic, plan_cache
from streamgate.gateway.prepare import PreparedRequest
from streamgate.routing import Pool, Replica, RoundRobin
from streamgate.tenancy import Caller, Tenancy
from streamgate_client.v1 import generation_pb2 as pb


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def parts(**overrides: object) -> CacheKeyParts:
    base: dict[str, object] = {
        "scope": "tenant:a", "route": "r", "model": "m@1", "prompt": "hello",
        "parameters": {"max_new_tokens": 4}, "tokens": False,
    }  # fmt: skip
    return CacheKeyParts(**{**base, **overrides})  # type: ignore[arg-type]


def test_every_part_of_the_key_matters() -> None:
    key = cache_key(parts())
    assert len(key) == 16 and key == cache_key(parts())
    for change in (
        {"scope": "tenant:b"}, {"route": "r2"}, {"model": "m@2"}, {"prompt": "hello!"},
        {"parameters": {"max_new_tokens": 5}}, {"parameters": {"max_new_tokens": 4, "seed": 1}},
        {"tokens": True},
    ):  # fmt: skip
        assert cache_key(parts(**change)) != key, change
    # The order parameters were set in does not matter.
    a = cache_key(parts(parameters={"seed": 1, "max_new_tokens": 4}))
    assert a == cache_key(parts(parameters={"max_new_tokens": 4, "seed": 1}))


def response(n: int, text: str = "x") -> CachedResponse:
    events = tuple(
        StreamEvent(index=i, token=Token(id=i, text=text, logprob=None, special=False))
        for i in range(n)
    )
    return CachedResponse(
        events, scope="tenant:a", model="m", backend="b", pool="p", input_tokens=1, seed=None
    )


def test_entries_expire_and_are_bounded_by_count_and_bytes() -> None:
    clock = Clock()
    evicted: list[int] = []
    cache = LocalCache(2, 10_000, clock=clock, on_evict=lambda: evicted.append(1))
    cache.put(b"a", response(1), ttl=10)
    assert cache.get(b"a") is not None
    clock.now = 10.0
    assert cache.get(b"a") is None and len(cache) == 0 and cache.bytes == 0
    for key in (b"1", b"2", b"3"):
        cache.put(key, response(1), ttl=100)
    assert len(cache) == 2 and cache.get(b"1") is None and len(evicted) == 1
    big = response(50, "y" * 100)  # about 8 KB
    cache.put(b"big", big, ttl=100)
    assert cache.bytes <= cache.max_bytes and cache.get(b"big") is big
    cache.put(b"huge", response(500, "z" * 100), ttl=100)  # larger than the whole cache
    assert cache.get(b"huge") is None
    entries = len(cache)
    assert cache.clear() == entries and len(cache) == 0 and cache.bytes == 0


def test_greedy_and_seeded_answers_are_deterministic() -> None:
    assert deterministic(TGIParameters())
    assert deterministic(TGIParameters(do_sample=False, max_new_tokens=3))
    assert not deterministic(TGIParameters(temperature=0.7))
    assert not deterministic(TGIParameters(do_sample=True))
    assert deterministic(TGIParameters(do_sample=True, temperature=0.7, seed=3))


def prepared(**parameters: object) -> PreparedRequest:
    return PreparedRequest(
        inputs="hi",
        parameters=TGIParameters(**parameters),
        chat=False,
        tokens=False,
        seed=None,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("mode", "read", "write"),
    [
        (pb.CACHE_MODE_UNSPECIFIED, True, True),
        (pb.CACHE_MODE_BYPASS, False, False),
        (pb.CACHE_MODE_NO_STORE, True, False),
        (pb.CACHE_MODE_ONLY_IF_CACHED, True, True),
    ],
)
def test_cache_modes(mode: int, read: bool, write: bool) -> None:
    caller = Tenancy.from_config(GatewayConfig()).anonymous
    pool = Pool("p", (Replica("b", TGIBackend("http://b:1")),), RoundRobin())
    plan = plan_cache(
        pb.CacheControl(mode=mode),  # type: ignore[arg-type]
        prepared(),
        caller,
        "r",
        pool,
        enabled=True,
        default_ttl=60,
    )
    assert (plan.read, plan.write) == (read, write)
    sampled = plan_cache(
        pb.CacheControl(mode=mode), prepared(temperature=0.5), caller, "r", pool,  # type: ignore[arg-type]
        enabled=True, default_ttl=60,
    )  # fmt: skip
    assert not sampled.write  # not stored without a seed...
    opted_in = plan_cache(
        pb.CacheControl(mode=mode, store_sampled=True), prepared(temperature=0.5), caller, "r",  # type: ignore[arg-type]
        pool, enabled=True, default_ttl=60,
    )  # fmt: skip
    assert opted_in.write == write  # ...unless the request opts in


def test_a_request_namespace_stays_inside_the_tenants_scope() -> None:
    config = GatewayConfig.model_validate(
        {
            "tenants": [
                {"name": "default"},
                {"name": "a"},
                {"name": "b", "cache_namespace": "shared"},
                {"name": "c", "cache_namespace": "shared"},
            ]
        }
    )
    tenancy = Tenancy.from_config(config)
    pool = Pool("p", (Replica("b", TGIBackend("http://b:1")),), RoundRobin())

    def key(tenant: str, namespace: str = "") -> bytes:
        caller = Caller(tenancy.tenants[tenant])
        control = pb.CacheControl(namespace=namespace)
        return plan_cache(control, prepared(), caller, "r", pool, enabled=True, default_ttl=1).key

    assert key("a") != key("b")  # tenants are apart...
    assert key("b") == key("c")  # ...unless configured into one namespace
    assert key("a", "team") != key("b", "team")  # a request namespace never crosses tenants
    assert key("a", "team") != key("a")


def test_the_shared_tier_codec_round_trips_every_field() -> None:
    top = (Token(id=7, text="é", logprob=-0.5, special=False),)
    events = (
        StreamEvent(index=0, token=Token(id=1, text="a\n", logprob=-0.25, special=False),
                    top_tokens=top),
        StreamEvent(index=1, token=Token(id=2, text="", logprob=None, special=True),
                    generated_text="a\n",
                    details=StreamDetails("eos_token", 2, input_length=5, seed=42)),
    )  # fmt: skip
    entry = CachedResponse(
        events, scope="tenant:a/x", model="m@1", backend="b", pool="p", input_tokens=5, seed=42
    )
    assert decode(encode(entry)) == entry


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"{}",
        b'{"format": 2}',
        b'{"format": 1, "scope": "s", "model": "m", "backend": "b", "pool": "p", '
        b'"input_tokens": 1, "seed": null, "events": []}',  # no last event
        b'{"format": 1, "scope": "s", "model": "m", "backend": "b", "pool": "p", '
        b'"input_tokens": 1, "seed": null, "events": [{"i": 0, "t": [1, "x"]}]}',
        b"\xff\xfe",
    ],
)
def test_an_unreadable_shared_value_is_an_error_not_a_crash(data: bytes) -> None:
    with pytest.raises(ValueError):
        decode(data)
