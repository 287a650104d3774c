"""The worker profile's stages come from the innermost frame a rule knows, over the main
thread only; the benchmark's Zipf mix has the spread of users it claims."""

from __future__ import annotations

import importlib
from collections import Counter
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

LOADTESTS = Path(__file__).resolve().parents[2] / "loadtests"
SITE = "/venv/lib/python3.11/site-packages"


@pytest.fixture
def profile(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(LOADTESTS))
    return importlib.import_module("profile_worker")


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(LOADTESTS))
    return importlib.import_module("bench_stream")


def frame(func: str, path: str, line: int = 1) -> str:
    return f"{func} ({path}:{line})"


def test_the_innermost_known_frame_names_the_stage(profile: ModuleType) -> None:
    agent = frame("complete", "/repo/streams/app.py")
    build = frame("ListBuilder.build", "/repo/streams/lists.py")
    rank = frame("Recommender.rank", "/repo/models/recommender.py")
    numpy_frame = frame("dot", f"{SITE}/numpy/core/multiarray.py")
    assert profile.stage_of([agent, build, rank, frame("top_k", "/repo/models/topk.py")]) == (
        "top-k / score product"
    )
    # numpy is nobody's stage: the frame above it decides
    assert profile.stage_of([agent, build, rank, numpy_frame]) == "top-k / score product"
    assert profile.stage_of([agent, build]) == "list encoding"
    assert profile.stage_of([agent]) == "batch orchestration (agent, pipeline)"
    explain = frame("FoldResult.because", "/repo/models/foldin.py")
    assert profile.stage_of([agent, build, rank, explain]) == "explanations"
    assert profile.stage_of([agent, frame("encode", "/repo/schemas/state.py")]) == (
        "changelog produce"
    )
    assert profile.stage_of([agent, frame("decode", "/repo/schemas/state.py")]) == (
        "state decode + apply"
    )
    sender = frame("Sender._sender_routine", f"{SITE}/aiokafka/producer/sender.py")
    conn = frame("AIOKafkaConnection.send", f"{SITE}/aiokafka/conn.py")
    assert profile.stage_of([sender, conn]) == "changelog produce"
    fetcher = frame("Fetcher._fetch", f"{SITE}/aiokafka/consumer/fetcher.py")
    assert profile.stage_of([fetcher, conn]) == "Faust's per-message path"
    assert profile.stage_of([frame("odd", "/elsewhere/x.py")]) == "other"


def test_a_sample_in_the_web_server_is_a_scrape_whatever_is_under_it(profile: ModuleType) -> None:
    view = frame("Web._handle", f"{SITE}/faust/web/drivers/aiohttp.py")
    observe = frame("Histogram.observe", f"{SITE}/prometheus_client/metrics.py")
    assert profile.stage_of([view, observe]) == "scrapes (this tool's polling)"
    assert profile.stage_of([observe]) == "metric updates"


def test_only_the_main_thread_is_counted(profile: ModuleType) -> None:
    validate = frame("validate", "/repo/schemas/validator.py")
    topk = frame("top_k", "/repo/models/topk.py")
    raw = "\n".join(
        [
            f"thread (42): MainThread;{validate} 7",
            f"thread (42): MainThread;{topk} 3",
            f"thread (43): Thread-1;{validate} 100",
        ]
    )
    assert profile.main_thread_stages(raw, 42) == Counter(
        {"validation": 7, "top-k / score product": 3}
    )


def test_cpu_time_is_split_by_sample_shares(profile: ModuleType) -> None:
    us = profile.per_event_us(Counter({"validation": 1, "other": 3}), cpu_s=0.4, events=1000)
    assert (us["validation"], us["other"], us["list encoding"]) == (100.0, 300.0, 0.0)
    assert list(us) == list(profile.STAGES)


def test_the_zipf_mix_has_about_430_distinct_users_per_1000_events(bench: ModuleType) -> None:
    users = bench.draw_users("zipf", 20_000, 20_000, np.random.default_rng(1))
    distinct = [len(set(chunk.tolist())) for chunk in users.reshape(20, 1000)]
    assert 400 <= np.mean(distinct) <= 470
    # against nearly all distinct in the uniform worst case
    uniform = bench.draw_users("uniform", 1000, 20_000, np.random.default_rng(1))
    assert len(set(uniform.tolist())) > 970
