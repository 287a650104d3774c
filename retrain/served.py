"""Whether the model store a command was pointed at is the one the workers serve from.

A retrain or ``freshrec models list`` pointed at the wrong store (the default
``./var/models`` beside a local stack whose workers follow another one) found
no versions and said nothing: ``models list`` answered "no model versions", and
``retrain`` published into a store no worker follows, gated against popularity
instead of the serving model, exit 0 (issue 26). The lists in Redis name the
model they come from: when Redis holds lists of a model while the store has
none, the store is not the workers' one, and the command says so.
"""

from __future__ import annotations

from typing import Any

import redis

from freshrec.model_store import ModelStore
from freshrec.settings import Settings
from schemas.recs import DATA_FIELD, compact_version, decode, popular_key


def served_version(client: Any, settings: Settings) -> str | None:
    """The model version of the popular list in Redis (what the workers serve), or None."""
    data = client.hget(popular_key(settings.key_prefix), DATA_FIELD)
    if data is None:
        return None
    try:
        version = compact_version(data)
        return version if version is not None else decode(data).model_version
    except ValueError:
        return None


def store_mismatch(client: Any, settings: Settings, store: ModelStore) -> str | None:
    """Why ``store`` is not the workers' store (it is empty while Redis serves a model), or None.

    Redis that cannot be reached tells nothing: None (the command reports Redis itself
    where it needs it).
    """
    if store.current() is not None:
        return None
    try:
        served = served_version(client, settings)
    except (redis.RedisError, redis.exceptions.RedisClusterException):
        return None
    if served is None:
        return None
    return (
        f"the model store {settings.model_store} holds no model, yet the workers serve model "
        f"{served} (the popular list in Redis): FRESHREC_MODEL_STORE names another store than "
        'theirs; set it to the workers\' (for a local stack: eval "$(freshrec stack env)")'
    )
