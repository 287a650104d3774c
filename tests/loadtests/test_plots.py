"""The benchmark report's plots draw from whatever series exist, and skip what is missing."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

LOADTESTS = Path(__file__).resolve().parents[2] / "loadtests"


@pytest.fixture
def plots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(LOADTESTS))
    module = importlib.import_module("plots")
    monkeypatch.setattr(module, "RESULTS_DIR", tmp_path)
    return module


def test_nothing_measured_draws_nothing(plots: ModuleType) -> None:
    assert plots.draw_all({}) == {}


def test_every_plot_is_drawn_from_its_series(plots: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "api.series.json").write_text(
        json.dumps(
            {
                "latency_percentiles": [i / 2 for i in range(1, 200)] + [99.9],
                "latency_us": [1000 + 10 * i for i in range(200)],
                "requests_per_s_over_time": [[1.0, 5000.0], [2.0, 5100.0]],
            }
        )
    )
    (tmp_path / "stream.series.json").write_text(
        json.dumps(
            {
                "events_counted_over_time": [[0.0, 10], [1.0, 2000], [2.0, 4100]],
                "freshness_buckets_s": [[0.05, 10], [0.1, 80], [0.5, 99], [float("inf"), 100]],
            }
        )
    )
    (tmp_path / "quality.series.json").write_text(
        json.dumps(
            {"model": {"ndcg@10": 0.3, "map": 0.1}, "popular": {"ndcg@10": 0.1, "map": 0.05}}
        )
    )
    (tmp_path / "items.series.json").write_text(json.dumps({"takedown_ms": [40.0, 55.5, 700.0]}))
    results = {
        "api": {"figures": {"events_post_per_s": 12000, "publisher_events_per_s": 20000}},
        "items": {
            "figures": {
                "recs_req_per_s": 5000,
                "similar_req_per_s": 4800,
                "filtered_req_per_s": 4200,
            }
        },
        "retrain": {"figures": {"snapshot_s": 1.0, "tune_s": 10.0, "train_s": 2.0}},
    }
    drawn = plots.draw_all(results)
    assert {bench: len(p) for bench, p in drawn.items()} == {
        "api": 3,
        "stream": 2,
        "retrain": 1,
        "quality": 1,
        "items": 2,
    }
    for paths in drawn.values():
        for _, path in paths:
            assert path.read_bytes().startswith(b"\x89PNG")


def test_run_all_embeds_the_plots_in_the_report(plots: ModuleType) -> None:
    run_all = importlib.import_module("run_all")
    text = run_all.render(
        {"api": {"command": "c", "date": "d", "machine": "m", "figures": {"bench": "api"}}},
        {"api": [("API latency", run_all.ROOT / "loadtests" / "results" / "x.png")]},
    )
    sys.modules.pop("run_all", None)
    assert "![API latency](loadtests/results/x.png)" in text
