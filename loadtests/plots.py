"""The benchmark report's plots, drawn from whatever results and raw series exist.

``loadtests/run_all.py`` calls :func:`draw_all` after every run and on
``--render``. Each plot is drawn from ``loadtests/results.json`` (the figures
of each benchmark's last line) and the raw series the benchmarks write beside
it (``loadtests/results/<bench>.series.json``); a plot whose data is missing is
skipped, not an error, so the report renders from a partial set of results.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display

import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "loadtests" / "results"
#: The window stream events/s over time is averaged on (the benchmark polls faster).
STREAM_WINDOW_S = 1.0
#: The freshness objective (p99 from an event to its list in Redis), drawn on the CDF.
FRESHNESS_OBJECTIVE_MS = 500
#: The takedown promise: gone from every answer within a second of the publish.
TAKEDOWN_OBJECTIVE_MS = 1000

Figures = dict[str, Any]


def series(bench: str) -> dict[str, Any] | None:
    """The raw series ``bench`` wrote, or None when it has not written any."""
    path = RESULTS_DIR / f"{bench}.series.json"
    try:
        doc: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc


def _figures(results: dict[str, Any], bench: str) -> Figures | None:
    entry = results.get(bench)
    return None if entry is None else entry.get("figures")


def _save(fig: Any, name: str) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / name
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def api_latency(results: dict[str, Any]) -> Path | None:
    """Histogram of GET /recs latencies: wrk's percentiles, each 0.5% of the requests."""
    raw = series("api")
    if not raw or not raw.get("latency_us"):
        return None
    ms = [us / 1000 for us in raw["latency_us"]]
    at = dict(zip(raw["latency_percentiles"], ms, strict=True))
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.hist([v for p, v in at.items() if p < 100 and p % 0.5 == 0], bins=40, color="#2f6fde")
    for p, colour in ((50, "#1e8a4c"), (99, "#b42318")):
        if p in at:
            ax.axvline(at[p], color=colour, linestyle="--", label=f"p{p} {at[p]:.1f} ms")
    ax.set_xlabel("GET /recs latency (ms)")
    ax.set_ylabel("requests (each count: 0.5%)")
    ax.set_title("API latency (wrk)")
    ax.legend()
    return _save(fig, "api_latency.png")


def api_throughput(results: dict[str, Any]) -> Path | None:
    raw = series("api")
    points = (raw or {}).get("requests_per_s_over_time") or []
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", color="#2f6fde")
    ax.set_xlabel("seconds into the wrk run")
    ax.set_ylabel("requests/s")
    ax.set_ylim(bottom=0)
    ax.set_title("API throughput over time (GET /recs, from the API's own counter)")
    return _save(fig, "api_throughput.png")


def api_events(results: dict[str, Any]) -> Path | None:
    figures = _figures(results, "api") or {}
    if "events_post_per_s" not in figures or "publisher_events_per_s" not in figures:
        return None
    fig, ax = plt.subplots(figsize=(7, 3))
    labels = ["POST /events\n(batches of 100)", "Python publisher\n(straight to the broker)"]
    values = [figures["events_post_per_s"], figures["publisher_events_per_s"]]
    bars = ax.barh(labels, values, color=["#2f6fde", "#8a94a6"])
    ax.bar_label(bars, labels=[f"{v:,}" for v in values], padding=4)
    ax.set_xlabel("events/s acknowledged by the broker")
    ax.set_xlim(0, max(values) * 1.25)
    ax.set_title("Events in: POST /events beside the publisher")
    return _save(fig, "api_events.png")


def freshness_cdf(results: dict[str, Any]) -> Path | None:
    """CDF of event-to-list freshness from the worker's histogram buckets (cumulative counts)."""
    raw = series("stream")
    buckets = (raw or {}).get("freshness_buckets_s") or []
    finite = [(le, n) for le, n in buckets if le != float("inf")]
    total = buckets[-1][1] if buckets else 0
    if not finite or total <= 0:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.step([le * 1000 for le, _ in finite], [n / total for _, n in finite], where="post")
    ax.axvline(FRESHNESS_OBJECTIVE_MS, color="#b42318", linestyle="--", label="objective (p99)")
    ax.axhline(0.99, color="#8a94a6", linestyle=":", label="99%")
    ax.set_xscale("log")
    ax.set_xlabel("event to its list in Redis (ms, log scale; histogram bucket bounds)")
    ax.set_ylabel("share of events")
    ax.set_ylim(0, 1.02)
    ax.set_title("Freshness distribution (worker, paced stream)")
    ax.legend(loc="lower right")
    return _save(fig, "freshness_cdf.png")


def stream_events(results: dict[str, Any]) -> Path | None:
    raw = series("stream")
    points = (raw or {}).get("events_counted_over_time") or []
    if len(points) < 2:
        return None
    times, rates = [], []
    t0, c0 = points[0]
    for t1, c1 in points[1:]:
        if t1 - t0 >= STREAM_WINDOW_S:  # polls are a fraction of a second apart: smooth them
            times.append(t1)
            rates.append((c1 - c0) / (t1 - t0))
            t0, c0 = t1, c1
    if not times:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot(times, rates, color="#2f6fde")
    ax.set_xlabel("seconds since the worker's first list")
    ax.set_ylabel("events/s (lists written)")
    ax.set_ylim(bottom=0)
    ax.set_title("Stream throughput over time (worker draining a backlog)")
    return _save(fig, "stream_events.png")


RETRAIN_STAGES = ("snapshot_s", "tune_s", "train_s", "evaluate_s", "publish_s")


def retrain_stages(results: dict[str, Any]) -> Path | None:
    figures = _figures(results, "retrain") or {}
    stages = [(s.removesuffix("_s"), figures[s]) for s in RETRAIN_STAGES if s in figures]
    if not stages:
        return None
    fig, ax = plt.subplots(figsize=(7, 3))
    bars = ax.barh([s for s, _ in stages], [v for _, v in stages], color="#2f6fde")
    ax.bar_label(bars, labels=[f"{v:.1f} s" for _, v in stages], padding=4)
    ax.invert_yaxis()
    ax.set_xlim(0, max(v for _, v in stages) * 1.15)
    ax.set_xlabel("seconds")
    if "bare_fit_s" in figures:
        ax.axvline(figures["bare_fit_s"], color="#8a94a6", linestyle="--", label="implicit's fit")
        ax.legend(loc="lower right")
    ax.set_title("Retrain stage times")
    return _save(fig, "retrain_stages.png")


def quality(results: dict[str, Any]) -> Path | None:
    raw = series("quality")
    if not raw or not raw.get("model"):
        return None
    names = [k for k in raw["model"] if k in raw["popular"] and "@" in k]
    if not names:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    width = 0.4
    xs = range(len(names))
    model = ax.bar(
        [x - width / 2 for x in xs],
        [raw["model"][n] for n in names],
        width,
        label="model (implicit ALS)",
        color="#2f6fde",
    )
    popular = ax.bar(
        [x + width / 2 for x in xs],
        [raw["popular"][n] for n in names],
        width,
        label="popular baseline",
        color="#8a94a6",
    )
    for bars in (model, popular):
        ax.bar_label(bars, fmt="%.3f", fontsize=8, padding=2)
    ax.set_xticks(list(xs), names)
    ax.set_ylim(0, max(max(raw["model"][n], raw["popular"][n]) for n in names) * 1.3)
    ax.set_ylabel("score")
    ax.set_title(f"Offline quality ({raw.get('format', 'synthetic')} data)")
    ax.legend(loc="upper center", ncols=2)
    return _save(fig, "quality.png")


def items_requests(results: dict[str, Any]) -> Path | None:
    """The catalog's endpoints beside plain GET /recs, at the same connections."""
    figures = _figures(results, "items") or {}
    names = ("recs_req_per_s", "similar_req_per_s", "filtered_req_per_s")
    if not all(n in figures for n in names):
        return None
    fig, ax = plt.subplots(figsize=(7, 3))
    labels = ["GET /recs (baseline)", "GET /similar", "GET /recs?tags="]
    values = [figures[n] for n in names]
    bars = ax.barh(labels, values, color=["#8a94a6", "#2f6fde", "#1e8a4c"])
    ax.bar_label(bars, labels=[f"{v:,}" for v in values], padding=4)
    ax.set_xlabel("requests/s (wrk)")
    ax.set_xlim(0, max(values) * 1.25)
    ax.set_title("Catalog endpoints beside plain GET /recs")
    return _save(fig, "items_requests.png")


def items_takedown(results: dict[str, Any]) -> Path | None:
    """Each takedown's time from publish to gone from every endpoint, against the 1 s promise."""
    samples = (series("items") or {}).get("takedown_ms") or []
    if not samples:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot(range(1, len(samples) + 1), samples, marker="o", linestyle="", color="#2f6fde")
    ax.axhline(TAKEDOWN_OBJECTIVE_MS, color="#b42318", linestyle="--", label="1 s promise")
    ax.set_xlabel("takedown")
    ax.set_ylabel("ms from publish to gone everywhere")
    ax.set_ylim(bottom=0, top=max(TAKEDOWN_OBJECTIVE_MS, max(samples)) * 1.1)
    ax.set_title("Takedown: publish to gone from every endpoint")
    ax.legend()
    return _save(fig, "items_takedown.png")


#: bench -> its plots (title, drawing function), in the order the report shows them.
PLOTS: dict[str, list[tuple[str, Callable[[dict[str, Any]], Path | None]]]] = {
    "api": [
        ("API latency", api_latency),
        ("API throughput over time", api_throughput),
        ("Events over HTTP beside the publisher", api_events),
    ],
    "stream": [
        ("Freshness distribution", freshness_cdf),
        ("Stream events/s over time", stream_events),
    ],
    "retrain": [("Retrain stage times", retrain_stages)],
    "quality": [("Offline quality beside the popular baseline", quality)],
    "items": [
        ("Catalog endpoints beside plain GET /recs", items_requests),
        ("Takedown times", items_takedown),
    ],
}


def draw_all(results: dict[str, Any]) -> dict[str, list[tuple[str, Path]]]:
    """Draw every plot whose data exists; bench -> [(title, png path)]."""
    drawn: dict[str, list[tuple[str, Path]]] = {}
    for bench, plots in PLOTS.items():
        for title, draw in plots:
            path = draw(results)
            if path is not None:
                drawn.setdefault(bench, []).append((title, path))
    return drawn
