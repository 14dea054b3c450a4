"""Telemetry: structured logs (structlog) and Prometheus metrics."""
