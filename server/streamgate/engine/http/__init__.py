"""The engine's HTTP API: TGI's routes over the engine (aiohttp).

server (routes, SSE streams, overload, disconnects, `serve`) -> validation (TGI's request
checks and messages) -> responses (the engine's results as TGI's JSON); metrics (Prometheus,
TGI's names). The wire format itself is `streamgate.tgi`.
"""
