#!/usr/bin/env bash
# Make sure redis-server and redis-cli are installed: the tests of the shared cache tier start a
# real redis-server on loopback. On Debian/Ubuntu they come from the `redis-server` package;
# elsewhere, install Redis >= 7 by hand.
set -euo pipefail

if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "redis-server (>= 7) is needed by the tests: install it, then run make test again" >&2
    exit 1
fi
sudo=""
if [[ "$(id -u)" != 0 ]]; then sudo="sudo"; fi
echo "installing redis-server (Debian package) for the tests of the shared cache tier" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends redis-server >/dev/null
