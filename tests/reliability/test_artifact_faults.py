"""The active model's artifact deleted or damaged on disk, under a running server.

A real ``rbmrec serve`` process serves a model (memory-mapped from its private
serving copy, or read into memory) while requests keep
coming; the artifact's files are then deleted, corrupted in place, truncated, or
replaced by different, internally consistent files (their own checksums.json
rewritten to match). The server must keep answering every request: it keeps
serving the copy it has mapped when the files are gone, and stops serving the model
(``popular``) as soon as the files fail the registry's checksum; ``/health/ready``
says which. Restarted on the damaged files, it starts, serves ``popular`` and never
loads them; once the files are repaired it loads the model again by itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest
from _reliability_support import Store, api_server, wait_for

# real server processes for seconds each: `make test` runs them, `make test-fast` not
pytestmark = [pytest.mark.postgres, pytest.mark.e2e, pytest.mark.slow]

RATED = {"50": 5, "181": 5, "1": 4, "100": 2, "98": 1}


def _delete(artifact: Path) -> None:
    shutil.rmtree(artifact)


def _corrupt(artifact: Path) -> None:
    weights = artifact / "arrays" / "weights.npy"
    with weights.open("r+b") as handle:  # in place (a process mapping this file would see it)
        handle.seek(weights.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))


def _truncate(artifact: Path) -> None:
    weights = artifact / "arrays" / "weights.npy"
    os.truncate(weights, weights.stat().st_size // 2)


def _replace_consistently(artifact: Path) -> None:
    weights = artifact / "arrays" / "weights.npy"
    array = np.load(weights)
    np.save(weights, -array, allow_pickle=False)
    sums_path = artifact / "checksums.json"
    sums = json.loads(sums_path.read_text())
    sums["sha256"]["arrays/weights.npy"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    sums_path.write_text(json.dumps(sums, indent=2, sort_keys=True))


FAULTS = {
    "deleted": _delete,
    "corrupted": _corrupt,
    "truncated": _truncate,
    "replaced": _replace_consistently,
}


class Load:
    """Requests from 4 threads until stopped; counts statuses and strategies."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.statuses: Counter[int] = Counter()
        self.served: list[tuple[float, str | None]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(4)]

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=30) as http:
            while not self._stop.is_set():
                try:
                    rec = http.get("/users/fan/recommendations", params={"n": 20})
                    pred = http.get("/users/fan/predictions", params={"item_id": ["172", "7"]})
                except httpx.HTTPError as exc:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    time.sleep(0.05)
                    continue
                self.statuses[rec.status_code] += 1
                self.statuses[pred.status_code] += 1
                if rec.status_code == 200:
                    self.served.append((time.monotonic(), rec.json()["model_version"]))

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


def _ready(base_url: str) -> dict[str, object]:
    response = httpx.get(f"{base_url}/health/ready", timeout=10)
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


CASES = [
    # Memory-mapped (the default): the server maps a verified private copy, so even
    # a file truncated in place cannot kill it with SIGBUS.
    *[pytest.param(fault, True, id=f"{fault}-mmap") for fault in FAULTS],
    *[pytest.param(fault, False, id=fault) for fault in FAULTS],
]


@pytest.mark.parametrize(("fault", "mmap"), CASES)
def test_a_damaged_artifact_is_never_served_and_the_server_never_fails(
    pg_store: Store, tmp_path: Path, fault: str, mmap: bool
) -> None:
    env = {
        "RBMREC_DATABASE_URL": pg_store.url,
        "RBMREC_MODEL_DIR": str(pg_store.model_dir),
        "RBMREC_MODEL_POLL_SECONDS": "1",
        "RBMREC_MODEL_MMAP": str(mmap).lower(),
    }
    version = pg_store.version_id
    backup = Path(shutil.copytree(pg_store.artifact, tmp_path / "backup"))
    with api_server(env, tmp_path / "first") as server:
        for item, value in RATED.items():
            httpx.post(
                f"{server.url}/ratings", json={"user_id": "fan", "item_id": item, "rating": value}
            ).raise_for_status()
        with Load(server.url) as load:
            time.sleep(0.5)
            FAULTS[fault](pg_store.artifact)
            damaged_at = time.monotonic()

            def noticed() -> bool:
                error = _ready(server.url)["model"]["error"]  # type: ignore[index]
                return error is not None

            wait_for(noticed, 10, "the server to notice the damaged artifact", step=0.1)
            noticed_after = time.monotonic() - damaged_at
            time.sleep(1.0)  # more requests after the decision
        assert server.process is not None
        assert server.process.poll() is None, "the server died"
        ready = _ready(server.url)
        log = server.log_text()

    assert load.errors == []
    assert set(load.statuses) == {200}, load.statuses
    model = ready["model"]
    assert isinstance(model, dict)
    after = [v for t, v in load.served if t > damaged_at + noticed_after + 0.2]
    assert after, "no request was answered after the fault"
    if fault == "deleted":
        # the mapped copy is intact: keep serving it, and say the files are gone
        assert model["loaded"] is True
        assert "gone" in model["error"]
        assert set(after) == {version}
    else:
        assert model["loaded"] is False
        assert "checksum" in model["error"]
        assert ready["strategy"] == "popular"
        assert set(after) == {None}, "a model failing its checksum was served"
    assert "Traceback" not in log
    print(
        f"ARTIFACT {fault} (mmap={mmap}): noticed after {noticed_after:.2f}s; {dict(load.statuses)}"
    )

    # a restart on the damaged files: it starts, never loads them, serves popular
    with api_server(env, tmp_path / "restart") as server:
        ready = _ready(server.url)
        model = ready["model"]
        assert isinstance(model, dict)
        assert model["loaded"] is False
        assert model["active_version"] == version
        assert "could not be loaded" in model["error"]
        assert httpx.get(f"{server.url}/model").status_code == 404
        recs = httpx.get(f"{server.url}/users/fan/recommendations").json()
        assert recs["strategy"] == "popular"
        assert recs["model_version"] is None
        assert not {i["item_id"] for i in recs["items"]} & set(RATED)

        # repaired files are picked up without a restart
        shutil.rmtree(pg_store.artifact, ignore_errors=True)
        shutil.copytree(backup, pg_store.artifact)
        wait_for(
            lambda: _ready(server.url)["model"]["loaded"],  # type: ignore[index]
            10,
            "the repaired model to be loaded",
            step=0.1,
        )
        recs = httpx.get(f"{server.url}/users/fan/recommendations").json()
        assert (recs["strategy"], recs["model_version"]) == ("rbm", version)
        assert "Traceback" not in server.log_text()
