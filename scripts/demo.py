"""``make demo``: a working recommender on http://127.0.0.1:8000 from a fresh checkout.

Steps, each skipped when already done (so a second run starts in seconds):

1. migrate the database (default ``sqlite:///./rbmrec.db``);
2. import MovieLens 100K, from ``RBMREC_MOVIELENS_DIR`` when set, else the official
   GroupLens download (SHA-256 verified, cached), unless the store has ratings;
3. train and activate the first model, unless a usable one is active;
4. print where the dashboard is and example ``curl`` commands, then run the API
   (``rbmrec serve``) and the retrain worker (``rbmrec worker``, so that
   ``POST /admin/retrain`` and the dashboard's "Retrain now" are carried out) until
   Ctrl-C or ``SIGTERM``, which stops both.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import NoReturn

from sqlalchemy.exc import DBAPIError

from app.api.security import protected
from app.db import migrate
from app.db.engine import engine_from_settings, make_sessionmaker
from app.db.ratings import count_ratings
from app.logging_config import configure_logging
from app.services import movielens_download, registry
from app.services.importer import import_movielens
from app.services.retrain import RetrainError, train_and_activate
from app.settings import Settings, get_settings
from rbm_core.movielens import DataFormatError


def step(message: str) -> None:
    print(f"==> {message}", flush=True)


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def movielens_dir(settings: Settings) -> Path:
    if settings.movielens_dir is not None:
        return Path(settings.movielens_dir)
    archive = movielens_download.DATASETS["ml-100k"]
    cache = movielens_download.default_cache_dir()
    step(f"downloading MovieLens 100K from {archive.url} (cached in {cache})")
    try:
        return movielens_download.fetch(archive, cache)
    except (movielens_download.DownloadError, OSError) as exc:
        fail(f"{exc}; set RBMREC_MOVIELENS_DIR to an unpacked ml-100k directory instead")


def prepare(settings: Settings) -> None:
    """Migrate, import and train as needed."""
    step(f"migrating {settings.database_url}")
    try:
        migrate.upgrade(settings.database_url)
    except DBAPIError as exc:
        fail(f"cannot reach the database: {exc.orig}")
    engine = engine_from_settings(settings)
    session_factory = make_sessionmaker(engine)
    try:
        with session_factory() as session:
            n_ratings = count_ratings(session)
        if n_ratings:
            step(f"the store already holds {n_ratings} ratings: skipping the import")
        else:
            directory = movielens_dir(settings)
            step(f"importing MovieLens 100K from {directory}")
            try:
                report = import_movielens(engine, directory, scale=settings.rating_scale)
            except (DataFormatError, FileNotFoundError) as exc:
                fail(f"{exc} (nothing was imported)")
            step(
                f"imported {report.ratings_read} ratings of {report.users} users on "
                f"{report.items_read} items in {report.seconds:.1f} s"
            )
        with session_factory() as session:
            active = registry.get_active_version(session)
        if active is not None and Path(active.artifact_path).is_dir():
            step(f"model version {active.id} is active: skipping training")
        else:
            # measured: 43-48 s for one ML-100K fold with other jobs on the 2 cores
            # (docs/model.md), 145 s for the demo's 100,000 ratings at load average 7-10
            step(
                "training the first model, its settings search included: about a minute "
                "on 2 free cores, a few minutes on a busy machine"
            )
            started = time.perf_counter()
            try:
                version = train_and_activate(session_factory, settings, trigger="cli")
            except RetrainError as exc:
                fail(str(exc))
            rmse = version.metrics.get("validation_rmse")
            shown = f", validation RMSE {rmse:.3f}" if isinstance(rmse, float) else ""
            step(
                f"trained and activated model version {version.id} in "
                f"{time.perf_counter() - started:.0f} s{shown}"
            )
    finally:
        engine.dispose()


def examples(settings: Settings) -> str:
    """Example requests against the demo server."""
    base = f"http://{settings.host}:{settings.port}"
    header = " -H 'Authorization: Bearer $RBMREC_KEY'"
    auth = header if protected(settings, "write") else ""
    read = header if protected(settings, "read") else ""
    return f"""
Dashboard: {base}/dashboard    API docs: {base}/docs

Running here: the API (rbmrec serve) and the retrain worker (rbmrec worker, which
carries out POST /admin/retrain and the dashboard's "Retrain now"). Ctrl-C stops both.

Try it:

  curl -s{read} '{base}/users/196/recommendations?n=5'
  curl -s -X POST {base}/ratings{auth} -H 'Content-Type: application/json' \\
       -d '{{"user_id": "alice", "item_id": "50", "rating": 5}}'
  curl -s -X POST {base}/ratings/batch{auth} -H 'Content-Type: application/json' \\
       -d '{{"ratings": [{{"user_id": "alice", "item_id": "181", "rating": 5}},
                        {{"user_id": "alice", "item_id": "98", "rating": 2}}]}}'
  curl -s{read} '{base}/users/alice/recommendations?n=5&genre=Comedy'
  curl -s{read} '{base}/users/alice/predictions?item_id=172&item_id=1'
  curl -s '{base}/items/50/similar?n=5'
  curl -s {base}/model
  curl -s {base}/health/ready
"""


def rbmrec_command() -> list[str]:
    """The ``rbmrec`` command of this interpreter's environment."""
    rbmrec = Path(sys.executable).with_name("rbmrec")
    if rbmrec.is_file():
        return [str(rbmrec)]
    return [sys.executable, "-c", "from app.cli import main; main()"]


def serve_with_worker(command: list[str]) -> int:
    """Run the API and the retrain worker until either ends, Ctrl-C or ``SIGTERM``.

    Returns the API server's exit status (0 when stopped on purpose).
    """
    worker = subprocess.Popen([*command, "worker", "--poll-seconds", "2"])
    server = subprocess.Popen([*command, "serve"])
    children = (server, worker)
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        while not stopping and all(child.poll() is None for child in children):
            time.sleep(0.2)
    except KeyboardInterrupt:
        stopping = True  # the terminal sent SIGINT to the children as well
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        signal.signal(signal.SIGTERM, previous)
    if stopping:
        return 0
    for name, child in (("rbmrec serve", server), ("rbmrec worker", worker)):
        if child.returncode not in (0, None):
            print(f"error: {name} exited with status {child.returncode}", file=sys.stderr)
    return server.returncode or worker.returncode or 0


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_level)
    prepare(settings)
    print(examples(settings), flush=True)
    raise SystemExit(serve_with_worker(rbmrec_command()))


if __name__ == "__main__":
    main()
