"""Which users a canary release serves: a stable hash of the user id.

A user is in the canary when the first 8 bytes of BLAKE2b(salt, user id),
read as a fraction of 2^64, fall below the canary's fraction: the same user
lands in the same arm on every worker, at every batch and after every restart
(Python's own ``hash`` is salted per process), and about ``fraction`` of any
set of users do (a uniform hash: the arm sizes are binomial). The salt is the
candidate's version id, so successive canaries try their candidates on
different users rather than always the same ones.
"""

from __future__ import annotations

import hashlib

_SCALE = float(1 << 64)


def in_canary(user_id: str, salt: str, fraction: float) -> bool:
    """Whether ``user_id`` is served by the canary of ``salt`` at ``fraction``."""
    digest = hashlib.blake2b(user_id.encode(), digest_size=8, key=salt.encode()[:64]).digest()
    return int.from_bytes(digest, "big") / _SCALE < fraction
