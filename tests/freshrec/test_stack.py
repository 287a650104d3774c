"""`freshrec stack up|down` and `freshrec publish`, run as a user would, as processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from freshrec.settings import Settings
from freshrec.stack import _identity, read_state

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).parents[2] / "examples"


def freshrec(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("FRESHREC_")},
            **(env or {}),
        },
        cwd=cwd,
    )


def test_stack_up_publish_down(tmp_path: Path) -> None:
    state_dir = tmp_path / "stack"
    up = freshrec("stack", "up", "--state-dir", str(state_dir))
    assert up.returncode == 0, up.stderr
    state = read_state(state_dir)
    assert state is not None
    try:
        assert _identity(state.broker_pid) == state.broker_id
        assert _identity(state.redis_pid) == state.redis_id
        env = dict(
            line.removeprefix("export ").split("=", 1)
            for line in up.stdout.splitlines()
            if line.startswith("export ")
        )
        assert env == state.env
        # issue 26, item 2: the model store was left out, so `models list` and `retrain`
        # with these settings acted on ./var/models, not the store the stack's workers follow
        assert env["FRESHREC_MODEL_STORE"] == str((state_dir / "models").resolve())

        again = freshrec("stack", "up", "--state-dir", str(state_dir))
        assert again.returncode == 1 and "already running" in again.stderr

        sent = freshrec("publish", str(EXAMPLES / "events.jsonl"), env=env)
        assert sent.returncode == 0, sent.stderr
        assert "sent 40 event(s), rejected 0" in sent.stdout
    finally:
        down = freshrec("stack", "down", "--state-dir", str(state_dir))
    assert down.returncode == 0
    assert f"broker (pid {state.broker_pid})" in down.stdout
    assert _identity(state.broker_pid) is None and _identity(state.redis_pid) is None
    assert read_state(state_dir) is None
    assert freshrec("stack", "down", "--state-dir", str(state_dir)).stdout.strip() == (
        "no stack was running"
    )


def test_publish_reports_each_rejected_line(settings: Settings) -> None:
    result = freshrec("publish", str(EXAMPLES / "bad-events.jsonl"), env=settings.as_env())
    assert result.returncode == 1
    assert "sent 0 event(s), rejected 5" in result.stdout
    lines = result.stderr.splitlines()
    assert any(":1: rejected: user_id: must match pattern" in line for line in lines)
    assert any(":2: rejected: rating: must be one of" in line for line in lines)
    assert any(":3: rejected: rating: is required" in line for line in lines)
    assert any(":4: rejected: payload: is not valid JSON" in line for line in lines)
    assert any(":5: rejected: extra: is not a field of a watch event" in line for line in lines)


def test_bad_setting_stops_the_cli_with_a_clear_message() -> None:
    result = freshrec("publish", "-", env={"FRESHREC_BATCH_SIZE": "lots"})
    assert result.returncode == 2
    assert "FRESHREC_BATCH_SIZE='lots' is not a valid int" in result.stderr
