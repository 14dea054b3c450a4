"""The token-aware load generator: time to first token, every inter-token gap, tokens and the
end status of each streaming call, under a closed or an open (Poisson) loop; a summary, a JSON
file and a self-contained HTML report (`python -m loadtest.loadgen --help`).

Modules, in the order a run uses them: mix (the prompt mix file), plan (the requests of a run),
targets (gateway over gRPC, or TGI directly), runner (closed and open loops), record (what one
call saw), stats (the numbers), progress (live counts), report (HTML), text (terminal tables),
session (a run from plan to files).
"""
