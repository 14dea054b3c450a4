"""Where a step of the engine goes: py-spy on `streamgate engine` serving SmolLM2 under load.

For each number of streams: start the engine on the packaged SmolLM2-135M-Instruct (its Q4_1
weights as stored, one torch thread), keep `streams` clients streaming dragon stories (the
prompts of bench_peer.py, 256 new tokens each, a new request as soon as one ends), wait until
all of them are decoding, then record py-spy on the engine for `--seconds` while reading its
step and token counters before and after. The step thread's samples are split into
components by the innermost engine frame (file, function, source line), and converted to
milliseconds per step; the other threads (the aiohttp event loop) are reported beside them:
they share the GIL with the step thread.

Usage: python -m loadtest.profile_engine --py-spy .venv/bin/py-spy [--streams 1,32]
       [--seconds 20] [--rate 100] [--out bench-results/profile]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from loadtest.bench_engine import SMOLLM2, chat_prompts, engine_process, stream_one
from loadtest.bench_peer import dragon_questions
from loadtest.prometheus import scrape

NEW_TOKENS = 256
# The step thread's outermost engine frame: its samples are the step's, the rest are not.
STEP_LOOP = "_run (streamgate/engine/core/llm_engine.py"
FRAME = re.compile(r"^(?P<function>.*) \((?P<file>.*):(?P<line>\d+)\)$")


@dataclass(frozen=True)
class Rule:
    """Samples whose innermost engine frame is in `file` (a path suffix), in `function` (any
    if empty), on a source line containing `line_has` (any if empty), go to `component`."""

    component: str
    file: str
    function: str = ""
    line_has: str = ""


INT4 = "int4 kernel (_weight_int4pack_mm_for_cpu)"
CASTS = "bfloat16 casts and pads around the int4 kernel"
DEQUANT = "dequantize + float32 GEMM"
ATTENTION = "attention: decode over the paged cache, prefill SDPA, reshapes"
# First match wins: the more specific rules of a file come before its catch-all.
RULES = [
    Rule("int4 kernel (native, the file's float16 scales)", "model/kernels/int4.py", "int4_mm"),
    Rule("int8 kernel (native: the Q8_0 output head)", "model/kernels/int8.py"),
    Rule(INT4, "model/quant.py", "forward", "_weight_int4pack_mm_for_cpu"),
    Rule(DEQUANT, "model/quant.py", "forward", "torch.mm("),
    Rule(DEQUANT, "model/quant.py", "_dequantize_transposed"),
    Rule(DEQUANT, "model/quant.py", "_scale_and_offset"),
    Rule(CASTS, "model/quant.py", "forward", "torch.bfloat16"),
    Rule(CASTS, "model/quant.py", "forward", "F.pad"),
    Rule(CASTS, "model/quant.py", "forward", ".contiguous()"),
    Rule(CASTS, "model/quant.py", "_bf16"),
    Rule("Python: quantized Linear bookkeeping", "model/quant.py"),
    Rule(
        "attention: KV gather (whole blocks, prefills over a cached prefix)",
        "model/kernels/decoder.py",
        "gather_blocks",
    ),
    Rule(ATTENTION, "model/kernels/decoder.py", "paged_attention"),
    Rule(ATTENTION, "model/llama.py", "_decode"),
    Rule(ATTENTION, "model/llama.py", "_prefill"),
    Rule("rotary embedding + KV cache write", "model/kernels/decoder.py", "rope_and_cache"),
    Rule("rotary embedding + KV cache write", "model/kernels/decoder.py", "rotate"),
    Rule("rotary embedding + KV cache write", "model/llama.py", "at"),
    Rule("RMSNorm (+ residual add)", "model/kernels/decoder.py", "rms_norm"),
    Rule("RMSNorm (+ residual add)", "model/kernels/decoder.py", "add_rms_norm"),
    Rule("SwiGLU activation", "model/kernels/decoder.py", "silu_mul"),
    Rule("output head", "model/llama.py", "logits"),
    Rule("embedding", "model/llama.py", "forward", "embed_tokens("),
    Rule("attention: q/k/v views, cat, o_proj input", "model/llama.py", "forward"),
    Rule("batch preparation (ids, slots, block tables, masks)", "core/runner.py", "prepare"),
    Rule("batch preparation (ids, slots, block tables, masks)", "core/runner.py", "_slot"),
    Rule("batch preparation (ids, slots, block tables, masks)", "core/runner.py", "_tensor"),
    Rule("batch preparation (ids, slots, block tables, masks)", "core/runner.py", "group_decodes"),
    Rule("runner: last rows, logits call", "core/runner.py"),
    Rule("sampling", "core/sampler.py"),
    Rule("detokenizing", "model/detokenizer.py"),
    Rule("detokenizing", "model/tokenizer.py"),
    Rule("stop sequences", "model/stopping.py"),
    Rule("scheduling, KV blocks, prefix hashes", "core/scheduler.py"),
    Rule("scheduling, KV blocks, prefix hashes", "core/block_manager.py"),
    Rule("scheduling, KV blocks, prefix hashes", "core/sequence.py"),
    Rule("events to the event loop", "core/llm_engine.py", "_flush_events"),
    Rule("step loop: inbox, stats, postprocess", "core/llm_engine.py"),
]
MODULE_CALL = "Python: nn.Module __call__"


@dataclass(frozen=True)
class Frame:
    function: str
    file: str
    line: int


def parse_frame(text: str) -> Frame | None:
    match = FRAME.match(text)
    if match is None:
        return None
    return Frame(match["function"], match["file"], int(match["line"]))


class SourceLines:
    """Source lines by (file, number), read once per file. py-spy names a file relative to
    the import path entry it was found under."""

    def __init__(self) -> None:
        self._files: dict[str, list[str]] = {}

    def get(self, file: str, line: int) -> str:
        if file not in self._files:
            found = (Path(root, file) for root in ("", *sys.path))
            path = next((p for p in found if p.is_file()), None)
            self._files[file] = path.read_text().splitlines() if path else []
        lines = self._files[file]
        return lines[line - 1] if 0 < line <= len(lines) else ""


def classify(frames: list[Frame], source: SourceLines) -> str:
    """The component of one step-thread sample (frames outermost first)."""
    innermost = frames[-1]
    if innermost.file.endswith("torch/nn/modules/module.py"):
        return MODULE_CALL
    for frame in reversed(frames):
        if "streamgate/" not in frame.file:
            continue
        text = source.get(frame.file, frame.line)
        for rule in RULES:
            if (
                frame.file.endswith(rule.file)
                and rule.function in ("", frame.function.rpartition(".")[2])
                and rule.line_has in text
            ):
                return rule.component
        return f"other: {frame.function} ({Path(frame.file).name}:{frame.line})"
    return f"other: {innermost.function} ({Path(innermost.file).name})"


@dataclass
class Profile:
    """Samples of one recording, by component; the other threads' in one sum."""

    step_thread: Counter[str]
    other_threads: int


def read_profile(raw: Path) -> Profile:
    """py-spy's raw format: one `frame;frame;... count` line per distinct stack (outermost
    first; with --threads the first item names the thread)."""
    source = SourceLines()
    step: Counter[str] = Counter()
    other = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = [f for f in (parse_frame(item) for item in stack.split(";")) if f is not None]
        if frames and any(STEP_LOOP in f"{f.function} ({f.file}" for f in frames):
            step[classify(frames, source)] += int(count)
        else:
            other += int(count)
    return Profile(step, other)


async def counters(url: str) -> dict[str, float]:
    metrics = await asyncio.to_thread(scrape, f"{url}/metrics")
    names = (
        "streamgate_engine_steps_total",
        "streamgate_engine_generated_tokens_total",
        "tgi_batch_current_size",
        "tgi_queue_size",
    )
    return {name: metrics.value(name) for name in names}


async def profile_level(
    url: str, pid: int, streams: int, args: argparse.Namespace, out: Path
) -> dict[str, object]:
    chats = await chat_prompts(url, dragon_questions())
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client(i: int) -> None:
            while True:  # until cancelled
                await stream_one(session, url, chats[i % len(chats)], NEW_TOKENS)

        clients = [asyncio.create_task(client(i)) for i in range(streams)]
        try:
            # Every stream decoding: all admitted and past their first step.
            for _ in range(600):
                now = await counters(url)
                if now["tgi_batch_current_size"] >= streams and now["tgi_queue_size"] == 0:
                    break
                await asyncio.sleep(0.2)
            else:
                raise RuntimeError(f"the engine never ran {streams} streams at once")
            await asyncio.sleep(1.0)
            before = await counters(url)
            raw = out / f"engine-{streams}-streams.txt"
            # --nonblocking: pausing the engine for every sample slowed its steps by ~40%.
            cmd = [
                str(args.py_spy), "record", "--pid", str(pid), "--rate", str(args.rate),
                "--duration", str(args.seconds), "--format", "raw", "--threads", "--nonblocking",
                "--output", str(raw),
            ]  # fmt: skip
            spy = await asyncio.create_subprocess_exec(
                *cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            _, err = await spy.communicate()
            after = await counters(url)
            if spy.returncode != 0:
                raise RuntimeError(f"py-spy failed: {err.decode()[-2000:]}")
        finally:
            for task in clients:
                task.cancel()
            await asyncio.gather(*clients, return_exceptions=True)
    steps = after["streamgate_engine_steps_total"] - before["streamgate_engine_steps_total"]
    tokens = (
        after["streamgate_engine_generated_tokens_total"]
        - before["streamgate_engine_generated_tokens_total"]
    )
    profile = read_profile(raw)
    return report(streams, args, steps, tokens, profile)


def report(
    streams: int, args: argparse.Namespace, steps: float, tokens: float, profile: Profile
) -> dict[str, object]:
    seconds, rate = args.seconds, args.rate
    per_step = 1e3 / rate / max(steps, 1)  # ms of one sample, per step
    step_ms = seconds * 1e3 / max(steps, 1)
    busy = sum(profile.step_thread.values()) * per_step
    print(
        f"\n{streams} streams: {steps:.0f} steps in {seconds} s = {step_ms:.1f} ms per step, "
        f"{tokens / seconds:.1f} tokens/s; the step thread ran {busy:.1f} ms of each step"
    )
    print(f"  {'component':<56} {'ms/step':>8} {'share':>6}")
    for component, samples in profile.step_thread.most_common():
        ms = samples * per_step
        print(f"  {component:<56} {ms:>8.2f} {ms / step_ms:>6.1%}")
    idle = step_ms - busy
    print(f"  {'step thread not running (GIL wait, idle)':<56} {idle:>8.2f} {idle / step_ms:>6.1%}")
    other = profile.other_threads * per_step
    print(f"  {'other threads busy (event loop, HTTP), concurrent':<56} {other:>8.2f}")
    return {
        "streams": streams,
        "seconds": seconds,
        "steps": steps,
        "tokens": tokens,
        "step_ms": step_ms,
        "step_thread_ms": {c: n * per_step for c, n in profile.step_thread.most_common()},
        "other_threads_ms": other,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--py-spy", type=Path, required=True, help="the py-spy binary")
    parser.add_argument("--streams", default="1,32", help="comma-separated (default 1,32)")
    parser.add_argument("--seconds", type=int, default=20, help="recording per level")
    parser.add_argument("--rate", type=int, default=100, help="samples per second")
    parser.add_argument("--out", type=Path, default=Path("bench-results/profile"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for streams in (int(s) for s in args.streams.split(",")):
        with engine_process("--model", SMOLLM2) as (url, proc):
            results.append(asyncio.run(profile_level(url, proc.pid, streams, args, args.out)))
    (args.out / "summary.json").write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.out}/")


if __name__ == "__main__":
    main()
