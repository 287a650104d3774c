"""Which delivery failures retire a producer: the ones that can leave it stuck, and only those."""

from __future__ import annotations

from confluent_kafka import KafkaError

from freshrec.kafka_producer import DeliveryError, spends_producer


def test_a_timeout_or_a_fatal_error_spends_the_producer() -> None:
    assert spends_producer(KafkaError._MSG_TIMED_OUT)
    assert spends_producer(KafkaError._FATAL)
    assert DeliveryError("no acknowledgement within 1s", KafkaError._MSG_TIMED_OUT).spends_producer


def test_a_refused_record_or_a_full_queue_does_not() -> None:
    """A record too large or for an unknown topic says nothing of the producer's state, and
    replacing it on a full queue would throw away what it holds."""
    assert not spends_producer(KafkaError.MSG_SIZE_TOO_LARGE)
    assert not spends_producer(KafkaError.UNKNOWN_TOPIC_OR_PART)
    assert not DeliveryError("the producer's local queue is full").spends_producer
