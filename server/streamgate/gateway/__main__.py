"""`python -m streamgate.gateway [--config PATH]`: run the gateway (what `streamgate serve` does).

Exit codes: 0 after a clean shutdown, 2 for a configuration that cannot be used or a gateway
that cannot start (port taken, embedded engine failed).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from streamgate import eventloop
from streamgate.config import ConfigError, load_config
from streamgate.gateway.app import serve
from streamgate.gateway.embedded import EmbeddedEngineError


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments, load the config and serve until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m streamgate.gateway",
        description="Run the streamgate gRPC gateway (STREAMGATE_* variables override the "
        "config; without backends it starts the embedded engine).",
    )
    parser.add_argument("--config", metavar="PATH", help="YAML or TOML config file")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        eventloop.run(serve(config, lambda: load_config(args.config)))
    except (ConfigError, EmbeddedEngineError, OSError) as err:
        print(f"streamgate gateway: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
