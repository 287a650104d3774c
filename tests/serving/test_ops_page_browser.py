"""The ops page in a real browser (issue 24, item 5): versions with their offline figures,
the current one and the canary, both arms' online figures and the sequential test's
decision, and the dead letters by reason, from a real API, Redis and model store."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from freshrec.model_store import ModelStore
from freshrec.settings import Settings
from schemas.dead_letters import dead_letters_key
from schemas.online import online_key
from tests.api_process import api_process, get_json, quick_processes
from tests.serving.test_page_browser import CHROMIUM_ARGS, chromium
from tests.streams.test_canary import save_candidate
from tests.streams.worker import publish_model, synthetic

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_ops_page_shows_versions_the_canarys_arms_and_test_and_dead_letters(
    settings: Settings, redis_client: redis.Redis, tmp_path: Path, artifacts: Path
) -> None:
    from playwright.sync_api import sync_playwright

    s = quick_processes(settings)
    current = publish_model(s, synthetic())
    candidate = save_candidate(s, metrics={"ndcg@10": 0.3217})
    ModelStore(s.model_store).start_canary(candidate, 0.2, by="ops on call")
    # what the workers would have counted: the candidate hits far less often
    p = s.key_prefix
    redis_client.hset(online_key(p, current, "current"), mapping={"events": 8000, "hits10": 800})
    redis_client.hset(online_key(p, candidate, "canary"), mapping={"events": 2000, "hits10": 60})
    redis_client.hset(dead_letters_key(p), mapping={"ts/minimum": 3, "payload/json": 7})

    with api_process(s, tmp_path / "api.log") as base:
        status, data = get_json(base + "/ops.json")
        assert status == 200 and data["canary"]["test"]["decision"] == "candidate worse"
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1200, "height": 1000})
                requested: list[str] = []
                page.on("request", lambda request: requested.append(request.url))
                page.goto(base + "/ops")
                page.wait_for_selector("#decision")
                decision = page.inner_text("#decision")
                canary = page.inner_text("#canary")
                versions = page.inner_text("#versions")
                online = page.inner_text("#online")
                letters = page.inner_text("#dead-letters")
                pointer = page.inner_text("#pointer")
                shot = artifacts / "ops.png"
                shot.unlink(missing_ok=True)
                page.screenshot(path=str(shot), full_page=True)
                print(f"screenshot: {shot}")
            finally:
                browser.close()
    assert "candidate worse" in decision and "mixture SPRT" in decision
    assert f"canary {candidate} (20.00% of users)" in canary and "always-valid" in canary
    assert "hit rate @10 10.00%" in canary and "hit rate @10 3.00%" in canary
    rows = versions.splitlines()
    assert any(current in r and "CURRENT" in r.upper() for r in rows)
    assert any(candidate in r and "CANARY" in r.upper() and "0.3217" in r for r in rows)
    assert current in online and "8000" in online
    assert letters.index("payload/json") < letters.index("ts/minimum")  # most frequent first
    assert "canary by ops on call" in pointer
    outside = [url for url in requested if not url.startswith(base + "/")]
    assert not outside, f"the page fetched from elsewhere than the API: {outside}"
    assert shot.read_bytes().startswith(b"\x89PNG")
