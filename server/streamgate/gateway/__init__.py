"""The gateway: one request pipeline, and the doors in front of it.

- pipeline/: the request path, one module per stage in request order (sNN_*), run by
  `run.Pipeline.generate`; it yields plain events and raises `GatewayError`s, and knows no
  transport
- grpc/: the gRPC door: server, interceptors (call, draining, authentication), servicers,
  status mapping, health, reflection
- fleet/: the backends in use: topology from the config, sessions, health checks, load
  scraping, shadow copies, the embedded engine
- messages.py: the pipeline's events as streamgate.v1 messages (what every door sends)
- calls.py: the calls in progress (draining, interruption at shutdown)
- app.py: the composition root (`start_gateway`, `serve`); lifecycle.py: reload and shutdown
"""
