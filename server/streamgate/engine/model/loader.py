"""Find and build the model `--model` names: the built-in `tiny`, a packaged model, a GGUF file,
or a local HF-format directory.

`open_model` resolves the name, reads the architecture (the engine sizes its limits from it)
and refuses what cannot run; `ModelSource.load` then builds the model and tokenizer (GGUF
files: see gguf_file and gguf_vocab; packaged models: packaged). `tiny` has deterministic
random weights from a fixed seed and the byte-level tokenizer built in code;
`write_tiny_model` stores the same thing as an HF directory so the directory loader is
exercised on real files.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import xxhash
from safetensors.torch import load_file, save_file

from streamgate.engine.config import EngineConfig
from streamgate.engine.model.config import ModelConfig, ModelConfigError
from streamgate.engine.model.gguf_file import GGUFModel
from streamgate.engine.model.gguf_vocab import tokenizer_from_gguf
from streamgate.engine.model.kernels import Int8Blocks
from streamgate.engine.model.kernels.native import load_kernels
from streamgate.engine.model.llama import LlamaForCausalLM
from streamgate.engine.model.packaged import PACKAGED_MODELS
from streamgate.engine.model.quant import (
    Weight,
    cat_rows,
    load_blocks,
    quantize_model,
    weight_bytes,
)
from streamgate.engine.model.tokenizer import TINY_CHAT_TEMPLATE, Tokenizer

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


def fuse_checkpoint(weights: Mapping[str, Weight], config: ModelConfig) -> dict[str, Weight]:
    """Map HF names onto the model's fused q/k/v and gate/up parameters (`cat_rows`)."""
    fused: dict[str, Weight] = {}
    for name, tensor in weights.items():
        if ".self_attn.k_proj." in name or ".self_attn.v_proj." in name:
            continue
        if ".mlp.up_proj." in name or "rotary_emb" in name:
            continue
        if ".self_attn.q_proj." in name:
            k = weights[name.replace("q_proj", "k_proj")]
            v = weights[name.replace("q_proj", "v_proj")]
            fused[name.replace("q_proj", "qkv_proj")] = cat_rows([tensor, k, v])
        elif ".mlp.gate_proj." in name:
            up = weights[name.replace("gate_proj", "up_proj")]
            fused[name.replace("gate_proj", "gate_up_proj")] = cat_rows([tensor, up])
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


@dataclass
class ModelSource:
    """The model `--model` names, found and its architecture read; its weights not loaded yet.

    One of: the built-in tiny model (`gguf` and `directory` None), a GGUF file, or an HF
    directory.
    """

    config: ModelConfig
    model_id: str
    """/info's `model_id` unless `--model-id` says otherwise."""
    gguf: GGUFModel | None = None
    directory: Path | None = None

    def load(self, config: EngineConfig, max_positions: int | None = None) -> LoadedModel:
        """Build the model on its device in `config.dtype`, as `config` asks: a GGUF's
        Q4_0/Q4_1 weights and Q8_0 embedding and head run as they are unless
        `config.dequantize`; float weights are quantized when `config.quantize` says so.

        A Q8_0 table is dequantized after all where the native kernel is missing (not a CPU, or
        no compiler): its pure-torch path would dequantize the whole head at every step.
        """
        device = torch.device(config.device) if config.device else default_device()
        dtype = DTYPES[config.dtype]
        weights: Mapping[str, Weight]
        if self.gguf is not None:
            weights = self.gguf.weights(dequantize=config.dequantize)
            tokenizer = tokenizer_from_gguf(self.gguf)
            sha = self.gguf.sha()
        elif self.directory is not None:
            weights = read_checkpoint(self.directory)
            tokenizer = Tokenizer.from_dir(self.directory)
            sha = checkpoint_sha(weights)
        else:
            weights = tiny_checkpoint(TinyShape())
            tokenizer = Tokenizer.tiny()
            sha = checkpoint_sha(weights)
        # Floats go to their dtype before fusing (once, even for a tied head); blocks keep theirs.
        converted = {name: _placed(w, device, dtype) for name, w in weights.items()}
        del weights
        fused = fuse_checkpoint(converted, self.config)
        blocks = {name: w for name, w in fused.items() if not isinstance(w, torch.Tensor)}
        floats = {name: w for name, w in fused.items() if isinstance(w, torch.Tensor)}
        positions = max_positions or self.config.max_position_embeddings
        model = LlamaForCausalLM.from_checkpoint(
            self.config, positions, floats, absent=blocks, device=device
        )
        num_parameters = sum(p.numel() for p in model.parameters())
        load_blocks(model, blocks, device, dtype)
        model.eval().requires_grad_(False)
        if config.quantize:
            quantize_model(model, config.quantize)
        # A GGUF whose 4-bit weights run as they are reports its format (Q4_1...).
        native = self.gguf.file_type if self.gguf is not None and blocks else None
        info = ModelInfo(
            model_id=config.model_id or self.model_id,
            model_sha=sha,
            dtype=config.dtype,
            device=device.type,
            quantize=config.quantize or native,
            num_parameters=num_parameters,
            weight_bytes=weight_bytes(model),
        )
        return LoadedModel(model=model, tokenizer=tokenizer, config=self.config, info=info)


def _placed(weight: Weight, device: torch.device, dtype: torch.dtype) -> Weight:
    """A float weight on `device` in `dtype`; blocks as they are, but Q8_0 ones only where the
    native kernel runs (see `ModelSource.load`)."""
    if isinstance(weight, Int8Blocks) and not (device.type == "cpu" and load_kernels()):
        weight = weight.dequantize()
    return weight.to(device=device, dtype=dtype) if isinstance(weight, torch.Tensor) else weight


def open_model(config: EngineConfig) -> ModelSource:
    """Find the model `config.model` names and read its architecture; refuse what cannot run.

    `config.model` is `tiny`, a packaged model's name (`PACKAGED_MODELS`), a `.gguf` file, a
    directory holding one `.gguf` file, or an HF directory (config.json, safetensors, tokenizer).
    """
    name = config.model
    if name == "tiny":
        return ModelSource(TinyShape().model_config(), model_id="tiny")
    packaged = PACKAGED_MODELS.get(name)
    path = packaged.path() if packaged is not None else Path(name)
    model_id = packaged.model_id if packaged is not None else name
    if path.is_dir() and (path / "config.json").is_file():
        raw = json.loads((path / "config.json").read_text())
        return ModelSource(ModelConfig.from_dict(raw), model_id, directory=path)
    if path.is_dir():
        files = sorted(path.glob("*.gguf"))
        if len(files) != 1:
            found = f"{len(files)} .gguf files" if files else "no .gguf file"
            raise ModelConfigError(
                f"{path} is not a model directory: no config.json, and {found} (one is needed)"
            )
        path = files[0]
    elif not path.is_file():
        known = ", ".join(PACKAGED_MODELS)
        raise ModelConfigError(
            f"no model {name!r}: --model takes tiny, a packaged model ({known}), a .gguf file, "
            "or a model directory"
        )
    gguf = GGUFModel(path)
    if config.quantize and gguf.quantized:
        types = ", ".join(sorted(gguf.tensor_types))
        raise ModelConfigError(
            f"--quantize {config.quantize}: {path} is already quantized ({types}); it runs as it "
            "is (without --quantize)"
        )
    return ModelSource(gguf.config, model_id, gguf=gguf)


def load_model(config: EngineConfig, max_positions: int | None = None) -> LoadedModel:
    """Load the configured model onto its device, in its dtype, quantized if asked."""
    return open_model(config).load(config, max_positions)


def write_tiny_model(path: str | Path, shape: TinyShape | None = None) -> Path:
    """Write a tiny model as an HF directory: config.json, model.safetensors, tokenizer files."""
    shape = shape or TinyShape()
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    config = shape.model_config()
    (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    weights = tiny_checkpoint(shape)
    save_file({k: v.contiguous() for k, v in weights.items()}, str(out / "model.safetensors"))
    # The directory carries a chat template (transformers' apply_chat_template reads it); the
    # built-in `tiny` reports none.
    Tokenizer.tiny(vocab_size=shape.vocab_size).save(out, chat_template=TINY_CHAT_TEMPLATE)
    return out
