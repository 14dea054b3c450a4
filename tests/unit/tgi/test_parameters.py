"""TGI's `GenerateParameters`: built by keyword, sent as only what is set, parsed strictly."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from streamgate.tgi import GenerateParameters


def test_only_set_parameters_are_sent() -> None:
    assert GenerateParameters().to_json() == {}
    params = GenerateParameters(temperature=0.0, top_k=5, stop=("a", "b"), do_sample=False, seed=0)
    assert params.to_json() == {
        "temperature": 0.0,
        "top_k": 5,
        "stop": ["a", "b"],  # a JSON array, whatever holds it
        "do_sample": False,
        "seed": 0,
    }


def test_falsy_values_are_sent_none_is_not() -> None:
    params = GenerateParameters(max_new_tokens=0, stop=(), details=False, grammar=None)
    assert params.to_json() == {"max_new_tokens": 0, "stop": [], "details": False}


def test_the_json_does_not_share_state_with_the_parameters() -> None:
    params = GenerateParameters(stop=("a",))
    sent = params.to_json()
    sent["stop"].append("b")
    sent["seed"] = 1
    assert params.to_json() == {"stop": ["a"]}


def test_equal_parameters_give_equal_json_and_hash() -> None:
    a = GenerateParameters(temperature=0.7, seed=3, stop=("x",))
    b = GenerateParameters(stop=("x",), seed=3, temperature=0.7)
    assert a == b and hash(a) == hash(b) and a.to_json() == b.to_json()


def test_frozen_and_typo_proof() -> None:
    params = GenerateParameters(top_k=5)
    with pytest.raises(ValidationError):
        params.top_k = 6
    with pytest.raises(ValidationError):
        GenerateParameters(max_tokens=5)  # type: ignore[call-arg]


def test_every_field_defaults_to_not_sent() -> None:
    defaults = GenerateParameters()
    assert all(getattr(defaults, name) is None for name in GenerateParameters.model_fields)


def test_parsed_strictly_like_serde() -> None:
    parsed = GenerateParameters.model_validate_json(b'{"stop":["a"],"temperature":1,"seed":null}')
    assert parsed == GenerateParameters(stop=("a",), temperature=1.0)
    for bad in (
        b'{"top_k": 2.5}',  # no float -> int
        b'{"top_k": "5"}',  # no string -> int
        b'{"max_new_tokens": -1}',  # u32
        b'{"seed": 18446744073709551616}',  # u64
        b'{"temperature": NaN}',  # Python's json reads it, serde does not
        b'{"stop": "a"}',
        b'{"max_tokens": 5}',  # unknown
    ):
        with pytest.raises(ValidationError):
            GenerateParameters.model_validate_json(bad)
