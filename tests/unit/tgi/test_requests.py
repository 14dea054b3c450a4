"""TGI's request bodies, parsed strictly, with one readable message per bad body."""

from __future__ import annotations

import pytest

from streamgate.tgi import (
    CompatGenerateRequest,
    GenerateParameters,
    GenerateRequest,
    RequestParseError,
    parse_request,
)


def test_parameters_default_when_absent_or_null() -> None:
    for body in (b'{"inputs":"Hi"}', b'{"inputs":"Hi","parameters":null}'):
        assert parse_request(GenerateRequest, body).params == GenerateParameters()
    req = parse_request(GenerateRequest, b'{"inputs":"Hi","parameters":{"max_new_tokens":3}}')
    assert req.params.max_new_tokens == 3


def test_stream_is_accepted_everywhere_and_chooses_only_on_compat() -> None:
    assert parse_request(GenerateRequest, b'{"inputs":"Hi","stream":true}').stream is True
    assert parse_request(CompatGenerateRequest, b'{"inputs":"Hi","stream":true}').stream is True


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b'{"inputs":"Hi","parameters":{"max_tokens":5}}', "parameters.max_tokens"),
        (b'{"inputs":"Hi","prompt":"x"}', "prompt"),
        (b'{"parameters":{}}', "inputs"),
        (b'{"inputs":"Hi","parameters":{"top_k":2.5}}', "parameters.top_k"),
        (b'{"inputs":5}', "inputs"),
        (b"{inputs:", ""),
    ],
)
def test_bad_bodies(body: bytes, where: str) -> None:
    with pytest.raises(RequestParseError) as caught:
        parse_request(GenerateRequest, body)
    message = str(caught.value)
    assert message.startswith("Failed to deserialize the JSON body into the target type: ")
    assert where in message
