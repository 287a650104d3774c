"""The OpenAPI document is kept true: its routes, its bounds, and a schemathesis fuzz of the API.

The fuzz sends valid and invalid requests generated from the served document
and checks every response against it: no 5xx (Redis is up, so not even the
documented 503), documented status codes, content types, headers and bodies,
4xx for invalid input, and 401 whenever the token is left out.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import schemathesis
from schemathesis import GenerationMode

from freshrec.settings import Settings
from serving.app import create_app
from serving.openapi import checked_in_document, event_component, load_document
from serving.params import ITEM_ID, USER_ID
from tests.serving.conftest import ApiClient, ListWriter, LiveApi, live_api

pytestmark = pytest.mark.integration

TOKEN = "fuzz-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def recs_parameters(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in doc["paths"]["/recs/{user}"]["get"]["parameters"]}


def test_document_lists_exactly_the_routes_of_the_app() -> None:
    app = create_app(Settings())
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    documented = {
        (method.upper(), path)
        for path, item in checked_in_document()["paths"].items()
        for method in item
    }
    assert documented == served


def test_id_bounds_are_the_event_contracts() -> None:
    params = recs_parameters(checked_in_document())
    user = params["user"]["schema"]
    item = params["exclude"]["schema"]["items"]
    for schema, rule in ((user, USER_ID), (item, ITEM_ID)):
        assert schema["pattern"] == rule.pattern.pattern
        assert (schema["minLength"], schema["maxLength"]) == (rule.min_length, rule.max_length)


def test_event_schemas_are_the_event_contracts() -> None:
    """POST /events documents the JSON Schema files themselves (in OpenAPI 3.0's dialect)."""
    components = checked_in_document()["components"]["schemas"]
    for event_type in ("watch", "rate", "forget"):
        assert components[f"{event_type.capitalize()}Event"] == event_component(event_type)
    assert components["ItemRecord"] == event_component("item")


def test_checked_in_k_bounds_are_the_default_settings() -> None:
    k = recs_parameters(checked_in_document())["k"]["schema"]
    defaults = Settings()
    assert (k["minimum"], k["maximum"], k["default"]) == (
        1,
        defaults.api_max_k,
        defaults.api_default_k,
    )


async def test_served_document_states_this_deployments_bounds_and_auth(
    api_client: ApiClient,
) -> None:
    async with api_client(api_max_k=20, api_default_k=4, api_token="") as client:
        doc = await (await client.get("/openapi.json")).json()
    k = recs_parameters(doc)["k"]["schema"]
    assert (k["maximum"], k["default"]) == (20, 4)
    assert doc["security"] == []
    assert "401" not in doc["paths"]["/recs/{user}"]["get"]["responses"]
    with_token = load_document(Settings(api_token="t"))
    assert with_token["security"] == [{"bearer": []}]
    assert with_token == checked_in_document()


async def test_served_document_with_a_token_describes_the_bearer_scheme_and_401(
    api_client: ApiClient,
) -> None:
    """Issue 13.9: the document a token-protected API serves must say so: the bearer scheme,
    the requirement, and a 401 on every route but the probes."""
    async with api_client(api_token="s3cret") as client:
        assert (await client.get("/openapi.json")).status == 401
        resp = await client.get("/openapi.json", headers={"Authorization": "Bearer s3cret"})
        doc = await resp.json()
    assert doc["components"]["securitySchemes"]["bearer"] == {
        **doc["components"]["securitySchemes"]["bearer"],
        "type": "http",
        "scheme": "bearer",
    }
    assert doc["security"] == [{"bearer": []}]
    for path, item in doc["paths"].items():
        for operation in item.values():
            probe = path in ("/healthz", "/readyz", "/", "/ops")
            assert ("401" in operation["responses"]) is not probe, path
            assert (operation.get("security") == []) is probe, path


@pytest.fixture
def fuzzed_api(settings: Settings, write_list: ListWriter, topics: list[str]) -> Iterator[LiveApi]:
    """The live API with a token, a personal list for "alice", a popular fallback, and the
    event topics on the broker (POST /events produces the valid events it is sent)."""
    write_list("alice", [f"i{n}" for n in range(150)], because={"i1": "seen"})
    write_list(None, [f"p{n}" for n in range(150)])
    with live_api(settings, api_token=TOKEN) as api:
        yield api


#: Generated from the document as this API serves it with a token (load_document is checked
#: against the served copy above); schemathesis's lazy ``from_fixture`` loader does not run
#: on pytest 9, hence the module-level schema and the base URL given per call.
schema = schemathesis.openapi.from_dict(load_document(Settings(api_token=TOKEN)))
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
    max_examples=40,
    # The token is sent with every call below; generated Authorization values would be
    # replaced by it, turning "negative" cases into valid ones.
    with_security_parameters=False,
)
# POST /events refuses a batch's invalid events one by one: a body that breaks the schema in
# one event but holds valid ones is answered 207 (those refused, the rest accepted), and one
# over the size limits 413.
schema.config.checks.negative_data_rejection.expected_statuses = [
    *schema.config.checks.negative_data_rejection.expected_statuses,
    "207",
    "413",
]


@schema.hook("filter_query")
def only_queries_that_serialise_apart(context: Any, query: dict[str, Any] | None) -> bool:
    """Skip "invalid" queries whose query string is that of a valid request.

    schemathesis would then call the API's correct 200 a wrongly accepted
    request. In a query string, values have no types, so these read as valid:
    a scalar ``exclude`` (``exclude=0.0`` is a list of one id, "0.0"), a
    non-string entry in it (a number is an id as text), an empty entry
    (``exclude=`` is the empty list; the API ignores empty entries, as
    documented), and a ``k`` that is an object or a list (``{}`` serialises to
    nothing: the default k). Regression: CI once failed on ``exclude=0.0``
    with ``k={}``, and on ``fields=`` (an empty entry of ``fields``, ignored alike).
    """
    q = query or {}
    # fields, tags, exclude_tags: the same rules, regression ``fields=``
    for name in ("exclude", "fields", "tags", "exclude_tags"):
        values = q.get(name)
        if values is None:
            continue
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            return False
        if any("" in v.split(",") for v in values):
            return False
    return not isinstance(q.get("k"), dict | list)


@schema.parametrize()
# POST /events's newline-delimited body is documented as a string, which no schema can say is
# lines of events; the fuzz covers the JSON array body, tests/serving/test_events.py the lines.
@pytest.mark.filterwarnings("ignore:Skipped test cases with unsupported payload media types")
@hypothesis.settings(
    max_examples=40, deadline=None, suppress_health_check=list(hypothesis.HealthCheck)
)
def test_api_conforms_to_its_document(case: Any, fuzzed_api: LiveApi) -> None:
    case.call_and_validate(base_url=fuzzed_api.url, headers=AUTH)
