"""Create the event topics, the items topic (compacted), the contributions topic and the
dead-letter topic when missing."""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from freshrec.errors import TransientError
from freshrec.kafka_client import check_broker
from freshrec.kafka_config import client_config
from freshrec.settings import Settings
from schemas.wire import topics_by_type


def event_topics(settings: Settings) -> list[str]:
    """Every topic freshrec's producers and worker need to exist: the event topics
    (:func:`schemas.wire.topics_by_type`), the items topic, the contributions topic (keyed
    by item, with the event topics' partition count) and the dead-letter topic."""
    return [
        *topics_by_type(settings).values(),
        settings.topic_items,
        settings.topic_contributions,
        settings.topic_dead_letter,
    ]


def topic_config(settings: Settings, name: str) -> dict[str, str]:
    """A new topic's configuration: the items topic is compacted (one record per item, its
    newest, is all the item table needs to be rebuilt from it), the others are Kafka's default."""
    return {"cleanup.policy": "compact"} if name == settings.topic_items else {}


def ensure_topics(settings: Settings, names: Iterable[str] | None = None) -> list[str]:
    """Create the topics that do not exist yet; returns the names it created.

    Idempotent: an existing topic is left as it is, whatever its partition count.
    A broker that does not answer at all fails it within
    ``settings.broker_connect_timeout_s``; past that first contact, each request
    waits at most ``settings.topic_admin_timeout_s``.
    """
    check_broker(settings)
    timeout_s = settings.topic_admin_timeout_s
    admin = AdminClient(client_config(settings))
    wanted = list(names) if names is not None else event_topics(settings)
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as exc:
        raise TransientError(
            f"cannot reach the broker at {settings.bootstrap_servers}: {exc}"
        ) from exc
    missing = [n for n in wanted if n not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [
            NewTopic(
                n,
                num_partitions=settings.topic_partitions,
                replication_factor=settings.topic_replication_factor,
                config=topic_config(settings, n),
            )
            for n in missing
        ],
        operation_timeout=timeout_s,
        request_timeout=timeout_s,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result(timeout=timeout_s)
            created.append(name)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" in str(exc):
                continue
            raise TransientError(f"could not create topic {name!r}: {exc}") from exc
    return created
