"""Malformed and slow requests over a real socket (issue 10, item 5).

Regression: aiohttp answered an oversized request line or header block in
plain text quoting the request back, and a client dripping header bytes kept
its connection for as long as it liked.
"""

from __future__ import annotations

import socket
import time
import urllib.request
from collections.abc import Iterator

import orjson
import pytest

from freshrec.settings import Settings
from tests.serving.conftest import LiveApi, live_api

pytestmark = pytest.mark.integration

SECRET = "s3cr3t-marker"


@pytest.fixture
def api(settings: Settings) -> Iterator[LiveApi]:
    with live_api(settings, api_header_timeout_s=1.0, api_keepalive_timeout_s=1.5) as served:
        yield served


def exchange(api: LiveApi, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read the whole answer (the server closes after an error).

    No half-close after sending: a FIN the server reads after it closed makes
    the kernel reset the connection, which can drop the answer unread.
    """
    with socket.create_connection((api.settings.api_host, api.settings.api_port), 5) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def test_a_request_line_over_the_limit_is_a_json_400_that_does_not_echo_it(api: LiveApi) -> None:
    status, headers, body = exchange(
        api, b"GET /recs/" + SECRET.encode() * 1000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert status == 400
    assert headers["content-type"].startswith("application/json")
    error = orjson.loads(body)["error"]
    assert error["code"] == "request_line_too_long"
    assert SECRET.encode() not in body


def test_a_header_over_the_limit_is_a_json_431_that_does_not_echo_it(api: LiveApi) -> None:
    status, headers, body = exchange(
        api, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + SECRET.encode() * 1000 + b"\r\n\r\n"
    )
    assert status == 431, body
    assert headers["content-type"].startswith("application/json")
    assert orjson.loads(body)["error"]["code"] == "headers_too_large"
    assert SECRET.encode() not in body


def test_too_many_headers_is_a_json_431(api: LiveApi) -> None:
    many = b"".join(b"X-H%d: %s\r\n" % (i, SECRET.encode()) for i in range(200))
    status, _, body = exchange(api, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    assert status == 431
    assert orjson.loads(body)["error"]["code"] == "headers_too_large"
    assert SECRET.encode() not in body


def test_garbage_is_a_json_400_without_the_bytes(api: LiveApi) -> None:
    status, _, body = exchange(api, b"\x16\x03\x01" + SECRET.encode() + b"\r\n\r\n")
    assert status == 400
    assert orjson.loads(body)["error"]["code"] == "bad_request"
    assert SECRET.encode() not in body


def test_a_client_dripping_headers_is_disconnected_after_the_timeout_while_others_are_served(
    api: LiveApi,
) -> None:
    slow = socket.create_connection((api.settings.api_host, api.settings.api_port), 5)
    slow.settimeout(0.2)
    started = time.monotonic()
    closed_after: float | None = None
    try:
        slow.sendall(b"GET /healthz HTTP/1.1\r\n")
        for n in range(40):  # one header byte every 0.1 s: headers never end within 4 s
            with urllib.request.urlopen(api.url + "/healthz", timeout=2) as response:
                assert response.status == 200  # others are served meanwhile
            try:
                slow.sendall(b"X-Drip-%d: 1\r\n" % n)
                if slow.recv(1) == b"":
                    closed_after = time.monotonic() - started
                    break
            except TimeoutError:
                continue
            except OSError:
                closed_after = time.monotonic() - started
                break
    finally:
        slow.close()
    assert closed_after is not None, "the dripping client was never disconnected"
    assert 0.9 <= closed_after < 3.0, closed_after


def test_an_idle_keep_alive_connection_is_closed_after_the_keepalive_timeout(
    api: LiveApi,
) -> None:
    with socket.create_connection((api.settings.api_host, api.settings.api_port), 5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        sock.settimeout(5)
        assert sock.recv(1) == b""  # closed by the server, not by our timeout
        assert 1.0 <= time.monotonic() - started < 4.0


def test_chaos_post_events_with_the_broker_unreachable_gets_its_503_under_default_timeouts(
    settings: Settings,
) -> None:
    """Regression (issue 28): with the default settings a client got its connection closed
    after 10 s with no answer. The body came after the headers (``Expect: 100-continue``,
    as curl sends a body over 1 KB), and the header timeout (10 s) took it for the start of
    the next request and cut the connection while the handler waited for the broker
    (publish timeout 10 s). The documented 503 with Retry-After and per-event results now
    arrives, within the publish timeout and its grace."""
    from freshrec.kafka_producer import ACK_GRACE_S
    from freshrec.stack import free_port

    defaults = Settings()
    event = {
        "type": "watch",
        "event_id": "e1",
        "user_id": "u1",
        "item_id": "m1",
        "watched_s": 60.0,
        "ts": 1_735_689_600_000,
    }
    body = orjson.dumps([event, {**event, "event_id": "bad", "watched_s": -1}])
    with live_api(
        settings,
        bootstrap_servers=f"127.0.0.1:{free_port()}",
        publish_timeout_s=defaults.publish_timeout_s,
        api_header_timeout_s=defaults.api_header_timeout_s,
    ) as api:
        head = (
            f"POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n"
        ).encode()
        started = time.monotonic()
        with socket.create_connection((api.settings.api_host, api.settings.api_port), 30) as sock:
            sock.sendall(head)
            interim = sock.recv(65536)
            assert interim.startswith(b"HTTP/1.1 100"), interim
            sock.sendall(body)
            data = b""
            while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        took = time.monotonic() - started
    head_bytes, _, answer = data.partition(b"\r\n\r\n")
    print(f"\nchaos post-events-broker-down: answered_in_s={took:.1f} bytes={len(data)}")
    assert head_bytes.startswith(b"HTTP/1.1 503"), data[:200]
    assert b"Retry-After:" in head_bytes
    parsed = orjson.loads(answer)
    assert [r["status"] for r in parsed["results"]] == ["failed", "rejected"]
    assert took < defaults.publish_timeout_s + ACK_GRACE_S + 3
