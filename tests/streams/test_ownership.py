"""The fence between rebalances: a batch in flight when its partitions are revoked writes
nothing for them (issue 10, item 4: it must not write a changelog partition this worker
no longer owns)."""

from __future__ import annotations

from streams.ownership import Ownership

TOPICS = ("watch", "rate", "forget")


def test_nothing_is_owned_before_the_first_assignment() -> None:
    assert Ownership(TOPICS).fenced([0, 1]) == {0, 1}


def test_a_revoke_fences_its_partitions_at_once_and_the_next_assignment_lifts_it() -> None:
    own = Ownership(TOPICS)
    own.assigned([("watch", 0), ("rate", 0), ("watch", 1), ("rate", 1), ("changelog", 2)])
    assert own.held == 4 and own.fenced([0, 1, 2]) == {2}
    own.revoking([("watch", 0), ("rate", 0), ("watch", 1), ("rate", 1)])
    assert own.held == 0 and own.fenced([0, 1]) == {0, 1}
    own.assigned([("watch", 1), ("rate", 1)])
    assert own.fenced([0, 1]) == {0}


def test_an_assignment_replaces_the_previous_one() -> None:
    own = Ownership(TOPICS)
    own.assigned([("watch", 0)])
    own.assigned([("watch", 1)])
    assert own.fenced([0, 1]) == {0}
