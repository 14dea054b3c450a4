"""The Python client of streamgate: the generated `streamgate.v1` code (`streamgate_client.v1`)."""

__version__ = "0.1.0"
