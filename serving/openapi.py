"""The OpenAPI document: checked in as ``serving/openapi.json``, served at ``/openapi.json``.

The checked-in file describes a deployment with default settings and a token;
:func:`load_document` adjusts the two things a deployment may change, the
bounds of ``k`` and whether a token is required, so the served copy is true for
the process that serves it. Tests keep the file itself true: its routes,
its id bounds (equal to the event contract's) and a schemathesis fuzz of the
running API against it.
"""

from __future__ import annotations

import copy
from functools import cache
from importlib import resources
from typing import Any

import orjson
from aiohttp import web

from freshrec.settings import Settings
from serving.context import API

DOCUMENT_FILE = "openapi.json"


@cache
def checked_in_document() -> dict[str, Any]:
    """The parsed ``serving/openapi.json`` as committed (cached; copy before changing it)."""
    raw = resources.files(__package__).joinpath(DOCUMENT_FILE).read_bytes()
    doc: dict[str, Any] = orjson.loads(raw)
    return doc


def load_document(settings: Settings) -> dict[str, Any]:
    """The document for these settings: their ``k`` bounds, and no security when no token is set."""
    doc = copy.deepcopy(checked_in_document())
    for item in doc["paths"].values():
        for operation in item.values():
            for param in operation.get("parameters", ()):
                if param["name"] == "k":
                    param["schema"]["maximum"] = settings.api_max_k
                    param["schema"]["default"] = settings.api_default_k
    if not settings.api_token:
        doc["security"] = []
        del doc["components"]["securitySchemes"]
        for item in doc["paths"].values():
            for operation in item.values():
                operation["responses"].pop("401", None)
    return doc


@cache
def _served(settings: Settings) -> bytes:
    return orjson.dumps(load_document(settings))


async def handle_openapi(request: web.Request) -> web.Response:
    return web.Response(body=_served(request.app[API].settings), content_type="application/json")


def event_component(event_type: str) -> dict[str, Any]:
    """The event contract's JSON Schema file as an OpenAPI 3.0 schema object.

    OpenAPI 3.0 has no ``const`` and takes ``exclusiveMinimum`` as a flag, and
    the draft's ``$schema``/``$id`` have no place in it; nothing else changes.
    A test holds the checked-in document's event and item record schemas equal
    to this.
    """
    from schemas.validator import load_schema

    schema = load_schema(event_type)  # type: ignore[arg-type]
    out = {k: v for k, v in schema.items() if k not in ("$schema", "$id", "x-version")}
    props: dict[str, Any] = {}
    for name, prop in schema["properties"].items():
        prop = dict(prop)
        if "const" in prop:
            prop["type"] = "string"
            prop["enum"] = [prop.pop("const")]
        if isinstance(prop.get("exclusiveMinimum"), (int, float)) and not isinstance(
            prop.get("exclusiveMinimum"), bool
        ):
            prop["minimum"] = prop.pop("exclusiveMinimum")
            prop["exclusiveMinimum"] = True
        props[name] = prop
    out["properties"] = props
    return out
