"""The engine's core: requests in, one token per running sequence per step out.

sequence (the state of one request) -> block_manager (paged KV blocks, prefix cache) ->
scheduler (continuous batching, preemption) -> runner (a batch as tensors, forward) -> sampler
(the next token of every sequence); llm_engine runs that step loop in its own thread.
"""
