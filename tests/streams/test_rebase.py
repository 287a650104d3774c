"""``freshrec publish --rebase-ts``: recorded example files are published as if made now."""

from __future__ import annotations

from pathlib import Path

import orjson

from streams.rebase import rebase

EXAMPLES = Path(__file__).parents[2] / "examples"


def test_example_events_are_rebased_to_now_so_freshness_does_not_read_a_year() -> None:
    """Issue 13.10: examples/events.jsonl is a year old, so after a demo the freshness
    metric (written time minus newest event time) read about a year."""
    lines = (EXAMPLES / "events.jsonl").read_bytes().splitlines()
    now_ms = 1_900_000_000_000
    before = [orjson.loads(line)["ts"] for line in lines]
    after = [orjson.loads(line)["ts"] for line in rebase(lines, now_ms)]
    assert max(before) < now_ms - 86_400_000  # the file really is old
    assert max(after) == now_ms
    shift = now_ms - max(before)
    assert after == [ts + shift for ts in before]  # order and gaps kept


def test_rebase_keeps_invalid_lines_byte_for_byte() -> None:
    good = b'{"type":"forget","event_id":"e1","user_id":"u1","ts":1700000000000}'
    bad = [b"not json", b'{"type":"forget","event_id":"e2","user_id":"u 2","ts":1700000005000}']
    out = rebase([good, *bad], now_ms=1800000000000)
    assert orjson.loads(out[0])["ts"] == 1800000000000
    assert out[1:] == bad
    assert rebase(bad, now_ms=1800000000000) == bad
