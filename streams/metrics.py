"""The worker's Prometheus metrics, on a registry of its own.

A registry per worker (not the process-global default) keeps two apps in one
process, such as tests or the benchmark's baseline beside the worker, from
colliding on metric names. The Faust app serves it at ``/metrics``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

#: Freshness buckets, in seconds: fine below the 0.5 s goal for p99, so quantiles read well.
_FRESHNESS_BUCKETS = (
    0.005,
    0.01,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.0,
    5.0,
    10.0,
    30.0,
)
_TIME_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_SIZE_BUCKETS = (1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class BulkHistogram(Histogram):
    """A :class:`~prometheus_client.Histogram` that also takes many observations in one call.

    prometheus_client observes one value per call (a lock and a loop over the
    bucket bounds each); the worker observes every event's freshness, so a
    batch of hundreds made hundreds of calls. :meth:`observe_many` counts the
    values per bucket with numpy and adds each bucket's count, and their sum,
    once. It reads the bucket state that ``Histogram.observe`` writes
    (``_upper_bounds``, ``_buckets``, ``_sum``, private to prometheus_client:
    ``tests/streams/test_metrics.py`` pins that both give the same exposition).
    """

    def observe_many(self, amounts: ArrayLike) -> None:
        """Observe every value of ``amounts``, as one :meth:`observe` per value would."""
        self._raise_if_not_observable()
        values = np.asarray(amounts, dtype=np.float64).ravel()
        if values.size == 0:
            return
        # observe() counts a value in the first bucket whose bound it does not
        # exceed: searchsorted's "left" side. NaN exceeds every bound and is counted in
        # none, as observe() does; the sum takes it all the same.
        bucket = np.searchsorted(self._upper_bounds, values, side="left")
        counts = np.bincount(bucket, minlength=len(self._upper_bounds) + 1)
        self._sum.inc(float(values.sum()))
        for i in np.flatnonzero(counts[: len(self._upper_bounds)]).tolist():
            self._buckets[i].inc(int(counts[i]))


class WorkerMetrics:
    """Every metric the worker exports; names are listed in docs/worker.md."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.consumed = Counter(
            "freshrec_worker_events_consumed", "Messages read, per topic.", ["topic"], registry=r
        )
        self.valid = Counter(
            "freshrec_worker_events_valid",
            "Valid new events applied, per topic.",
            ["topic"],
            registry=r,
        )
        self.invalid = Counter(
            "freshrec_worker_events_invalid",
            "Messages dead-lettered, per topic.",
            ["topic"],
            registry=r,
        )
        self.duplicate = Counter(
            "freshrec_worker_events_duplicate",
            "Events dropped because their event_id was already applied, per topic.",
            ["topic"],
            registry=r,
        )
        self.batch_splits = Counter(
            "freshrec_worker_batch_splits",
            "Batches split in two because they failed for a reason no retry fixes; the "
            "message that fails alone is dead-lettered with the error.",
            registry=r,
        )
        self.forgotten = Counter(
            "freshrec_worker_events_forgotten",
            "Events dropped because their user was forgotten at or after the event's ts "
            "(a replay or redelivery of a forgotten history), per topic.",
            ["topic"],
            registry=r,
        )
        self.markers_expired = Counter(
            "freshrec_worker_forget_markers_expired",
            "Forget markers turned into tombstones after FRESHREC_FORGET_RETENTION_S.",
            registry=r,
        )
        self.new_items_folded = Gauge(
            "freshrec_worker_new_items_folded",
            "Items the model does not know whose statistics this worker's item agent holds "
            "(per model version each).",
            registry=r,
        )
        self.new_items_shared = Gauge(
            "freshrec_worker_new_items_shared",
            "Interim items whose vector this worker's item agent shared (they have "
            "FRESHREC_NEW_ITEM_MIN_USERS users or more).",
            registry=r,
        )
        self.new_items_content = Gauge(
            "freshrec_worker_new_items_content",
            "Interim items of the current version ranked by a content vector (tagged, no "
            "users yet), as of this worker's last read of the interim vectors.",
            registry=r,
        )
        self.new_items_content_started = Counter(
            "freshrec_worker_new_items_content_started_total",
            "Content vectors written for an item that had no interim vector under the "
            "version (a catalog upload, or a switch to a version that does not know it).",
            registry=r,
        )
        self.new_item_users = Histogram(
            "freshrec_worker_new_item_users",
            "Distinct users of an interim item, observed each time its vector is written.",
            buckets=_SIZE_BUCKETS,
            registry=r,
        )
        self.new_item_recommendable_seconds = Histogram(
            "freshrec_worker_new_item_recommendable_seconds",
            "Time from an interim item's first contribution reaching the item agent to its "
            "vector being shared (recommendable).",
            buckets=_FRESHNESS_BUCKETS,
            registry=r,
        )
        self.contributions_sent = Counter(
            "freshrec_worker_contributions_sent",
            "Contribution messages (one per interim item per batch) sent to the "
            "contributions topic.",
            registry=r,
        )
        self.batch_size = Histogram(
            "freshrec_worker_batch_size",
            "Messages per micro-batch.",
            buckets=_SIZE_BUCKETS,
            registry=r,
        )
        self.foldin_seconds = Histogram(
            "freshrec_worker_foldin_seconds",
            "Time to fold in and score all users of one batch.",
            buckets=_TIME_BUCKETS,
            registry=r,
        )
        self.redis_write_seconds = Histogram(
            "freshrec_worker_redis_write_seconds",
            "Time to write one batch's lists to Redis, retries included.",
            buckets=_TIME_BUCKETS,
            registry=r,
        )
        self.durable_write_seconds = Histogram(
            "freshrec_worker_durable_write_seconds",
            "Time to make one batch's state changes and dead letters durable in Kafka.",
            buckets=_TIME_BUCKETS,
            registry=r,
        )
        self.freshness_seconds = BulkHistogram(
            "freshrec_worker_freshness_seconds",
            "From an event's timestamp to the Redis write of the list that includes it.",
            buckets=_FRESHNESS_BUCKETS,
            registry=r,
        )
        self.lists_written = Counter(
            "freshrec_worker_lists_written", "User lists written to Redis.", registry=r
        )
        self.lists_stale = Counter(
            "freshrec_worker_lists_stale",
            "User lists not written because Redis held a newer one.",
            registry=r,
        )
        self.retries = Counter(
            "freshrec_worker_retries",
            "Retries of transient faults, per operation.",
            ["operation"],
            registry=r,
        )
        self.users_held = Gauge(
            "freshrec_worker_users", "Users whose state this worker holds.", registry=r
        )
        self.state_cache_users = Gauge(
            "freshrec_worker_state_cache_users",
            "Users whose decoded state this worker keeps in memory (FRESHREC_STATE_CACHE_USERS).",
            registry=r,
        )
        self.state_cache_bytes = Gauge(
            "freshrec_worker_state_cache_bytes",
            "Estimated memory of the decoded states and their confidences (streams.state).",
            registry=r,
        )
        self.model_loaded = Gauge(
            "freshrec_worker_model_loaded_timestamp_seconds",
            "When the current model version was loaded (0: no model yet).",
            registry=r,
        )
        self.model_switches = Counter(
            "freshrec_worker_model_switches", "Model versions picked up.", registry=r
        )
        self.redis_data_lost = Counter(
            "freshrec_worker_redis_data_lost",
            "Times Redis lost its data while the worker ran (its epoch token changed); "
            "each is followed by a refresh of every held list.",
            registry=r,
        )

        self.seconds_since_progress = Gauge(
            "freshrec_worker_seconds_since_progress",
            "Seconds since the agent last received a batch or finished one (0 while one "
            "is in flight), at the scrape: it grows through a broker partition.",
            registry=r,
        )
        self.progress_checks = Counter(
            "freshrec_worker_progress_checks",
            "Progress checks that got an answer from the broker (one a second).",
            registry=r,
        )
        self.stalls = Counter(
            "freshrec_worker_stalls",
            "Progress checks that found the worker stuck (no progress with lag, or a broker "
            "that lost records it read); each ends the process with status 75.",
            registry=r,
        )
        self.partitions_changed = Gauge(
            "freshrec_worker_topic_partitions_changed",
            "1 while an event topic's partition count differs from the one at start.",
            ["topic"],
            registry=r,
        )
        self.model_created = Gauge(
            "freshrec_model_created_timestamp_seconds",
            "When the model version this worker uses was trained (0: no model yet); "
            "its age is what the model-age alert watches.",
            registry=r,
        )
        self.consumer_lag = Gauge(
            "freshrec_worker_consumer_lag",
            "Messages on an assigned event partition that this worker has not processed yet "
            "(end offset minus the next offset to process: the last processed one, else "
            "the last commit, else the first one received), as of the last progress check "
            "that got an answer from the broker (its age: the next metric).",
            ["topic", "partition"],
            registry=r,
        )
        self.consumer_lag_age = Gauge(
            "freshrec_worker_consumer_lag_age_seconds",
            "Seconds since the consumer lag was last measured: /metrics never waits on the "
            "broker, so during a partition the lag is the last one measured, this old.",
            registry=r,
        )
        self.broker_lost_offsets = Counter(
            "freshrec_worker_broker_lost_offsets",
            "Offsets of an event topic this worker (or its previous run) had seen that the "
            "broker no longer has: the topic was created again, or a partition ends below "
            "them. Their events are gone with the broker's state (an alert fires).",
            ["topic"],
            registry=r,
        )
        self.partitions_held = Gauge(
            "freshrec_worker_partitions_held",
            "Event-topic partitions this worker holds (0 while a rebalance is under way).",
            registry=r,
        )
        self.events_fenced = Counter(
            "freshrec_worker_events_fenced",
            "Events of partitions revoked while their batch was in flight: nothing of theirs "
            "was written or acked, and their next owner processes them.",
            registry=r,
        )

        # the online metrics (streams.online): per model version and arm
        online = ["version", "arm"]
        self.online_events = Counter(
            "freshrec_worker_online_events",
            "Watch and rate events of users whose last written list (still in force) was "
            "made by this model version and arm.",
            online,
            registry=r,
        )
        self.online_hits = Counter(
            "freshrec_worker_online_hits",
            "Of those events, the ones on an item in the list's top 10 (top=10) or top "
            "FRESHREC_ONLINE_TOP_K (top=k).",
            [*online, "top"],
            registry=r,
        )
        self.online_reciprocal_rank = Counter(
            "freshrec_worker_online_reciprocal_rank",
            "Sum of 1/rank of the event's item in the list over those events (0 for a miss): "
            "over online_events, the mean reciprocal rank.",
            online,
            registry=r,
        )
        self.online_rated = Counter(
            "freshrec_worker_online_rated",
            "Rate events on an item of the list's top k.",
            online,
            registry=r,
        )
        self.online_rating = Counter(
            "freshrec_worker_online_rating_sum",
            "Sum of the ratings of those rate events: over online_rated, the mean rating "
            "users gave to what they were recommended.",
            online,
            registry=r,
        )

        self.canary_fraction = Gauge(
            "freshrec_worker_canary_fraction",
            "Share of users the canary's candidate serves (0: no canary release).",
            registry=r,
        )
        self.canary_difference = Gauge(
            "freshrec_worker_canary_hit_rate_difference",
            "The canary's hit rate @10 minus the current model's, over every worker's "
            "events, as of the last model poll.",
            registry=r,
        )
        self.canary_worse = Gauge(
            "freshrec_worker_canary_worse",
            "1 while the canary's sequential test finds the candidate significantly worse "
            "than the current model (FRESHREC_CANARY_ALPHA), else 0.",
            registry=r,
        )
        self.canary_aborts = Counter(
            "freshrec_worker_canary_aborts",
            "Canaries this worker aborted because its test found the candidate worse.",
            registry=r,
        )

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)
