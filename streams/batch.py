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
from typing import Protocol

from schemas.events import EventType, ForgetEvent, RateEvent
from schemas.state import Interaction, InterimContribution, UserState
from schemas.validator import Rejection, validate
from streams.dead_letter import DeadLetter
from streams.online import Exposure


class Message(Protocol):
    """A consumed message, as the batch step reads it: Faust's messages are read as they
    came (no copy per event), and tests hand it :class:`Inbound`\\ s."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class Inbound:
    """A consumed message built by hand (tests, tools): a :class:`Message`."""

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
    exposures: list[Exposure] = field(default_factory=list)
    """One per new watch or rate event of a user who had been shown a list (the online
    metrics, :mod:`streams.online`): the list is the one written before this batch."""
    interim: list[InterimTouch] = field(default_factory=list)
    """With ``is_interim``, the batch's events on items the model does not know and the
    forgets of users who contributed to such items, in message order."""

    @property
    def event_ts(self) -> list[int]:
        """Timestamps of the batch's new events (not of forgotten users)."""
        return [ts for t in self.touched.values() for ts in t.event_ts]


@dataclass(frozen=True, slots=True)
class InterimTouch:
    """A new event of a user on an item the model does not know, or a forget of a user
    who contributed to such items: what :mod:`streams.interim` turns into the
    item's contribution entries (issue 23)."""

    user: str
    item: str | None
    """None for a forget."""
    source: str
    """``"topic:partition"`` of the message: the stamp's source."""
    offset: int
    history: tuple[Interaction, ...]
    """The user's history just after the event (empty for a forget): the contribution
    is a function of it alone, so a redelivered event makes the same one however
    the batch around it is cut."""
    before: dict[str, InterimContribution]
    """The user's contributions before the batch (shared by their touches)."""


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


def failure_rejection(exc: BaseException) -> Rejection:
    """Why a message the worker failed on (a bug, not bad input) was dead-lettered."""
    return Rejection(
        "payload",
        "processing",
        f"the worker failed on this message ({type(exc).__name__}: {str(exc)[:120]}); "
        "fix the worker, then replay it with 'freshrec dlq replay'",
    )


class InjectedFault(RuntimeError):
    """The fault the test hook ``fault_item_id`` raises: stands for a bug on one record."""


def step(
    messages: Sequence[Message],
    get_state: Callable[[str], UserState | None],
    kinds: Mapping[str, EventType],
    history_length: int,
    dedupe_window: int,
    track_new_items: bool = False,
    fault_item_id: str = "",
    is_interim: Callable[[str], bool] | None = None,
    interim_version: str | None = None,
) -> StepResult:
    """Validate ``messages`` and apply them to their users' states, in message order.

    ``get_state`` reads a user's state before the batch (None for an unknown
    user); the states it returns may be changed in place. ``kinds`` maps a
    topic to the event type its messages must be. A ``forget`` turns the
    user's state into a forget marker (:meth:`UserState.forget`): every event
    of theirs at or before the forget's ``ts`` is dropped from then on, in this
    batch or a later one, and counted as ``forgotten``; a newer one starts a
    new history.

    An exception while handling one message (a bug, not bad input) makes that
    message a dead letter with the error as its reason; the batch goes on.
    ``fault_item_id`` is a test hook: events of that item raise
    :class:`InjectedFault`, as such a bug would. ``is_interim`` tells the items
    the model does not know (:attr:`StepResult.interim`); None records none.
    ``interim_version`` is the model's version: an event of a user holding
    contributions made under another version is recorded too, whatever its
    item, so that they are made again under this one (the hand-over at a
    retrain, :mod:`streams.interim`).
    """
    run = _Step(
        get_state,
        kinds,
        history_length,
        dedupe_window,
        track_new_items,
        fault_item_id,
        is_interim,
        interim_version,
    )
    for msg in messages:
        run.tallies.consumed[msg.topic] += 1
        try:
            run.one(msg)
        except Exception as exc:  # a bug on one record must not stop every partition
            run.tallies.invalid[msg.topic] += 1
            run.letters.append(
                DeadLetter.of(
                    msg.topic,
                    msg.partition,
                    msg.offset,
                    msg.key,
                    msg.value,
                    failure_rejection(exc),
                )
            )
    return StepResult(
        run.touched, run.letters, run.tallies, run.new_items, run.exposures, run.interim
    )


@dataclass(slots=True)
class _Step:
    """One :func:`step` in progress: its inputs, and what it produced so far."""

    get_state: Callable[[str], UserState | None]
    kinds: Mapping[str, EventType]
    history_length: int
    dedupe_window: int
    track_new_items: bool
    fault_item_id: str
    is_interim: Callable[[str], bool] | None
    interim_version: str | None
    touched: dict[str, Touched] = field(default_factory=dict)
    letters: list[DeadLetter] = field(default_factory=list)
    tallies: Tallies = field(default_factory=Tallies)
    new_items: list[str] = field(default_factory=list)
    exposures: list[Exposure] = field(default_factory=list)
    interim: list[InterimTouch] = field(default_factory=list)
    before: dict[str, dict[str, InterimContribution]] = field(default_factory=dict)

    def _before(self, user: str, state: UserState) -> dict[str, InterimContribution]:
        """The user's contributions as the batch found them (taken at their first touch)."""
        found = self.before.get(user)
        if found is None:
            found = self.before[user] = dict(state.interim)
        return found

    def one(self, msg: Message) -> None:
        """Apply one message (its ``consumed`` count is the caller's)."""
        tallies = self.tallies
        result = validate(msg.value, self.kinds.get(msg.topic))
        if not isinstance(result, Rejection) and msg.key != result.user_id.encode():
            result = key_rejection(msg.key)
        if isinstance(result, Rejection):
            tallies.invalid[msg.topic] += 1
            self.letters.append(
                DeadLetter.of(msg.topic, msg.partition, msg.offset, msg.key, msg.value, result)
            )
            return
        user = result.user_id
        t = self.touched.get(user)
        if t is None:
            t = self.touched[user] = Touched(self.get_state(user), msg.partition)
        t.partition = msg.partition
        if t.state is None:
            t.state = UserState()
        if isinstance(result, ForgetEvent):
            if self.is_interim is not None and result.ts > t.state.forgotten_at:
                held = self._before(user, t.state)
                if held or any(i.user == user for i in self.interim):
                    source = f"{msg.topic}:{msg.partition}"
                    self.interim.append(InterimTouch(user, None, source, msg.offset, (), held))
            t.state.forget(result.ts)
            t.changed = True
            t.event_ts = [ts for ts in t.event_ts if ts > t.state.forgotten_at]
            tallies.valid[msg.topic] += 1
            return
        if self.fault_item_id and result.item_id == self.fault_item_id:
            raise InjectedFault(f"injected fault on item {result.item_id!r}")
        if result.ts <= t.state.forgotten_at:
            tallies.forgotten[msg.topic] += 1
            return
        state = t.state
        is_new = self.track_new_items and all(i.item_id != result.item_id for i in state.history)
        before: dict[str, InterimContribution] | None = None
        if self.is_interim is not None:
            held = self.before.get(user, state.interim)
            if self.is_interim(result.item_id) or any(
                c[0] != self.interim_version for c in held.values()
            ):
                before = self._before(user, state)
        if state.apply(result, self.history_length, self.dedupe_window):
            if before is not None:
                self.interim.append(
                    InterimTouch(
                        user,
                        result.item_id,
                        f"{msg.topic}:{msg.partition}",
                        msg.offset,
                        tuple(state.history),
                        before,
                    )
                )
            t.changed = True
            t.event_ts.append(result.ts)
            tallies.valid[msg.topic] += 1
            if is_new:
                self.new_items.append(result.item_id)
            shown = state.shown
            if shown is not None:
                rating = result.rating if isinstance(result, RateEvent) else None
                self.exposures.append(Exposure(user, shown, shown.rank(result.item_id), rating))
        else:
            tallies.duplicate[msg.topic] += 1
