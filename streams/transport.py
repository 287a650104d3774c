"""Faust's aiokafka transport, with two corrections for Kafka-compatible brokers such as Tansu.

**Fetch wait.** Faust creates its worker consumer with ``fetch_max_wait_ms=1500``
hard-coded. Against Kafka that costs nothing, as a fetch returns as soon as
records arrive. Some Kafka-compatible brokers (Tansu, the test and benchmark
broker) hold every fetch for the full wait instead, which put 1.5 s into the
freshness of every event. The worker's consumer waits at most
``FRESHREC_BATCH_MAX_WAIT_S`` instead, since waiting longer on the broker than
on filling a batch only delays the batch.

**Changelog highwaters.** Faust's table recovery reads each changelog
partition up to the highwater it gets from ``Consumer.highwaters()``, which the
stock driver takes from ListOffsets(LATEST). Tansu (v0.6.0) answers that with
the base offset of the partition's *last record batch* + 1, not the last
offset + 1, while its Fetch responses carry the true high watermark. The worker
sends a batch's changelog records together, so a partition's last record batch
often holds many users; a restarted worker then skipped all of them but the
first and silently lost their state. So before recovery, for every partition
whose ListOffsets answer ``h`` is above 0, a short-lived consumer without a
group fetches once from offset ``h - 1`` (an offset that exists, so the broker
answers at once) and the high watermark of that Fetch response is used when it
is larger. On Kafka the two agree and recovery reads exactly what it read
before; the cost is one connection and one fetch per recovery, none when every
changelog partition is empty. The probe is bounded by Faust's
``broker_request_timeout`` (the bound Faust puts on the whole highwater step);
past it, the ListOffsets answer stands, as in stock Faust, with a warning.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, cast

import aiokafka
from faust.transport.drivers import aiokafka as driver
from faust.types import TP

log = logging.getLogger(__name__)


def transport_class(fetch_max_wait_s: float) -> type[driver.Transport]:
    """A ``faust`` Kafka transport whose worker consumer waits at most ``fetch_max_wait_s``
    and whose changelog highwaters are the ones Fetch responses report (see module doc)."""
    wait_ms = max(1, int(fetch_max_wait_s * 1000))

    class ConsumerThread(driver.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
            consumer = super()._create_worker_consumer(transport)
            # Read by AIOKafkaConsumer.start() when it builds its fetcher, which
            # happens after this method returns; there is no public setter.
            consumer._fetch_max_wait_ms = wait_ms
            return consumer

        async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
            listed = await super()._highwaters(partitions)
            if self.consumer.in_transaction:
                return listed  # last stable offsets, from Fetch responses already
            behind = {tp: h for tp, h in listed.items() if h}
            if not behind:
                return listed
            timeout_s = self.app.conf.broker_request_timeout
            try:
                fetched = await asyncio.wait_for(self._fetched_highwaters(behind), timeout_s)
            except TimeoutError:
                log.warning(
                    "no Fetch high watermark for %d changelog partition(s) within %.0fs; "
                    "recovering up to the ListOffsets answer",
                    len(behind),
                    timeout_s,
                )
                return listed
            corrected = dict(listed)
            for tp, high in fetched.items():
                if high > corrected[tp]:
                    log.info(
                        "highwater of %s:%d is %d (ListOffsets said %d)",
                        tp.topic,
                        tp.partition,
                        high,
                        corrected[tp],
                    )
                    corrected[tp] = high
            return corrected

        async def _fetched_highwaters(self, listed: Mapping[TP, int]) -> dict[TP, int]:
            """The high watermark of one Fetch response per partition, from offset ``h - 1``."""
            conf = self.app.conf
            transport = cast(driver.Transport, self.transport)
            probe = aiokafka.AIOKafkaConsumer(
                bootstrap_servers=driver.server_list(transport.url, transport.default_port),
                client_id=conf.broker_client_id,
                group_id=None,
                enable_auto_commit=False,
                # h - 1 gone (retention): read from the end, whose Fetch says the same.
                auto_offset_reset="latest",
                fetch_max_wait_ms=wait_ms,
                request_timeout_ms=int(conf.broker_request_timeout * 1000),
                check_crcs=False,
                **driver.credentials_to_aiokafka_auth(conf.broker_credentials, conf.ssl_context),
            )
            await probe.start()
            try:
                probe.assign(list(listed))
                for tp, high in listed.items():
                    probe.seek(tp, high - 1)
                pending = set(listed)
                while pending:
                    # The probe's fetcher fetches in the background; getmany
                    # returns once records are in (at once here, as h - 1
                    # exists) or after one fetch wait.
                    await probe.getmany(*pending, timeout_ms=wait_ms)
                    pending = {tp for tp in pending if probe.highwater(tp) is None}
                return {tp: probe.highwater(tp) for tp in listed}
            finally:
                await probe.stop()

    class TunedConsumer(driver.Consumer):
        def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    class Transport(driver.Transport):
        Consumer = TunedConsumer

    return Transport
