"""Helpers shared by the tests (no tests here): `from support.<module> import ...`.

- processes: child process environment, stopping, free ports, bounded waits (`wait_for`, and
  `wait_until` inside an event loop)
- engines: `streamgate engine` processes and HTTP helpers against them
- fake_tgi: the fault-injecting fake TGI server (a script; `create_app(Behaviour(...))`);
  fake: it as a test process (`start_fake`), or served by the test's own loop (`serve_fake`)
- redis_server: a real redis-server on loopback
- gateways: `streamgate serve` processes and clients of them
- rpc: reading gRPC streams, statuses (a call's, or a `grpc.Status`) and google.rpc details
- stub_generation: a stub GenerationService (grpc.aio) for the Python client's tests
- routes: replicas (never connected), their /info, pools and routes for routing unit tests
- events: backend stream events and cached answers made by hand
- pipelines: a real generation pipeline in process, wired as gateway/app.py wires it, over
  backends the test serves (`start_pipeline`, `pipeline_config`)
"""
