"""The canary's sequential test, by simulation (issue 24, item 4): its error rate when
looked at after every 100 events, and its power at the sample size it states."""

from __future__ import annotations

import numpy as np
import pytest

from freshrec.settings import Settings
from models.sequential import DESIGN_EVENTS, DESIGN_POWER, first_rejection, look, look_at_canary
from schemas.online import OnlineCounts

ALPHA, TAU, MIN_EVENTS, STEP = 0.05, 0.005, 1000, 100


def simulate(p_current: float, p_candidate: float, runs: int, events: int, seed: int) -> tuple:
    """Cumulative hits of both arms at each look (every STEP events per arm), and the first
    look of each run that rejects (-1 for none)."""
    rng = np.random.default_rng(seed)
    looks = events // STEP
    a = rng.binomial(STEP, p_current, (runs, looks)).cumsum(axis=1).astype(float)
    b = rng.binomial(STEP, p_candidate, (runs, looks)).cumsum(axis=1).astype(float)
    n = np.broadcast_to(np.arange(1, looks + 1) * STEP, (runs, looks)).astype(float)
    first = first_rejection(a, n, b, n, alpha=ALPHA, tau=TAU, min_events=MIN_EVENTS)
    return a, b, first


def test_an_a_a_comparison_looked_at_every_100_events_errs_at_most_at_its_level() -> None:
    """1,000 A/A runs of 50,000 events per arm, looked at after every 100: a fixed-horizon
    test would cross its 5% level in far more of them."""
    _, _, first = simulate(0.05, 0.05, runs=1000, events=50_000, seed=7)
    assert (first >= 0).mean() <= ALPHA


def test_a_10_percent_lift_on_a_5_percent_hit_rate_is_found_within_the_stated_sample() -> None:
    a, b, first = simulate(0.05, 0.055, runs=1000, events=DESIGN_EVENTS, seed=11)
    found = first >= 0
    assert found.mean() >= DESIGN_POWER
    rows = np.flatnonzero(found)
    assert (b[rows, first[rows]] > a[rows, first[rows]]).all(), "found, in the right direction"


def test_one_look_names_the_direction_and_holds_off_before_min_events() -> None:
    worse = look(600, 10_000, 400, 10_000, alpha=ALPHA, tau=TAU, min_events=MIN_EVENTS)
    assert worse.decision == "candidate worse" and worse.difference == pytest.approx(-0.02)
    low, high = worse.interval
    assert low < -0.02 < high < 0, "the always-valid interval excludes 0 when the test rejects"
    early = look(60, 500, 20, 500, alpha=ALPHA, tau=TAU, min_events=MIN_EVENTS)
    assert early.decision == "continue"
    same = look(500, 10_000, 500, 10_000, alpha=ALPHA, tau=TAU, min_events=MIN_EVENTS)
    assert same.decision == "continue" and same.p_value == 1.0 and same.interval[0] < 0


def test_a_look_at_a_canary_reads_each_arms_top_10_hits_and_the_settings_numbers() -> None:
    """What the worker, ``models canary status`` and the ops page run (they wrote the call
    to :func:`look` out three times): arm a is the current model, b the candidate, each
    arm's top-10 hits over its events, and the settings' alpha and min_events hold."""
    current = OnlineCounts(events=10_000, hits10=500, hitsk=9_000)
    candidate = OnlineCounts(events=10_000, hits10=400, hitsk=1)
    settings = Settings(canary_alpha=ALPHA, canary_tau=TAU, canary_min_events=MIN_EVENTS)
    at = look_at_canary(current, candidate, settings)
    assert at == look(500, 10_000, 400, 10_000, alpha=ALPHA, tau=TAU, min_events=MIN_EVENTS)
    assert at.decision == "candidate worse" and at.events == (10_000, 10_000)
    swapped = look_at_canary(candidate, current, settings)
    assert swapped.decision == "candidate better"
    for stricter in (
        settings.replace(canary_min_events=20_000),
        settings.replace(canary_alpha=0.001),
    ):
        assert look_at_canary(current, candidate, stricter).decision == "continue"
