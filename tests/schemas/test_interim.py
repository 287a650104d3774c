"""The codecs of the interim-item contracts (schemas.interim) and the user state's field."""

from __future__ import annotations

import numpy as np
import pytest

from schemas.interim import (
    ContributionMessage,
    Entry,
    InterimVector,
    StatsRecord,
    decode_message,
    decode_stats,
    decode_vector,
    decode_vectors,
    encode_message,
    encode_stats,
    encode_vector,
    split_stats_key,
    stats_key,
)
from schemas.state import Interaction, UserState, decode, encode


def test_a_contribution_message_round_trips() -> None:
    message = ContributionMessage(
        "v1",
        "new-item",
        [
            Entry("u1", "watch:3", 17, None, (2.5, (0.1, -0.2))),
            Entry("u2", "forget:0", 4, (1.0, (0.3, 0.4)), None),
        ],
    )
    assert decode_message(encode_message(message)) == message
    assert message.factors == 2


@pytest.mark.parametrize("raw", [b"", b"{}", b'{"f": 2, "v": "v", "i": "i", "e": []}', b"[1]"])
def test_an_unreadable_contribution_message_says_so(raw: bytes) -> None:
    with pytest.raises(ValueError, match="unreadable contribution message"):
        decode_message(raw)


def test_item_statistics_round_trip_exactly() -> None:
    rng = np.random.default_rng(1)
    record = StatsRecord(rng.normal(size=(3, 3)), rng.normal(size=3), 7, 123, {"watch:1": 9})
    back = decode_stats(encode_stats(record))
    np.testing.assert_array_equal(back.a, record.a)
    np.testing.assert_array_equal(back.b, record.b)
    assert (back.users, back.first_ms, back.watermarks) == (7, 123, {"watch:1": 9})
    with pytest.raises(ValueError, match="unreadable item statistics"):
        decode_stats(encode_stats(record)[:-3])
    assert split_stats_key(stats_key("v1", "a\u00e9")) == ("v1", "a\u00e9")


def test_an_interim_vector_round_trips_and_a_bad_one_is_left_out() -> None:
    vector = InterimVector(np.array([0.5, -1.25], dtype=np.float32), "content", 0, 5, 6)
    back = decode_vector(encode_vector(vector))
    np.testing.assert_array_equal(back.vector, vector.vector)
    assert (back.source, back.users, back.first_ms, back.at_ms) == ("content", 0, 5, 6)
    found = decode_vectors({b"good": encode_vector(vector), b"bad": b'{"f": 1}'})
    assert list(found) == ["good"]


def test_a_user_state_keeps_its_interim_contributions_and_older_records_have_none() -> None:
    state = UserState([Interaction("a", "watch", 10.0, 20.0, 1)], ["e1"])
    without = encode(state)
    assert decode(without).interim == {}
    state.interim = {"new": ("v1", 2.0, (0.25, -0.5))}
    assert decode(encode(state)).interim == state.interim
    copy = state.copy()
    copy.interim["other"] = ("v1", 1.0, (0.0, 0.0))
    assert "other" not in state.interim
    state.forget(5)
    assert state.interim == {}
