"""Load tests of the gateway: ghz configs (ghz/), the token-aware load generator (loadgen/),
the soak, the capacity measurement and the benchmarks (bench_*.py).

The tools run from the repository root as modules (`python -m loadtest`, `python -m
loadtest.loadgen`, ...); docs/reliability.md and docs/benchmarks.md say what they measure.
"""
