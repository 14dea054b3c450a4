"""streamgate: a gRPC streaming inference gateway for LLMs and its TGI-compatible engine."""

__version__ = "0.1.0"
