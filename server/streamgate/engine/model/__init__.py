"""The model and its text: what the engine's core runs, and how tokens become text.

config (the architecture fields of HF `config.json`) -> loader (what `--model` names: the
built-in `tiny`, packaged models, GGUF files read by gguf_file and gguf_vocab, HF directories;
weights, quantization) -> llama (the decoder over the paged KV cache) and quant (weight-only
int8 / int4, and 4-bit GGUF blocks as they are); tokenizer, detokenizer (incremental, UTF-8
safe) and stopping (stop sequences).
"""
