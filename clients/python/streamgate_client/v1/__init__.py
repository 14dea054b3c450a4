"""Python code of the proto package streamgate.v1, generated from protos/.

Regenerate with `make protos`; `make protos-check` fails when it is stale. Do not edit.
"""
