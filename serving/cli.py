"""``freshrec api``: serve the HTTP API (``--workers N`` processes behind one port)."""

from __future__ import annotations

import argparse

from freshrec.argtypes import port, positive_int
from freshrec.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "api",
        help="serve GET /recs/<user>, POST /events, the page at /, /healthz, /readyz, "
        "/metrics and /openapi.json",
        description="Answers every request from Redis (FRESHREC_REDIS_URL, FRESHREC_KEY_PREFIX). "
        "Stops gracefully on SIGTERM or SIGINT: in-flight requests finish first. "
        "Flags override the FRESHREC_API_* settings.",
    )
    parser.add_argument("--host", help="address to listen on (FRESHREC_API_HOST)")
    parser.add_argument("--port", type=port, help="port to listen on (FRESHREC_API_PORT)")
    parser.add_argument(
        "--workers",
        type=positive_int,
        help="processes sharing the port; one per core uses them all (FRESHREC_API_WORKERS)",
    )
    parser.add_argument(
        "--catalog",
        help="item catalog for titles: MovieLens u.item, or *.csv / *.jsonl of id,title,tags "
        "(FRESHREC_API_CATALOG)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from serving import catalog
    from serving.server import serve

    flags = {
        "api_host": args.host,
        "api_port": args.port,
        "api_workers": args.workers,
        "api_catalog": args.catalog,
    }
    settings = settings.replace(**{k: v for k, v in flags.items() if v is not None})
    if settings.api_catalog:
        catalog.load(settings.api_catalog)  # a bad file fails here, once, not in every worker
    return serve(settings)
