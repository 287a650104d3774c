"""The worker's topics and their partition counts: checked at start and on every rebalance.

A user's events reach one partition of each event topic (the key's hash
modulo the partition count) and the user's state lives in the changelog
partition of the same number, so every topic the worker uses must have the
configured partition count (``FRESHREC_TOPIC_PARTITIONS``), the changelog as
many as the event topics. A broker that lost its state and came back once let
the producers that were still writing create ``watch``, ``rate`` and the
changelog again with its own default (4 partitions, beside 8 for ``forget``
and the dead-letter topic): the forgets of partitions 4-7 had no changelog
partition, their batch failed on every attempt, and every restart took the
same batch again (issue 28). freshrec's producers no longer create topics
(:mod:`freshrec.kafka_producer`, :mod:`streams.transport`), and the worker
refuses to run on topics whose counts differ, in one line that names each
topic and its count: nothing is consumed or committed, and the events stay on
the topics until an operator fixes them (docs/worker.md, "Topics").

A topic that does not exist is no mismatch: ``freshrec worker`` creates the
event topics at start and Faust the changelog.
"""

from __future__ import annotations

from collections.abc import Mapping

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from freshrec.errors import FreshrecError, TransientError
from freshrec.kafka_config import client_config
from freshrec.settings import Settings
from schemas.interim import stats_changelog_topic
from schemas.state import changelog_topic
from schemas.wire import topics_by_type


class TopologyError(FreshrecError):
    """The broker's topics are not what the worker was configured for: no retry fixes it."""


def worker_topics(settings: Settings) -> list[str]:
    """Every topic the worker reads or writes: the event topics, the changelog of its state
    table, the contributions topic and its table's changelog, and the dead-letter topic."""
    return [
        *topics_by_type(settings).values(),
        changelog_topic(settings.app_id),
        settings.topic_contributions,
        stats_changelog_topic(settings.app_id),
        settings.topic_dead_letter,
    ]


def mismatch(settings: Settings, counts: Mapping[str, int]) -> str | None:
    """The refusal line when a topic of ``counts`` (topic -> partitions, existing topics
    only) has another partition count than the settings say; None when all agree."""
    wanted = settings.topic_partitions
    wrong = {t: n for t, n in counts.items() if n != wanted}
    if not wrong:
        return None
    listed = ", ".join(f"{topic} has {n}" for topic, n in sorted(wrong.items()))
    right = sorted(t for t in counts if t not in wrong)
    agreeing = f" ({', '.join(right)}: {wanted})" if right else ""
    return (
        f"topics disagree with FRESHREC_TOPIC_PARTITIONS={wanted}: {listed}{agreeing}; a "
        "broker that lost its state may have created them again with its default: recreate "
        f'them with {wanted} partitions (docs/worker.md, "Topics") or set '
        "FRESHREC_TOPIC_PARTITIONS to the count they all share"
    )


def partition_counts(settings: Settings, topics: list[str]) -> dict[str, int]:
    """The partition count of each of ``topics`` that exists (one metadata request).

    Raises :class:`TransientError` when the broker does not answer within
    ``topic_admin_timeout_s``. Blocking: asyncio callers run it in a thread.
    """
    admin = AdminClient(client_config(settings))
    try:
        listed = admin.list_topics(timeout=settings.topic_admin_timeout_s).topics
    except KafkaException as exc:
        raise TransientError(
            f"cannot list the topics on {settings.bootstrap_servers}: {exc}"
        ) from exc
    return {t: len(listed[t].partitions) for t in topics if t in listed}


def check_topics(settings: Settings) -> None:
    """Raise :class:`TopologyError` (the one line of :func:`mismatch`) when the worker's
    topics disagree with the settings, :class:`TransientError` when the broker is silent."""
    problem = mismatch(settings, partition_counts(settings, worker_topics(settings)))
    if problem is not None:
        raise TopologyError(problem)
