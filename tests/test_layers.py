"""The direction of imports between the parts (docs/architecture.md), checked on the source.

``freshrec`` is the floor; ``schemas`` stands on it, ``models`` on both,
``streams``, ``retrain`` and ``serving`` on all three and never on each other;
``cli`` assembles them all and nothing imports it. ``models`` is the pure
numeric core: besides the parts above it, it imports no client of the outside
world (Kafka, Redis, fsspec, Spark) and no argparse. Every module's imports are read
with :mod:`ast` (``import x``, ``from x import y``, and imports inside
functions, where the lazy ones hide), and each one that points up or sideways
is reported as ``file:line``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]

#: For each part, the parts it must never import.
FORBIDDEN: dict[str, frozenset[str]] = {
    "freshrec": frozenset({"schemas", "models", "streams", "retrain", "serving", "cli"}),
    "schemas": frozenset({"models", "streams", "retrain", "serving", "cli"}),
    "models": frozenset(
        {"streams", "retrain", "serving", "cli"}
        # the numeric core's outside-world libraries: they belong to the parts above
        | {"confluent_kafka", "aiokafka", "faust", "redis", "fsspec", "pyspark", "argparse"}
    ),
    "streams": frozenset({"retrain", "serving", "cli"}),
    "retrain": frozenset({"streams", "serving", "cli"}),
    "serving": frozenset({"streams", "retrain", "cli"}),
}


def imported_packages(tree: ast.AST) -> list[tuple[int, str]]:
    """``(line, top-level package)`` of every absolute import anywhere in ``tree``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name.split(".")[0]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def violations(part: str, root: Path = ROOT) -> list[str]:
    """``file:line: imports X`` for each import of ``part`` (below ``root``) that breaks
    the layering."""
    forbidden = FORBIDDEN[part]
    found = []
    for path in sorted((root / part).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for line, package in imported_packages(tree):
            if package in forbidden:
                found.append(f"{path.relative_to(root)}:{line}: imports {package}")
    return found


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_part_imports_only_layers_below(part: str) -> None:
    found = violations(part)
    assert not found, f"{part}/ must not import {sorted(FORBIDDEN[part])}:\n" + "\n".join(found)


def test_the_checker_sees_lazy_and_from_imports() -> None:
    tree = ast.parse(
        "import os\nfrom streams import app\n\ndef f():\n    import serving.cli\n"
        "    from . import sibling\n"
    )
    assert imported_packages(tree) == [(1, "os"), (2, "streams"), (5, "serving")]


def test_an_import_of_a_part_above_is_reported_with_its_place(tmp_path: Path) -> None:
    planted = {
        "freshrec/floor.py": "from schemas import recs\n",
        "schemas/contract.py": "import os\n\n\ndef f():\n    import models.version\n",
        "models/core/numeric.py": "from freshrec import settings\nfrom serving.app import x\n",
        "models/job.py": "import numpy\n\n\ndef f():\n    from retrain import job\n",
        "models/adapter.py": "import argparse\nimport fsspec\nfrom redis import Redis\n",
        "retrain/job.py": "from models import als\nfrom streams.app import worker\n",
    }
    for name, source in planted.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(source)
    assert violations("freshrec", tmp_path) == ["freshrec/floor.py:1: imports schemas"]
    assert violations("schemas", tmp_path) == ["schemas/contract.py:5: imports models"]
    assert violations("models", tmp_path) == [
        "models/adapter.py:1: imports argparse",
        "models/adapter.py:2: imports fsspec",
        "models/adapter.py:3: imports redis",
        "models/core/numeric.py:2: imports serving",
        "models/job.py:5: imports retrain",
    ]
    assert violations("retrain", tmp_path) == ["retrain/job.py:2: imports streams"]
