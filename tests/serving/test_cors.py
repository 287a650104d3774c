"""CORS (``FRESHREC_API_CORS_ORIGINS``): off by default, allowed origins' browsers may call.

Issue 26, item 9: a page of another origin could not call the API at all, and
there was no setting to allow one.
"""

from __future__ import annotations

import pytest

from freshrec.errors import ConfigError
from freshrec.settings import Settings
from tests.serving.conftest import ApiClient, ListWriter

pytestmark = pytest.mark.integration

SHOP = "https://shop.example.com"
PREFLIGHT = {
    "Origin": SHOP,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


async def test_off_by_default_no_origin_is_allowed(
    api_client: ApiClient, write_list: ListWriter
) -> None:
    write_list("alice", ["a"])
    async with api_client() as client:
        resp = await client.get("/recs/alice", headers={"Origin": SHOP})
        preflight = await client.options("/events", headers=PREFLIGHT)
    assert resp.status == 200
    assert "Access-Control-Allow-Origin" not in resp.headers
    assert "Access-Control-Allow-Origin" not in preflight.headers


async def test_an_allowed_origin_gets_preflight_and_marked_answers_even_with_a_token(
    api_client: ApiClient, write_list: ListWriter
) -> None:
    write_list("alice", ["a"])
    async with api_client(api_cors_origins=f"{SHOP}, https://m.example.com", api_token="t") as c:
        preflight = await c.options("/events", headers=PREFLIGHT)
        ok = await c.get("/recs/alice", headers={"Origin": SHOP, "Authorization": "Bearer t"})
        refused = await c.get("/recs/alice", headers={"Origin": SHOP})
        other = await c.get(
            "/recs/alice", headers={"Origin": "https://evil.example", "Authorization": "Bearer t"}
        )
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == SHOP
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    assert (ok.status, ok.headers["Access-Control-Allow-Origin"]) == (200, SHOP)
    # an error answer is marked too, so the page can read why
    assert (refused.status, refused.headers["Access-Control-Allow-Origin"]) == (401, SHOP)
    assert other.status == 200
    assert "Access-Control-Allow-Origin" not in other.headers


async def test_any_origin_with_a_star(api_client: ApiClient, write_list: ListWriter) -> None:
    write_list("alice", ["a"])
    async with api_client(api_cors_origins="*") as client:
        resp = await client.get("/recs/alice", headers={"Origin": "http://localhost:3000"})
    assert resp.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"


def test_a_malformed_origin_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match=r"FRESHREC_API_CORS_ORIGINS: 'shop\.example\.com/x'"):
        Settings(api_cors_origins="shop.example.com/x")
