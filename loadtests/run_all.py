"""Run the benchmarks and record their figures in BENCHMARKS.md.

    python loadtests/run_all.py                 # every benchmark
    python loadtests/run_all.py --only validate # one (others keep their last figures)
    python loadtests/run_all.py --only api --note "..."  # with a note on what the figures mean
    python loadtests/run_all.py --render [--only api --note "..."]  # re-render (and re-note) only

Each benchmark prints, as its last stdout line, one JSON object
``{"bench": NAME, ...}`` (docs/ENGINEERING.md, Benchmarks), and some write the
raw series behind their figures to ``loadtests/results/NAME.series.json``. This
script runs each with its recorded command, keeps the newest result per
benchmark in ``loadtests/results.json`` (with the command, date and machine),
draws the plots (``loadtests/plots.py``: PNG files in ``loadtests/results/``,
each from whatever results and series exist) and renders BENCHMARKS.md, which
embeds them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from plots import draw_all

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "loadtests" / "results.json"
REPORT = ROOT / "BENCHMARKS.md"

#: name -> (command, what the ratio means and the goal)
BENCHES: dict[str, tuple[list[str], str]] = {
    "validate": (
        ["python", "loadtests/bench_validate.py"],
        "cost_ratio = json.loads rate / validator rate on the same bytes; goal <= 2",
    ),
    "models": (
        ["python", "loadtests/bench_models.py"],
        "foldin_speedup = batched fold-in / loop over implicit's recalculate_user; goal >= 20; "
        "end_to_end_users_per_s goal >= 20,000 on one core; end_to_end_ratio = end to end "
        "users/s / the bare score product's (X Y^T), goal >= 0.6, at 2,000 items (plain keys) "
        "and 27,000 (keys suffixed _27k); CPU time of one thread",
    ),
    "stream": (
        ["python", "loadtests/bench_stream.py"],
        "ratio = worker events/s / bare Faust agent events/s on the same backlog, every event a "
        "different user (the worst case); goal >= 0.45, >= 10,000 events/s; zipf_ratio = the "
        "same on a Zipf mix of users (exponent 1.1 over 20k users, ~430 distinct users per "
        "1,000 events); goal >= 0.5; freshness p99 <= 100 ms at half the worker's events/s; "
        "each at 2,000 items (plain keys) and 27,000 (keys suffixed _27k); "
        "bytes_per_held_user = a worker's resident-set growth per distinct user held",
    ),
    "api": (
        ["python", "loadtests/bench_api.py"],
        "ratio = API requests/s / redis-benchmark GETs/s; goal >= 0.25, "
        ">= 5,000 req/s, p99 < 50 ms; events_post_ratio = POST /events events/s (batches of "
        "100, broker-acknowledged) / the Python publisher's events/s, same events; goal >= 0.5",
    ),
    "retrain": (
        ["python", "loadtests/bench_retrain.py"],
        "ratio_untuned = (retrain total_s - tune_s) / implicit's own fit on the same matrix; "
        "goal <= 2; ratio_tuned = total_s / the same fit, the default retrain with its "
        "search (FRESHREC_RETRAIN_TUNE_TRIALS trials); goal <= 15; "
        "snapshot_interactions_per_s goal >= 500,000",
    ),
    "tuning": (
        ["python", "loadtests/bench_tuning.py"],
        "tune_cpu_ratio = the search's CPU seconds / implicit's own fit of the base "
        "configuration on the same training part (tune_ratio: the same in wall time), per "
        "search strategy, 12 trials each, with the chosen configuration's validation nDCG@10 "
        "(val_ndcg; the test part is never used); the default search's part of the retrain's "
        "ratio_tuned (goal <= 15 in all)",
    ),
    "quality": (
        ["python", "loadtests/bench_quality.py"],
        "ndcg_ratio = the model's nDCG@k / the popular baseline's on the same split "
        "(freshrec evaluate, Microsoft Recommenders' definitions); goal > 1",
    ),
    "items": (
        ["python", "loadtests/bench_items.py"],
        "similar_ratio = the similar-items precompute's items/s / the matrix products' alone on "
        "the same 20k items; goal >= 0.5; similar_req_ratio and filtered_req_ratio = GET "
        "/similar and GET /recs?tags= req/s / plain GET /recs at 200 connections; goals >= 0.9 "
        "and >= 0.8; takedown_p99_ms from publish to gone from every endpoint; goal <= 1,000",
    ),
    "history": (
        ["python", "loadtests/bench_history.py"],
        "ndcg_ratio = nDCG@10 of users folded in from their newest `cap` interactions / the "
        "same users' trained factors, per cap, on the long-history profile (MovieLens-1M "
        "histories), beside record bytes and worker µs per user; chooses "
        "FRESHREC_HISTORY_LENGTH with the streamed test (docs/worker.md, History length)",
    ),
}


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def run(name: str) -> dict[str, object]:
    command, _ = BENCHES[name]
    argv = [sys.executable if part == "python" else part for part in command]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    last = proc.stdout.strip().splitlines()[-1]
    figures = json.loads(last)
    if figures.get("bench") != name:
        raise SystemExit(f"{name}: last line is not its JSON result: {last}")
    return {
        "command": " ".join(command),
        "date": dt.date.today().isoformat(),
        "machine": machine(),
        "figures": figures,
    }


def render(
    results: dict[str, dict[str, object]], plots: dict[str, list[tuple[str, Path]]] | None = None
) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Measured by the scripts in `loadtests/`, each beside a baseline measured in the same",
        "run (docs/ENGINEERING.md, Benchmarks). Regenerate with `python loadtests/run_all.py`",
        "(or `--only NAME`).",
        "Figures from a shared 2-core machine are noisy; compare ratios, not absolute rates.",
        "",
    ]
    for name, (_, meaning) in BENCHES.items():
        entry = results.get(name)
        lines.append(f"## {name}")
        lines.append("")
        lines.append(meaning + ".")
        lines.append("")
        if entry is None:
            lines.append("Not measured yet.")
            lines.append("")
            continue
        lines.append(f"Command: `{entry['command']}` — {entry['date']}, {entry['machine']}")
        lines.append("")
        lines.append("| figure | value |")
        lines.append("| --- | --- |")
        for key, value in entry["figures"].items():  # type: ignore[attr-defined]
            if key != "bench":
                lines.append(f"| {key} | {value} |")
        notes = entry.get("notes")
        if notes:
            lines.append("")
            lines.append(str(notes))
        for title, path in (plots or {}).get(name, []):
            lines.append("")
            lines.append(f"![{title}]({path.relative_to(ROOT).as_posix()})")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(BENCHES), action="append")
    parser.add_argument(
        "--render", action="store_true", help="only re-render BENCHMARKS.md from results.json"
    )
    parser.add_argument(
        "--note",
        help="with one --only: what the figures mean (goal met or not, and why); kept with them",
    )
    args = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if args.note and len(args.only or []) != 1:
        parser.error("--note goes with exactly one --only NAME")
    if args.render and args.note:
        results[args.only[0]]["notes"] = args.note
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    if not args.render:
        for name in args.only or list(BENCHES):
            print(f"running {name} ...", flush=True)
            results[name] = run(name)
            if args.note:
                results[name]["notes"] = args.note
            print(json.dumps(results[name]["figures"]), flush=True)
            RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    REPORT.write_text(render(results, draw_all(results)))


if __name__ == "__main__":
    main()
