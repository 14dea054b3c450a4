from __future__ import annotations

from collections import Counter

from loadtest.loadgen.mix import Mix, RequestClass
from loadtest.loadgen.plan import class_counts, plan


def soak_like(tenants: int = 3) -> Mix:
    return Mix(
        tenants=tenants,
        prefix_chars=100,
        classes=[
            RequestClass(name="stream", weight=10, cacheable=0.5, max_new_tokens=(8, 48)),
            RequestClass(name="cancel", weight=1, cancel_after=(0.1, 0.9)),
            RequestClass(name="deadline", weight=1, deadline=(0.2, 0.4)),
        ],
    )


def test_each_class_gets_exactly_its_share_of_the_count() -> None:
    mix = soak_like()
    assert class_counts(mix, 12_000) == {"stream": 10_000, "cancel": 1_000, "deadline": 1_000}
    assert Counter(p.request_class for p in plan(mix, 1_200, seed=3)) == {
        "stream": 1_000,
        "cancel": 100,
        "deadline": 100,
    }


def test_remainders_go_to_the_largest_fractions() -> None:
    mix = Mix(classes=[RequestClass(name="a", weight=2), RequestClass(name="b", weight=1)])
    assert class_counts(mix, 10) == {"a": 7, "b": 3}  # 6.67 and 3.33
    assert sum(class_counts(soak_like(), 7).values()) == 7


def test_the_same_seed_plans_the_same_requests_and_another_seed_others() -> None:
    mix = soak_like()
    assert plan(mix, 300, seed=1) == plan(mix, 300, seed=1)
    assert [p.prompt for p in plan(mix, 300, seed=1)] != [p.prompt for p in plan(mix, 300, seed=2)]


def test_every_prompt_starts_with_its_tenants_prefix() -> None:
    requests = plan(soak_like(tenants=3), 200, seed=1)
    prefixes = {p.tenant: p.prompt.split("\n", 1)[0] for p in requests}
    assert sorted(prefixes) == [0, 1, 2]
    assert len(set(prefixes.values())) == 3
    for p in requests:
        assert p.prompt.startswith(prefixes[p.tenant] + "\n")
        assert len(prefixes[p.tenant]) == 100  # prefix_chars, then a newline
        assert p.user.startswith(f"tenant{p.tenant}-user")


def test_cacheable_requests_repeat_fixed_questions_and_the_others_never_repeat() -> None:
    requests = [p for p in plan(soak_like(), 2_000, seed=1) if p.request_class == "stream"]
    cacheable = [(p.prompt, p.max_new_tokens) for p in requests if p.cacheable]
    unique = [p.prompt for p in requests if not p.cacheable]
    assert 0.4 < len(cacheable) / len(requests) < 0.6
    # 3 tenants x 16 questions: the same text always asks for the same length.
    assert len({prompt for prompt, _ in cacheable}) <= 48
    assert len(set(cacheable)) == len({prompt for prompt, _ in cacheable})
    assert len(set(unique)) == len(unique)


def test_lengths_and_times_are_drawn_within_their_ranges() -> None:
    mix = soak_like()
    for p in plan(mix, 1_200, seed=5):
        cls = mix.request_class(p.request_class)
        assert cls.max_new_tokens[0] <= p.max_new_tokens <= cls.max_new_tokens[1]
        question = p.prompt.split("\n", 1)[1]
        text = question.split(": ", 1)[1]
        assert cls.prompt_chars[0] <= len(text) <= cls.prompt_chars[1]
        if p.request_class == "cancel":
            assert p.cancel_after is not None and 0.1 <= p.cancel_after <= 0.9
            assert p.deadline is None
        elif p.request_class == "deadline":
            assert p.deadline is not None and 0.2 <= p.deadline <= 0.4
        else:
            assert p.cancel_after is None and p.deadline is None
