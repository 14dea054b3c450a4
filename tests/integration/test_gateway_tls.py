"""TLS and mutual TLS on the gateway's port, with certificates made at test time."""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from streamgate_client import tls_credentials
from streamgate_client.v1 import generation_pb2 as pb
from streamgate_client.v1 import generation_pb2_grpc as pb_grpc
from support.fake import Fake
from support.gateways import Gateway, engine_backend
from support.processes import subprocess_env


@dataclass
class Issued:
    cert: Path
    key: Path


class Authority:
    """A CA that signs server and client certificates into `directory`."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.name = name
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} CA")])
        self._subject = subject
        self._cert = (
            self._builder(subject, self._key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.cert = directory / f"{name}-ca.pem"
        self.cert.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def _builder(
        self, subject: x509.Name, public: ec.EllipticCurvePublicKey
    ) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._subject if hasattr(self, "_subject") else subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )

    def issue(self, common_name: str, *, server: bool) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        builder = self._builder(subject, key.public_key())
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        cert = builder.sign(self._key, hashes.SHA256())
        issued = Issued(
            self.directory / f"{self.name}-{common_name}.pem",
            self.directory / f"{self.name}-{common_name}.key",
        )
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        issued.key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return issued


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    directory = tmp_path_factory.mktemp("pki")
    ca, other = Authority(directory, "ours"), Authority(directory, "other")
    return {
        "ca": ca,
        "server": ca.issue("gateway", server=True),
        "client": ca.issue("client", server=False),
        "stranger": other.issue("stranger", server=False),
        "other_ca": other,
    }


def tls_gateway(
    start: Callable[..., Gateway], fake: Fake, pki: dict[str, object], *, mutual: bool
) -> Gateway:
    server, ca = pki["server"], pki["ca"]
    assert isinstance(server, Issued) and isinstance(ca, Authority)
    tls: dict[str, object] = {"cert_file": str(server.cert), "key_file": str(server.key)}
    if mutual:
        tls["client_ca_file"] = str(ca.cert)
    return start(
        {
            "listen": {"host": "127.0.0.1", "port": 0, "tls": tls},
            "backends": [engine_backend(fake.url, "fake")],
        },
        name="mtls" if mutual else "tls",
    )


def secure_stub(
    gateway: Gateway, ca: Path, client: Issued | None = None
) -> tuple[grpc.Channel, pb_grpc.GenerationServiceStub]:
    credentials = tls_credentials(
        str(ca), str(client.cert) if client else None, str(client.key) if client else None
    )
    channel = grpc.secure_channel(gateway.address, credentials)
    return channel, pb_grpc.GenerationServiceStub(channel)


def works(stub: pb_grpc.GenerationServiceStub) -> bool:
    try:
        messages = list(stub.GenerateStream(pb.GenerateStreamRequest(prompt="hi"), timeout=10))
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.UNAVAILABLE, err  # a refused handshake
        return False
    assert messages[-1].WhichOneof("event") == "end"
    assert stub.ListModels(pb.ListModelsRequest(), timeout=10).models
    return True


def test_tls(gateways: Callable[..., Gateway], fake: Fake, pki: dict[str, object]) -> None:
    gateway = tls_gateway(gateways, fake, pki, mutual=False)
    ca, other = pki["ca"], pki["other_ca"]
    assert isinstance(ca, Authority) and isinstance(other, Authority)
    channel, stub = secure_stub(gateway, ca.cert)
    with channel:
        assert works(stub)
    with grpc.insecure_channel(gateway.address) as plain:  # plaintext to a TLS port
        assert not works(pb_grpc.GenerationServiceStub(plain))
    channel, stub = secure_stub(gateway, other.cert)  # a CA that did not sign the server
    with channel:
        assert not works(stub)


def test_mutual_tls(gateways: Callable[..., Gateway], fake: Fake, pki: dict[str, object]) -> None:
    gateway = tls_gateway(gateways, fake, pki, mutual=True)
    ca, client, stranger = pki["ca"], pki["client"], pki["stranger"]
    assert isinstance(ca, Authority) and isinstance(client, Issued)
    assert isinstance(stranger, Issued)
    for who, expected in ((client, True), (None, False), (stranger, False)):
        channel, stub = secure_stub(gateway, ca.cert, who)
        with channel:
            assert works(stub) is expected, who


def test_the_cli_connects_with_tls(
    gateways: Callable[..., Gateway], fake: Fake, pki: dict[str, object]
) -> None:
    gateway = tls_gateway(gateways, fake, pki, mutual=True)
    ca, client = pki["ca"], pki["client"]
    assert isinstance(ca, Authority) and isinstance(client, Issued)
    command = [sys.executable, "-m", "streamgate", "generate", "--target", gateway.address,
               "--ca-file", str(ca.cert), "--cert-file", str(client.cert),
               "--key-file", str(client.key), "--max-new-tokens", "3", "hi"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=subprocess_env())
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("t0 t1 t2")


def test_a_key_that_does_not_match_its_certificate_fails_at_start(
    tmp_path: Path, pki: dict[str, object]
) -> None:
    server, client = pki["server"], pki["client"]
    assert isinstance(server, Issued) and isinstance(client, Issued)
    config = tmp_path / "bad.yaml"
    config.write_text(
        "listen: {host: 127.0.0.1, port: 0, tls: "
        f"{{cert_file: '{server.cert}', key_file: '{client.key}'}}}}\n"
        "backends: [{name: b, url: 'http://127.0.0.1:9'}]\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "streamgate", "serve", "--config", str(config)],
        capture_output=True, text=True, timeout=120, env=subprocess_env(),
    )  # fmt: skip
    assert done.returncode == 2
    assert "cannot listen" in done.stderr and "TLS" in done.stderr
