"""/healthz says the process is up; /readyz says Redis answers, and the model's state apart."""

from __future__ import annotations

from typing import Any

import pytest

from freshrec.settings import Settings
from schemas.recs import DATA_FIELD, popular_key
from tests.serving.conftest import ApiClient, ListWriter

pytestmark = pytest.mark.integration


async def test_healthz_answers_without_redis(api_client: ApiClient) -> None:
    async with api_client(redis_url="redis://127.0.0.1:1/0") as client:
        resp = await client.get("/healthz")
        assert resp.status == 200
        assert await resp.json() == {"status": "ok"}


async def test_ready_when_the_popular_list_is_present(
    api_client: ApiClient, write_list: ListWriter
) -> None:
    write_list(None, ["p"], model_version="v7")
    async with api_client() as client:
        resp = await client.get("/readyz")
        body = await resp.json()
    assert resp.status == 200
    assert (body["ready"], body["model"], body["model_version"]) == (True, "present", "v7")


async def test_ready_before_any_model_with_the_model_state_reported_apart(
    api_client: ApiClient, write_list: ListWriter, settings: Settings
) -> None:
    """Issue 13.6: /readyz said 503 until a model existed, though the API serves every
    request as soon as Redis answers (popular lists, empty at first)."""
    async with api_client() as client:
        resp = await client.get("/readyz")
        body = await resp.json()
        assert resp.status == 200
        assert (body["ready"], body["model"], body["model_version"]) == (True, "none", None)
        assert popular_key(settings.key_prefix) in body["reason"]
        write_list(None, ["p"], model_version=None)  # a worker's popularity, no model yet
        body = await (await client.get("/readyz")).json()
        assert (body["ready"], body["model"], body["model_version"]) == (True, "none", None)


async def test_unreadable_popular_list_is_ready_with_the_model_unreadable(
    api_client: ApiClient, redis_client: Any, settings: Settings
) -> None:
    redis_client.hset(popular_key(settings.key_prefix), DATA_FIELD, b"{broken")
    async with api_client() as client:
        resp = await client.get("/readyz")
        body = await resp.json()
    assert resp.status == 200
    assert (body["ready"], body["model"]) == (True, "unreadable")
    assert "unreadable" in body["reason"]


async def test_not_ready_when_redis_cannot_be_reached(api_client: ApiClient) -> None:
    async with api_client(redis_url="redis://127.0.0.1:1/0") as client:
        resp = await client.get("/readyz")
        body = await resp.json()
    assert resp.status == 503
    assert (body["ready"], body["model"]) == (False, None)
    assert "Redis cannot be reached" in body["reason"]


async def test_readiness_without_the_token_says_ready_or_not_and_nothing_else(
    api_client: ApiClient, write_list: ListWriter
) -> None:
    """Issue 10, item 5: /readyz without a token revealed the model version and Redis errors."""
    write_list(None, ["p"], model_version="v7")
    async with api_client(api_token="t0ken") as client:
        bare = await client.get("/readyz")
        bare_body = await bare.json()
        wrong = await client.get("/readyz", headers={"Authorization": "Bearer nope"})
        wrong_body = await wrong.json()
        full = await client.get("/readyz", headers={"Authorization": "Bearer t0ken"})
        full_body = await full.json()
    assert (bare.status, bare_body) == (200, {"ready": True})
    assert (wrong.status, wrong_body) == (200, {"ready": True})
    assert full.status == 200 and full_body["model_version"] == "v7" and full_body["reason"]


async def test_unready_without_the_token_hides_the_reason(api_client: ApiClient) -> None:
    async with api_client(api_token="t0ken", redis_url="redis://127.0.0.1:1/0") as client:
        resp = await client.get("/readyz")
        assert (resp.status, await resp.json()) == (503, {"ready": False})
