"""The ALS and weighting flags shared by ``train``, ``evaluate`` and ``retrain``.

One definition, so the three commands take the same flags with the same help
and defaults (each shown in ``--help``), and a bad value (a negative factor
count, nan) is refused by the parser naming the flag.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from freshrec.argtypes import finite_float, non_negative_float, non_negative_int, positive_int
from freshrec.cores import usable_cores
from freshrec.errors import BadInputError
from models.als import ALSConfig
from models.weighting import WeightingConfig


def add_als_flags(parser: argparse.ArgumentParser, *, threads_default: int | None = None) -> None:
    """Add ``--factors --regularization --alpha --iterations --threads --negative-below``."""
    als = ALSConfig()
    parser.add_argument(
        "--factors",
        type=positive_int,
        default=als.factors,
        help="dimension of the user and item vectors (default: %(default)s)",
    )
    parser.add_argument(
        "--regularization",
        type=non_negative_float,
        default=als.regularization,
        help="L2 penalty on every vector; much higher collapses to popularity "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--alpha",
        type=non_negative_float,
        default=als.alpha,
        help="multiplier of the interaction confidences (default: %(default)s)",
    )
    parser.add_argument(
        "--iterations",
        type=positive_int,
        default=als.iterations,
        help="full ALS alternations (default: %(default)s)",
    )
    parser.add_argument(
        "--threads",
        type=non_negative_int,
        default=als.num_threads if threads_default is None else threads_default,
        help="training threads, 0 for every core this process may use, its CPU affinity "
        "capped by its cgroup's quota (default: %(default)s)",
    )
    parser.add_argument(
        "--negative-below",
        type=finite_float,
        default=WeightingConfig().negative_below,
        help="ratings below this are dislikes; 0 turns dislikes off (default: %(default)s)",
    )


def configs_from_flags(args: argparse.Namespace) -> tuple[ALSConfig, WeightingConfig]:
    """The :class:`ALSConfig` and :class:`WeightingConfig` the flags of :func:`add_als_flags`
    (and ``--seed``) name; :class:`BadInputError` for values the configs refuse."""
    try:
        als = ALSConfig(
            factors=args.factors,
            regularization=args.regularization,
            alpha=args.alpha,
            iterations=args.iterations,
            seed=args.seed,
            num_threads=args.threads or usable_cores(),
        )
        return als, replace(WeightingConfig(), negative_below=args.negative_below)
    except ValueError as exc:
        raise BadInputError(str(exc)) from None
