"""The model and its text: what the engine's core runs, and how tokens become text.

config (the architecture fields of HF `config.json`) -> loader (weights, quantization, the
built-in `tiny`) -> llama (the decoder over the paged KV cache) and quant (weight-only int8 /
int4); tokenizer, detokenizer (incremental, UTF-8 safe) and stopping (stop sequences).
"""
