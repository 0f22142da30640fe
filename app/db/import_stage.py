"""The bulk path of the MovieLens import: a staging table merged into ``ratings``.

Validated ratings are loaded into a temporary table (PostgreSQL: ``COPY FROM
STDIN``; SQLite: ``executemany``); one ``INSERT .. SELECT .. ON CONFLICT DO UPDATE
.. WHERE <changed>`` then merges it into ``ratings``, so rows whose values did not
change are not touched. Everything runs in the caller's transaction.
"""

from __future__ import annotations

import logging
from typing import Final

import pandas as pd
from sqlalchemy import Connection, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db.ratings import count_ratings
from app.db.types import SQLITE_UTCNOW

logger = logging.getLogger(__name__)

__all__ = ["RatingStage", "analyze_store", "prepare_bulk_transaction"]

_STAGE: Final = "rbmrec_import_ratings"


def prepare_bulk_transaction(conn: Connection) -> None:
    """Settings of a long bulk transaction: no statement timeout, room to sort (PostgreSQL)."""
    if conn.dialect.name == "postgresql":
        # a large import outlives the service's statement timeout
        conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
        conn.exec_driver_sql("SET LOCAL work_mem = '256MB'")


def analyze_store(conn: Connection) -> None:
    """Refresh the planner's statistics of the store after a bulk write (PostgreSQL)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("ANALYZE items")
        conn.exec_driver_sql("ANALYZE ratings")


class RatingStage:
    """A temporary table holding the validated ratings of the file, then merged."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.backend = conn.dialect.name

    @classmethod
    def create(cls, conn: Connection) -> RatingStage:
        stage = cls(conn)
        on_commit = " ON COMMIT DROP" if stage.backend == "postgresql" else ""
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {_STAGE}")
        conn.exec_driver_sql(
            f"CREATE TEMPORARY TABLE {_STAGE} (user_id TEXT NOT NULL, item_id TEXT NOT NULL, "
            f"rating DOUBLE PRECISION NOT NULL, ts BIGINT NOT NULL, line BIGINT NOT NULL)"
            f"{on_commit}"
        )
        return stage

    def write(self, block: pd.DataFrame) -> None:
        columns = block[["user_id", "item_id", "rating", "timestamp", "line"]]
        raw = self.conn.connection.driver_connection
        assert raw is not None
        rows = zip(
            columns["user_id"].tolist(),
            columns["item_id"].tolist(),
            columns["rating"].tolist(),
            columns["timestamp"].tolist(),
            columns["line"].tolist(),
            strict=True,
        )
        if self.backend == "postgresql":
            with (
                raw.cursor() as cur,
                cur.copy(f"COPY {_STAGE} FROM STDIN (FORMAT BINARY)") as copy,
            ):
                copy.set_types(["text", "text", "float8", "int8", "int8"])
                for row in rows:
                    copy.write_row(row)
        else:
            raw.executemany(f"INSERT INTO {_STAGE} VALUES (?, ?, ?, ?, ?)", rows)  # noqa: S608

    def first_repeated_pair(self) -> tuple[str, str, int, int] | None:
        """The earliest line that rates a (user, item) pair a second time, if any.

        Returns ``(user_id, item_id, first line, repeated line)``.
        """
        row = self.conn.execute(
            text(
                "SELECT user_id, item_id, first_line, line FROM ("  # noqa: S608
                "SELECT user_id, item_id, line, min(line) OVER pair AS first_line, "
                f"row_number() OVER pair AS n FROM {_STAGE} "
                "WINDOW pair AS (PARTITION BY user_id, item_id ORDER BY line)"
                ") repeated WHERE n = 2 ORDER BY line LIMIT 1"
            )
        ).first()
        if row is None:
            return None
        user_id, item_id, first, second = row
        return str(user_id), str(item_id), int(first), int(second)

    def analyze(self) -> None:
        # row counts for the planner, so the merge joins by hash, not by loops
        if self.backend == "postgresql":
            self.conn.exec_driver_sql(f"ANALYZE {_STAGE}")

    def merge(self, session: Session) -> tuple[int, int]:
        """Write the staged ratings into ``ratings``: (rows inserted, rows changed).

        Rows the store already holds with the same value and time are not touched, so
        a re-import neither locks nor rewrites them.
        """
        if self.backend == "postgresql":
            return self._merge_postgres(session)
        return self._merge_sqlite(session)

    def _upsert_sql(self, rated_at: str, now: str, distinct: str, where: str) -> str:
        return (
            "INSERT INTO ratings (user_id, item_id, rating, rated_at, version, updated_at) "  # noqa: S608
            f"SELECT s.user_id, s.item_id, s.rating, {rated_at}, 1, {now} FROM {_STAGE} s "
            "LEFT JOIN ratings r ON r.user_id = s.user_id AND r.item_id = s.item_id "
            f"WHERE {where} ORDER BY s.user_id, s.item_id "
            "ON CONFLICT (user_id, item_id) DO UPDATE SET rating = excluded.rating, "
            f"rated_at = excluded.rated_at, version = ratings.version + 1, updated_at = {now} "
            f"WHERE ratings.rating {distinct} excluded.rating "
            f"OR ratings.rated_at {distinct} excluded.rated_at"
        )

    def _upsert_changes(
        self, session: Session, rated_at: str, now: str, distinct: str
    ) -> tuple[int, int]:
        """One upsert of the staged rows that are new or differ from the store."""
        before = count_ratings(session)
        changed = self.conn.exec_driver_sql(
            self._upsert_sql(
                rated_at,
                now,
                distinct,
                f"r.user_id IS NULL OR r.rating {distinct} s.rating "
                f"OR r.rated_at {distinct} {rated_at}",
            )
        ).rowcount
        inserted = count_ratings(session) - before
        return inserted, changed - inserted

    def _merge_sqlite(self, session: Session) -> tuple[int, int]:
        # The import holds SQLite's write lock, so no other writer can interleave.
        rated_at = "strftime('%Y-%m-%d %H:%M:%S', s.ts, 'unixepoch') || '.000000'"
        return self._upsert_changes(session, rated_at, SQLITE_UTCNOW, "IS NOT")

    def _merge_postgres(self, session: Session) -> tuple[int, int]:
        rated_at = "to_timestamp(s.ts)"
        if self.conn.exec_driver_sql("SELECT EXISTS (SELECT 1 FROM ratings)").scalar():
            return self._upsert_changes(session, rated_at, "now()", "IS DISTINCT FROM")
        # An empty store (the first import): a plain INSERT costs much less than
        # INSERT .. ON CONFLICT. Should another writer add one of these rows
        # meanwhile, the INSERT fails on the primary key and is redone, from a
        # savepoint, as the upsert.
        try:
            with session.begin_nested():
                # session.connection() inside the block is what emits the SAVEPOINT
                insert = (
                    "INSERT INTO ratings (user_id, item_id, rating, rated_at, version, "  # noqa: S608
                    f"updated_at) SELECT s.user_id, s.item_id, s.rating, {rated_at}, 1, "
                    f"now() FROM {_STAGE} s ORDER BY s.user_id, s.item_id"
                )
                inserted = session.connection().exec_driver_sql(insert).rowcount
        except IntegrityError:
            logger.info("ratings were written during the import; merging with an upsert")
            return self._upsert_changes(session, rated_at, "now()", "IS DISTINCT FROM")
        return inserted, 0

    def drop(self) -> None:
        self.conn.exec_driver_sql(f"DROP TABLE IF EXISTS {_STAGE}")
