"""The `streamgate-client` distribution stands alone: it needs only grpcio, grpcio-status and
protobuf, and none of its modules reaches for the server (streamgate) or its dependencies."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib import metadata

from packaging.requirements import Requirement

# Each a top-level package the server needs and a client must not.
SERVER_ONLY = ("streamgate", "torch", "aiohttp", "redis")

_IMPORT_EVERY_MODULE = textwrap.dedent(
    """
    import importlib, pkgutil, sys

    class Refuse:
        # Before every other finder: installed or not, these packages cannot be imported.
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in REFUSED:
                raise ImportError(f"streamgate_client imported {name}")
            return None

    sys.meta_path.insert(0, Refuse())
    import streamgate_client
    prefix = "streamgate_client."
    names = [m.name for m in pkgutil.walk_packages(streamgate_client.__path__, prefix)]
    for name in names:
        if name != "streamgate_client.__main__":  # runs the command line
            importlib.import_module(name)
    # Also nothing imported before the refusal was in place (e.g. by a .pth file).
    leaked = sorted(m for m in sys.modules if m.partition(".")[0] in REFUSED)
    assert not leaked, leaked
    print(len(names))
    """
)


def test_every_module_imports_without_the_server_or_its_dependencies() -> None:
    # -I: an isolated interpreter (no PYTHONPATH, so not the server's source tree of the tests).
    result = subprocess.run(
        [sys.executable, "-I", "-c", f"REFUSED = {SERVER_ONLY!r}\n{_IMPORT_EVERY_MODULE}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) >= 10  # the client's modules, the CLI and the generated v1 code


def test_the_distribution_depends_on_grpcio_grpcio_status_and_protobuf_only() -> None:
    requirements = [Requirement(r) for r in metadata.requires("streamgate-client") or ()]
    assert sorted(r.name for r in requirements) == ["grpcio", "grpcio-status", "protobuf"]
    assert all(r.marker is None and not r.extras for r in requirements)


def test_the_distribution_declares_its_command() -> None:
    [script] = [
        e for e in metadata.entry_points(group="console_scripts") if e.name == "streamgate-client"
    ]
    assert script.value == "streamgate_client.cli:main"
    assert script.dist is not None and script.dist.name == "streamgate-client"
