"""The model registry on SQLite and PostgreSQL: one active version, checksums, retention."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from _registry_support import invoke_cli
from fastapi.testclient import TestClient
from sqlalchemy import Engine, inspect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from app.api.main import create_app
from app.db import migrate
from app.db.engine import make_engine
from app.db.tables import ModelVersion
from app.services import registry, retrain
from app.services.artifacts import ArtifactIntegrityError, artifact_digest
from app.services.registry import VersionNotActivatableError, VersionNotFoundError
from app.settings import Settings
from rbm_core.artifact import save_model
from rbm_core.data import RatingMatrix
from rbm_core.model import SoftmaxRBM
from rbm_core.scale import DEFAULT_SCALE


@pytest.fixture(scope="module")
def tiny_model() -> SoftmaxRBM:
    """A real, fitted (tiny) model: 30 users, 12 items."""
    rng = np.random.default_rng(0)
    users, items, values = [], [], []
    for u in range(30):
        for i in rng.choice(12, size=6, replace=False):
            users.append(f"u{u}")
            items.append(f"i{i}")
            values.append(float(rng.integers(1, 6)))
    train = RatingMatrix.from_arrays(users, items, values, DEFAULT_SCALE)
    return SoftmaxRBM(n_hidden=4, n_epochs=1, random_state=0).fit(train)


def _artifact(model: SoftmaxRBM, model_dir: Path, version_id: str | None = None) -> Path:
    model_dir.mkdir(parents=True, exist_ok=True)
    return save_model(model, model_dir / (version_id or registry.new_version_id()))


def _register(
    session_factory: sessionmaker[Session],
    model: SoftmaxRBM,
    model_dir: Path,
    *,
    status: str = "candidate",
) -> registry.ModelVersionInfo:
    path = _artifact(model, model_dir)
    with session_factory.begin() as session:
        return registry.register_version(
            session,
            path,
            status=status,
            metrics={"validation_rmse": 1.0},
            training_curves={"validation_rmse": [1.2, 1.1, 1.0]},
        )


def _active_ids(session_factory: sessionmaker[Session]) -> list[str]:
    with session_factory() as session:
        return [v.id for v in registry.list_versions(session) if v.status == "active"]


def _corrupt(artifact: Path) -> None:
    target = artifact / "arrays" / "weights.npy"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))


def test_migration_creates_and_drops_registry_tables(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        assert {"model_versions", "training_runs"} <= set(inspect(engine).get_table_names())
        migrate.downgrade(database_url, "0001")
        assert not {"model_versions", "training_runs"} & set(inspect(engine).get_table_names())
    finally:
        migrate.upgrade(database_url)
        engine.dispose()
    engine = make_engine(database_url)
    try:
        assert {"model_versions", "training_runs"} <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_database_refuses_a_second_active_version(
    session_factory: sessionmaker[Session],
) -> None:
    def row(version_id: str, status: str = "active") -> ModelVersion:
        return ModelVersion(
            id=version_id,
            status=status,
            artifact_path=f"/nowhere/{version_id}",
            sha256="0" * 64,
            n_users=1,
            n_items=1,
            n_ratings=1,
            hyperparameters={},
            metrics={},
            training_curves={},
        )

    with session_factory.begin() as session:
        session.add(row("v1"))
    with pytest.raises(IntegrityError), session_factory.begin() as session:
        session.add(row("v2"))
    # ... while any number of other statuses may coexist
    with session_factory.begin() as session:
        session.add_all([row("v3", "retired"), row("v4", "retired"), row("v5", "candidate")])
    assert _active_ids(session_factory) == ["v1"]


def test_database_refuses_an_unknown_status(session_factory: sessionmaker[Session]) -> None:
    with pytest.raises(IntegrityError), session_factory.begin() as session:
        session.add(
            ModelVersion(
                id="bad",
                status="published",
                artifact_path="/x",
                sha256="",
                n_users=0,
                n_items=0,
                n_ratings=0,
                hyperparameters={},
                metrics={},
                training_curves={},
            )
        )


def test_register_activate_and_roll_back(
    session_factory: sessionmaker[Session], tiny_model: SoftmaxRBM, tmp_path: Path
) -> None:
    with session_factory() as session:
        assert registry.get_active_version(session) is None
    first = _register(session_factory, tiny_model, tmp_path, status="active")
    assert first.status == "active"
    assert first.activated_at is not None
    assert first.n_items == 12
    assert first.n_users == 30
    assert first.hyperparameters["n_hidden"] == 4
    assert first.training_curves == {"validation_rmse": [1.2, 1.1, 1.0]}
    assert len(first.sha256) == 64
    assert first.sha256 == artifact_digest(tmp_path / first.id)

    second = _register(session_factory, tiny_model, tmp_path)
    assert second.status == "candidate"
    assert _active_ids(session_factory) == [first.id]

    with session_factory.begin() as session:
        registry.activate_version(session, second.id)
    with session_factory() as session:
        assert registry.get_active_version(session).id == second.id  # type: ignore[union-attr]
        assert registry.get_version(session, first.id).status == "retired"  # type: ignore[union-attr]
        assert [v.id for v in registry.list_versions(session)] == [second.id, first.id]

    # rollback: the retired version becomes active again
    with session_factory.begin() as session:
        registry.activate_version(session, first.id)
    assert _active_ids(session_factory) == [first.id]
    # activating the active version changes nothing
    with session_factory.begin() as session:
        assert registry.activate_version(session, first.id).id == first.id
    assert _active_ids(session_factory) == [first.id]


def test_activation_refuses_unknown_training_and_failed_versions(
    session_factory: sessionmaker[Session], tiny_model: SoftmaxRBM, tmp_path: Path
) -> None:
    with pytest.raises(VersionNotFoundError), session_factory.begin() as session:
        registry.activate_version(session, "no-such-version")
    with session_factory.begin() as session:
        registry.reserve_version(session, "20260101T000000000Z-aaaaaa", tmp_path / "x")
    with pytest.raises(VersionNotActivatableError), session_factory.begin() as session:
        registry.activate_version(session, "20260101T000000000Z-aaaaaa")
    with session_factory.begin() as session:
        registry.set_version_status(session, "20260101T000000000Z-aaaaaa", "failed", note="test")
    with pytest.raises(VersionNotActivatableError, match="failed"), session_factory.begin() as s:
        registry.activate_version(s, "20260101T000000000Z-aaaaaa")
    assert _active_ids(session_factory) == []


def test_artifact_failing_its_checksum_is_never_activated(
    session_factory: sessionmaker[Session], tiny_model: SoftmaxRBM, tmp_path: Path
) -> None:
    good = _register(session_factory, tiny_model, tmp_path, status="active")
    bad = _register(session_factory, tiny_model, tmp_path)
    _corrupt(bad.artifact_path)

    with pytest.raises(ArtifactIntegrityError, match="checksum"), session_factory.begin() as s:
        registry.activate_version(s, bad.id)
    assert _active_ids(session_factory) == [good.id]

    # the CLI says so and exits non-zero
    result = invoke_cli(
        ["models", "activate", bad.id],
        {
            "RBMREC_DATABASE_URL": str(session_factory.kw["bind"].url.render_as_string(False)),
            "RBMREC_MODEL_DIR": str(tmp_path),
        },
    )
    assert result.exit_code == 1
    assert "checksum" in result.output
    assert _active_ids(session_factory) == [good.id]

    # a file deleted from the artifact: refused too
    other = _register(session_factory, tiny_model, tmp_path)
    (other.artifact_path / "checksums.json").unlink()
    with pytest.raises(ArtifactIntegrityError), session_factory.begin() as session:
        registry.activate_version(session, other.id)
    assert _active_ids(session_factory) == [good.id]


def test_registering_a_broken_artifact_is_refused(
    session_factory: sessionmaker[Session], tiny_model: SoftmaxRBM, tmp_path: Path
) -> None:
    path = _artifact(tiny_model, tmp_path)
    _corrupt(path)
    with pytest.raises(ArtifactIntegrityError), session_factory.begin() as session:
        registry.register_version(session, path, status="active")
    with pytest.raises(ArtifactIntegrityError), session_factory.begin() as session:
        registry.register_version(session, tmp_path / "missing")
    with session_factory() as session:
        assert registry.list_versions(session) == []


def test_retention_keeps_newest_and_the_active(
    session_factory: sessionmaker[Session], tiny_model: SoftmaxRBM, tmp_path: Path
) -> None:
    oldest = _register(session_factory, tiny_model, tmp_path, status="active")
    middle = [_register(session_factory, tiny_model, tmp_path) for _ in range(3)]
    newest = _register(session_factory, tiny_model, tmp_path)

    with session_factory.begin() as session:
        deleted = registry.prune_artifacts(session, keep=2, model_dir=tmp_path)
    # newest two kept (newest, middle[-1]); the active one (oldest) is never deleted
    assert sorted(deleted) == sorted(v.id for v in middle[:2])
    for version in middle[:2]:
        assert not version.artifact_path.exists()
    for version in (oldest, middle[2], newest):
        assert version.artifact_path.is_dir()
    with session_factory() as session:
        rows = {v.id: v for v in registry.list_versions(session)}
    assert len(rows) == 5  # the history stays
    assert not rows[middle[0].id].artifact_available
    assert rows[middle[0].id].artifact_deleted_at is not None
    assert rows[newest.id].artifact_available

    # a pruned version cannot be activated; pruning again deletes nothing
    with pytest.raises(VersionNotActivatableError, match="retention"), session_factory.begin() as s:
        registry.activate_version(s, middle[0].id)
    with session_factory.begin() as session:
        assert registry.prune_artifacts(session, keep=2, model_dir=tmp_path) == []


def test_concurrent_activations_leave_exactly_one_active(
    engine: Engine,
    session_factory: sessionmaker[Session],
    tiny_model: SoftmaxRBM,
    tmp_path: Path,
) -> None:
    versions = [_register(session_factory, tiny_model, tmp_path) for _ in range(4)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(versions))

    def activate(version_id: str) -> None:
        try:
            barrier.wait(timeout=10)
            with session_factory.begin() as session:
                registry.activate_version(session, version_id)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=activate, args=(v.id,)) for v in versions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    active = _active_ids(session_factory)
    assert len(active) == 1
    with session_factory() as session:
        statuses = sorted(v.status for v in registry.list_versions(session))
    assert statuses == ["active", "retired", "retired", "retired"]


def test_version_ids_are_unique_sortable_directory_names() -> None:
    ids = [registry.new_version_id() for _ in range(50)]
    assert len(set(ids)) == 50
    for version_id in ids:
        assert registry.validate_version_id(version_id) == version_id
    with pytest.raises(ValueError, match="invalid model version id"):
        registry.validate_version_id("../etc")
    with pytest.raises(ValueError, match="invalid model version id"):
        registry.validate_version_id(".hidden")


# -- the HTTP API: /models and /admin/retrain ----------------------------------------------
@pytest.fixture
def api_settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=database_url, model_dir=tmp_path, model_poll_seconds=30)


def test_models_api_lists_activates_and_rolls_back(
    session_factory: sessionmaker[Session],
    tiny_model: SoftmaxRBM,
    tmp_path: Path,
    api_settings: Settings,
) -> None:
    first = _register(session_factory, tiny_model, tmp_path, status="active")
    second = _register(session_factory, tiny_model, tmp_path)
    with TestClient(create_app(api_settings)) as client:
        assert client.get("/model").json()["version"] == first.id

        listed = client.get("/models")
        assert listed.status_code == 200
        body = listed.json()
        assert body["active_version"] == first.id
        assert [v["id"] for v in body["versions"]] == [second.id, first.id]
        assert body["versions"][1]["training_curves"] == {"validation_rmse": [1.2, 1.1, 1.0]}
        assert body["versions"][1]["metrics"] == {"validation_rmse": 1.0}
        assert client.get("/models", params={"limit": 1}).json()["versions"][0]["id"] == second.id

        one = client.get(f"/models/{second.id}")
        assert one.status_code == 200
        assert one.json()["status"] == "candidate"
        assert one.json()["sha256"] == second.sha256

        activated = client.post(f"/models/{second.id}/activate")
        assert activated.status_code == 200, activated.text
        assert activated.json()["status"] == "active"
        # the activating process serves the new version at once
        assert client.get("/model").json()["version"] == second.id
        assert _active_ids(session_factory) == [second.id]

        # rollback
        assert client.post(f"/models/{first.id}/activate").status_code == 200
        assert client.get("/model").json()["version"] == first.id

        missing = client.get("/models/20990101T000000000Z-000000")
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith("application/problem+json")
        assert client.post("/models/nope/activate").status_code == 404
        assert client.get("/models/..%2Fetc").status_code in (404, 422)
        assert client.get("/models/" + "a" * 65).status_code == 422
        assert client.get("/models", params={"limit": 0}).status_code == 422


def test_models_api_refuses_a_corrupt_artifact(
    session_factory: sessionmaker[Session],
    tiny_model: SoftmaxRBM,
    tmp_path: Path,
    api_settings: Settings,
) -> None:
    good = _register(session_factory, tiny_model, tmp_path, status="active")
    bad = _register(session_factory, tiny_model, tmp_path)
    _corrupt(bad.artifact_path)
    with TestClient(create_app(api_settings)) as client:
        response = client.post(f"/models/{bad.id}/activate")
        assert response.status_code == 409
        assert "checksum" in response.json()["detail"]
        assert client.get("/model").json()["version"] == good.id
    assert _active_ids(session_factory) == [good.id]


def test_admin_retrain_queues_a_run_and_reports_it(
    session_factory: sessionmaker[Session], api_settings: Settings
) -> None:
    with TestClient(create_app(api_settings)) as client:
        response = client.post("/admin/retrain")
        assert response.status_code == 202, response.text
        run = response.json()
        assert run["status"] == "queued"
        assert run["trigger"] == "api"
        assert response.headers["location"] == f"/admin/retrain/{run['id']}"
        # a second request joins the queued run
        assert client.post("/admin/retrain").json()["id"] == run["id"]

        fetched = client.get(f"/admin/retrain/{run['id']}")
        assert fetched.status_code == 200
        assert fetched.json() == run
        assert [r["id"] for r in client.get("/admin/retrain").json()] == [run["id"]]
        assert client.get("/admin/retrain/run-unknown").status_code == 404
        assert client.get("/admin/retrain/bad id").status_code == 422

    # the web process never trains: the run waits for a worker
    with session_factory() as session:
        assert retrain.get_run(session, run["id"]).status == "queued"  # type: ignore[union-attr]
        assert registry.list_versions(session) == []


def test_registry_routes_need_an_admin_key(database_url: str, tmp_path: Path) -> None:
    settings = Settings(
        database_url=database_url, model_dir=tmp_path, admin_api_keys=["admin-secret-Tq8wLp3z"]
    )
    with TestClient(create_app(settings)) as client:
        for method, path in [
            ("GET", "/models"),
            ("POST", "/models/x/activate"),
            ("POST", "/admin/retrain"),
            ("GET", "/admin/retrain/run-x"),
        ]:
            assert client.request(method, path).status_code == 401, path
            wrong = {"Authorization": "Bearer nope"}
            assert client.request(method, path, headers=wrong).status_code == 401, path
        good = {"Authorization": "Bearer admin-secret-Tq8wLp3z"}
        assert client.get("/models", headers=good).status_code == 200
        assert client.post("/admin/retrain", headers=good).status_code == 202
