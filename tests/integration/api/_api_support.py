"""Helpers of the API tests (imported by their conftest and test modules)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sqlalchemy.orm import Session, sessionmaker

from app.services import registry
from app.services.importer import import_movielens
from rbm_core.movielens import read_items, read_ratings
from rbm_core.scale import RatingScale

N_USERS = 60
"""Users of the ML-100K subset (about 6,000 ratings, 1,100 items)."""

SCALE = RatingScale.parse("1,2,3,4,5")


@dataclass(frozen=True)
class Subset:
    """The ML-100K subset: ratings (user_id, item_id, rating, timestamp), the items they
    rate, and a directory in ML-100K layout holding them (for the importer)."""

    ratings: pd.DataFrame
    items: pd.DataFrame
    directory: Path

    def user_items(self, user_id: str) -> set[str]:
        return set(self.ratings.loc[self.ratings["user_id"] == user_id, "item_id"])

    @property
    def item_ids(self) -> set[str]:
        return set(self.items["id"])


def make_subset(movielens_dir: Path, directory: Path) -> Subset:
    """The ratings of ML-100K users 1..N_USERS and their items, also written to
    ``directory`` in ML-100K layout."""
    ratings = read_ratings(movielens_dir / "u.data")
    items = read_items(movielens_dir / "u.item")
    ratings = ratings[ratings["user_id"].astype(int) <= N_USERS].reset_index(drop=True)
    items = items[items["id"].isin(set(ratings["item_id"]))].reset_index(drop=True)
    lines = (movielens_dir / "u.data").read_text().splitlines()
    kept = [line for line in lines if int(line.split("\t", 1)[0]) <= N_USERS]
    (directory / "u.data").write_text("\n".join(kept) + "\n")
    for name in ("u.item", "u.genre"):
        shutil.copy(movielens_dir / name, directory / name)
    return Subset(ratings, items, directory)


def load_subset(session_factory: sessionmaker[Session], subset: Subset) -> None:
    """Import the subset (all ML-100K items, the subset's ratings) into a store.

    The importer's bulk path (COPY on PostgreSQL) keeps this well under a second.
    """
    engine = session_factory.kw["bind"]
    import_movielens(engine, subset.directory, scale=SCALE)


SMALL_TRAINING: dict[str, object] = {
    "search": False,
    **{
        f"{part}.{name}": value
        for part in ("user_rbm", "item_rbm", "ranker")
        for name, value in (("n_hidden", 16), ("n_epochs", 4))
    },
}
"""Settings of a served model that trains on the subset in about a second."""


def register(session_factory: sessionmaker[Session], artifact: Path, *, active: bool) -> str:
    """Register an artifact as a model version (activated if asked); returns its id."""
    with session_factory.begin() as session:
        info = registry.register_version(
            session, artifact, status="active" if active else "candidate"
        )
    return info.id


def rbmrec_command() -> list[str]:
    """The ``rbmrec`` console script of this interpreter's environment."""
    script = Path(sys.executable).with_name("rbmrec")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from app.cli import main; main()"]


def free_port() -> int:
    """A TCP port nothing listens on (now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class TcpProxy:
    """A TCP forwarder to a real server that a test can stop and restart (a DB outage).

    Stopping closes the listening socket and every open connection, as a crashed
    database server would.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
