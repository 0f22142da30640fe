"""The disk full (or the file size limit hit) while a retrain saves its artifact.

Two real mechanisms, no mocks:

* a small tmpfs mounted as the model directory and filled up, so that writing the
  artifact fails with ENOSPC (needs root and ``mount``; skipped, saying why, where
  that is not possible);
* ``rbmrec retrain`` run under ``RLIMIT_FSIZE``, so that the kernel refuses to grow
  a file past the limit (EFBIG); this works for any user.

Either way the run fails cleanly (recorded ``failed`` with the reason, exit status
non-zero for the CLI), nothing is left behind, the previous version stays active and
served, and once there is room again the next run publishes.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from _reliability_support import SMALL_PARAMS, Store, rbmrec_command, seed_store

from app.db.ratings import RatingIn, upsert_ratings
from app.services import registry, retrain
from app.services.artifacts import STAGING_DIR, check_artifact
from app.services.model_holder import ModelHolder
from app.settings import Settings
from rbm_core.scale import DEFAULT_SCALE

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

TMPFS_BYTES = 4 * 1024 * 1024


def _mount_tmpfs(where: Path) -> str | None:
    """Mount a small tmpfs at ``where``; returns why it could not, or ``None``."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return "mounting a tmpfs needs root and mount(8)"
    where.mkdir(parents=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES},mode=0755", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        return f"mount failed: {done.stderr.strip()}"
    return None


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs, unmounted after the test."""
    where = tmp_path / "disk"
    reason = _mount_tmpfs(where)
    if reason is not None:
        pytest.skip(f"no small filesystem to fill: {reason}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True)


def _fill(disk: Path, leave: int) -> Path:
    """Write a file that leaves about ``leave`` bytes free on ``disk``."""
    stats = os.statvfs(disk)
    free = stats.f_bavail * stats.f_frsize
    filler = disk / "filler.bin"
    with filler.open("wb") as handle:
        handle.write(b"\0" * max(0, free - leave))
    return filler


def _changed(store: Store) -> None:
    with store.session_factory.begin() as session:
        upsert_ratings(
            session,
            [RatingIn(f"disk-{uuid.uuid4().hex[:8]}", "50", 3.0)],
            scale=DEFAULT_SCALE,
        )


def _assert_previous_still_serves(store: Store, previous: str) -> None:
    with store.session_factory() as session:
        active = registry.get_active_version(session)
    assert active is not None
    assert active.id == previous
    loaded = ModelHolder(store.session_factory).refresh()
    assert loaded is not None
    assert loaded.version.id == previous


def _staging_contents(model_dir: Path) -> list[str]:
    staging = model_dir / STAGING_DIR
    return sorted(p.name for p in staging.iterdir()) if staging.exists() else []


def test_a_full_disk_fails_the_run_cleanly_and_keeps_the_active_version(
    pg_url: str, subset_dir: Path, small_artifact: Path, small_disk: Path
) -> None:
    store = seed_store(pg_url, subset_dir, small_artifact, small_disk / "models")
    settings = Settings(
        database_url=store.url,
        model_dir=store.model_dir,
        promotion_tolerance=100,
        ndcg_tolerance=100,
    )
    previous = store.version_id
    filler = _fill(small_disk, leave=64 * 1024)
    _changed(store)

    info = retrain.run_retrain(store.session_factory, settings, trigger="cli", params=SMALL_PARAMS)
    assert info.status == "failed", info
    assert "could not write artifact" in (info.error or "")
    free = int((info.error or "").rsplit("; ", 1)[1].split()[0])
    assert free <= 128 * 1024, info.error  # the message shows the disk is (nearly) full
    with store.session_factory() as session:
        versions = {v.id: v for v in registry.list_versions(session)}
    assert versions[info.model_version_id].status == "failed"  # type: ignore[index]
    _assert_previous_still_serves(store, previous)
    assert _staging_contents(store.model_dir) == []
    assert sorted(p.name for p in store.model_dir.iterdir() if not p.name.startswith(".")) == [
        previous
    ]

    filler.unlink()  # room again: the next run publishes
    again = retrain.run_retrain(store.session_factory, settings, trigger="cli", params=SMALL_PARAMS)
    assert again.status == "activated", again
    with store.session_factory() as session:
        active = registry.get_active_version(session)
    assert active is not None
    assert active.id == again.model_version_id
    check_artifact(Path(active.artifact_path), active.sha256)
    store.session_factory.kw["bind"].dispose()


def _limited(limit: int) -> None:  # runs in the child, before exec
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an error (EFBIG), not a kill
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_file_size_limit_fails_the_cli_run_cleanly(pg_store: Store, tmp_path: Path) -> None:
    previous = pg_store.version_id
    _changed(pg_store)
    env = {
        **os.environ,
        "RBMREC_DATABASE_URL": pg_store.url,
        "RBMREC_MODEL_DIR": str(pg_store.model_dir),
        "RBMREC_PROMOTION_TOLERANCE": "100",
        "RBMREC_NDCG_TOLERANCE": "100",
    }
    command = [
        *rbmrec_command(),
        "retrain",
        # The second run must pass the bias baseline, which the gate applies whatever
        # the tolerances: with a random seed it lost now and then, even at 10 epochs
        # (RMSE 0.9968 against 0.9882). A fixed seed makes the run the same every time;
        # this one's candidate beats the baseline by 0.02 (0.967 against 0.988).
        "--epochs",
        "10",
        "--hidden",
        "16",
        "--param",
        "search=false",
        "--seed",
        "4",
    ]
    done = subprocess.run(
        command,
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        preexec_fn=lambda: _limited(64 * 1024),
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "error: retrain run" in done.stderr
    assert "could not write artifact" in done.stderr
    assert "Traceback" not in done.stderr
    with pg_store.session_factory() as session:
        runs = retrain.list_runs(session)
    assert runs[0].status == "failed"
    assert "could not write artifact" in (runs[0].error or "")
    _assert_previous_still_serves(pg_store, previous)
    assert _staging_contents(pg_store.model_dir) == []

    again = subprocess.run(
        command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert "activated model version" in again.stdout
