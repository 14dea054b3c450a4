"""The TGI-compatible torch inference engine (`streamgate engine`).

Shape of vLLM's core as small as nano-vllm: config -> sequence -> block manager -> scheduler ->
model runner -> sampler -> detokenizer, driven by a step loop thread (llm_engine) and served over
TGI's HTTP protocol (server).
"""
