"""A retrain process killed (SIGKILL) while it writes and publishes its artifact.

tests/integration/test_retrain.py already kills a retrain in the middle of training
and checks the worker's recovery; this extends it to every step of writing and
publishing the artifact. ``rbmrec retrain`` runs as its own process with a Python
audit hook that sends the process SIGKILL at one exact point:

* ``array``: while the first array file is being written (a partial artifact);
* ``checksums``: the arrays and metadata written, the checksum file not yet;
* ``staged``: the complete, fsynced artifact about to be renamed into staging;
* ``publish``: the verified artifact about to be renamed to its final directory;
* ``register``: the artifact in its final directory, the registry not yet told.

Each time nothing is half-published: the previous version stays active and an API
model holder keeps serving it; the next run marks the killed run failed, removes
its leftovers, and publishes a version that verifies.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _reliability_support import SMALL_PARAMS, Store
from sqlalchemy import select

from app.db.ratings import RatingIn, upsert_ratings
from app.db.tables import ModelVersion, TrainingRun
from app.services import registry, retrain
from app.services.artifacts import STAGING_DIR, check_artifact
from app.services.model_holder import ModelHolder
from app.settings import Settings
from rbm_core.scale import DEFAULT_SCALE

HOOK = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path

    POINT = os.environ["RBMREC_TEST_KILL_AT"]
    MODEL_DIR = Path(os.environ["RBMREC_MODEL_DIR"]).resolve()
    STAGING = MODEL_DIR / ".staging"
    published = []

    def writing(mode, flags):
        if isinstance(mode, str):
            return any(c in mode for c in "wxa+")
        return isinstance(flags, int) and bool(flags & (os.O_WRONLY | os.O_RDWR))

    def hook(event, args):
        if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            path = Path(os.fsdecode(args[0])).resolve()
            if POINT == "register" and published and published[0] in path.parents:
                os.kill(os.getpid(), signal.SIGKILL)
            if STAGING in path.parents and writing(args[1], args[2]):
                if POINT == "array" and path.suffix == ".npy":
                    os.kill(os.getpid(), signal.SIGKILL)
                if POINT == "checksums" and path.name == "checksums.json":
                    os.kill(os.getpid(), signal.SIGKILL)
        elif event == "os.rename":
            src, dst = (Path(os.fsdecode(a)).resolve() for a in args[:2])
            if POINT == "staged" and dst.parent == STAGING:
                os.kill(os.getpid(), signal.SIGKILL)
            if dst.parent == MODEL_DIR and STAGING in src.parents:
                if POINT == "publish":
                    os.kill(os.getpid(), signal.SIGKILL)
                published.append(dst)

    sys.addaudithook(hook)
    from app.cli import main
    sys.argv = ["rbmrec", *sys.argv[1:]]
    main()
    """
)

POINTS = ["array", "checksums", "staged", "publish", "register"]


def _add_rating(store: Store, user: str) -> None:
    # a changed store, so that no retrain is skipped as "nothing changed"
    with store.session_factory.begin() as session:
        upsert_ratings(session, [RatingIn(user, "50", 4.0)], scale=DEFAULT_SCALE)


def _killed_retrain(store: Store, point: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "RBMREC_DATABASE_URL": store.url,
        "RBMREC_MODEL_DIR": str(store.model_dir),
        "RBMREC_PROMOTION_TOLERANCE": "100",
        "RBMREC_NDCG_TOLERANCE": "100",
        "RBMREC_TEST_KILL_AT": point,
    }
    return subprocess.run(
        [
            sys.executable,
            "-c",
            HOOK,
            "retrain",
            "--epochs",
            "2",
            "--hidden",
            "16",
            "--param",
            "search=false",
        ],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _leftovers(model_dir: Path, keep: set[str]) -> list[str]:
    """What the model directory holds besides the artifacts in ``keep`` (and the SQLite
    lock file), staging contents included."""
    out: list[str] = []
    for entry in model_dir.iterdir():
        if entry.name == STAGING_DIR:
            out += [f"{entry.name}/{child.name}" for child in entry.iterdir()]
        elif entry.name not in {*keep, ".retrain-lock"}:
            out.append(entry.name)
    return sorted(out)


def _files_at_the_kill(model_dir: Path) -> set[str]:
    """Names of the files the killed run left, wherever they are (proves the point)."""
    staging = model_dir / STAGING_DIR
    found = {p.name for p in staging.rglob("*") if p.is_file()} if staging.exists() else set()
    return found


EXPECTED_AT_KILL = {
    # point -> (files the partial artifact must hold, files it must not hold yet)
    "array": (set(), {"checksums.json", "metadata.json"}),
    "checksums": ({"user_rbm.weights.npy", "metadata.json"}, {"checksums.json"}),
    "staged": ({"user_rbm.weights.npy", "metadata.json", "checksums.json"}, set()),
    "publish": ({"user_rbm.weights.npy", "metadata.json", "checksums.json"}, set()),
}


CASES = [
    *[pytest.param("postgres", p, marks=pytest.mark.postgres, id=f"postgres-{p}") for p in POINTS],
    # SQLite's lock and recovery differ; two points check them
    *[pytest.param("sqlite", p, id=f"sqlite-{p}") for p in ("array", "publish")],
]


@pytest.mark.e2e
@pytest.mark.parametrize(("database_url", "point"), CASES, indirect=["database_url"])
def test_a_retrain_killed_while_publishing_leaves_nothing_half_published(
    any_store: Store, tmp_path: Path, point: str
) -> None:
    store = any_store
    settings = Settings(
        database_url=store.url,
        model_dir=store.model_dir,
        promotion_tolerance=100,
        ndcg_tolerance=100,
    )
    previous = store.version_id
    _add_rating(store, "before-kill")

    done = _killed_retrain(store, point, tmp_path)
    assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr
    if point in EXPECTED_AT_KILL:
        present, absent = EXPECTED_AT_KILL[point]
        files = _files_at_the_kill(store.model_dir)
        assert present <= files, files
        assert not absent & files, files

    # nothing half-published: the previous version is active, and served
    with store.session_factory() as session:
        active = registry.get_active_version(session)
        killed_run = session.scalars(
            select(TrainingRun).where(TrainingRun.status == "running")
        ).one()
        killed_version = killed_run.model_version_id
        assert killed_version is not None
        row = session.get(ModelVersion, killed_version)
        assert row is not None
        assert row.status == "training"
    assert active is not None
    assert active.id == previous
    holder = ModelHolder(store.session_factory)
    loaded = holder.refresh()
    assert loaded is not None
    assert loaded.version.id == previous
    if point == "register":
        # complete in its final place, yet unknown to the registry as a usable version
        assert (store.model_dir / killed_version).is_dir()

    # the next run recovers and publishes a sound version
    _add_rating(store, "after-kill")
    info = retrain.run_retrain(store.session_factory, settings, trigger="cli", params=SMALL_PARAMS)
    assert info.status == "activated", info
    with store.session_factory() as session:
        dead = session.get(TrainingRun, killed_run.id)
        assert dead is not None
        assert dead.status == "failed"
        assert (dead.error or "").startswith("abandoned")
        abandoned = session.get(ModelVersion, killed_version)
        assert abandoned is not None
        assert abandoned.status == "failed"
        new = registry.get_active_version(session)
    assert new is not None
    assert new.id == info.model_version_id
    check_artifact(Path(new.artifact_path), new.sha256)
    assert _leftovers(store.model_dir, {previous, new.id}) == []
    assert holder.refresh() is not None
    assert holder.current is not None
    assert holder.current.version.id == new.id
