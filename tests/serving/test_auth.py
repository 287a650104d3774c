"""The optional bearer token: every route but the probes needs it when it is set."""

from __future__ import annotations

import pytest

from tests.serving.conftest import ApiClient, ListWriter

pytestmark = pytest.mark.integration

TOKEN = "s3cret-token"


@pytest.mark.parametrize("path", ["/recs/alice", "/metrics", "/openapi.json", "/no/such/route"])
@pytest.mark.parametrize(
    "header", [None, "Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer", f"{TOKEN}"]
)
async def test_missing_or_wrong_token_is_a_401(
    api_client: ApiClient, path: str, header: str | None
) -> None:
    headers = {} if header is None else {"Authorization": header}
    async with api_client(api_token=TOKEN) as client:
        resp = await client.get(path, headers=headers)
        body = await resp.json()
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert body["error"]["code"] == "unauthorized"
    assert TOKEN not in str(body)


async def test_right_token_is_served(api_client: ApiClient, write_list: ListWriter) -> None:
    write_list("alice", ["a"])
    async with api_client(api_token=TOKEN) as client:
        for scheme in ("Bearer", "bearer"):
            resp = await client.get("/recs/alice", headers={"Authorization": f"{scheme} {TOKEN}"})
            assert resp.status == 200
            assert (await resp.json())["items"] == [{"item": "a", "score": 1.0}]


async def test_probes_need_no_token(api_client: ApiClient, write_list: ListWriter) -> None:
    write_list(None, ["p"])
    async with api_client(api_token=TOKEN) as client:
        assert (await client.get("/healthz")).status == 200
        assert (await client.get("/readyz")).status == 200


async def test_no_token_configured_means_no_check(
    api_client: ApiClient, write_list: ListWriter
) -> None:
    write_list("alice", ["a"])
    async with api_client(api_token="") as client:
        assert (await client.get("/recs/alice")).status == 200
        assert (await client.get("/metrics")).status == 200
