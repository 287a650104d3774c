"""Acking a batch at once (``ack_processed``) leaves Faust's offset tracking exactly as
acking each event does, so that the commit moves over processed offsets, and only those."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from aiokafka.errors import KafkaError
from faust.types import TP, Message

from freshrec.settings import Settings
from streams.app import faust_app
from streams.transport import rewind_to_committed

TOPIC = "events"


def consumer(app_id: str) -> Any:
    """The worker's consumer, not started (no broker is needed to track acks)."""
    app = faust_app(Settings(), app_id=app_id)
    app.topics.acking_topics.add(TOPIC)  # what subscribing an acking agent does
    return app.consumer


def message(partition: int, offset: int, refs: int = 1) -> Message:
    tp = TP(TOPIC, partition)
    msg = Message(TOPIC, partition, offset, 0, 0, None, b"k", b"v", None, tp=tp)
    msg.refcount = refs
    return msg


def track(c: Any, messages: list[Message]) -> None:
    for m in messages:
        c.track_message(m)


def tracking(c: Any) -> tuple[Any, ...]:
    """Everything the commit and a revoke's wait read of the acks."""
    return (
        {tp: sorted(v) for tp, v in c._acked.items()},
        {tp: set(v) for tp, v in c._acked_index.items()},
        c._n_acked,
        len(c._unacked_messages),
    )


def test_a_batch_acked_at_once_tracks_offsets_as_acking_each_event_does() -> None:
    one_by_one, at_once = consumer("ack-each"), consumer("ack-batch")
    # Two partitions interleaved; partition 1 starts after a commit at 20.
    offsets = [(0, 5), (1, 20), (0, 6), (0, 7), (1, 21), (0, 8)]
    each = [message(p, o) for p, o in offsets]
    batch = [message(p, o) for p, o in offsets]
    track(one_by_one, each)
    track(at_once, batch)
    for c in (one_by_one, at_once):
        c._committed_offset[TP(TOPIC, 1)] = 20
    for m in each:
        one_by_one.ack(m)
    after = at_once.ack_processed(batch)
    assert after == {TP(TOPIC, 0): 9, TP(TOPIC, 1): 22}
    assert tracking(at_once) == tracking(one_by_one)
    assert tracking(at_once)[3] == 0  # nothing left for a revoke to wait for
    assert all(m.acked for m in batch)
    assert at_once._new_offset(TP(TOPIC, 0)) == 9
    assert at_once._new_offset(TP(TOPIC, 1)) == 22


def test_offsets_below_the_last_commit_or_acked_before_are_not_entered_again() -> None:
    c = consumer("ack-old")
    tp = TP(TOPIC, 0)
    c._committed_offset[tp] = 10
    old, new = message(0, 9), message(0, 10)
    track(c, [old, new])
    c.ack_processed([old, new])
    c.ack_processed([message(0, 10)])  # a redelivered copy of offset 10
    assert (c._acked[tp], c._n_acked) == ([10], 1)


def test_a_message_another_stream_still_holds_is_acked_by_the_last_one() -> None:
    c = consumer("ack-shared")
    shared = message(0, 3, refs=2)
    track(c, [shared])
    c.ack_processed([shared])
    assert not shared.acked and not c._acked[TP(TOPIC, 0)]
    c.ack_processed([shared])
    assert shared.acked and c._acked[TP(TOPIC, 0)] == [3]


@pytest.mark.parametrize("gap", [False, True])
def test_only_processed_offsets_are_committed_across_batches(gap: bool) -> None:
    """Batches acked at once commit up to their last offset, and no further than a batch
    that was not acked (a fenced partition's is left to its next owner)."""
    c = consumer(f"ack-runs-{gap}")
    tp = TP(TOPIC, 0)
    first = [message(0, o) for o in range(0, 4)]
    fenced = [message(0, o) for o in range(4, 8)]
    third = [message(0, o) for o in range(8, 12)]
    track(c, first + fenced + third)
    c.ack_processed(first)
    if not gap:
        c.ack_processed(fenced)
    c.ack_processed(third)
    assert c._new_offset(tp) == (4 if gap else 12)


class FakeAIOKafka:
    """The two seeks of an aiokafka consumer, recorded: committed offsets as the broker has them."""

    def __init__(self, committed: dict[TP, int | None]) -> None:
        self.committed = committed
        self.to_beginning: list[TP] = []

    async def seek_to_committed(self) -> dict[TP, int | None]:
        return dict(self.committed)

    async def seek_to_beginning(self, *partitions: TP) -> bool:
        self.to_beginning.extend(partitions)
        return True


def test_regression_partitions_without_a_commit_are_rewound_to_their_start_on_a_seek() -> None:
    """Regression: aiokafka's seek_to_committed leaves a partition without a commit where its
    fetches got to, so records the queue clear after a recovery dropped were never fetched
    again on it (one event lost in about one takeover in ten)."""
    never, zero, done = TP(TOPIC, 0), TP(TOPIC, 1), TP(TOPIC, 2)
    changelog = TP("app-user-state-changelog", 0)
    fake = FakeAIOKafka({never: None, zero: 0, done: 40, changelog: None})
    committed = asyncio.run(rewind_to_committed(cast(Any, fake), lambda tp: tp.topic == TOPIC))
    assert committed == fake.committed
    assert sorted(fake.to_beginning) == [never, zero]  # not the changelog: recovery's


def test_regression_the_seek_after_a_recovery_stops_the_flow_until_the_caller_resumes() -> None:
    """Regression: records handed to the agent's queue while Faust sought back after a
    recovery were dropped by the queue clear that follows; nothing may flow meanwhile."""
    c = consumer("seek-flow")
    c.resume_flow()
    flowing: list[bool] = []

    async def seek_to_committed() -> dict[TP, int]:
        flowing.append(c.flow_active)
        return {TP(TOPIC, 0): 7}

    c.seek_to_committed = seek_to_committed
    asyncio.run(c.perform_seek())
    assert flowing == [False] and not c.flow_active  # Faust resumes it after the clear
    assert c._read_offset[TP(TOPIC, 0)] == 7


def test_a_seek_that_fails_leaves_the_flow_as_it_was() -> None:
    c = consumer("seek-fails")
    c.resume_flow()

    async def seek_to_committed() -> dict[TP, int]:
        raise KafkaError("broker gone")

    c.seek_to_committed = seek_to_committed
    with pytest.raises(KafkaError):
        asyncio.run(c.perform_seek())
    assert c.flow_active
