"""Python code generated from protos/ (proto package streamgate.X is streamgate.api.X).

Regenerate with `make protos`; `make protos-check` fails when it is stale. Do not edit.
"""
