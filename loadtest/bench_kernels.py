"""Matmul kernels on one layer and the output head of SmolLM2-135M-Instruct: time per call.

The projections of layer 0 of the packaged Q4_1 GGUF as the engine fuses them (q/k/v, o,
gate/up, down; shapes read through the engine's loader), each called from float32 activations
[rows, in] to float32 outputs [rows, out] at 1 row (decode of one stream) and 32 rows:
  - native: the streamgate kernel on the file's float16 scales (`kernels.int4_mm`);
  - torch int4: `Int4Linear` on `aten._weight_int4pack_mm_for_cpu`, as the engine runs it today
    (with its bfloat16 casts of activations and outputs);
  - float32: `F.linear` on the weight dequantized in advance (no unpacking, 6.4x the bytes).
Then the output head (tied to the Q8_0 token embedding, 576 -> 49152):
  - native: the streamgate kernel on the file's int8 codes and float16 scales (`kernels.int8_mm`);
  - float32: `F.linear` on the table dequantized in advance (3.8x the bytes).
The kernels alternate call batch by call batch, in a rotated order each round; the median
batch is reported, as microseconds per call, with the layer's total and a 30-layer estimate.

Usage: python loadtest/bench_kernels.py [--rows 1,32] [--rounds 15] [--calls 50] [--threads 1]
       [--out bench-results/kernels.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from streamgate.engine.config import EngineConfig
from streamgate.engine.model.kernels import Int4Tiles, Int8Blocks, int4_mm, int8_mm
from streamgate.engine.model.kernels.native import has_avx2
from streamgate.engine.model.loader import fuse_checkpoint, open_model
from streamgate.engine.model.quant import Int4Blocks, Int4Linear

SMOLLM2 = "smollm2-135m-instruct"
PROJECTIONS = ("self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj")
LAYERS = 30  # SmolLM2-135M's decoder layers
Call = Callable[[torch.Tensor], torch.Tensor]


def model_blocks() -> tuple[dict[str, Int4Blocks], Int8Blocks]:
    """Layer 0's fused projections and the output head, as the file holds them."""
    source = open_model(EngineConfig(model=SMOLLM2))
    assert source.gguf is not None
    fused = fuse_checkpoint(source.gguf.weights(), source.config)
    blocks = {}
    for name in PROJECTIONS:
        weight = fused[f"model.layers.0.{name}.weight"]
        assert isinstance(weight, Int4Blocks), f"{name} is not 4-bit in the file"
        blocks[name] = weight
    head = fused["lm_head.weight"]
    assert isinstance(head, Int8Blocks), "the head is not Q8_0 in the file"
    return blocks, head


def kernels_of(blocks: Int4Blocks) -> dict[str, Call]:
    tiles = Int4Tiles.from_blocks(blocks.codes, blocks.scales, blocks.minimums, blocks.group_size)
    layer = Int4Linear.from_blocks(blocks, kernel="aten")
    dense = blocks.dequantize()
    return {
        "native": lambda x: int4_mm(x, tiles),
        "torch int4": layer,
        "float32": lambda x: F.linear(x, dense),
    }


def head_kernels(blocks: Int8Blocks) -> dict[str, Call]:
    dense = blocks.dequantize()
    return {"native": lambda x: int8_mm(x, blocks), "float32": lambda x: F.linear(x, dense)}


def activations(rows: int, size: int) -> torch.Tensor:
    return torch.randn(rows, size, generator=torch.Generator().manual_seed(rows))


def time_batch(call: Call, x: torch.Tensor, calls: int) -> float:
    """Microseconds per call over `calls` calls."""
    start = time.perf_counter()
    for _ in range(calls):
        call(x)
    return (time.perf_counter() - start) / calls * 1e6


def measure(kernels: dict[str, Call], x: torch.Tensor, rounds: int, calls: int) -> dict[str, float]:
    """Median us per call of each kernel, batches alternating in a rotated order."""
    names = list(kernels)
    for name in names:  # warm-up: caches, lazy initialisation
        time_batch(kernels[name], x, 3)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            samples[name].append(time_batch(kernels[name], x, calls))
    return {name: statistics.median(s) for name, s in samples.items()}


def print_result(rows: int, name: str, shape: tuple[int, int], result: dict[str, float]) -> None:
    cells = "  ".join(f"{k} {us:8.1f}" for k, us in result.items())
    print(f"rows {rows:3d}  {name:20s} {shape[1]:5d}->{shape[0]:5d}  {cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1,32", help="row counts, comma-separated")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=50, help="calls per timed batch")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="bench-results/kernels.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    blocks, head = model_blocks()
    print(f"threads {args.threads}, native AVX2: {has_avx2()}, us per call (median batch)")
    report: dict[str, dict[str, dict[str, float]]] = {}
    with torch.inference_mode():
        for rows in (int(r) for r in args.rows.split(",")):
            totals: dict[str, float] = {}
            report[str(rows)] = {}
            for name, weight in blocks.items():
                x = activations(rows, weight.shape[1])
                result = measure(kernels_of(weight), x, args.rounds, args.calls)
                report[str(rows)][name] = result
                for kernel, us in result.items():
                    totals[kernel] = totals.get(kernel, 0.0) + us
                print_result(rows, name, weight.shape, result)
            cells = "  ".join(f"{k} {us * LAYERS / 1e3:6.2f} ms" for k, us in totals.items())
            print(f"rows {rows:3d}  x{LAYERS} layers{'':22s}{cells}")
            x = activations(rows, head.shape[1])
            # Fewer calls: one takes milliseconds, not microseconds.
            result = measure(head_kernels(head), x, args.rounds, max(1, args.calls // 10))
            report[str(rows)]["lm_head"] = result
            print_result(rows, "lm_head", head.shape, result)
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"threads": args.threads, "us_per_call": report}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
