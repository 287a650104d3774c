"""Test helpers for the API as its own process: ``freshrec api``, as ops run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from freshrec.settings import Settings
from freshrec.stack import free_port, wait_until


def get_json(url: str) -> tuple[int, Any]:
    """Status and decoded body of a GET, for 2xx and error answers alike."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def quick_processes(settings: Settings) -> Settings:
    """``settings`` with free web ports and short group, commit and model-poll timings, so a
    worker and an API started by a test join, commit and follow the model within a second."""
    return settings.replace(
        worker_web_port=free_port(),
        api_port=free_port(),
        broker_session_timeout_s=2.0,
        broker_heartbeat_interval_s=0.3,
        broker_commit_interval_s=0.5,
        model_poll_interval_s=0.3,
    )


@contextmanager
def api_process(settings: Settings, log_path: Path) -> Iterator[str]:
    """A running ``freshrec api`` for ``settings``; yields its base URL, stops it after."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHREC_")}
    env.update(settings.as_env())
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "api"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://{settings.api_host}:{settings.api_port}"
    try:
        wait_until(lambda: get_json(base + "/healthz")[0] == 200, 30, "the API")
        yield base
    finally:
        proc.terminate()
        proc.wait(20)
