"""Weighted splits: within 3% of the weights, sticky per key, and moving weight moves only
that share of keys."""

from __future__ import annotations

from streamgate.routing import choose_arm


def test_a_weighted_split_is_within_3_percent_and_sticky() -> None:
    arms = [("stable", 90.0), ("canary", 10.0)]
    users = [f"user-{i}" for i in range(2000)]
    first = {u: choose_arm(u, arms) for u in users}
    canary = sum(1 for arm in first.values() if arm == 1) / len(users)
    assert abs(canary - 0.10) <= 0.03
    assert all(choose_arm(u, arms) == first[u] for u in users)  # 100% sticky


def test_moving_canary_weight_moves_only_that_share_of_users() -> None:
    users = [f"user-{i}" for i in range(4000)]
    before = {u: choose_arm(u, [("stable", 95.0), ("canary", 5.0)]) for u in users}
    after = {u: choose_arm(u, [("stable", 90.0), ("canary", 10.0)]) for u in users}
    moved = [u for u in users if before[u] != after[u]]
    assert abs(len(moved) / len(users) - 0.05) <= 0.015
    assert all(after[u] == 1 for u in moved)  # only into the arm that grew
    # With three arms, a shrinking arm gives keys to every other arm in proportion: moving 5%
    # of the weight from b to c moves about 7.5% of the keys (b -> a, a -> c, b -> c).
    before = {u: choose_arm(u, [("a", 50.0), ("b", 45.0), ("c", 5.0)]) for u in users}
    after = {u: choose_arm(u, [("a", 50.0), ("b", 40.0), ("c", 10.0)]) for u in users}
    assert sum(before[u] != after[u] for u in users) / len(users) <= 0.09
