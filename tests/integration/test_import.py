"""`rbmrec import movielens` and the import service, against real SQLite and PostgreSQL.

Also the archive download, against a real HTTP server on localhost.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import logging
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from app.cli import cli
from app.db.items import ItemIn, count_items, get_item, upsert_items
from app.db.ratings import count_ratings, upsert_rating, user_rating_map
from app.db.tables import Item, Rating
from app.services import movielens_download as dl
from app.services.importer import import_movielens
from app.settings import get_settings
from rbm_core.movielens import DataFormatError
from rbm_core.scale import RatingScale

FIVE = RatingScale.parse("1,2,3,4,5")
HALF = RatingScale.parse("0.5..5:0.5")


# -- helpers ---------------------------------------------------------------------------------
@pytest.fixture
def run_cli(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Run ``rbmrec`` in-process against the test database."""
    monkeypatch.setenv("RBMREC_DATABASE_URL", database_url)
    monkeypatch.delenv("RBMREC_RATING_SCALE", raising=False)
    get_settings.cache_clear()

    def run(*args: str) -> Result:
        try:
            return CliRunner().invoke(cli, list(args))
        finally:
            _drop_cli_log_handlers()

    yield run
    get_settings.cache_clear()


def _drop_cli_log_handlers() -> None:
    # The CLI logs to the stderr it found when it ran; under CliRunner that stream is
    # closed afterwards, so the handler must not outlive the invocation.
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_rbmrec", False)]:
        root.removeHandler(handler)


def _state(session_factory: sessionmaker[Session]) -> tuple[Any, ...]:
    """Everything an import could change, summarised."""
    with session_factory() as session:
        ratings = session.execute(
            select(
                func.count(),
                func.count(func.distinct(Rating.user_id)),
                func.sum(Rating.rating),
                func.max(Rating.updated_at),
                func.max(Rating.version),
                func.min(Rating.rated_at),
            )
        ).one()
        items = session.execute(select(func.count(), func.max(Item.updated_at))).one()
        titles = tuple(session.execute(select(Item.id, Item.title).order_by(Item.id)))
        return (*ratings, *items, titles)


def _u_item(item_id: str, title: str) -> str:
    return f"{item_id}|{title}|01-Jan-1995||http://example.org/{item_id}|" + "|".join(
        "1" if g == 8 else "0" for g in range(19)
    )


def _ml100k_dir(root: Path, ratings: list[str], items: dict[str, str], name: str = "ml") -> Path:
    directory = root / name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "u.data").write_text("".join(line + "\n" for line in ratings))
    (directory / "u.item").write_bytes(
        "".join(_u_item(i, t) + "\n" for i, t in items.items()).encode("latin-1")
    )
    return directory


def _csv_dir(root: Path, ratings: list[str], movies: list[str], name: str = "csv") -> Path:
    directory = root / name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n" + "".join(line + "\n" for line in ratings)
    )
    (directory / "movies.csv").write_text(
        "movieId,title,genres\n" + "".join(line + "\n" for line in movies)
    )
    return directory


BASE_RATINGS = [
    f"{u}\t{i}\t{1 + (u + i) % 5}\t{1_000_000 + u * 10 + i}"
    for u in range(1, 5)
    for i in range(1, 4)
]
BASE_ITEMS = {"1": "One (1990)", "2": "Two (1991)", "3": "Three (1992)"}


@pytest.fixture
def base_store(
    tmp_path: Path, engine: Engine, session_factory: sessionmaker[Session]
) -> tuple[Any, ...]:
    """A store holding a small valid ML-100K-format import; returns its state."""
    report = import_movielens(engine, _ml100k_dir(tmp_path, BASE_RATINGS, BASE_ITEMS), scale=FIVE)
    assert report.ratings_inserted == len(BASE_RATINGS)
    return _state(session_factory)


# -- ML-100K ---------------------------------------------------------------------------------
def test_ml100k_import_is_exact_and_idempotent(
    run_cli: Any, movielens_dir: Path, session_factory: sessionmaker[Session]
) -> None:
    result = run_cli("import", "movielens", str(movielens_dir), "--no-progress")
    assert result.exit_code == 0, result.output
    assert "100000 ratings of 943 users; 100000 new, 0 changed, 0 unchanged" in result.stdout
    with session_factory() as session:
        assert count_ratings(session) == 100_000
        assert count_items(session) == 1_682
        assert session.scalar(select(func.count(func.distinct(Rating.user_id)))) == 943
        toy = get_item(session, "1")
        assert toy is not None
        assert (toy.title, toy.genres) == (
            "Toy Story (1995)",
            ["Animation", "Children's", "Comedy"],
        )
        first = session.get(Rating, ("196", "242"))
        assert first is not None
        assert first.rating == 3.0
        assert first.rated_at == datetime.fromtimestamp(881250949, UTC)
        assert first.version == 1
        assert user_rating_map(session, "1")["1"] == 5.0
    before = _state(session_factory)

    again = run_cli("import", "movielens", str(movielens_dir), "--no-progress")
    assert again.exit_code == 0, again.output
    assert "0 new, 0 changed, 100000 unchanged" in again.stdout
    assert _state(session_factory) == before


# -- re-imports and decisions ----------------------------------------------------------------
def test_reimport_applies_only_the_changes(
    tmp_path: Path, engine: Engine, session_factory: sessionmaker[Session], base_store: Any
) -> None:
    with session_factory() as session:
        untouched_before = session.get(Rating, ("2", "2"))
        assert untouched_before is not None
        untouched_at = untouched_before.updated_at
    changed = [line for line in BASE_RATINGS if not line.startswith("1\t1\t")]
    changed += ["1\t1\t5\t42", "9\t3\t4\t43"]
    items = dict(BASE_ITEMS, **{"3": "Three, renamed (1992)"})
    report = import_movielens(engine, _ml100k_dir(tmp_path, changed, items, "v2"), scale=FIVE)
    assert (report.ratings_inserted, report.ratings_updated) == (1, 1)
    assert report.ratings_unchanged == len(changed) - 2
    with session_factory() as session:
        updated = session.get(Rating, ("1", "1"))
        assert updated is not None
        assert (updated.rating, updated.version) == (5.0, 2)
        assert updated.rated_at == datetime.fromtimestamp(42, UTC)
        untouched = session.get(Rating, ("2", "2"))
        assert untouched is not None
        assert (untouched.version, untouched.updated_at) == (1, untouched_at)
        item = get_item(session, "3")
        assert item is not None
        assert item.title == "Three, renamed (1992)"
        assert count_ratings(session) == len(BASE_RATINGS) + 1


def test_import_keeps_ratings_absent_from_the_files(
    tmp_path: Path, engine: Engine, session_factory: sessionmaker[Session], base_store: Any
) -> None:
    with session_factory.begin() as session:
        upsert_rating(session, "api-user", "1", 4, scale=FIVE)
    import_movielens(engine, _ml100k_dir(tmp_path, BASE_RATINGS, BASE_ITEMS, "again"), scale=FIVE)
    with session_factory() as session:
        assert user_rating_map(session, "api-user") == {"1": 4.0}


def test_rated_items_missing_from_the_item_file_are_created_untitled(
    tmp_path: Path, engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    directory = _csv_dir(tmp_path, ["1,1,4.0,10", "1,99,3.0,11"], ["1,Known (2000),Drama"])
    report = import_movielens(engine, directory, scale=FIVE)
    assert report.placeholder_items == 1
    with session_factory() as session:
        placeholder = get_item(session, "99")
        assert placeholder is not None
        assert (placeholder.title, placeholder.genres) == ("", [])
    fuller = _csv_dir(
        tmp_path, ["1,1,4.0,10", "1,99,3.0,11"], ["1,Known (2000),Drama", "99,Found (2001),"], "v2"
    )
    assert import_movielens(engine, fuller, scale=FIVE).placeholder_items == 0
    with session_factory() as session:
        found = get_item(session, "99")
        assert found is not None
        assert found.title == "Found (2001)"


def test_half_star_csv_with_the_rating_scale_option(
    run_cli: Any, tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    directory = _csv_dir(
        tmp_path,
        ["1,1,4.5,964982703", "1,2,0.5,964982704", "2,1,5.0,964982705"],
        ['1,"Toy Story (1995)",Adventure|Animation', "2,Jumanji (1995),(no genres listed)"],
    )
    refused = run_cli("import", "movielens", str(directory), "--no-progress")
    assert refused.exit_code == 1
    assert "ratings.csv:2: rating 4.5 is not on the rating scale" in refused.stderr
    assert "allowed values: 1, 2, 3, 4, 5" in refused.stderr
    with session_factory() as session:
        assert count_items(session) == 0

    result = run_cli(
        "import", "movielens", str(directory), "--rating-scale", "0.5..5:0.5", "--no-progress"
    )
    assert result.exit_code == 0, result.output
    with session_factory() as session:
        assert user_rating_map(session, "1") == {"1": 4.5, "2": 0.5}
        jumanji = get_item(session, "2")
        assert jumanji is not None
        assert jumanji.genres == []


# -- bad input: clear error, non-zero exit, nothing written ----------------------------------
BAD_INPUTS = {
    "too many fields": (
        [*BASE_RATINGS, "5\t1\t3\t10", "5\t2\t3\t11\textra"],
        None,
        "u.data:14: expected 4 fields, found 5",
    ),
    "rating not a number": (
        [*BASE_RATINGS, "5\t1\tgood\t10"],
        None,
        "u.data:13: rating 'good' is not a number",
    ),
    "off-scale rating": (
        [*BASE_RATINGS, "5\t1\t3\t10", "5\t2\t6\t11"],
        None,
        "u.data:14: rating 6 is not on the rating scale; allowed values: 1, 2, 3, 4, 5",
    ),
    "bad user id": (
        [*BASE_RATINGS, "5\t1\t3\t10", "user five\t2\t3\t11"],
        None,
        "u.data:14: invalid user id 'user five'",
    ),
    "overlong item id": (
        [*BASE_RATINGS, f"5\t{'9' * 65}\t3\t10"],
        None,
        "u.data:13: invalid item id",
    ),
    "bad id in the item file": (
        BASE_RATINGS,
        {**BASE_ITEMS, "a/b": "Slash"},
        "u.item:4: invalid item id 'a/b'",
    ),
    "duplicate rating": (
        [*BASE_RATINGS, "5\t1\t3\t10", "1\t2\t3\t10"],
        None,
        "u.data:14: second rating of user '1' for item '2' (first on line 2)",
    ),
    "missing timestamp": ([*BASE_RATINGS, "5\t1\t3"], None, "u.data:13: missing timestamp"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_files_fail_cleanly_and_write_nothing(
    case: str,
    run_cli: Any,
    tmp_path: Path,
    session_factory: sessionmaker[Session],
    base_store: Any,
) -> None:
    ratings, items, message = BAD_INPUTS[case]
    # the bad dataset also renames an item: a non-atomic import would show it
    items = dict(items or BASE_ITEMS, **{"1": "Renamed"})
    directory = _ml100k_dir(tmp_path, ratings, items, "bad")
    result = run_cli("import", "movielens", str(directory), "--no-progress")
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: "), result.stderr
    assert f"{directory}/{message}" in result.stderr
    assert "nothing was imported" in result.stderr
    assert "Traceback" not in result.output
    assert _state(session_factory) == base_store


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: root / "absent", "no such directory"),
        (lambda root: _only(root, None), "not a MovieLens directory"),
        (lambda root: _only(root / "half", "u.data"), "missing u.item"),
        (lambda root: _only(root / "half", "movies.csv"), "missing ratings.csv"),
    ],
)
def test_missing_or_incomplete_directories(
    make: Any,
    message: str,
    run_cli: Any,
    tmp_path: Path,
    session_factory: sessionmaker[Session],
    base_store: Any,
) -> None:
    result = run_cli("import", "movielens", str(make(tmp_path / "data")), "--no-progress")
    assert result.exit_code == 1
    assert message in result.stderr
    assert _state(session_factory) == base_store


def _only(directory: Path, name: str | None) -> Path:
    directory.mkdir(parents=True)
    if name is not None:
        (directory / name).write_text("")
    return directory


def test_usage_errors(run_cli: Any, movielens_dir: Path) -> None:
    neither = run_cli("import", "movielens", "--no-progress")
    assert neither.exit_code == 1
    assert "give either PATH or --download" in neither.stderr
    both = run_cli("import", "movielens", str(movielens_dir), "--download", "ml-100k")
    assert both.exit_code == 1
    unknown = run_cli("import", "movielens", "--download", "ml-1b")
    assert unknown.exit_code == 2
    assert "ml-1b" in unknown.stderr
    scale = run_cli("import", "movielens", str(movielens_dir), "--rating-scale", "5,1")
    assert scale.exit_code == 1
    assert "invalid --rating-scale" in scale.stderr


def test_unmigrated_database_is_a_clear_error(
    tmp_path: Path, movielens_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RBMREC_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["import", "movielens", str(movielens_dir)])
    finally:
        get_settings.cache_clear()
        _drop_cli_log_handlers()
    assert result.exit_code == 1
    assert "rbmrec db upgrade" in result.stderr


def test_a_late_bad_line_rolls_back_staged_blocks(
    tmp_path: Path, engine: Engine, session_factory: sessionmaker[Session], base_store: Any
) -> None:
    ratings = [f"{u}\t{1 + u % 3}\t4\t{u}" for u in range(100, 130)] + ["7\t1\t3\tlater"]
    directory = _ml100k_dir(tmp_path, ratings, dict(BASE_ITEMS, **{"2": "Changed"}), "late")
    with pytest.raises(DataFormatError, match="timestamp 'later'") as info:
        import_movielens(engine, directory, scale=FIVE, chunksize=4)
    assert info.value.line == 31
    assert _state(session_factory) == base_store


def test_the_earliest_repeated_rating_is_reported(
    tmp_path: Path, engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    ratings = ["1\t1\t3\t1", "2\t2\t3\t2", "1\t1\t4\t3", "3\t3\t3\t4", "2\t2\t5\t5", "1\t1\t5\t6"]
    directory = _ml100k_dir(tmp_path, ratings, BASE_ITEMS)
    with pytest.raises(DataFormatError, match=r"user '1' for item '1' \(first on line 1\)") as info:
        import_movielens(engine, directory, scale=FIVE, chunksize=2)
    assert info.value.line == 3
    with session_factory() as session:
        assert count_items(session) == 0


def test_progress_is_reported(tmp_path: Path, engine: Engine) -> None:
    seen: list[int] = []
    directory = _ml100k_dir(tmp_path, BASE_RATINGS, BASE_ITEMS)
    report = import_movielens(engine, directory, scale=FIVE, progress=seen.append, chunksize=5)
    assert seen == [5, 5, 2]
    assert report.ratings_read == report.ratings_inserted == 12
    assert report.users == 4
    assert report.items_read == 3
    assert report.format == "ml-100k"


# -- download --------------------------------------------------------------------------------
class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output clean."""

    def do_GET(self) -> None:
        self.requests.append(self.path)
        super().do_GET()


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    """A real HTTP server on localhost serving a directory: (base URL, dir, request log)."""
    root = tmp_path / "www"
    root.mkdir()
    log: list[str] = []
    handler = type("Handler", (_Handler,), {"requests": log})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root, log
    server.shutdown()
    server.server_close()


def _zip_dataset(path: Path, members: dict[str, str]) -> dl.MovieLensArchive:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    data = path.read_bytes()
    return dl.MovieLensArchive(
        name="ml-tiny",
        url="",
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        directory="ml-tiny",
    )


TINY = {
    "ml-tiny/u.data": "".join(line + "\n" for line in BASE_RATINGS),
    "ml-tiny/u.item": "".join(_u_item(i, t) + "\n" for i, t in BASE_ITEMS.items()),
}


def test_fetch_verifies_unpacks_and_reuses(
    http_root: tuple[str, Path, list[str]], tmp_path: Path
) -> None:
    base, root, log = http_root
    archive = replace(_zip_dataset(root / "tiny.zip", TINY), url=f"{base}/tiny.zip")
    received: list[int] = []
    cache = tmp_path / "cache"
    target = dl.fetch(archive, cache, progress=lambda n, total: received.append(n))
    assert target == cache / "ml-tiny"
    assert (target / "u.data").read_text() == TINY["ml-tiny/u.data"]
    assert sum(received) == archive.size
    assert sorted(p.name for p in cache.iterdir()) == ["ml-tiny"], "no leftovers"
    assert dl.fetch(archive, cache) == target
    assert log == ["/tiny.zip"], "the verified copy is reused"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sha256": "0" * 64}, "SHA-256 mismatch"),
        ({"size": 10}, "more than the expected 10 bytes"),
        ({"url": "/missing.zip"}, "HTTP 404"),
    ],
)
def test_fetch_refuses_a_bad_download(
    http_root: tuple[str, Path, list[str]], tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    base, root, _ = http_root
    archive = replace(_zip_dataset(root / "tiny.zip", TINY), url=f"{base}/tiny.zip")
    if "url" in change:
        change = {"url": base + change["url"]}
    cache = tmp_path / "cache"
    with pytest.raises(dl.DownloadError, match=message):
        dl.fetch(replace(archive, **change), cache)
    assert list(cache.iterdir()) == [], "nothing unpacked, nothing left behind"


def test_fetch_refuses_paths_outside_the_cache(
    http_root: tuple[str, Path, list[str]], tmp_path: Path
) -> None:
    base, root, _ = http_root
    archive = _zip_dataset(root / "evil.zip", {**TINY, "ml-tiny/../../escaped.txt": "x"})
    cache = tmp_path / "cache"
    with pytest.raises(dl.DownloadError, match="unsafe path"):
        dl.fetch(replace(archive, url=f"{base}/evil.zip"), cache)
    assert not (tmp_path / "escaped.txt").exists()
    assert list(cache.iterdir()) == []


def test_pinned_archives_are_the_official_ones() -> None:
    assert set(dl.DATASETS) == {"ml-100k", "ml-latest-small", "ml-25m", "ml-32m"}
    for archive in dl.DATASETS.values():
        assert archive.url == f"https://files.grouplens.org/datasets/movielens/{archive.name}.zip"
        assert len(archive.sha256) == 64
        assert int(archive.sha256, 16) >= 0
        assert archive.size > 0


def test_cli_download_imports_the_verified_archive(
    run_cli: Any,
    http_root: tuple[str, Path, list[str]],
    tmp_path: Path,
    session_factory: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base, root, _ = http_root
    archive = replace(
        _zip_dataset(
            root / "ml-100k.zip", {k.replace("ml-tiny", "ml-100k"): v for k, v in TINY.items()}
        ),
        name="ml-100k",
        directory="ml-100k",
        url=f"{base}/ml-100k.zip",
    )
    monkeypatch.setitem(dl.DATASETS, "ml-100k", archive)
    cache = tmp_path / "cache"
    result = run_cli(
        "import", "movielens", "--download", "ml-100k", "--cache-dir", str(cache), "--no-progress"
    )
    assert result.exit_code == 0, result.output
    assert (cache / "ml-100k" / "u.data").is_file()
    with session_factory() as session:
        assert count_ratings(session) == len(BASE_RATINGS)

    monkeypatch.setitem(dl.DATASETS, "ml-100k", replace(archive, sha256="1" * 64))
    bad = run_cli(
        "import",
        "movielens",
        "--download",
        "ml-100k",
        "--cache-dir",
        str(tmp_path / "c2"),
        "--no-progress",
    )
    assert bad.exit_code == 1
    assert "download of ml-100k failed" in bad.stderr
    assert "SHA-256 mismatch" in bad.stderr


def test_a_concurrent_writer_during_a_first_import_is_merged(
    database_url: str,
    tmp_path: Path,
    engine: Engine,
    session_factory: sessionmaker[Session],
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time; the import holds the write lock")
    with session_factory.begin() as session:
        upsert_items(session, [ItemIn("1", "One (1990)")])
    directory = _ml100k_dir(tmp_path, BASE_RATINGS, BASE_ITEMS)
    outcome: list[Any] = []

    writer = session_factory()
    writer.begin()
    upsert_rating(writer, "1", "1", 1, scale=FIVE)  # the file says 3 for (1, 1)
    writer.flush()

    def run_import() -> None:
        try:
            outcome.append(import_movielens(engine, directory, scale=FIVE))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run_import)
    thread.start()
    # wait until the import's INSERT waits for the writer's uncommitted row
    with engine.connect() as probe:
        for _ in range(200):
            waiting = probe.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO ratings%'"
                )
            ).scalar()
            probe.rollback()  # pg_stat_activity is read once per transaction
            if waiting or not thread.is_alive():
                break
            time.sleep(0.05)
    writer.commit()
    writer.close()
    thread.join(timeout=60)
    assert waiting, "the import never waited for the writer's row"

    [report] = outcome
    assert not isinstance(report, BaseException), report
    assert report.ratings_inserted == len(BASE_RATINGS) - 1
    assert report.ratings_updated == 1
    with session_factory() as session:
        assert count_ratings(session) == len(BASE_RATINGS)
        merged = session.get(Rating, ("1", "1"))
        assert merged is not None
        assert (merged.rating, merged.version) == (3.0, 2)
