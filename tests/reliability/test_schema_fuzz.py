"""Schemathesis against the app's own OpenAPI schema: every operation, then its links.

The app runs for real (lifespan, a store holding an ML-100K subset, a model active)
on SQLite and on PostgreSQL, with no API keys so that generated requests reach the
handlers. Every generated request, valid or deliberately invalid, must get an
answer that is not a server error and that conforms to the schema: a documented
status, content type, headers and body; invalid data must be refused with a 4xx.

The default suite runs a bounded number of examples per operation; the on-demand
run (``RBMREC_TEST_SOAK=1``) runs many more.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import schemathesis
from _reliability_support import empty_database, seed_store, soak_enabled
from hypothesis import HealthCheck, given, settings
from jsonschema import Draft202012Validator
from schemathesis import DataGenerationMethod
from schemathesis.checks import not_a_server_error
from schemathesis.exceptions import SkipTest
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import MetaData, create_engine
from starlette_testclient import TestClient

from app.api.main import create_app
from app.settings import Settings

EXAMPLES = 300 if soak_enabled() else 10
"""Generated requests per operation, for valid and for invalid data each."""

STATEFUL_RUNS = 50 if soak_enabled() else 5
STATEFUL_STEPS = 15 if soak_enabled() else 8

ADMIN_KEY = "fuzz-admin-key-4d1c"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}

_SETTINGS: dict[str, Any] = {
    "deadline": None,
    "database": None,
    "suppress_health_check": list(HealthCheck),
}


def _operations() -> list[str]:
    schema = create_app(Settings(database_url="sqlite://")).openapi()
    return sorted(
        f"{method.upper()} {path}" for path, item in schema["paths"].items() for method in item
    )


OPERATIONS = _operations()


def _coerce(text: str, schema: dict[str, Any]) -> Any:
    """A query string value as the type its schema declares (the text if it is not one)."""
    kinds = [schema.get("type")] + [option.get("type") for option in schema.get("anyOf", [])]
    for kind, convert in (("integer", int), ("number", float)):
        if kind in kinds:
            try:
                return convert(text)
            except ValueError:
                return text
    return text


def _sent_query_is_valid(case: Any, response: Any) -> bool:
    """Whether the declared query parameters, as actually sent, match their schemas.

    Judged on the request that went out: a generated value with no URL form (an
    empty list, ``None``) is simply not sent.
    """
    sent = parse_qs(urlsplit(response.request.url).query, keep_blank_values=True)
    for parameter in case.operation.query:
        if parameter.name not in sent:
            continue
        schema = parameter.definition.get("schema", {})
        texts = sent[parameter.name]
        if schema.get("type") == "array":
            value: Any = [_coerce(t, schema.get("items", {})) for t in texts]
        else:
            value = _coerce(texts[-1], schema)
        if not Draft202012Validator(schema).is_valid(value):
            return False
    return True


def negative_data_is_rejected(ctx: Any, response: Any, case: Any) -> bool | None:
    """Schemathesis' ``negative_data_rejection``, judged on the request actually sent.

    This Schemathesis release counts a request as invalid when its only flaws are
    unknown query parameters (which HTTP APIs conventionally ignore, as this one
    does) or values that have no URL form and are dropped (an empty list); such a
    request is valid as sent, and may be accepted.
    """
    meta = case.meta
    if meta is not None and not (meta.body and meta.body.is_negative):
        path_negative = meta.path_parameters and meta.path_parameters.is_negative
        if not (path_negative and case.operation.path_parameters) and _sent_query_is_valid(
            case, response
        ):
            return None
    return negative_data_rejection(ctx, response, case)


CHECKS = (
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_is_rejected,
)
"""Everything Schemathesis checks, except ``ignored_auth``: it expects 401 for a wrong
key, where this API answers 403 (401 is for no key at all); see
:func:`_check_auth_is_enforced`."""


@dataclass
class Fuzzed:
    schema: Any
    client: TestClient
    url: str


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def fuzzed(
    request: pytest.FixtureRequest,
    subset_dir: Path,
    small_artifact: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Fuzzed]:
    """The running app (API keys on) on a seeded store, and the schema it serves."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    store = seed_store(url, subset_dir, small_artifact, tmp_path_factory.mktemp("fuzz-models"))
    store.session_factory.kw["bind"].dispose()
    settings = Settings(
        database_url=url,
        model_dir=store.model_dir,
        model_poll_seconds=30,
        api_keys=["fuzz-write-key-7e2b"],  # writes need a key too; the admin key is one
        admin_api_keys=[ADMIN_KEY],
        auto_create_items=True,  # so that more generated ratings are stored and linked
    )
    # the requests-based test client Schemathesis' transport expects, started once
    with TestClient(create_app(settings), base_url="http://testserver") as client:
        raw = client.get("/openapi.json").json()
        # FastAPI serves OpenAPI 3.1, which this Schemathesis major supports as an opt-in.
        schemathesis.experimental.OPEN_API_3_1.enable()
        schema = schemathesis.from_dict(raw, base_url="http://testserver")
        yield Fuzzed(schema, client, url)
    empty_database(url)


def _operation(schema: Any, name: str) -> Any:
    method, path = name.split(" ", 1)
    return schema[path][method]


def _send(fuzzed: Fuzzed, case: Any, auth: dict[str, str] | None = AUTH) -> Any:
    headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    case.headers = {**headers, **(auth or {})}
    response = case.call(session=fuzzed.client)
    # JSON is UTF-8 (RFC 8259, RFC 9457); ``requests`` only assumes so for
    # application/json and guesses for application/problem+json, which garbles
    # problem documents that echo non-ASCII paths.
    if response.encoding is None:
        response.encoding = "utf-8"
    return response


def _check_auth_is_enforced(fuzzed: Fuzzed, case: Any, response: Any) -> None:
    """A secured operation that accepted the key refuses no key (401) and a wrong one (403)."""
    if not case.operation.definition.raw.get("security") or not 200 <= response.status_code < 300:
        return
    # refused before the handler runs: resending a write changes nothing
    assert _send(fuzzed, case, auth=None).status_code == 401
    assert _send(fuzzed, case, auth={"Authorization": "Bearer wrong-key"}).status_code == 403


@pytest.mark.parametrize("name", OPERATIONS)
def test_every_operation_answers_within_its_schema(fuzzed: Fuzzed, name: str) -> None:
    operation = _operation(fuzzed.schema, name)
    for method in (DataGenerationMethod.positive, DataGenerationMethod.negative):

        @given(case=operation.as_strategy(data_generation_method=method))
        @settings(max_examples=EXAMPLES, **_SETTINGS)
        def run(case: Any) -> None:
            response = _send(fuzzed, case)
            case.validate_response(response, checks=CHECKS)
            _check_auth_is_enforced(fuzzed, case, response)

        try:
            run()
        except SkipTest:
            # an operation without parameters or body has no invalid variant
            assert method is DataGenerationMethod.negative
            assert not operation.query
            assert not operation.path_parameters
            assert not operation.body


def test_the_schema_declares_links_for_stateful_runs(fuzzed: Fuzzed) -> None:
    links = {
        (source, name)
        for source in OPERATIONS
        for response in _operation(fuzzed.schema, source).definition.raw["responses"].values()
        for name in response.get("links", {})
    }
    assert ("POST /ratings", "DeleteRating") in links
    assert ("PUT /items/{item_id}", "SimilarItems") in links
    assert ("POST /admin/retrain", "RetrainRun") in links
    assert ("GET /model", "Activate") in links
    assert len(links) >= 9


class StoreSnapshot:
    """Every row of every table but Alembic's, to put the store back as it was."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url)
        self.meta = MetaData()
        self.meta.reflect(self.engine)
        self.tables = [t for t in self.meta.sorted_tables if t.name != "alembic_version"]
        with self.engine.connect() as conn:
            self.rows = {
                t.name: [dict(r) for r in conn.execute(t.select()).mappings()] for t in self.tables
            }

    def restore(self) -> None:
        with self.engine.begin() as conn:
            for table in reversed(self.tables):
                conn.execute(table.delete())
            for table in self.tables:
                if self.rows[table.name]:
                    conn.execute(table.insert(), self.rows[table.name])

    def close(self) -> None:
        self.engine.dispose()


def test_stateful_workflows_along_the_links(fuzzed: Fuzzed) -> None:
    machine = fuzzed.schema.as_state_machine()
    client = fuzzed.client
    # Each run starts from the same store: what a step answers (201 or 200, 204 or
    # 404) then depends on that run's own steps only, as Hypothesis requires.
    snapshot = StoreSnapshot(fuzzed.url)

    class Workflow(machine):  # type: ignore[misc,valid-type]
        def setup(self) -> None:
            snapshot.restore()

        def before_call(self, case: Any) -> None:
            headers = {
                k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"
            }
            case.headers = {**headers, **AUTH}

        def call(self, case: Any, **kwargs: Any) -> Any:
            response = case.call(session=client, **kwargs)
            if response.encoding is None:  # JSON is UTF-8: see _send
                response.encoding = "utf-8"
            return response

        def validate_response(self, response: Any, case: Any, additional_checks: Any = ()) -> None:
            case.validate_response(response, checks=CHECKS)

    Workflow.TestCase.settings = settings(
        max_examples=STATEFUL_RUNS, stateful_step_count=STATEFUL_STEPS, **_SETTINGS
    )
    try:
        Workflow.TestCase().runTest()
    finally:
        snapshot.restore()
        snapshot.close()
