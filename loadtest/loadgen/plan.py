"""The requests of one run, decided before it starts: the same mix, count and seed give the
same requests in the same order, so that two runs (two gateways, two versions) get equal work.

Each class gets its exact share of the count (largest remainder of the weights), and the order
is shuffled; a run of 12,000 requests from weights 10:1:1 has exactly 10,000, 1,000 and 1,000.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from loadtest.loadgen.mix import Mix, RequestClass

__all__ = ["Planned", "class_counts", "plan"]

# Prompts are made of these words (short, ASCII: one byte-level token per character).
_TEXT = (
    "the model reads a prompt and writes tokens one step at time while gateway "
    "relays each to client that asked for it under load with many streams in flight"
)
_WORDS = tuple(_TEXT.split())


@dataclass(frozen=True)
class Planned:
    """One request of a run."""

    index: int
    request_class: str
    tenant: int
    user: str
    prompt: str
    max_new_tokens: int
    cacheable: bool
    """Greedy with a repeated question (cache read and store); else sampled, never cached."""
    cancel_after: float | None
    deadline: float | None


def class_counts(mix: Mix, count: int) -> dict[str, int]:
    """How many of `count` requests each class gets: its weight's share, remainders to the
    largest fractions."""
    total = sum(c.weight for c in mix.classes)
    shares = [(c.name, count * c.weight / total) for c in mix.classes]
    counts = {name: int(share) for name, share in shares}
    by_fraction = sorted(shares, key=lambda s: s[1] - int(s[1]), reverse=True)
    for name, _ in by_fraction[: count - sum(counts.values())]:
        counts[name] += 1
    return counts


def plan(mix: Mix, count: int, seed: int) -> list[Planned]:
    """`count` requests drawn from `mix`, reproducibly from `seed`."""
    rng = random.Random(seed)
    kinds = [name for name, n in class_counts(mix, count).items() for _ in range(n)]
    rng.shuffle(kinds)
    prefixes = [_prefix(mix, tenant, seed) for tenant in range(mix.tenants)]
    return [
        _one(mix, mix.request_class(kind), index, rng, prefixes, seed)
        for index, kind in enumerate(kinds)
    ]


def _one(
    mix: Mix, cls: RequestClass, index: int, rng: random.Random, prefixes: list[str], seed: int
) -> Planned:
    tenant = rng.randrange(mix.tenants)
    cacheable = rng.random() < cls.cacheable
    if cacheable:
        # A fixed question: the same text and length every time it is drawn.
        question = rng.randrange(mix.questions_per_tenant)
        fixed = random.Random(f"{seed}/{tenant}/{question}")
        text = f"Question {question}: " + _words(fixed, fixed.randint(*cls.prompt_chars))
        max_new_tokens = fixed.randint(*cls.max_new_tokens)
    else:
        text = f"Request {index}: " + _words(rng, rng.randint(*cls.prompt_chars))
        max_new_tokens = rng.randint(*cls.max_new_tokens)
    return Planned(
        index=index,
        request_class=cls.name,
        tenant=tenant,
        user=f"tenant{tenant}-user{rng.randrange(mix.users_per_tenant)}",
        prompt=prefixes[tenant] + text,
        max_new_tokens=max_new_tokens,
        cacheable=cacheable,
        cancel_after=rng.uniform(*cls.cancel_after) if cls.cancel_after else None,
        deadline=rng.uniform(*cls.deadline) if cls.deadline else None,
    )


def _prefix(mix: Mix, tenant: int, seed: int) -> str:
    if not mix.prefix_chars:
        return ""
    head = f"You are the assistant of tenant {tenant}. "
    body = _words(random.Random(f"{seed}/prefix/{tenant}"), mix.prefix_chars - len(head))
    return (head + body)[: mix.prefix_chars] + "\n"


def _words(rng: random.Random, chars: int) -> str:
    """Random words, exactly `chars` characters long."""
    parts: list[str] = []
    length = 0
    while length < chars:
        word = rng.choice(_WORDS)
        parts.append(word)
        length += len(word) + 1
    return " ".join(parts)[:chars]
