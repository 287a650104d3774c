"""Faust's aiokafka transport with the consumer's fetch wait taken from settings.

Faust creates its worker consumer with ``fetch_max_wait_ms=1500`` hard-coded.
Against Kafka that costs nothing, as a fetch returns as soon as records arrive.
Some Kafka-compatible brokers (Tansu, the test and benchmark broker) hold every
fetch for the full wait instead, which put 1.5 s into the freshness of every
event. :func:`transport_class` returns the stock transport with only that one
number replaced; the worker passes ``FRESHREC_BATCH_MAX_WAIT_S``, since waiting
longer on the broker than on filling a batch only delays the batch.
"""

from __future__ import annotations

from typing import Any

import aiokafka
from faust.transport.drivers import aiokafka as driver


def transport_class(fetch_max_wait_s: float) -> type[driver.Transport]:
    """A ``faust`` Kafka transport whose worker consumer waits at most ``fetch_max_wait_s``."""
    wait_ms = max(1, int(fetch_max_wait_s * 1000))

    class ConsumerThread(driver.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
            consumer = super()._create_worker_consumer(transport)
            # Read by AIOKafkaConsumer.start() when it builds its fetcher, which
            # happens after this method returns; there is no public setter.
            consumer._fetch_max_wait_ms = wait_ms
            return consumer

    class TunedConsumer(driver.Consumer):
        def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    class Transport(driver.Transport):
        Consumer = TunedConsumer

    return Transport
