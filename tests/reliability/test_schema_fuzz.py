"""Schemathesis against a live ``rbmrec serve`` and the OpenAPI document it serves.

The server runs for real (a store holding an ML-100K subset, a model active) on
SQLite and on PostgreSQL, in both modes a deployment can run in:

* open: no API key set; the document must then declare no security at all;
* keyed: admin, write and read keys set; every request carries the admin key (``-H``),
  and Schemathesis' ``ignored_auth`` check resends each accepted request to a secured
  operation without a key and with a made-up one, expecting 401 both times.

``st run --checks all`` runs every phase (examples, coverage, fuzzing, stateful along
the document's links) and every check: no server error, documented statuses,
content types, headers and bodies, schema-violating data refused, schema-valid data
accepted, ``Allow`` of 405 answers, authentication enforced, deleted things gone.
These are the commands of docs/security.md with a bounded number of examples; the
on-demand run (``RBMREC_TEST_SOAK=1``) runs as many as the documented ones.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from _reliability_support import ApiServer, empty_database, seed_store, soak_enabled

from app.api.main import create_app
from app.settings import Settings

EXAMPLES = 100 if soak_enabled() else 8
"""Examples per operation and phase (``st run -n``)."""

ADMIN_KEY = "fuzz-admin-key-4d1c9a7e02"
WRITE_KEY = "fuzz-write-key-7e2b51c3f8"
READ_KEY = "fuzz-read-key-9a3f06d2b4"
KEYED = {
    "RBMREC_ADMIN_API_KEYS": ADMIN_KEY,
    "RBMREC_API_KEYS": WRITE_KEY,
    "RBMREC_READ_API_KEYS": READ_KEY,
}


CONFIG_FILE = Path(__file__).with_name("schemathesis.toml")
"""What the runs expect beyond Schemathesis' defaults (a 414 may refuse invalid data)."""


def st_command() -> list[str]:
    """Schemathesis' ``st`` of this interpreter's environment."""
    script = Path(sys.executable).with_name("st")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "schemathesis.cli"]


@dataclass
class Served:
    server: ApiServer
    mode: str
    url: str


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(("sqlite", "open"), id="sqlite-open"),
        pytest.param(("sqlite", "keyed"), id="sqlite-keyed"),
        pytest.param(("postgres", "open"), id="postgres-open", marks=pytest.mark.postgres),
        pytest.param(("postgres", "keyed"), id="postgres-keyed", marks=pytest.mark.postgres),
    ],
)
def served(
    request: pytest.FixtureRequest,
    subset_dir: Path,
    small_artifact: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    """``rbmrec serve`` on a seeded store, open or keyed."""
    database, mode = request.param
    url: str = request.getfixturevalue(f"{database}_url")
    workdir = tmp_path_factory.mktemp(f"fuzz-{database}-{mode}")
    store = seed_store(url, subset_dir, small_artifact, workdir / "models")
    store.session_factory.kw["bind"].dispose()
    env = {
        "RBMREC_DATABASE_URL": url,
        "RBMREC_MODEL_DIR": str(store.model_dir),
        "RBMREC_MODEL_POLL_SECONDS": "30",
        # so that more generated ratings are stored, and the stateful phase follows them
        "RBMREC_AUTO_CREATE_ITEMS": "true",
        **(KEYED if mode == "keyed" else {}),
    }
    server = ApiServer(env, workdir)
    try:
        server.start()
        yield Served(server, mode, url)
    finally:
        server.stop()
        empty_database(url)


def run_schemathesis(served: Served, *extra: str) -> subprocess.CompletedProcess[str]:
    """``st run --checks all`` against the server (admin key in keyed mode)."""
    auth = ["-H", f"Authorization: Bearer {ADMIN_KEY}"] if served.mode == "keyed" else []
    return subprocess.run(
        [
            *st_command(),
            "--config-file",
            str(CONFIG_FILE),
            "run",
            "--checks",
            "all",
            "-n",
            str(EXAMPLES),
            "--no-color",
            *auth,
            *extra,
            f"{served.server.url}/openapi.json",
        ],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )


@pytest.mark.e2e
def test_schemathesis_finds_no_failure_with_every_check_and_phase(served: Served) -> None:
    done = run_schemathesis(served)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-20000:]
    assert "No issues found" in output, output[-5000:]
    # every phase ran, the stateful one (along the links) included
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert f"✅  {phase}" in output, output[-5000:]


@pytest.mark.e2e
def test_the_served_document_declares_exactly_the_keys_the_server_enforces(
    served: Served,
) -> None:
    document = httpx.get(f"{served.server.url}/openapi.json").json()
    secured = {
        f"{method.upper()} {path}": operation.get("security")
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }
    if served.mode == "open":
        assert not any(secured.values())
        assert "securitySchemes" not in document.get("components", {})
        return
    assert secured["GET /users/{user_id}/recommendations"] == [{"ReadKey": []}]
    assert secured["POST /ratings"] == [{"WriteKey": []}]
    assert secured["POST /admin/retrain"] == [{"AdminKey": []}]
    assert secured["GET /items"] is None
    assert secured["GET /health/ready"] is None
    schemes = document["components"]["securitySchemes"]
    assert {scheme["scheme"] for scheme in schemes.values()} == {"bearer"}


def _schema(settings: Settings) -> dict[str, Any]:
    schema: dict[str, Any] = create_app(settings).openapi()
    return schema


def _operations(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        f"{method.upper()} {path}": operation
        for path, item in schema["paths"].items()
        for method, operation in item.items()
    }


def test_no_operation_declares_a_required_authorization_header() -> None:
    keyed = Settings(
        database_url="sqlite://",
        admin_api_keys=ADMIN_KEY,
        api_keys=WRITE_KEY,
        read_api_keys=READ_KEY,
    )
    for settings in (Settings(database_url="sqlite://"), keyed):
        for name, operation in _operations(_schema(settings)).items():
            headers = [p["name"].lower() for p in operation.get("parameters", []) if p]
            assert "authorization" not in headers, name


def test_only_the_reads_are_open_when_no_read_key_is_set() -> None:
    settings = Settings(database_url="sqlite://", admin_api_keys=ADMIN_KEY, api_keys=WRITE_KEY)
    operations = _operations(_schema(settings))
    reads = operations["GET /users/{user_id}/ratings"]
    assert "security" not in reads
    assert "401" not in reads["responses"]
    write = operations["DELETE /users/{user_id}/ratings/{item_id}"]
    assert write["security"] == [{"WriteKey": []}]
    assert {"401", "403"} <= set(write["responses"])
    assert write["responses"]["401"]["headers"]["WWW-Authenticate"]["required"]


def test_every_status_the_layers_answer_is_documented() -> None:
    operations = _operations(_schema(Settings(database_url="sqlite://")))
    for name, operation in operations.items():
        statuses = set(operation["responses"])
        if "requestBody" in operation:
            # not JSON or not UTF-8, too large, not application/json, invalid
            assert {"400", "413", "415", "422"} <= statuses, name
        if name.split()[0] in ("POST", "PUT", "DELETE"):
            assert {"409", "413"} <= statuses, name


def test_the_rating_scale_is_part_of_the_document() -> None:
    schema = _schema(Settings(database_url="sqlite://", rating_scale="1..10:0.5"))
    rating = schema["components"]["schemas"]["RatingCreate"]["properties"]["rating"]
    assert rating["enum"] == [1 + 0.5 * i for i in range(19)]


def test_item_attributes_are_described_as_storable_json() -> None:
    schema = _schema(Settings(database_url="sqlite://"))
    attributes = schema["components"]["schemas"]["ItemUpsert"]["properties"]["attributes"]
    assert attributes["propertyNames"] == {"pattern": "^[^\\x00]*$"}
    assert attributes["additionalProperties"] == {"$ref": "#/components/schemas/StorableJson"}
    storable = schema["components"]["schemas"]["StorableJson"]
    assert {"type": "string", "pattern": "^[^\\x00]*$"} in storable["anyOf"]


def test_the_schema_declares_links_for_stateful_runs() -> None:
    operations = _operations(_schema(Settings(database_url="sqlite://")))
    links = {
        (source, name)
        for source, operation in operations.items()
        for response in operation["responses"].values()
        for name in response.get("links", {})
    }
    assert ("POST /ratings", "DeleteRating") in links
    assert ("PUT /items/{item_id}", "SimilarItems") in links
    assert ("POST /admin/retrain", "RetrainRun") in links
    assert ("GET /model", "Activate") in links
    assert len(links) >= 9
