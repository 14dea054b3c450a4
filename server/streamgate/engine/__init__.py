"""The TGI-compatible torch inference engine (`streamgate engine`).

Shape of vLLM's core as small as nano-vllm: `config` (EngineConfig) and `cli` (its flags);
`model/` (weights, tokenizer, text), `core/` (sequences, KV blocks, scheduler, runner, sampler
and the step loop thread) and `http/` (TGI's HTTP protocol over the step loop).
"""
