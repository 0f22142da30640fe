"""``rbmrec import``: load MovieLens data into the ratings store."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy import inspect
from sqlalchemy.exc import DBAPIError
from tqdm import tqdm

from app.cli.common import fail, load_settings
from app.db.engine import engine_from_settings
from app.services import movielens_download
from app.services.importer import import_movielens
from rbm_core.movielens import DataFormatError, count_data_lines, locate
from rbm_core.scale import RatingScale, RatingScaleError

import_app = typer.Typer(help="Import data into the ratings store.", no_args_is_help=True)


class Dataset(StrEnum):
    """Archives that ``--download`` knows (with pinned SHA-256 digests)."""

    ml_100k = "ml-100k"
    ml_latest_small = "ml-latest-small"
    ml_25m = "ml-25m"
    ml_32m = "ml-32m"


@import_app.command("movielens")
def movielens(
    path: Annotated[
        Path | None,
        typer.Argument(
            help="Unpacked MovieLens directory (ML-100K: u.data + u.item; "
            "CSV family: ratings.csv + movies.csv).",
            show_default=False,
        ),
    ] = None,
    download: Annotated[
        Dataset | None,
        typer.Option(
            "--download",
            help="Fetch this official GroupLens archive (SHA-256 verified) instead of PATH.",
        ),
    ] = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            "--cache-dir",
            help="Where --download keeps unpacked archives "
            "(default: $XDG_CACHE_HOME/rbmrec/movielens).",
            show_default=False,
        ),
    ] = None,
    rating_scale: Annotated[
        str | None,
        typer.Option(
            "--rating-scale",
            help="Allowed rating values, e.g. '1,2,3,4,5' or '0.5..5:0.5' "
            "(default: RBMREC_RATING_SCALE).",
            show_default=False,
        ),
    ] = None,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Show progress bars on stderr.")
    ] = True,
) -> None:
    """Import MovieLens ratings and movies into the store (one transaction).

    The format is detected. Re-running is idempotent: unchanged ratings are not
    touched. A malformed line, a bad id or an off-scale rating stops the import with
    FILE:LINE and writes nothing. Rated movies missing from the movie file are
    created with an empty title. Ratings already in the store are never deleted.
    """
    settings = load_settings()
    if (path is None) == (download is None):
        fail("give either PATH or --download NAME")
    try:
        scale = RatingScale.parse(rating_scale) if rating_scale else settings.rating_scale
    except RatingScaleError as exc:
        fail(f"invalid --rating-scale: {exc}")

    if download is not None:
        path = _download(
            download.value, cache_dir or movielens_download.default_cache_dir(), progress
        )
    assert path is not None
    try:
        files = locate(path)
    except (FileNotFoundError, DataFormatError) as exc:
        fail(str(exc))

    engine = engine_from_settings(settings)
    try:
        migrated = inspect(engine).has_table("ratings")
    except DBAPIError as exc:
        engine.dispose()
        fail(f"cannot reach the database: {exc.orig}")
    if not migrated:
        engine.dispose()
        fail("the database has no schema yet: run `rbmrec db upgrade` first")

    bar = _bar(count_data_lines(files.ratings), "ratings", progress)
    try:
        report = import_movielens(engine, path, scale=scale, progress=bar.update)
    except (DataFormatError, FileNotFoundError) as exc:
        fail(f"{exc} (nothing was imported)")
    except DBAPIError as exc:
        fail(f"database error, nothing was imported: {exc.orig}")
    finally:
        bar.close()
        engine.dispose()

    typer.echo(
        f"imported {report.directory} ({report.format}): {report.items_read} items, "
        f"{report.ratings_read} ratings of {report.users} users; "
        f"{report.ratings_inserted} new, {report.ratings_updated} changed, "
        f"{report.ratings_unchanged} unchanged ratings in {report.seconds:.1f} s"
    )
    if report.placeholder_items:
        typer.echo(
            f"note: {report.placeholder_items} rated items were missing from the item file "
            "and were created with an empty title",
            err=True,
        )


def _download(name: str, cache_dir: Path, progress: bool) -> Path:
    archive = movielens_download.DATASETS[name]
    bar = _bar(archive.size, f"{name}.zip", progress, unit="B")
    try:
        return movielens_download.fetch(
            archive, cache_dir, progress=lambda n, _total: bar.update(n)
        )
    except (movielens_download.DownloadError, OSError) as exc:
        fail(f"download of {name} failed: {exc}")
    finally:
        bar.close()


def _bar(total: int, desc: str, enabled: bool, unit: str = "it") -> tqdm[Any]:
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=True,
        disable=not enabled,
        file=sys.stderr,
        leave=False,
    )


def register(cli: typer.Typer) -> None:
    """Add ``rbmrec import`` to the CLI."""
    cli.add_typer(import_app, name="import")
