"""The exact cache key: everything that can change the answer is part of it, and nothing else."""

from __future__ import annotations

from streamgate.cache import CacheKeyParts, cache_key


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


def test_the_order_parameters_were_set_in_does_not_matter() -> None:
    a = cache_key(parts(parameters={"seed": 1, "max_new_tokens": 4}))
    assert a == cache_key(parts(parameters={"max_new_tokens": 4, "seed": 1}))
