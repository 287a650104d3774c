"""The page at ``/``: served from the package, open without the token, settings filled in."""

from __future__ import annotations

import pytest

from tests.serving.conftest import ApiClient

pytestmark = pytest.mark.integration


async def test_page_is_served_without_a_token_with_its_poll_interval(
    api_client: ApiClient,
) -> None:
    async with api_client(api_token="s3cret", api_page_poll_s=0.25) as client:
        resp = await client.get("/")
        html = await resp.text()
        recs = await client.get("/recs/u1")
    assert resp.status == 200 and resp.content_type == "text/html"
    assert "const POLL_MS = 250;" in html and "const NEEDS_TOKEN = true;" in html
    assert "__FRESHREC" not in html
    assert "connect-src 'self'" in resp.headers["Content-Security-Policy"]
    assert recs.status == 401  # the page is open, the data is not


async def test_page_fetches_nothing_from_outside(api_client: ApiClient) -> None:
    async with api_client() as client:
        html = await (await client.get("/")).text()
    assert "http://" not in html and "https://" not in html
    assert "const NEEDS_TOKEN = false;" in html
