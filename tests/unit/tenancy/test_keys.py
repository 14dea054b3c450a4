"""API keys: random, kept only as their SHA-256, looked up by it."""

from __future__ import annotations

import pytest

from streamgate.admission import Quota, QuotaLimits
from streamgate.tenancy import ApiKey, KeyStore, Tenant, hash_key, new_key


def tenant(name: str) -> Tenant:
    return Tenant(
        name=name,
        routes=None,
        priority=0,
        allow_priority_header=False,
        cache_namespace=name,
        admin=False,
        quota=Quota(f"tenant {name}", QuotaLimits()),
    )


def test_new_keys_are_random_and_hash_to_hex() -> None:
    a, b = new_key(), new_key()
    assert a != b and a.startswith("sg-") and len(a) > 30
    assert len(hash_key(a)) == 64 and hash_key(a) == hash_key(a)


def test_a_key_is_found_by_its_plaintext_and_nothing_else() -> None:
    key = ApiKey("ci", hash_key("sg-secret"), tenant("acme"))
    store = KeyStore([key])
    assert store.lookup("sg-secret") is key
    assert store.lookup(hash_key("sg-secret")) is None  # the hash is not a key
    assert store.lookup("sg-other") is None
    assert len(store) == 1


def test_the_same_key_twice_is_refused_naming_both() -> None:
    first = ApiKey("ci", hash_key("sg-k"), tenant("acme"))
    again = ApiKey("x", hash_key("sg-k"), tenant("b"))
    with pytest.raises(ValueError, match="acme/ci and b/x are the same key"):
        KeyStore([first, again])
