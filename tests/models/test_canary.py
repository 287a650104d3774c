"""The canary's arm assignment: stable, about the fraction asked, salted per candidate."""

from __future__ import annotations

from models.canary import in_canary


def test_arms_are_stable_close_to_the_fraction_and_differ_between_candidates() -> None:
    users = [f"user-{n}" for n in range(20_000)]
    arms = [in_canary(u, "v2", 0.2) for u in users]
    assert arms == [in_canary(u, "v2", 0.2) for u in users]  # the same on every call
    assert abs(sum(arms) / len(users) - 0.2) < 0.015  # 5 standard deviations
    other = [in_canary(u, "v3", 0.2) for u in users]
    assert sum(a and b for a, b in zip(arms, other, strict=True)) < 0.06 * len(users)
    assert not any(in_canary(u, "v2", 0.0) for u in users[:100])
    assert all(in_canary(u, "v2", 1.0) for u in users[:100])
