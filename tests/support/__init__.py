"""Helpers shared by the tests (no tests here): `from support.<module> import ...`.

- processes: child process environment, stopping, free ports, bounded waits
- engines: `streamgate engine` processes and HTTP helpers against them
- fake_tgi: the fault-injecting fake TGI server (a script); fake: it as a test process
- redis_server: a real redis-server on loopback
- gateways: `streamgate serve` processes and clients of them
- rpc: reading gRPC streams, statuses and google.rpc details
"""
