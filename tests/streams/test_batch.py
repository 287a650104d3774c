"""The batch step, pure: tiny hand-made batches in, states, dead letters and tallies out."""

from __future__ import annotations

from typing import Any

import orjson

from schemas.events import EventType
from schemas.state import Interaction, ShownList, UserState
from streams.batch import Inbound, StepResult, step

BASE_TS = 1_735_689_600_000
KINDS: dict[str, EventType] = {"watch": "watch", "rate": "rate", "forget": "forget"}


def watch(event_id: str, user: str, item: str, ts: int) -> dict[str, Any]:
    return {
        "type": "watch",
        "event_id": event_id,
        "user_id": user,
        "item_id": item,
        "watched_s": 1500.0,
        "duration_s": 1800.0,
        "ts": ts,
    }


def forget(event_id: str, user: str, ts: int) -> dict[str, Any]:
    return {"type": "forget", "event_id": event_id, "user_id": user, "ts": ts}


def msg(event: dict[str, Any], offset: int = 0, key: bytes | None = None) -> Inbound:
    """The message a publisher sends for ``event``: keyed by its user, on its type's topic."""
    return Inbound(
        event["type"],
        offset % 3,
        offset,
        event["user_id"].encode() if key is None else key,
        orjson.dumps(event),
    )


def run(
    messages: list[Inbound], states: dict[str, UserState] | None = None, **kw: Any
) -> StepResult:
    held = states or {}
    return step(messages, held.get, KINDS, kw.pop("history_length", 10), 10, **kw)


def test_valid_events_update_their_users_states() -> None:
    result = run(
        [
            msg(watch("e1", "u1", "a", BASE_TS + 1), 0),
            msg(watch("e2", "u2", "b", BASE_TS + 2), 1),
            msg(watch("e3", "u1", "c", BASE_TS + 3), 2),
        ]
    )
    assert result.dead_letters == []
    histories = {
        u: [i.item_id for i in t.state.history]
        for u, t in result.touched.items()
        if t.state is not None
    }
    assert histories == {"u1": ["a", "c"], "u2": ["b"]}
    assert result.touched["u1"].changed and result.touched["u1"].partition == 2
    assert sorted(result.event_ts) == [BASE_TS + 1, BASE_TS + 2, BASE_TS + 3]
    assert result.tallies.valid == {"watch": 3} == result.tallies.consumed
    assert not result.tallies.invalid and not result.tallies.duplicate


def test_an_invalid_message_becomes_a_dead_letter_and_touches_nobody() -> None:
    bad = Inbound("watch", 1, 7, b"u1", b'{"type": "watch", "user_id": "u1"}')
    result = run([bad, msg(watch("e1", "u2", "a", BASE_TS))])
    assert list(result.touched) == ["u2"]
    [letter] = result.dead_letters
    assert (letter.topic, letter.partition, letter.offset, letter.value) == (
        "watch",
        1,
        7,
        bad.value,
    )
    assert result.tallies.invalid == {"watch": 1} and result.tallies.consumed == {"watch": 2}


def test_an_event_on_another_types_topic_is_invalid() -> None:
    event = watch("e1", "u1", "a", BASE_TS)
    result = run([Inbound("rate", 0, 0, b"u1", orjson.dumps(event))])
    assert result.touched == {} and len(result.dead_letters) == 1
    assert result.tallies.invalid == {"rate": 1}


def test_a_duplicate_is_dropped_but_its_user_is_still_touched() -> None:
    first = run([msg(watch("e1", "u1", "a", BASE_TS))])
    state = first.touched["u1"].state
    assert state is not None
    again = run([msg(watch("e1", "u1", "a", BASE_TS))], {"u1": state})
    touched = again.touched["u1"]
    assert not touched.changed and touched.event_ts == [] and touched.state is state
    assert [i.item_id for i in state.history] == ["a"]
    assert again.tallies.duplicate == {"watch": 1} and not again.tallies.valid


def test_forget_leaves_a_marker_and_a_newer_event_of_the_batch_starts_afresh() -> None:
    held = {"u1": UserState([Interaction("old", "watch", 1500.0, 1800.0, BASE_TS)], ["e0"])}
    result = run(
        [msg(watch("e1", "u1", "a", BASE_TS + 1)), msg(forget("f1", "u1", BASE_TS + 2))], held
    )
    touched = result.touched["u1"]
    assert touched.state == UserState(forgotten_at=BASE_TS + 2)
    assert touched.state.is_marker and touched.changed and touched.event_ts == []
    assert result.tallies.valid == {"watch": 1, "forget": 1}

    held = {"u1": UserState([Interaction("old", "watch", 1500.0, 1800.0, BASE_TS)], ["e0"])}
    result = run(
        [msg(forget("f1", "u1", BASE_TS + 2)), msg(watch("e2", "u1", "b", BASE_TS + 3))], held
    )
    state = result.touched["u1"].state
    assert state is not None and [i.item_id for i in state.history] == ["b"]
    assert state.event_ids == ["e2"] and result.touched["u1"].event_ts == [BASE_TS + 3]
    assert state.forgotten_at == BASE_TS + 2


def test_events_at_or_before_a_forget_are_dropped_in_any_order() -> None:
    """Issue 10, item 3: re-sending the ids of a forgotten history brought it back, because
    the forget dropped the remembered event ids with the state."""
    held: dict[str, UserState] = {}
    first = run([msg(watch("e1", "u1", "a", BASE_TS)), msg(forget("f1", "u1", BASE_TS + 5))], held)
    held["u1"] = first.touched["u1"].state  # type: ignore[assignment]
    again = run(
        [
            msg(watch("e1", "u1", "a", BASE_TS)),  # the same id, replayed
            msg(watch("e9", "u1", "z", BASE_TS + 5)),  # an older event redelivered late
        ],
        held,
    )
    state = again.touched["u1"].state
    assert state is not None and state.is_marker and not again.touched["u1"].changed
    assert again.tallies.forgotten == {"watch": 2} and not again.tallies.valid

    late_forget = run(
        [msg(watch("n1", "u2", "new", BASE_TS + 9)), msg(forget("f2", "u2", BASE_TS + 5))], {}
    )
    kept = late_forget.touched["u2"].state
    assert kept is not None and [i.item_id for i in kept.history] == ["new"]
    assert late_forget.touched["u2"].event_ts == [BASE_TS + 9]


def test_a_key_other_than_the_user_id_is_a_dead_letter() -> None:
    result = run(
        [
            msg(watch("e1", "u1", "a", BASE_TS), key=b"u2"),
            Inbound("watch", 0, 1, None, orjson.dumps(watch("e2", "u1", "a", BASE_TS))),
        ]
    )
    assert result.touched == {}
    assert [(d.field, d.rule) for d in result.dead_letters] == [("key", "partitioning")] * 2
    assert [d.key for d in result.dead_letters] == [b"u2", None]


def test_out_of_order_events_are_kept_in_event_time_order() -> None:
    result = run(
        [msg(watch(f"e{ts}", "u1", f"i{ts}", BASE_TS + ts), ts) for ts in (50, 10, 40, 20, 30)],
        history_length=3,
    )
    state = result.touched["u1"].state
    assert state is not None
    assert [i.ts - BASE_TS for i in state.history] == [30, 40, 50]
    assert state.seen_items == ["i10", "i20"]
    assert result.touched["u1"].event_ts == [BASE_TS + ts for ts in (50, 10, 40, 20, 30)]


def test_new_items_are_tracked_only_when_asked() -> None:
    messages = [
        msg(watch("e1", "u1", "a", BASE_TS)),
        msg(watch("e2", "u1", "a", BASE_TS + 1)),  # not new for u1
        msg(watch("e3", "u2", "a", BASE_TS + 2)),
    ]
    assert run(messages).new_items == []
    assert run(messages, track_new_items=True).new_items == ["a", "a"]


def rate(event_id: str, user: str, item: str, ts: int, rating: float) -> dict[str, Any]:
    return {
        "type": "rate",
        "event_id": event_id,
        "user_id": user,
        "item_id": item,
        "rating": rating,
        "ts": ts,
    }


def test_each_new_event_of_a_user_shown_a_list_is_an_exposure_with_its_rank() -> None:
    """Issue 24 (online metrics): events are compared with the list written before the
    batch; duplicates and users never shown a list make none."""
    shown = ShownList(2, "v1", "current", ("a", "b", "c"))
    before = UserState()
    before.shown = shown
    result = run(
        [
            msg(watch("e1", "u1", "b", BASE_TS + 1), 0),
            msg(rate("e2", "u1", "c", BASE_TS + 2, 4.5), 1),
            msg(watch("e3", "u1", "z", BASE_TS + 3), 2),
            msg(watch("e3", "u1", "z", BASE_TS + 3), 3),  # a duplicate
            msg(watch("e4", "u2", "a", BASE_TS + 4), 4),  # never shown a list
        ],
        {"u1": before},
    )
    got = [(e.user, e.shown, e.rank, e.rating) for e in result.exposures]
    assert got == [
        ("u1", shown, 2, None),
        ("u1", shown, 3, 4.5),
        ("u1", shown, None, None),
    ]
