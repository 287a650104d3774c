"""One micro-batch's effect on user states, as a pure function over plain data.

:func:`step` is steps 1 and 2 of a batch (see :mod:`streams.pipeline`):
validate every message, dead-letter the invalid ones (a message keyed by
anything but its event's ``user_id`` too), drop repeated ``event_id``\\ s,
apply the rest to their users' states, and count what happened per topic.
It touches no broker, no Redis and no event loop: the pipeline makes its
result durable and builds the lists, and tests hand it tiny batches.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from schemas.events import EventType, ForgetEvent
from schemas.state import UserState
from schemas.validator import Rejection, validate
from streams.dead_letter import DeadLetter


@dataclass(frozen=True, slots=True)
class Inbound:
    """A consumed message, as the batch step needs it (decoupled from Faust's event type)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(slots=True)
class Touched:
    """What a batch did to one user."""

    state: UserState | None
    """The user's state after the batch (a forget marker when the batch forgot them)."""
    partition: int
    """The partition of the user's last message: where their changelog record goes."""
    changed: bool = False
    """Whether the state differs from the one read (so it must be written)."""
    event_ts: list[int] = field(default_factory=list)
    """Timestamps of the user's new events, for the freshness metric."""


@dataclass(frozen=True, slots=True)
class Tallies:
    """Messages per topic: consumed, and of those valid, invalid and duplicate."""

    consumed: Counter[str] = field(default_factory=Counter)
    valid: Counter[str] = field(default_factory=Counter)
    invalid: Counter[str] = field(default_factory=Counter)
    duplicate: Counter[str] = field(default_factory=Counter)
    forgotten: Counter[str] = field(default_factory=Counter)
    """Events dropped because their user was forgotten at or after their ``ts``."""


@dataclass(frozen=True, slots=True)
class StepResult:
    """What :func:`step` did to a batch."""

    touched: dict[str, Touched]
    """Every user with a valid message in the batch (duplicates included: their list is
    rewritten from the state, which is what repairs a crash between persist and write)."""
    dead_letters: list[DeadLetter]
    tallies: Tallies
    new_items: list[str]
    """With ``track_new_items``, one entry per user and item interacted with for the first
    time (per the kept history), for the pre-model popularity; empty otherwise."""

    @property
    def event_ts(self) -> list[int]:
        """Timestamps of the batch's new events (not of forgotten users)."""
        return [ts for t in self.touched.values() for ts in t.event_ts]


def key_rejection(key: bytes | None) -> Rejection:
    """Why a message whose key is not its event's ``user_id`` is refused."""
    shown = "no key" if key is None else repr(key[:40])
    return Rejection(
        "key",
        "partitioning",
        "message key must be the event's user_id, so that all of a "
        "user's events reach the same partition",
        shown,
    )


def step(
    messages: Sequence[Inbound],
    get_state: Callable[[str], UserState | None],
    kinds: Mapping[str, EventType],
    history_length: int,
    dedupe_window: int,
    track_new_items: bool = False,
) -> StepResult:
    """Validate ``messages`` and apply them to their users' states, in message order.

    ``get_state`` reads a user's state before the batch (None for an unknown
    user); the states it returns may be changed in place. ``kinds`` maps a
    topic to the event type its messages must be. A ``forget`` turns the
    user's state into a forget marker (:meth:`UserState.forget`): every event
    of theirs at or before the forget's ``ts`` is dropped from then on, in this
    batch or a later one, and counted as ``forgotten``; a newer one starts a
    new history.
    """
    touched: dict[str, Touched] = {}
    letters: list[DeadLetter] = []
    tallies = Tallies()
    consumed, valid, invalid, duplicate = (
        tallies.consumed,
        tallies.valid,
        tallies.invalid,
        tallies.duplicate,
    )
    new_items: list[str] = []
    for msg in messages:
        consumed[msg.topic] += 1
        result = validate(msg.value, kinds.get(msg.topic))
        if not isinstance(result, Rejection) and msg.key != result.user_id.encode():
            result = key_rejection(msg.key)
        if isinstance(result, Rejection):
            invalid[msg.topic] += 1
            letters.append(
                DeadLetter.of(msg.topic, msg.partition, msg.offset, msg.key, msg.value, result)
            )
            continue
        user = result.user_id
        t = touched.get(user)
        if t is None:
            t = touched[user] = Touched(get_state(user), msg.partition)
        t.partition = msg.partition
        if t.state is None:
            t.state = UserState()
        if isinstance(result, ForgetEvent):
            t.state.forget(result.ts)
            t.changed = True
            t.event_ts = [ts for ts in t.event_ts if ts > t.state.forgotten_at]
            valid[msg.topic] += 1
            continue
        if result.ts <= t.state.forgotten_at:
            tallies.forgotten[msg.topic] += 1
            continue
        is_new = track_new_items and all(i.item_id != result.item_id for i in t.state.history)
        if t.state.apply(result, history_length, dedupe_window):
            t.changed = True
            t.event_ts.append(result.ts)
            valid[msg.topic] += 1
            if is_new:
                new_items.append(result.item_id)
        else:
            duplicate[msg.topic] += 1
    return StepResult(touched, letters, tallies, new_items)
