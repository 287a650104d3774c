"""Loaders for the MovieLens rating files, into an :class:`~models.interactions.InteractionLog`.

Three layouts, named as ``freshrec train/evaluate --format`` names them:

* ``movielens100k``: ml-100k ``u.data``, tab-separated ``user item rating unix_seconds``;
* ``movielens1m``: ml-1m ``ratings.dat``, ``UserID::MovieID::Rating::Timestamp``;
* ``movielens-latest``: ml-latest(-small) ``ratings.csv``, a header line then
  ``userId,movieId,rating,timestamp``.

Every row becomes a ``rate`` event with the user and movie ids as strings and
the timestamp in milliseconds. Rows keep the file's order, which the
stratified split depends on. A malformed file raises
:class:`~freshrec.errors.BadInputError` naming the file and the problem.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from freshrec.errors import BadInputError
from models.ids import IdMap
from models.interactions import KIND_RATE, InteractionLog

#: ``--format`` name -> (field separator, header lines to skip)
FORMATS: dict[str, tuple[str, int]] = {
    "movielens100k": ("\t", 0),
    "movielens1m": ("::", 0),
    "movielens-latest": (",", 1),
}


def load(path: str | os.PathLike[str], fmt: str) -> InteractionLog:
    """Read one MovieLens ratings file of layout ``fmt`` (a key of :data:`FORMATS`)."""
    if fmt not in FORMATS:
        raise BadInputError(
            f"unknown MovieLens format {fmt!r}; expected one of {', '.join(FORMATS)}"
        )
    sep, header = FORMATS[fmt]
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise BadInputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(text.splitlines()) <= header:
        raise BadInputError(f"{path} has no ratings")
    if sep == "::":
        text = text.replace(b"::", b"\t")
        sep = "\t"
    try:
        table = np.loadtxt(
            io.BytesIO(text),
            delimiter=sep,
            skiprows=header,
            dtype=np.float64,
            ndmin=2,
            usecols=(0, 1, 2, 3),
        )
    except ValueError as exc:
        raise BadInputError(f"{path} is not a {fmt} ratings file: {exc}") from exc
    ratings = table[:, 2]
    if not ((ratings >= 0.5) & (ratings <= 5)).all():
        row = int(np.flatnonzero((ratings < 0.5) | (ratings > 5))[0])
        raise BadInputError(
            f"{path}: rating {ratings[row]} on data row {row + 1} is outside 0.5..5"
        )
    users, user = IdMap.factorize(table[:, 0].astype(np.int64).astype(str))
    items, item = IdMap.factorize(table[:, 1].astype(np.int64).astype(str))
    n = table.shape[0]
    return InteractionLog(
        users=users,
        items=items,
        user=user,
        item=item,
        kind=np.full(n, KIND_RATE, dtype=np.int8),
        value=ratings.copy(),
        duration_s=np.full(n, np.nan),
        ts=(table[:, 3].astype(np.int64) * 1000),
    )
