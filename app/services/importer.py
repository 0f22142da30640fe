"""Import an unpacked MovieLens directory into the ratings store.

The whole import is **one transaction**: a malformed line, a bad id or an off-scale
rating anywhere stops it with the file and line number, and the store is left as it
was. Re-running it is idempotent: rows whose values did not change are not touched
(not even ``updated_at``).

How it writes
    Items go through :func:`app.db.items.upsert_items`. Ratings are streamed in
    blocks from the file, validated, and loaded into a temporary staging table
    (:mod:`app.db.import_stage`;
    PostgreSQL: ``COPY FROM STDIN``; SQLite: ``executemany``); one
    ``INSERT .. SELECT .. ON CONFLICT DO UPDATE .. WHERE <changed>`` then merges the
    staging table into ``ratings``.

Decisions
    * A (user, item) pair rated twice in the file is malformed: the error names the
      line of the second rating.
    * An item that is rated but missing from the item file is created with an empty
      title and no genres (the foreign key needs it; a warning says how many). A
      later import whose item file has it fills the title in.
    * Ratings already in the store but absent from the files are kept: the import
      adds and updates, it never deletes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from app.db import items as item_store
from app.db.import_stage import RatingStage, analyze_store, prepare_bulk_transaction
from app.domain import ID_PATTERN, InvalidIdError, InvalidRatingError, validate_id, validate_rating
from rbm_core.movielens import (
    DataFormatError,
    MovieLensFormat,
    iter_ratings,
    locate,
    read_items,
)
from rbm_core.scale import RatingScale

logger = logging.getLogger(__name__)

__all__ = ["ImportReport", "ProgressCallback", "import_movielens"]

ProgressCallback = Callable[[int], object]
"""Called with the number of rating lines read since the previous call."""

_SCALE_HINT = (
    "set RBMREC_RATING_SCALE or pass --rating-scale (MovieLens 20M/25M/32M/latest: 0.5..5:0.5)"
)


@dataclass(frozen=True)
class ImportReport:
    """What an import read and changed.

    Attributes
    ----------
    directory : Path
        The MovieLens directory.
    format : {"ml-100k", "csv"}
        Its detected layout.
    items_read : int
        Items in the item file.
    ratings_read : int
        Ratings in the ratings file.
    users : int
        Distinct users in the ratings file.
    ratings_inserted, ratings_updated : int
        Ratings the store did not have / had with another value or time.
    placeholder_items : int
        Rated items missing from the item file, created with an empty title.
    seconds : float
        Wall time of the import.
    """

    directory: Path
    format: MovieLensFormat
    items_read: int
    ratings_read: int
    users: int
    ratings_inserted: int
    ratings_updated: int
    placeholder_items: int
    seconds: float

    @property
    def ratings_unchanged(self) -> int:
        """Ratings of the file the store already held with the same value and time."""
        return self.ratings_read - self.ratings_inserted - self.ratings_updated


def import_movielens(
    engine: Engine,
    directory: str | Path,
    *,
    scale: RatingScale,
    progress: ProgressCallback | None = None,
    chunksize: int = 500_000,
) -> ImportReport:
    """Import a MovieLens directory (ML-100K or the CSV family) in one transaction.

    Parameters
    ----------
    engine : Engine
        The migrated ratings store (SQLite or PostgreSQL).
    directory : str or Path
        An unpacked MovieLens archive; its layout is detected.
    scale : RatingScale
        The allowed rating values; any other value stops the import.
    progress : callable, optional
        Receives the number of rating lines read, block by block.
    chunksize : int, default 500_000
        Rating lines read and validated per block.

    Returns
    -------
    ImportReport
        Counts of what was read and changed.

    Raises
    ------
    FileNotFoundError
        ``directory`` does not exist.
    DataFormatError
        A malformed file, a bad id or an off-scale rating (the message names the file
        and line). Nothing is written.
    """
    started = time.perf_counter()
    files = locate(directory)
    items = read_items(files.items, with_lines=True)
    _check_ids(items["id"], items["line"], files.items, "item id")
    file_item_ids = set(items["id"])

    with Session(engine) as session, session.begin():
        conn = session.connection()
        prepare_bulk_transaction(conn)

        item_store.upsert_items(
            session,
            [
                item_store.ItemIn(id=i, title=t, genres=g, attributes=a)
                for i, t, g, a in zip(
                    items["id"], items["title"], items["genres"], items["attributes"], strict=True
                )
            ],
        )

        stage = RatingStage.create(conn)
        users: set[str] = set()
        rated_items: set[str] = set()
        pair_hashes: list[np.ndarray[Any, np.dtype[np.uint64]]] = []
        n_read = 0
        for block in iter_ratings(files.ratings, chunksize=chunksize):
            lines = block["line"]
            _check_ids(block["user_id"], lines, files.ratings, "user id")
            _check_ids(block["item_id"], lines, files.ratings, "item id")
            values = _check_scale(block["rating"], lines, files.ratings, scale)
            block = block.assign(rating=values)
            stage.write(block)
            pair_hashes.append(
                pd.util.hash_pandas_object(block[["user_id", "item_id"]], index=False)
                .to_numpy()
                .astype(np.uint64, copy=False)
            )
            users.update(pd.unique(block["user_id"]))
            rated_items.update(pd.unique(block["item_id"]))
            n_read += len(block)
            if progress is not None:
                progress(len(block))

        logger.debug("read and staged %d ratings: %.1f s", n_read, time.perf_counter() - started)
        if _may_have_duplicates(pair_hashes):
            repeated = stage.first_repeated_pair()
            if repeated is not None:
                user_id, item_id, first, line = repeated
                raise DataFormatError(
                    f"second rating of user {user_id!r} for item {item_id!r} "
                    f"(first on line {first})",
                    path=files.ratings,
                    line=line,
                )
        del pair_hashes
        stage.analyze()
        logger.debug("duplicate check: %.1f s", time.perf_counter() - started)
        placeholders = _create_placeholder_items(session, rated_items - file_item_ids)
        inserted, updated = stage.merge(session)
        logger.debug(
            "merged: %d inserted, %d updated: %.1f s",
            inserted,
            updated,
            time.perf_counter() - started,
        )
        stage.drop()
        analyze_store(conn)
        logger.debug("committing: %.1f s", time.perf_counter() - started)

    report = ImportReport(
        directory=Path(directory),
        format=files.format,
        items_read=len(items),
        ratings_read=n_read,
        users=len(users),
        ratings_inserted=inserted,
        ratings_updated=updated,
        placeholder_items=placeholders,
        seconds=time.perf_counter() - started,
    )
    logger.info(
        "imported %s (%s): %d items, %d ratings of %d users; %d inserted, %d updated, "
        "%d unchanged in %.1f s",
        report.directory,
        report.format,
        report.items_read,
        report.ratings_read,
        report.users,
        report.ratings_inserted,
        report.ratings_updated,
        report.ratings_unchanged,
        report.seconds,
    )
    return report


# -- validation ------------------------------------------------------------------------
def _check_ids(ids: pd.Series[Any], lines: pd.Series[Any], path: Path, what: str) -> None:
    """Raise at the first line whose id breaks the id rules."""
    # Check the distinct ids only: MovieLens files repeat each id many times.
    uniques = pd.Series(pd.unique(ids), dtype=object)
    ok = uniques.str.fullmatch(ID_PATTERN).fillna(False).to_numpy(dtype=bool)
    if ok.all():
        return
    bad = ids.isin(set(uniques[~ok])).to_numpy(dtype=bool)
    at = int(np.argmax(bad))
    value = str(ids.iloc[at])
    try:
        validate_id(value, what)
    except InvalidIdError as exc:
        raise DataFormatError(str(exc), path=path, line=int(lines.iloc[at])) from None
    raise AssertionError(f"id {value!r} failed the pattern but passed validate_id")


def _check_scale(
    ratings: pd.Series[Any], lines: pd.Series[Any], path: Path, scale: RatingScale
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """The ratings snapped to the scale's levels; raise at the first off-scale line."""
    values = ratings.to_numpy(dtype=np.float64)
    canonical: dict[float, float] = {}
    off_scale: list[float] = []
    for value in np.unique(values):
        try:
            canonical[float(value)] = validate_rating(float(value), scale)
        except InvalidRatingError:
            off_scale.append(float(value))
    if off_scale:
        at = int(np.argmax(np.isin(values, off_scale)))
        try:
            validate_rating(float(values[at]), scale)
        except InvalidRatingError as exc:
            raise DataFormatError(
                f"{exc}; {_SCALE_HINT}", path=path, line=int(lines.iloc[at])
            ) from None
    if all(k == v for k, v in canonical.items()):
        return values
    return np.asarray([canonical[float(v)] for v in values], dtype=np.float64)


def _may_have_duplicates(hashes: list[np.ndarray[Any, np.dtype[np.uint64]]]) -> bool:
    """Whether two staged ratings may share a (user, item) pair.

    A 64-bit hash per pair, sorted: equal neighbours are either a real duplicate or
    a (very unlikely) collision, which the exact check in the database then settles.
    """
    if not hashes:
        return False
    ordered = np.sort(np.concatenate(hashes))
    return bool((ordered[1:] == ordered[:-1]).any())


def _create_placeholder_items(session: Session, missing: set[str]) -> int:
    """Create rated items that the item file lacks, unless the store has them already."""
    if not missing:
        return 0
    new = sorted(missing - item_store.existing_item_ids(session, missing))
    if new:
        item_store.upsert_items(session, [item_store.ItemIn(id=item_id) for item_id in new])
        logger.warning(
            "%d rated items are not in the item file; created them with an empty title (e.g. %s)",
            len(new),
            ", ".join(new[:5]),
        )
    return len(new)
