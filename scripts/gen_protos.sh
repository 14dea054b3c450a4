#!/usr/bin/env bash
# Generate the Python code of the proto package streamgate.v1 (owned by the client distribution,
# clients/python) and loadtest/streamgate.protoset from protos/.
#
#   scripts/gen_protos.sh             regenerate both (make protos)
#   scripts/gen_protos.sh --protoset  regenerate only the protoset (make protoset)
#   scripts/gen_protos.sh --check     regenerate into a temp dir, fail on any difference with the
#                                     checked-in files (make protos-check)
#
# Layout: proto package `streamgate.v1` becomes Python package `streamgate_client.v1`, so
# protos/streamgate/v1/generation.proto -> clients/python/streamgate_client/v1/generation_pb2.py,
# imported as `streamgate_client.v1.generation_pb2` (the server imports it from there too).
# protoc runs with `-I protos`, so descriptor file names stay `streamgate/v1/*.proto` (what
# reflection, protosets and other languages see); protoc's Python generators then write
# `from streamgate.v1 import ...`, which this script rewrites to `from streamgate_client.v1
# import ...`. That is the only post-processing.
#
# The whole v1/ directory is generated (its __init__.py too) so that the check can compare
# directories exactly. Output depends only on the versions of grpcio-tools (protoc) and
# mypy-protobuf, which pyproject pins.
#
# PYTHON selects the interpreter (default: .venv/bin/python, else python3); its environment must
# have grpcio-tools and mypy-protobuf.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
mode="${1:-all}"
case "$mode" in all | --check | --protoset) ;; *) echo "usage: $0 [--check|--protoset]" >&2; exit 2 ;; esac

api_dir=clients/python/streamgate_client/v1
protoset=loadtest/streamgate.protoset
# mypy-protobuf's plugins are console scripts next to the interpreter, not necessarily on PATH.
scripts_dir="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"

# Sorted, relative paths: protoc output (and the protoset's file order) depends on both.
mapfile -t proto_files < <(cd protos && find . -name '*.proto' | sed 's|^\./||' | LC_ALL=C sort)
for f in "${proto_files[@]}"; do
    if [[ "$f" != streamgate/v1/* ]]; then
        echo "error: $f: only protos under protos/streamgate/v1/ map to streamgate_client.v1" >&2
        exit 1
    fi
done

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

protoc() { "$PYTHON" -m grpc_tools.protoc -I protos "$@"; }

gen_protoset() {
    # --include_imports: ghz and grpcurl need every dependency in the set (well-known types from
    # grpcio-tools' bundled include path). Source info keeps the comments for `grpcurl describe`.
    protoc --include_imports --include_source_info --descriptor_set_out="$1" "${proto_files[@]}"
}

gen_api() {
    local out="$1" raw="$tmp/raw"
    mkdir -p "$raw"
    protoc \
        --plugin=protoc-gen-mypy="$scripts_dir/protoc-gen-mypy" \
        --plugin=protoc-gen-mypy_grpc="$scripts_dir/protoc-gen-mypy_grpc" \
        --python_out="$raw" --grpc_python_out="$raw" \
        --mypy_out="$raw" --mypy_grpc_out="$raw" \
        "${proto_files[@]}" 2>"$tmp/protoc.err" || { cat "$tmp/protoc.err" >&2; exit 1; }
    # mypy-protobuf reports each file it writes; keep anything else (warnings) visible.
    grep -v '^Writing mypy to ' "$tmp/protoc.err" >&2 || true
    mkdir -p "$out"
    cp -R "$raw/streamgate/v1/." "$out/"
    "$PYTHON" - "$out" <<'EOF'
import pathlib
import re
import sys

out = pathlib.Path(sys.argv[1])
rewrites = [
    # Cross-module imports of our own generated code.
    (re.compile(r"^(\s*)from streamgate\.v1 ", re.M), r"\1from streamgate_client.v1 "),
    (re.compile(r"^(\s*)import streamgate\.v1\.", re.M), r"\1import streamgate_client.v1."),
    # The module name given to the builder becomes the message classes' __module__ (pickle
    # and repr use it), so it must be the real import path.
    (re.compile(r"(BuildTopDescriptorsAndMessages\(DESCRIPTOR, ')streamgate\.v1\."), r"\1streamgate_client.v1."),
]
for path in sorted(out.rglob("*.py*")):
    text = path.read_text()
    for pattern, replacement in rewrites:
        text = pattern.sub(replacement, text)
    path.write_text(text)

(out / "__init__.py").write_text(
    '"""Python code of the proto package streamgate.v1, generated from protos/.\n\n'
    "Regenerate with `make protos`; `make protos-check` fails when it is stale. Do not edit.\n"
    '"""\n'
)
EOF
}

case "$mode" in
all)
    gen_api "$tmp/api"
    rm -rf "$api_dir"
    cp -R "$tmp/api" "$api_dir"
    gen_protoset "$protoset"
    echo "generated $api_dir and $protoset"
    ;;
--protoset)
    gen_protoset "$protoset"
    echo "generated $protoset"
    ;;
--check)
    gen_api "$tmp/api"
    gen_protoset "$tmp/streamgate.protoset"
    stale=0
    diff -r -x __pycache__ "$tmp/api" "$api_dir" >&2 || stale=1
    cmp -s "$tmp/streamgate.protoset" "$protoset" || { echo "$protoset differs" >&2; stale=1; }
    if ((stale)); then
        echo "error: generated protobuf code is stale: run 'make protos' and commit the result" >&2
        exit 1
    fi
    echo "generated protobuf code is up to date"
    ;;
esac
