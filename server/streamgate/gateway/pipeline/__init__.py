"""The request path of every generation call, a module per stage in request order:

1. s01_call: the call (request id, deadline, metadata labels, caller) and its record
2. s02_auth: API key → caller (run by the transport), may the caller use the route
3. s03_prepare: validate every field, render chat messages, TGI's parameters
4. s04_choose: routing rules → the pool (and shadow pool), the queue priority
5. s05_cache: the cache plan, the lookup, the store of a finished answer
6. s06_coalesce: flights: identical calls share one generation; a hit is a finished flight
7. s07_admit: quotas, then a slot among the upstream streams
8. s08_upstream: pick a replica, send, first token; retry elsewhere before it
9. s09_relay: the backend stream through a bounded buffer, one step per Delta
10. s10_respond: Start, Deltas, End (and `collect` for unary calls)
11. s11_finish: metrics and the log line of every call

`run.Pipeline.generate` runs them in order; `events` holds what it yields, `errors` what it
raises.
"""
