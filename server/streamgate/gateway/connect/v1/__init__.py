"""The Connect runtime's glue for streamgate.v1, generated from protos/.

Regenerate with `make connect-protos`; `make connect-protos-check` fails when it is stale.
Do not edit.
"""
