"""One typed settings object for every freshrec process, read from ``FRESHREC_*`` variables.

Every field has a default that works on the local stack, a type the value is
parsed into, and a one-line doc. ``Settings.from_env()`` validates everything at
start, so a typo in a deployment fails the process before it touches Kafka or
Redis, with a message that names the variable. The README's settings table is
generated from these fields (``python -m freshrec.readme``) and a test keeps
it in sync.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, get_type_hints
from urllib.parse import urlsplit

from freshrec.errors import ConfigError

ENV_PREFIX = "FRESHREC_"

#: librdkafka's ``security.protocol`` values (aiokafka takes the same names).
KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
#: SASL mechanisms both client libraries speak.
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
#: The bounds of a TCP port setting; 0 asks the system for any free port.
#: Not 0: "any free port" leaves clients not knowing where to connect (and Faust's
#: web server refused it with a traceback).
PORT_BOUNDS: dict[str, int] = {"min": 1, "max": 65535}


def _doc(text: str, **meta: Any) -> dict[str, Any]:
    return {"doc": text, **meta}


@dataclass(frozen=True)
class Settings:
    """Everything a worker, API or job needs to know about its surroundings."""

    # --- Kafka ---------------------------------------------------------------
    bootstrap_servers: str = field(
        default="127.0.0.1:9092",
        metadata=_doc("Kafka bootstrap servers, comma-separated host:port."),
    )
    topic_watch: str = field(default="watch", metadata=_doc("Topic of `watch` events."))
    topic_rate: str = field(default="rate", metadata=_doc("Topic of `rate` events."))
    topic_forget: str = field(default="forget", metadata=_doc("Topic of `forget` events."))
    topic_items: str = field(
        default="items",
        metadata=_doc(
            "Compacted topic of item records (title, tags, availability), keyed by item id; "
            "the item table in Redis is built from it."
        ),
    )
    topic_contributions: str = field(
        default="freshrec-item-contributions",
        metadata=_doc(
            "Topic of users' contributions to items the model does not know, keyed by item "
            'id (written and read by the workers: docs/worker.md, "New items").'
        ),
    )
    topic_dead_letter: str = field(
        default="freshrec-dead-letter",
        metadata=_doc("Topic that receives invalid events with the reason and original bytes."),
    )
    topic_partitions: int = field(
        default=8,
        metadata=_doc("Partitions of the event topics when freshrec creates them.", min=1),
    )
    topic_replication_factor: int = field(
        default=1,
        metadata=_doc(
            "Replication factor of topics freshrec creates; use 3 on a production cluster.", min=1
        ),
    )
    publish_timeout_s: float = field(
        default=10.0,
        metadata=_doc(
            "Seconds the publisher waits for the broker to acknowledge an event "
            "before it reports a delivery failure.",
            min=0.1,
        ),
    )
    publish_linger_s: float = field(
        default=0.005,
        metadata=_doc(
            "Seconds the publisher waits to fill a batch before sending it: a few "
            "milliseconds pack a burst of events into a few requests.",
            min=0.0,
        ),
    )
    topic_admin_timeout_s: float = field(
        default=10.0,
        metadata=_doc(
            "Seconds listing or creating topics may wait for the broker before "
            "`publish` or `worker` gives up at start.",
            min=0.1,
        ),
    )
    broker_connect_timeout_s: float = field(
        default=2.0,
        metadata=_doc(
            "Seconds a command (`publish`, `worker`, `dlq`, `retrain`) waits for the broker's "
            "first answer before it reports the broker unreachable.",
            min=0.1,
        ),
    )
    topic_read_timeout_s: float = field(
        default=30.0,
        metadata=_doc(
            "Seconds reading a whole topic to its end may take (`freshrec dlq list|replay`).",
            min=0.1,
        ),
    )

    # --- Kafka security (production clusters; secrets come from the environment) --
    kafka_security_protocol: str = field(
        default="PLAINTEXT",
        metadata=_doc(
            "How every Kafka client connects: PLAINTEXT (the local stack), SSL, "
            "SASL_PLAINTEXT or SASL_SSL.",
            choices=KAFKA_SECURITY_PROTOCOLS,
        ),
    )
    kafka_sasl_mechanism: str = field(
        default="PLAIN",
        metadata=_doc(
            "SASL mechanism with a SASL_* protocol: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.",
            choices=KAFKA_SASL_MECHANISMS,
        ),
    )
    kafka_sasl_username: str = field(
        default="", metadata=_doc("SASL user name; required with a SASL_* protocol.")
    )
    kafka_sasl_password: str = field(
        default="",
        repr=False,
        metadata=_doc(
            "SASL password; required with a SASL_* protocol. Set it from a secret, "
            "never in a file in the repository."
        ),
    )
    kafka_ssl_ca_file: str = field(
        default="",
        metadata=_doc(
            "PEM file of the CA that signed the brokers' certificates, with an SSL or "
            "SASL_SSL protocol; empty trusts the system's CAs."
        ),
    )

    # --- Redis ---------------------------------------------------------------
    redis_url: str = field(
        default="redis://127.0.0.1:6379/0", metadata=_doc("Redis URL for the lists.")
    )
    redis_cluster: bool = field(
        default=False,
        metadata=_doc(
            "Whether FRESHREC_REDIS_URL names a node of a Redis Cluster (any node: the "
            "client finds the rest and follows slot moves and failovers); database 0 only."
        ),
    )
    redis_wait_replicas: int = field(
        default=0,
        metadata=_doc(
            "Replicas that must hold a batch's lists before the worker acks its events "
            "(WAIT on each node written to): 1 with one replica per primary keeps every "
            "list through a failover; 0 trusts the primary's answer.",
            min=0,
        ),
    )
    key_prefix: str = field(
        default="freshrec:", metadata=_doc("Prefix of every Redis key freshrec writes.")
    )
    redis_connect_timeout_s: float = field(
        default=0.5, metadata=_doc("Redis connect timeout in seconds.", min=0.001)
    )
    redis_socket_timeout_s: float = field(
        default=0.5, metadata=_doc("Redis read/write timeout in seconds.", min=0.001)
    )
    redis_retries: int = field(
        default=2,
        metadata=_doc("Retries of one Redis command on a connection error or timeout.", min=0),
    )

    redis_password: str = field(
        default="",
        repr=False,
        metadata=_doc(
            "Redis password (AUTH), so that the URL can live in a ConfigMap and the password "
            "in a secret; set this or a password in the URL, not both."
        ),
    )
    redis_ssl_ca_file: str = field(
        default="",
        metadata=_doc(
            "PEM file of the CA that signed Redis's certificate, with a rediss:// URL; "
            "empty trusts the system's CAs."
        ),
    )

    # --- Retry policy for transient faults ------------------------------------
    retry_backoff_base_s: float = field(
        default=0.05,
        metadata=_doc(
            "Longest wait before the first retry of a transient fault, in seconds; it "
            "doubles per retry up to the cap, and each wait is drawn uniformly below it.",
            min=0.0,
        ),
    )
    retry_backoff_cap_s: float = field(
        default=2.0,
        metadata=_doc("Largest backoff delay between two retries, in seconds.", min=0.0),
    )
    retry_deadline_s: float = field(
        default=300.0,
        metadata=_doc(
            "How long the worker keeps retrying one transient fault before it stops "
            "(without acking) so that a restart resumes from the last commit.",
            min=0.1,
        ),
    )

    # --- Lists and model -----------------------------------------------------
    list_length: int = field(
        default=150,
        metadata=_doc(
            "Items stored per user list; longer than `api_max_k` so that excluded "
            "items can be replaced.",
            min=1,
        ),
    )
    new_item_min_users: int = field(
        default=3,
        metadata=_doc(
            "Distinct users an item the model does not know needs before its folded-in "
            'vector is shared and it can enter lists (docs/worker.md, "New items").',
            min=1,
            max=1_000_000,
        ),
    )
    similar_length: int = field(
        default=50,
        metadata=_doc(
            "Neighbours stored per item and model version for `GET /similar` and `POST /recs` "
            "(computed when a version is published); about 5 bytes each in Redis.",
            min=1,
        ),
    )
    model_store: str = field(
        default="./var/models",
        metadata=_doc(
            "Directory or fsspec URL (e.g. s3://bucket/models, with s3fs installed) of "
            "model versions and the current-model pointer."
        ),
    )

    retrain_tune_budget_s: float = field(
        default=600.0,
        metadata=_doc(
            "Safety limit, in seconds, of the hyperparameter search of `freshrec retrain`, "
            "`train` and `evaluate`: no trial starts after it, and a search it cut short "
            "keeps the untuned configuration (reported, and logged as a warning), so the "
            "chosen model never depends on the machine's speed; 0 skips the search.",
            min=0.0,
        ),
    )
    retrain_tune_trials: int = field(
        default=12,
        metadata=_doc(
            "Configurations the hyperparameter search scores (Optuna TPE, seeded), the "
            "starting one included: what bounds the search, so the same data and seed "
            "choose the same configuration on any machine. Each costs about one bare "
            "fit (trials that lag are stopped at 5 iterations): with 12 the search took "
            "12-13 times implicit's own fit in CPU time (`loadtests/bench_tuning.py`; "
            "20-25 before issue 25's cuts); 1 scores the starting configuration only.",
            min=1,
        ),
    )
    model_keep: int = field(
        default=10,
        metadata=_doc(
            "Model versions kept in the store after a retrain (the newest ones, plus the "
            "current one whatever its age); older ones are deleted.",
            min=1,
        ),
    )

    # --- Canary releases (issue 24) -------------------------------------------
    canary_alpha: float = field(
        default=0.05,
        metadata=_doc(
            "Error rate of the canary's sequential test (mixture SPRT, models/sequential.py): "
            "the chance, however often it is looked at, that it declares a difference "
            "between two equally good models.",
            min=0.001,
            max=0.5,
        ),
    )
    canary_tau: float = field(
        default=0.005,
        metadata=_doc(
            "Size of the difference in hit rate @10 the canary's test is tuned to find "
            "(its mixture's standard deviation): 0.005 is a 10% change of a 5% hit rate.",
            min=0.0001,
            max=0.5,
        ),
    )
    canary_min_events: int = field(
        default=1000,
        metadata=_doc(
            "Events each arm of a canary must have before its test decides anything (the "
            "normal approximation is poor below).",
            min=1,
        ),
    )
    canary_auto_abort: bool = field(
        default=True,
        metadata=_doc(
            "Whether a worker aborts a canary whose candidate its test finds significantly "
            "worse than the current model (every list returns to the current version); the "
            "worker then needs write access to FRESHREC_MODEL_STORE."
        ),
    )

    # --- Retrain job ----------------------------------------------------------
    spark_master: str = field(
        default="local[*]",
        metadata=_doc(
            "Spark master URL of `freshrec retrain --engine spark` (local[*], spark://..., "
            "k8s://https://...)."
        ),
    )
    retrain_tolerance: float = field(
        default=0.02,
        metadata=_doc(
            "How much worse (relative nDCG@10 on the hold-out) a retrained model may be than "
            "the current one and still be published; 0.02 allows 2%.",
            min=0.0,
        ),
    )
    retrain_gate_users: int = field(
        default=5000,
        metadata=_doc(
            "Users sampled for the retrain's chronological hold-out; the gate scores the "
            "candidate and the current model on their newest interactions.",
            min=1,
        ),
    )
    retrain_holdout_fraction: float = field(
        default=0.2,
        metadata=_doc(
            "Share of each sampled user's items (the newest ones) held out by the gate.",
            min=0.01,
        ),
    )
    retrain_lock_ttl_s: float = field(
        default=60.0,
        metadata=_doc(
            "Expiry of the retrain's Redis lock; the job renews it every third of this, so a "
            "killed job frees the lock after at most this long.",
            min=1.0,
        ),
    )
    retrain_snapshot_timeout_s: float = field(
        default=300.0,
        metadata=_doc(
            "Longest time the retrain may take to read the user-state changelog before it "
            "gives up as a transient fault.",
            min=1.0,
        ),
    )

    # --- Worker --------------------------------------------------------------
    app_id: str = field(
        default="freshrec", metadata=_doc("Faust application id (consumer group, state names).")
    )
    batch_size: int = field(default=1000, metadata=_doc("Most events in one micro-batch.", min=1))
    batch_max_wait_s: float = field(
        default=0.01,
        metadata=_doc(
            "Longest wait to fill a micro-batch, in seconds (also the consumer's fetch wait), "
            "from the worker's request for one; what arrives while the batches in flight hold "
            "the next one back joins it, up to FRESHREC_BATCH_SIZE, so a backlog still comes "
            "in large batches. At half the worker's rate on two cores, 0.01 gave freshness p99 "
            "86 ms at 2,000 items and 74 ms at 27,000 against 147 ms with 0.05 "
            "(BENCHMARKS.md, stream).",
            min=0.0,
        ),
    )
    refresh_chunk_size: int = field(
        default=1000,
        metadata=_doc(
            "Users whose lists a refresh (after a model switch or a Redis data loss) "
            "rewrites per hold of the worker's lock; batches run between chunks.",
            min=1,
        ),
    )
    history_length: int = field(
        default=1000,
        metadata=_doc(
            "Newest interactions kept per user and folded in; older items stay masked from "
            "the user's list. On the long-history profile (MovieLens-1M-shaped: 43% of users "
            "past 100 ratings) 1000 keeps the whole history of 99% of users and streamed "
            "users rank like trained-in ones (+0.04%; 100 lost 1.1%, 1.6% for users past "
            "100); on real rating data 100 lost 7.3%, 1000 under 1.5%. Cost grows with the "
            "rows a user holds: about 15 bytes a row in the state record plus the event ids "
            '(docs/worker.md, "History length").',
            min=1,
        ),
    )
    model_poll_interval_s: float = field(
        default=5.0,
        metadata=_doc(
            "How often the worker checks whether the current model moved, and whether "
            "Redis lost its data (then it writes every list it holds again).",
            min=0.1,
        ),
    )
    online_top_k: int = field(
        default=20,
        metadata=_doc(
            "Items of the list last written for a user that the worker keeps in the user's "
            "state, to count a watch or rating of one of them as a hit (top 10 and top k, "
            "per model version and arm: the online metrics); 0 turns the online metrics off.",
            min=0,
            max=1000,
        ),
    )
    worker_web_host: str = field(
        default="127.0.0.1",
        metadata=_doc(
            "Address the worker's web server (`/metrics`, probes) listens on; 0.0.0.0 in a pod."
        ),
    )
    worker_web_port: int = field(
        default=6066,
        metadata=_doc("Port of the worker's web server (Prometheus `/metrics`).", **PORT_BOUNDS),
    )
    data_dir: str = field(
        default="./var/worker", metadata=_doc("Directory for the worker's local state.")
    )
    dedupe_window: int = field(
        default=200,
        metadata=_doc(
            "Newest event ids remembered per user; a repeat of any of them is dropped.", min=1
        ),
    )
    state_cache_users: int = field(
        default=10000,
        metadata=_doc(
            "Users whose decoded state (and confidences) a worker keeps in memory, "
            "most recently used first; about 18 KB each at the default dedupe window "
            "plus 280 bytes per history row (64 KB for 165 rows, 300 KB for 1000; gauge "
            "`freshrec_worker_state_cache_bytes`). The others "
            "are decoded from the state table's bytes when their events come.",
            min=1,
        ),
    )
    forget_retention_s: float = field(
        default=604800.0,
        metadata=_doc(
            "How long a forget marker keeps dropping the forgotten user's events at or "
            "before the forget (replays, redeliveries); then it becomes a tombstone. Keep "
            "it at least the event topics' retention (Kafka's default: 7 days).",
            min=1.0,
        ),
    )
    fault_item_id: str = field(
        default="",
        metadata=_doc(
            "Test hook for chaos tests: events of this item id make the worker raise, as a "
            "bug on one record would. Empty (the default) turns it off; never set it in "
            "production."
        ),
    )
    stall_timeout_s: float = field(
        default=30.0,
        metadata=_doc(
            "A worker that holds partitions with records waiting, has no batch in flight "
            "and received nothing for this long exits with status 75 for its supervisor "
            "to restart it (so does one that finds the broker lost records it read).",
            min=1.0,
        ),
    )
    worker_stop_wait_s: float = field(
        default=5.0,
        metadata=_doc(
            "Longest wait of a stopping worker (SIGTERM) for its batches in flight; one "
            "still waiting out a retry (Redis or the broker down) is then left unacked, "
            "for the partitions' next owner. Keep the whole stop under the pod's grace "
            "period (60 s).",
            min=0.0,
        ),
    )
    broker_session_timeout_s: float = field(
        default=6.0,
        metadata=_doc(
            "Consumer-group session timeout: how long a SIGKILLed worker keeps its "
            "partitions (a SIGTERMed one leaves the group at once). 6 s is the least a "
            "Kafka broker accepts by default (group.min.session.timeout.ms); heartbeats "
            "come from the consumer's own thread, so a long batch does not miss them. On "
            "Tansu every rebalance also takes half of it.",
            min=1.0,
        ),
    )
    broker_heartbeat_interval_s: float = field(
        default=0.5,
        metadata=_doc(
            "Consumer-group heartbeat interval: a worker learns of a rebalance (another "
            "worker leaving or joining) at its next heartbeat, so this bounds the start of "
            "a hand-over; keep it under a third of the session timeout.",
            min=0.1,
        ),
    )
    broker_commit_interval_s: float = field(
        default=1.0,
        metadata=_doc(
            "How often the worker commits the offsets of processed batches; a SIGKILL "
            "redelivers at most this much plus the batches in flight. One small request "
            "per interval.",
            min=0.1,
        ),
    )
    broker_rebalance_timeout_s: float = field(
        default=10.0,
        metadata=_doc(
            "How long a rebalance waits for each worker to rejoin. A worker rejoins once "
            "the batches it already made durable are in Redis (the others are left to the "
            "partitions' next owner), in milliseconds unless Redis is down; one slower than "
            "this is left out of the rebalance and rejoins after it.",
            min=1.0,
        ),
    )

    # --- API -----------------------------------------------------------------
    api_host: str = field(default="127.0.0.1", metadata=_doc("Address the API listens on."))
    api_port: int = field(default=8080, metadata=_doc("Port the API listens on.", **PORT_BOUNDS))
    api_workers: int = field(
        default=1, metadata=_doc("API processes sharing the port (SO_REUSEPORT).", min=1)
    )
    api_max_k: int = field(default=100, metadata=_doc("Largest `k` a client may ask for.", min=1))
    api_default_k: int = field(default=10, metadata=_doc("`k` when the client gives none.", min=1))
    api_token: str = field(
        default="",
        repr=False,
        metadata=_doc(
            "Bearer token required on every route but health; empty turns the check off."
        ),
    )
    api_redis_max_connections: int = field(
        default=64,
        metadata=_doc(
            "Most Redis connections one API process opens; a request beyond it waits "
            "up to the connect timeout for a free one.",
            min=1,
        ),
    )
    api_popular_cache_s: float = field(
        default=1.0,
        metadata=_doc(
            "Seconds an API process keeps the popular fallback in memory, so a user "
            "without a list costs one Redis round trip; 0 reads it on every miss.",
            min=0.0,
        ),
    )

    api_header_timeout_s: float = field(
        default=10.0,
        metadata=_doc(
            "Seconds a client has to send a request's headers, from their first byte or "
            "the connection's opening; a slower client is disconnected (0 turns it off).",
            min=0.0,
        ),
    )
    api_keepalive_timeout_s: float = field(
        default=75.0,
        metadata=_doc(
            "Seconds an idle keep-alive connection stays open between requests; keep it "
            "above the idle timeout of the load balancer in front (often 60 s).",
            min=0.1,
        ),
    )

    api_events_max_bytes: int = field(
        default=1_048_576,
        metadata=_doc(
            "Largest body `POST /events` accepts, in bytes; a larger one is a 413.",
            min=4096,
        ),
    )
    api_events_max_count: int = field(
        default=1000,
        metadata=_doc(
            "Most events one `POST /events` may carry; more is a 413 (send several requests).",
            min=1,
        ),
    )
    api_catalog: str = field(
        default="",
        metadata=_doc(
            "A catalog file the API reads at start under the item table in Redis (which wins; "
            "publish a catalog with `freshrec catalog publish` instead): MovieLens `u.item`, "
            "or CSV or JSON lines of `id,title,tags`; empty: the item table alone.",
        ),
    )
    api_page_poll_s: float = field(
        default=1.0,
        metadata=_doc(
            "How often the page at `/` asks for the shown user's list again, in seconds.",
            min=0.1,
        ),
    )
    api_cors_origins: str = field(
        default="",
        metadata=_doc(
            "Web origins (scheme://host[:port], comma-separated, or `*` for any) whose pages may "
            "call the API from a browser (CORS); empty (the default) allows none.",
        ),
    )

    log_level: str = field(
        default="INFO",
        metadata=_doc(
            "Log level: DEBUG, INFO, WARNING or ERROR.",
            choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        ),
    )

    def __post_init__(self) -> None:
        _validate(self)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read every field from ``FRESHREC_<FIELD>``; ``overrides`` win over the environment.

        Raises :class:`ConfigError` naming the variable when a value does not
        parse or is out of bounds, and when an unknown ``FRESHREC_*`` variable is
        set (a typo would otherwise silently fall back to the default).
        """
        env = os.environ if environ is None else environ
        hints = get_type_hints(cls)
        known = {f.name for f in fields(cls)}
        unknown = sorted(
            k for k in env if k.startswith(ENV_PREFIX) and k[len(ENV_PREFIX) :].lower() not in known
        )
        if unknown:
            raise ConfigError("; ".join(_unknown_setting(name, known) for name in unknown))
        values: dict[str, Any] = {}
        for f in fields(cls):
            var = ENV_PREFIX + f.name.upper()
            if var in env:
                values[f.name] = _parse(var, env[var], hints[f.name])
        values.update(overrides)
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed (validated like the original)."""
        return dataclasses.replace(self, **changes)

    def as_env(self) -> dict[str, str]:
        """The ``FRESHREC_*`` variables that reproduce these settings (for child processes)."""
        return {ENV_PREFIX + f.name.upper(): str(getattr(self, f.name)) for f in fields(self)}


def _parse(var: str, raw: str, typ: Any) -> Any:
    try:
        if typ is int:
            return int(raw)
        if typ is float:
            return float(raw)
        if typ is bool:
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
    except ValueError:
        raise ConfigError(f"{var}={raw!r} is not a valid {typ.__name__}") from None
    return raw


_HOSTPORT = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+$")


def _validate(s: Settings) -> None:
    hints = get_type_hints(type(s))
    for f in fields(s):
        value = getattr(s, f.name)
        var = ENV_PREFIX + f.name.upper()
        typ = hints[f.name]
        if typ is float and isinstance(value, int) and not isinstance(value, bool):
            object.__setattr__(s, f.name, float(value))
            value = float(value)
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            raise ConfigError(f"{var} must be a {typ.__name__}, got {value!r}")
        if typ is float and not math.isfinite(value):
            raise ConfigError(f"{var}={value!r} must be a finite number")
        lo = f.metadata.get("min")
        if lo is not None and value < lo:
            raise ConfigError(f"{var}={value!r} is below its minimum {lo}")
        hi = f.metadata.get("max")
        if hi is not None and value > hi:
            raise ConfigError(f"{var}={value!r} is above its maximum {hi}")
        choices = f.metadata.get("choices")
        if choices is not None and value not in choices:
            raise ConfigError(f"{var}={value!r} is not one of {', '.join(choices)}")
    for server in s.bootstrap_servers.split(","):
        if not _HOSTPORT.match(server.strip()):
            raise ConfigError(
                f"FRESHREC_BOOTSTRAP_SERVERS: {server!r} is not host:port "
                "(several are separated by commas)"
            )
    for origin in s.api_cors_origins.split(","):
        if origin.strip() and origin.strip() != "*" and not _ORIGIN.match(origin.strip()):
            raise ConfigError(
                f"FRESHREC_API_CORS_ORIGINS: {origin.strip()!r} is not an origin like "
                "https://shop.example.com (scheme://host[:port], no path), or *"
            )
    if not s.redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(
            f"FRESHREC_REDIS_URL={s.redis_url!r} must start with redis://, rediss:// or unix://"
        )
    if s.redis_cluster:
        url = urlsplit(s.redis_url)
        if url.scheme == "unix" or url.path.strip("/") not in ("", "0"):
            raise ConfigError(
                f"FRESHREC_REDIS_CLUSTER=true needs a redis:// or rediss:// URL of a node "
                f"with database 0 (a cluster has no other); got {s.redis_url!r}"
            )
    _validate_security(s)
    if s.api_default_k > s.api_max_k:
        raise ConfigError(
            f"FRESHREC_API_DEFAULT_K={s.api_default_k} is larger than "
            f"FRESHREC_API_MAX_K={s.api_max_k}"
        )
    if s.list_length < s.api_max_k:
        raise ConfigError(
            f"FRESHREC_LIST_LENGTH={s.list_length} must be at least "
            f"FRESHREC_API_MAX_K={s.api_max_k}"
        )
    if s.retrain_tolerance >= 1:
        raise ConfigError(
            f"FRESHREC_RETRAIN_TOLERANCE={s.retrain_tolerance} must be below 1 (a share)"
        )
    if s.retrain_holdout_fraction >= 1:
        raise ConfigError(
            f"FRESHREC_RETRAIN_HOLDOUT_FRACTION={s.retrain_holdout_fraction} must be below 1"
        )
    if s.retry_backoff_cap_s < s.retry_backoff_base_s:
        raise ConfigError(
            "FRESHREC_RETRY_BACKOFF_CAP_S must be at least FRESHREC_RETRY_BACKOFF_BASE_S"
        )


def _validate_security(s: Settings) -> None:
    """Credentials and CA files only where the protocol uses them, and complete where it does.

    A password set for a PLAINTEXT connection or a CA file for a plain
    ``redis://`` URL would be ignored without a word; an error says so at start.
    """
    sasl = s.kafka_security_protocol.startswith("SASL_")
    tls = s.kafka_security_protocol.endswith("SSL")
    if sasl and not (s.kafka_sasl_username and s.kafka_sasl_password):
        raise ConfigError(
            f"FRESHREC_KAFKA_SECURITY_PROTOCOL={s.kafka_security_protocol} needs "
            "FRESHREC_KAFKA_SASL_USERNAME and FRESHREC_KAFKA_SASL_PASSWORD"
        )
    if not sasl and (s.kafka_sasl_username or s.kafka_sasl_password):
        raise ConfigError(
            "FRESHREC_KAFKA_SASL_USERNAME/PASSWORD are set but "
            f"FRESHREC_KAFKA_SECURITY_PROTOCOL={s.kafka_security_protocol} does not use SASL "
            "(SASL_SSL or SASL_PLAINTEXT)"
        )
    if s.kafka_ssl_ca_file and not tls:
        raise ConfigError(
            "FRESHREC_KAFKA_SSL_CA_FILE is set but "
            f"FRESHREC_KAFKA_SECURITY_PROTOCOL={s.kafka_security_protocol} does not use TLS "
            "(SSL or SASL_SSL)"
        )
    if s.redis_ssl_ca_file and not s.redis_url.startswith("rediss://"):
        raise ConfigError(
            "FRESHREC_REDIS_SSL_CA_FILE is set but FRESHREC_REDIS_URL is not rediss://"
        )
    if s.redis_password and urlsplit(s.redis_url).password:
        raise ConfigError(
            "FRESHREC_REDIS_PASSWORD is set and FRESHREC_REDIS_URL carries a password too; "
            "keep one (the setting, from a secret)"
        )
    for var, path in (
        ("FRESHREC_KAFKA_SSL_CA_FILE", s.kafka_ssl_ca_file),
        ("FRESHREC_REDIS_SSL_CA_FILE", s.redis_ssl_ca_file),
    ):
        if path and not os.path.isfile(path):
            raise ConfigError(f"{var}={path!r}: no such file (mount the CA bundle there)")


def settings_table() -> str:
    """The README's settings table, in Markdown."""
    rows = ["| Variable | Default | Meaning |", "| --- | --- | --- |"]
    for f in fields(Settings):
        default = f.default
        shown = "(empty)" if default == "" else f"`{default}`"
        rows.append(f"| `{ENV_PREFIX}{f.name.upper()}` | {shown} | {f.metadata['doc']} |")
    return "\n".join(rows)


def _unknown_setting(name: str, known: Collection[str]) -> str:
    """Why ``name`` is refused, with the closest known setting: a list of every name buried the
    one the user meant (issue 26)."""
    field = name[len(ENV_PREFIX) :].lower()
    close = difflib.get_close_matches(field, list(known), n=1, cutoff=0.6)
    hint = (
        f"did you mean {ENV_PREFIX}{close[0].upper()}?"
        if close
        else "the README's settings table lists every setting"
    )
    return f"unknown setting {name}; {hint}"
