"""The loaded model follows the registry: swaps under load, polling, SIGHUP, bad artifacts."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from _api_support import Subset, load_subset, register
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from app.api.main import create_app
from app.services import registry
from app.services.model_holder import ModelHolder
from app.settings import Settings

RATINGS = {"50": 5, "181": 5, "1": 4, "100": 2, "98": 1}


def holder_of(client: TestClient) -> ModelHolder:
    holder: ModelHolder = client.app.state.model_holder  # type: ignore[attr-defined]
    return holder


def copy_artifact(source: Path, models: Path, name: str) -> Path:
    models.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copytree(source, models / name))


def activate(store: sessionmaker[Session], version_id: str) -> None:
    with store.begin() as session:
        registry.activate_version(session, version_id)


def test_swap_under_concurrent_requests_fails_none(
    model_client: TestClient, store: sessionmaker[Session], model_artifacts: list[Path]
) -> None:
    first, second = (path.name for path in model_artifacts)
    register(store, model_artifacts[1], active=False)
    for item, value in RATINGS.items():
        model_client.post("/ratings", json={"user_id": "loaded", "item_id": item, "rating": value})

    stop = threading.Event()
    statuses: Counter[int] = Counter()
    versions: Counter[str] = Counter()
    lock = threading.Lock()

    def hammer() -> None:
        while not stop.is_set():
            rec = model_client.get("/users/loaded/recommendations", params={"n": 20})
            pred = model_client.get("/users/loaded/predictions", params={"item_id": ["172"]})
            with lock:
                statuses[rec.status_code] += 1
                statuses[pred.status_code] += 1
                if rec.status_code == 200:
                    body = rec.json()
                    versions[body["model_version"]] += 1
                    assert body["strategy"] == "rbm"
                    assert len(body["items"]) == 20

    with ThreadPoolExecutor(max_workers=6) as pool:
        workers = [pool.submit(hammer) for _ in range(6)]
        time.sleep(0.3)
        for target in (second, first, second):
            # The registry's admin endpoint activates and refreshes this process.
            response = model_client.post(f"/models/{target}/activate")
            assert response.status_code == 200, response.text
            assert holder_of(model_client).current is not None
            assert holder_of(model_client).current.version.id == target  # type: ignore[union-attr]
            time.sleep(0.3)
        stop.set()
        for worker in workers:
            worker.result()

    assert set(statuses) == {200}, statuses
    assert versions[first] > 0
    assert versions[second] > 0
    after = model_client.get("/users/loaded/recommendations").json()
    assert after["model_version"] == second


def test_poll_picks_up_a_new_active_version(
    store: sessionmaker[Session],
    ml_subset: Subset,
    model_artifacts: list[Path],
    make_client: Callable[..., TestClient],
) -> None:
    load_subset(store, ml_subset)
    first = register(store, model_artifacts[0], active=True)
    second = register(store, model_artifacts[1], active=False)
    client = make_client(model_poll_seconds=0.2)
    assert client.get("/model").json()["version"] == first

    activate(store, second)  # as `rbmrec models activate` in another process would
    deadline = time.monotonic() + 10
    while client.get("/model").json()["version"] != second:
        assert time.monotonic() < deadline, "the poll did not pick up the new version"
        time.sleep(0.1)
    ready = client.get("/health/ready").json()
    assert ready["model"]["version"] == second
    assert ready["model"]["active_version"] == second


def test_first_model_is_picked_up_without_restart(
    store: sessionmaker[Session],
    ml_subset: Subset,
    model_artifacts: list[Path],
    client: TestClient,
) -> None:
    load_subset(store, ml_subset)
    assert client.get("/users/1/recommendations").json()["strategy"] == "popular"
    version = register(store, model_artifacts[0], active=True)
    holder_of(client).refresh()
    body = client.get("/users/1/recommendations").json()
    assert body["strategy"] == "rbm"
    assert body["model_version"] == version


def test_sighup_triggers_a_refresh(
    store: sessionmaker[Session],
    ml_subset: Subset,
    model_artifacts: list[Path],
    make_settings: Callable[..., Settings],
) -> None:
    if not hasattr(signal, "SIGHUP"):
        pytest.skip("no SIGHUP on this platform")
    load_subset(store, ml_subset)
    first = register(store, model_artifacts[0], active=True)
    second = register(store, model_artifacts[1], active=False)
    app = create_app(make_settings())

    async def scenario() -> tuple[str, str]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                before = (await http.get("/model")).json()["version"]
                await asyncio.to_thread(activate, store, second)
                os.kill(os.getpid(), signal.SIGHUP)
                for _ in range(100):
                    after = (await http.get("/model")).json()["version"]
                    if after == second:
                        break
                    await asyncio.sleep(0.05)
                return before, after

    before, after = asyncio.run(scenario())
    assert (before, after) == (first, second)


def test_a_corrupt_new_version_keeps_the_old_model(
    model_client: TestClient,
    store: sessionmaker[Session],
    model_artifacts: list[Path],
    tmp_path: Path,
) -> None:
    first = model_artifacts[0].name
    broken = copy_artifact(model_artifacts[1], tmp_path / "copies", "20260103T000000000Z-cccccc")
    register(store, broken, active=True)  # verified and activated while intact
    weights = next(broken.rglob("*.npy"))
    original = weights.read_bytes()
    weights.write_bytes(original[:-8] + b"garbage!")

    holder_of(model_client).refresh()
    assert model_client.get("/model").json()["version"] == first
    ready = model_client.get("/health/ready")
    assert ready.status_code == 200
    model = ready.json()["model"]
    assert model["version"] == first
    assert model["active_version"] == broken.name
    assert broken.name in model["error"]
    assert "checksum" in model["error"]
    for item, value in RATINGS.items():
        model_client.post("/ratings", json={"user_id": "u", "item_id": item, "rating": value})
    body = model_client.get("/users/u/recommendations").json()
    assert body["strategy"] == "rbm"
    assert body["model_version"] == first

    weights.write_bytes(original)  # repaired: the next refresh loads it
    holder_of(model_client).refresh()
    assert model_client.get("/model").json()["version"] == broken.name
    assert model_client.get("/health/ready").json()["model"]["error"] is None


def test_a_loaded_artifact_corrupted_on_disk_is_no_longer_served(
    store: sessionmaker[Session],
    ml_subset: Subset,
    model_artifacts: list[Path],
    make_client: Callable[..., TestClient],
    tmp_path: Path,
) -> None:
    load_subset(store, ml_subset)
    copy = copy_artifact(model_artifacts[0], tmp_path / "copies", "20260104T000000000Z-dddddd")
    register(store, copy, active=True)
    client = make_client()
    assert client.get("/model").json()["version"] == copy.name

    weights = next(copy.rglob("*.npy"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    holder_of(client).refresh()

    assert client.get("/model").status_code == 404
    ready = client.get("/health/ready").json()
    assert ready["strategy"] == "popular"
    assert ready["model"]["loaded"] is False
    assert "fails its checksum" in ready["model"]["error"]
    for item, value in RATINGS.items():
        client.post("/ratings", json={"user_id": "u", "item_id": item, "rating": value})
    body = client.get("/users/u/recommendations").json()
    assert body["strategy"] == "popular"
    assert not {item["item_id"] for item in body["items"]} & set(RATINGS)
    assert "rbmrec_model_loaded 0.0" in client.get("/metrics").text


def test_deleted_artifact_files_keep_the_loaded_copy(
    store: sessionmaker[Session],
    ml_subset: Subset,
    model_artifacts: list[Path],
    make_client: Callable[..., TestClient],
    tmp_path: Path,
) -> None:
    load_subset(store, ml_subset)
    copy = copy_artifact(model_artifacts[0], tmp_path / "copies", "20260105T000000000Z-eeeeee")
    register(store, copy, active=True)
    client = make_client()
    shutil.rmtree(copy)
    holder_of(client).refresh()
    for item, value in RATINGS.items():
        client.post("/ratings", json={"user_id": "u", "item_id": item, "rating": value})
    body = client.get("/users/u/recommendations").json()
    assert body["strategy"] == "rbm"
    assert body["model_version"] == copy.name
    error = client.get("/health/ready").json()["model"]["error"]
    assert "gone" in error
