"""Build the model and tokenizer: from a local HF-format directory, or the built-in `tiny` one.

`tiny` has deterministic random weights from a fixed seed and the byte-level tokenizer built in
code; `write_tiny_model` stores the same thing as an HF directory so the directory loader is
exercised on real files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import xxhash
from safetensors.torch import load_file, save_file

from streamgate.engine.config import EngineConfig
from streamgate.engine.model.config import ModelConfig, ModelConfigError
from streamgate.engine.model.llama import LlamaForCausalLM
from streamgate.engine.model.quant import quantize_model, weight_bytes
from streamgate.engine.model.tokenizer import Tokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# Printable ASCII and newline in the tiny tokenizer (byte b has id b + 3).
_TINY_READABLE_IDS = [b + 3 for b in range(0x20, 0x7F)] + [0x0A + 3]


@dataclass(frozen=True)
class TinyShape:
    """Architecture of a generated tiny model (defaults: the built-in `tiny`)."""

    vocab_size: int = 259
    hidden_size: int = 128
    intermediate_size: int = 352
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False
    seed: int = 0

    def model_config(self) -> ModelConfig:
        return ModelConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_kv_heads,
            max_position_embeddings=self.max_position_embeddings,
            tie_word_embeddings=self.tie_word_embeddings,
            bos_token_id=1,
            eos_token_id=2,
        )


@dataclass(frozen=True)
class ModelInfo:
    """What /info and /metrics report about the loaded weights."""

    model_id: str
    model_sha: str
    dtype: str
    device: str
    quantize: str | None
    num_parameters: int
    weight_bytes: int


@dataclass
class LoadedModel:
    model: LlamaForCausalLM
    tokenizer: Tokenizer
    config: ModelConfig
    info: ModelInfo


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def tiny_checkpoint(shape: TinyShape) -> dict[str, torch.Tensor]:
    """Random weights in HF checkpoint layout, identical for the same shape and seed."""
    config = shape.model_config()
    gen = torch.Generator().manual_seed(shape.seed)
    hd = config.dim_per_head

    def normal(*size: int, std: float = 0.02) -> torch.Tensor:
        return torch.randn(*size, generator=gen) * std

    h, inter = config.hidden_size, config.intermediate_size
    weights = {"model.embed_tokens.weight": normal(config.vocab_size, h, std=1.0)}
    for i in range(config.num_hidden_layers):
        p = f"model.layers.{i}."
        weights[p + "self_attn.q_proj.weight"] = normal(config.num_attention_heads * hd, h, std=0.1)
        weights[p + "self_attn.k_proj.weight"] = normal(config.num_key_value_heads * hd, h, std=0.1)
        weights[p + "self_attn.v_proj.weight"] = normal(config.num_key_value_heads * hd, h)
        weights[p + "self_attn.o_proj.weight"] = normal(h, config.num_attention_heads * hd)
        weights[p + "mlp.gate_proj.weight"] = normal(inter, h)
        weights[p + "mlp.up_proj.weight"] = normal(inter, h)
        weights[p + "mlp.down_proj.weight"] = normal(h, inter)
        weights[p + "input_layernorm.weight"] = torch.ones(h)
        weights[p + "post_attention_layernorm.weight"] = torch.ones(h)
    weights["model.norm.weight"] = torch.ones(h)
    if not config.tie_word_embeddings:
        head = normal(config.vocab_size, h, std=0.15)
        if config.vocab_size == 259:
            # Favour printable bytes so that demo output of the random model reads as text.
            readable = torch.zeros(config.vocab_size, dtype=torch.bool)
            readable[_TINY_READABLE_IDS] = True
            readable[2] = True  # EOS stays reachable
            head[~readable] *= 0.2
        weights["lm_head.weight"] = head
    return weights


def fuse_checkpoint(
    weights: dict[str, torch.Tensor], config: ModelConfig
) -> dict[str, torch.Tensor]:
    """Map HF names onto the model's fused q/k/v and gate/up parameters."""
    fused: dict[str, torch.Tensor] = {}
    for name, tensor in weights.items():
        if ".self_attn.k_proj." in name or ".self_attn.v_proj." in name:
            continue
        if ".mlp.up_proj." in name or "rotary_emb" in name:
            continue
        if ".self_attn.q_proj." in name:
            k = weights[name.replace("q_proj", "k_proj")]
            v = weights[name.replace("q_proj", "v_proj")]
            fused[name.replace("q_proj", "qkv_proj")] = torch.cat([tensor, k, v])
        elif ".mlp.gate_proj." in name:
            up = weights[name.replace("gate_proj", "up_proj")]
            fused[name.replace("gate_proj", "gate_up_proj")] = torch.cat([tensor, up])
        else:
            fused[name] = tensor
    if config.tie_word_embeddings or "lm_head.weight" not in fused:
        fused["lm_head.weight"] = fused["model.embed_tokens.weight"]
    return fused


def checkpoint_sha(weights: dict[str, torch.Tensor]) -> str:
    """Content hash of a checkpoint: names, shapes, dtypes and bytes."""
    h = xxhash.xxh3_128()
    for name in sorted(weights):
        t = weights[name].contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ModelConfigError(f"{path} has no *.safetensors weights")
    weights: dict[str, torch.Tensor] = {}
    for file in files:
        weights.update(load_file(str(file)))
    return weights


def read_model_config(config: EngineConfig) -> ModelConfig:
    """The architecture of the configured model, without loading its weights."""
    if config.model == "tiny":
        return TinyShape().model_config()
    config_file = Path(config.model) / "config.json"
    if not config_file.is_file():
        raise ModelConfigError(f"{config.model} is not a model directory (no config.json)")
    return ModelConfig.from_dict(json.loads(config_file.read_text()))


def load_model(config: EngineConfig, max_positions: int | None = None) -> LoadedModel:
    """Load the configured model onto its device, in its dtype, quantized if asked."""
    device = torch.device(config.device) if config.device else default_device()
    model_config = read_model_config(config)
    if config.model == "tiny":
        weights = tiny_checkpoint(TinyShape())
        tokenizer = Tokenizer.tiny()
    else:
        weights = read_checkpoint(Path(config.model))
        tokenizer = Tokenizer.from_dir(config.model)
    sha = checkpoint_sha(weights)
    positions = max_positions or model_config.max_position_embeddings
    model = LlamaForCausalLM(model_config, positions)
    missing = model.load_state_dict(fuse_checkpoint(weights, model_config), strict=False)
    if missing.missing_keys or missing.unexpected_keys:
        raise ModelConfigError(
            f"checkpoint does not match the architecture: missing {missing.missing_keys[:5]}, "
            f"unexpected {missing.unexpected_keys[:5]}"
        )
    del weights
    num_parameters = sum(p.numel() for p in model.parameters())
    model = model.to(device=device, dtype=DTYPES[config.dtype]).eval()
    model.requires_grad_(False)
    if config.quantize:
        quantize_model(model, config.quantize)
    info = ModelInfo(
        model_id=config.model_id or config.model,
        model_sha=sha,
        dtype=config.dtype,
        device=device.type,
        quantize=config.quantize,
        num_parameters=num_parameters,
        weight_bytes=weight_bytes(model),
    )
    return LoadedModel(model=model, tokenizer=tokenizer, config=model_config, info=info)


def write_tiny_model(path: str | Path, shape: TinyShape | None = None) -> Path:
    """Write a tiny model as an HF directory: config.json, model.safetensors, tokenizer files."""
    shape = shape or TinyShape()
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    config = shape.model_config()
    (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    weights = tiny_checkpoint(shape)
    save_file({k: v.contiguous() for k, v in weights.items()}, str(out / "model.safetensors"))
    Tokenizer.tiny(vocab_size=shape.vocab_size).save(out)
    return out
