"""Readers for the MovieLens file formats (pure: files in, pandas frames out).

Two layouts are recognised by :func:`detect_format`:

``"ml-100k"``
    ``u.data`` (``user<TAB>item<TAB>rating<TAB>timestamp``, no header; the split files
    ``u1.base`` .. ``ua.test`` share the layout) and ``u.item`` (Latin-1, ``|``-separated:
    id, title, release date, video release date, IMDb URL, then one 0/1 flag per genre
    named in ``u.genre``).
``"csv"``
    ``ratings.csv`` (header ``userId,movieId,rating,timestamp``) and ``movies.csv``
    (header ``movieId,title,genres``, genres ``|``-separated): ml-latest, ml-latest-small,
    20M, 25M, 32M.

Every structural problem raises :class:`DataFormatError` naming the file and the line.
Ids are returned as the strings found in the file (MovieLens ids are decimal numbers).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import pandas as pd

__all__ = [
    "CSV_ITEMS",
    "CSV_RATINGS",
    "ML100K_GENRES",
    "ML100K_ITEMS",
    "ML100K_RATINGS",
    "DataFormatError",
    "MovieLensFiles",
    "MovieLensFormat",
    "count_data_lines",
    "detect_format",
    "iter_ratings",
    "locate",
    "read_items",
    "read_ratings",
]

MovieLensFormat = Literal["ml-100k", "csv"]

ML100K_RATINGS: Final = "u.data"
ML100K_ITEMS: Final = "u.item"
ML100K_GENRES: Final = "u.genre"
CSV_RATINGS: Final = "ratings.csv"
CSV_ITEMS: Final = "movies.csv"

RATING_COLUMNS: Final = ("user_id", "item_id", "rating", "timestamp")
_CSV_RATINGS_HEADER: Final = ("userId", "movieId", "rating", "timestamp")
_CSV_ITEMS_HEADER: Final = ("movieId", "title", "genres")
_NO_GENRES: Final = "(no genres listed)"

# The 19 genres of ML-100K in flag order, used when u.genre is absent.
ML100K_GENRE_NAMES: Final = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)


class DataFormatError(ValueError):
    """A MovieLens file is malformed; ``path`` and ``line`` (1-based) say where.

    Parameters
    ----------
    message : str
        What is wrong.
    path : str or Path, optional
        The file.
    line : int, optional
        The 1-based line number in ``path``.
    """

    def __init__(
        self, message: str, *, path: str | os.PathLike[str] | None = None, line: int | None = None
    ) -> None:
        self.reason = message
        self.path = Path(path) if path is not None else None
        self.line = line
        super().__init__(message)

    def __str__(self) -> str:
        if self.path is None:
            return self.reason
        where = f"{self.path}:{self.line}" if self.line is not None else str(self.path)
        return f"{where}: {self.reason}"


@dataclass(frozen=True)
class MovieLensFiles:
    """The files of one unpacked MovieLens directory."""

    format: MovieLensFormat
    ratings: Path
    items: Path
    genres: Path | None = None


def locate(directory: str | os.PathLike[str]) -> MovieLensFiles:
    """Find the ratings and item files of a MovieLens directory.

    Parameters
    ----------
    directory : str or Path
        An unpacked MovieLens archive.

    Returns
    -------
    MovieLensFiles
        The detected format and its files.

    Raises
    ------
    FileNotFoundError
        ``directory`` does not exist or is not a directory.
    DataFormatError
        Neither layout is present completely.
    """
    root = Path(directory)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such directory")
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a directory")
    if (root / ML100K_RATINGS).is_file() or (root / ML100K_ITEMS).is_file():
        _require(root, ML100K_RATINGS, ML100K_ITEMS)
        genres = root / ML100K_GENRES
        return MovieLensFiles(
            "ml-100k",
            root / ML100K_RATINGS,
            root / ML100K_ITEMS,
            genres if genres.is_file() else None,
        )
    if (root / CSV_RATINGS).is_file() or (root / CSV_ITEMS).is_file():
        _require(root, CSV_RATINGS, CSV_ITEMS)
        return MovieLensFiles("csv", root / CSV_RATINGS, root / CSV_ITEMS)
    raise DataFormatError(
        f"not a MovieLens directory: expected {ML100K_RATINGS} + {ML100K_ITEMS} (ML-100K) "
        f"or {CSV_RATINGS} + {CSV_ITEMS} (ml-latest, 20M, 25M, 32M)",
        path=root,
    )


def _require(root: Path, *names: str) -> None:
    missing = [name for name in names if not (root / name).is_file()]
    if missing:
        raise DataFormatError(
            f"incomplete MovieLens directory: missing {', '.join(missing)}", path=root
        )


def detect_format(directory: str | os.PathLike[str]) -> MovieLensFormat:
    """The MovieLens layout of ``directory``: ``"ml-100k"`` or ``"csv"``.

    Raises
    ------
    FileNotFoundError
        ``directory`` does not exist.
    DataFormatError
        Neither layout is present completely.
    """
    return locate(directory).format


# -- ratings -------------------------------------------------------------------------------
def _is_csv(path: Path) -> bool:
    return path.suffix.lower() == ".csv"


def count_data_lines(path: str | os.PathLike[str]) -> int:
    """Number of rating lines in a ratings file (header excluded), for progress bars."""
    path = Path(path)
    lines = 0
    last = b"\n"
    with path.open("rb") as handle:
        while block := handle.read(1 << 24):
            lines += block.count(b"\n")
            last = block[-1:]
    if last != b"\n":
        lines += 1
    return max(0, lines - (1 if _is_csv(path) else 0))


def iter_ratings(
    path: str | os.PathLike[str], *, chunksize: int = 1_000_000
) -> Iterator[pd.DataFrame]:
    """Read a ratings file in blocks of at most ``chunksize`` lines.

    Parameters
    ----------
    path : str or Path
        ``u.data``-style (tab separated, no header) or ``*.csv`` with the header
        ``userId,movieId,rating,timestamp``.
    chunksize : int, default 1_000_000
        Lines per block.

    Yields
    ------
    pandas.DataFrame
        Columns ``user_id`` (str), ``item_id`` (str), ``rating`` (float64),
        ``timestamp`` (int64, Unix seconds) and ``line`` (int64, 1-based line number
        in the file). Blank lines are skipped.

    Raises
    ------
    DataFormatError
        At the first malformed line: wrong number of fields, empty id, a rating or
        timestamp that is not a number, a bad header.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if chunksize < 1:
        raise ValueError("chunksize must be positive")
    next_line = 1
    if _is_csv(path):
        _check_header(path, _CSV_RATINGS_HEADER)
        next_line = 2
    # Fast path: let pandas' C parser convert the numbers. Any block it cannot
    # convert cleanly is read again as text, which finds and names the bad line
    # (or, for blank lines, drops them); reading then resumes on the fast path.
    while True:
        try:
            with _ratings_reader(path, next_line, typed=True, chunksize=chunksize) as reader:
                for raw in reader:
                    frame = _typed_block(raw, next_line)
                    if frame is None:
                        break
                    next_line += len(raw)
                    if len(frame):
                        yield frame
                else:
                    return
        except pd.errors.EmptyDataError:
            return
        except pd.errors.ParserError as exc:
            raise _parser_error(exc, path) from None
        except ValueError:
            pass
        with _ratings_reader(path, next_line, typed=False, chunksize=chunksize) as text_reader:
            try:
                raw = next(iter(text_reader))
            except (StopIteration, pd.errors.EmptyDataError):
                return
            except pd.errors.ParserError as exc:
                raise _parser_error(exc, path) from None
        frame = _check_ratings_block(raw, path, next_line)
        next_line += len(raw)
        if len(frame):
            yield frame
        if len(raw) < chunksize:
            return


def _ratings_reader(
    path: Path, first_line: int, *, typed: bool, chunksize: int
) -> pd.io.parsers.TextFileReader:
    """A chunked reader of a ratings file from ``first_line`` on (1-based)."""
    dtype: Any = (
        {"user_id": object, "item_id": object, "rating": np.float64, "timestamp": np.int64}
        if typed
        else object
    )
    return pd.read_csv(
        path,
        sep="," if _is_csv(path) else "\t",
        header=None,
        skiprows=first_line - 1,
        names=list(RATING_COLUMNS),
        dtype=dtype,
        quoting=csv.QUOTE_NONE,
        skip_blank_lines=False,
        na_filter=False,
        index_col=False,
        encoding="utf-8",
        encoding_errors="replace",
        engine="c",
        chunksize=chunksize,
    )


def _typed_block(raw: pd.DataFrame, first_line: int) -> pd.DataFrame | None:
    """The block with its line numbers, or ``None`` if it needs the careful text path."""
    ratings = raw["rating"].to_numpy(dtype=np.float64)
    if not np.isfinite(ratings).all():
        return None
    for column in ("user_id", "item_id"):
        ids = pd.unique(raw[column])
        if any(value == "" or "\ufffd" in value for value in ids):
            return None
    return raw.assign(
        line=np.arange(first_line, first_line + len(raw), dtype=np.int64),
        timestamp=raw["timestamp"].astype(np.int64),
    )


def read_ratings(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a whole ratings file.

    Parameters
    ----------
    path : str or Path
        ``u.data``-style (tab separated, no header: ``u.data``, ``u1.base``, ..) or
        ``*.csv`` with the header ``userId,movieId,rating,timestamp``.

    Returns
    -------
    pandas.DataFrame
        Columns ``user_id`` (str), ``item_id`` (str), ``rating`` (float64) and
        ``timestamp`` (int64), in file order.

    Raises
    ------
    DataFormatError
        At the first malformed line, or at the second rating of a (user, item) pair.
    """
    blocks = list(iter_ratings(path))
    if not blocks:
        frame = pd.DataFrame(
            {
                "user_id": pd.Series([], dtype=str),
                "item_id": pd.Series([], dtype=str),
                "rating": pd.Series([], dtype=np.float64),
                "timestamp": pd.Series([], dtype=np.int64),
                "line": pd.Series([], dtype=np.int64),
            }
        )
    else:
        frame = pd.concat(blocks, ignore_index=True)
    dup = frame.duplicated(["user_id", "item_id"]).to_numpy()
    if dup.any():
        row = frame.iloc[int(np.argmax(dup))]
        raise DataFormatError(
            f"second rating of user {row['user_id']!r} for item {row['item_id']!r}",
            path=path,
            line=int(row["line"]),
        )
    return frame.drop(columns="line")


def _check_header(path: Path, expected: tuple[str, ...]) -> None:
    with path.open(encoding="utf-8", errors="replace", newline="") as handle:
        first = handle.readline()
    header = tuple(
        part.strip().strip('"') for part in first.rstrip("\r\n").lstrip("\ufeff").split(",")
    )
    if header != expected:
        raise DataFormatError(
            f"expected the header {','.join(expected)!r}, found {first.rstrip()!r}",
            path=path,
            line=1,
        )


def _parser_error(exc: pd.errors.ParserError, path: Path) -> DataFormatError:
    # pandas' C tokenizer reports physical line numbers: "Expected 4 fields in line 8, saw 5"
    text = str(exc)
    marker = " in line "
    line: int | None = None
    reason = text.split("C error: ", 1)[-1].strip()
    if marker in text:
        digits = text.split(marker, 1)[1].split(",", 1)[0].strip()
        line = int(digits) if digits.isdigit() else None
        if "saw" in text:
            saw = text.rsplit("saw", 1)[1].strip()
            reason = f"expected 4 fields, found {saw}"
    return DataFormatError(reason, path=path, line=line)


def _check_ratings_block(raw: pd.DataFrame, path: Path, first_line: int) -> pd.DataFrame:
    lines = np.arange(first_line, first_line + len(raw), dtype=np.int64)
    users = raw["user_id"].astype(str).to_numpy(dtype=object)
    items = raw["item_id"].astype(str).to_numpy(dtype=object)
    rating_text = raw["rating"].astype(str)
    stamp_text = raw["timestamp"].astype(str)

    blank = (
        (users == "")
        & (items == "")
        & (rating_text == "").to_numpy()
        & (stamp_text == "").to_numpy()
    )
    keep = ~blank

    def fail(mask: np.ndarray[Any, np.dtype[np.bool_]], message: str) -> None:
        bad = mask & keep
        if bad.any():
            at = int(np.argmax(bad))
            raise DataFormatError(message.format(**_row(raw, at)), path=path, line=int(lines[at]))

    fail(users == "", "missing user id")
    fail(items == "", "missing item id")
    fail((rating_text == "").to_numpy(), "missing rating")
    fail((stamp_text == "").to_numpy(), "missing timestamp")
    replaced = raw["user_id"].str.contains("\ufffd", regex=False).to_numpy(dtype=bool) | raw[
        "item_id"
    ].str.contains("\ufffd", regex=False).to_numpy(dtype=bool)
    fail(replaced, "not valid UTF-8 text")

    ratings = pd.to_numeric(rating_text.where(keep, "0"), errors="coerce").to_numpy(
        dtype=np.float64
    )
    fail(~np.isfinite(ratings), "rating {rating!r} is not a number")

    stamps_num = pd.to_numeric(stamp_text.where(keep, "0"), errors="coerce")
    stamps_float = stamps_num.to_numpy(dtype=np.float64)
    if stamps_num.dtype.kind in "iu":
        stamps = stamps_num.to_numpy(dtype=np.int64)
    else:
        integral = np.isfinite(stamps_float) & (np.floor(stamps_float) == stamps_float)
        fail(~integral, "timestamp {timestamp!r} is not a whole number of seconds")
        stamps = stamps_float.astype(np.int64)

    return pd.DataFrame(
        {
            "user_id": pd.Series(users[keep], dtype=object),
            "item_id": pd.Series(items[keep], dtype=object),
            "rating": ratings[keep],
            "timestamp": stamps[keep],
            "line": lines[keep],
        }
    )


def _row(raw: pd.DataFrame, at: int) -> dict[str, str]:
    return {column: str(raw[column].iloc[at]) for column in RATING_COLUMNS}


# -- items ---------------------------------------------------------------------------------
def read_items(path: str | os.PathLike[str], *, with_lines: bool = False) -> pd.DataFrame:
    """Read an item file: ``u.item`` (ML-100K) or ``movies.csv`` (CSV family).

    Parameters
    ----------
    path : str or Path
        The file; its name selects the layout (``*.csv`` or anything else = ``u.item``).
        For ``u.item`` the genre names come from ``u.genre`` beside it when present,
        otherwise from the 19 standard ML-100K genres.
    with_lines : bool, default False
        Add a ``line`` column (1-based line of each item), for error messages.

    Returns
    -------
    pandas.DataFrame
        Columns ``id`` (str), ``title`` (str), ``genres`` (list of str) and
        ``attributes`` (dict: ``release_date`` and ``imdb_url`` for ML-100K when
        present; empty for the CSV family).

    Raises
    ------
    DataFormatError
        At the first malformed line or the second occurrence of an id.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    records = _read_movies_csv(path) if _is_csv(path) else _read_u_item(path)
    seen: dict[str, int] = {}
    for record in records:
        first = seen.setdefault(record["id"], record["line"])
        if first != record["line"]:
            raise DataFormatError(
                f"item id {record['id']!r} appears again (first on line {first})",
                path=path,
                line=record["line"],
            )
    frame = pd.DataFrame.from_records(
        records, columns=["id", "title", "genres", "attributes", "line"]
    )
    frame["id"] = frame["id"].astype(str)
    frame["title"] = frame["title"].astype(str)
    frame["line"] = frame["line"].astype(np.int64)
    return frame if with_lines else frame.drop(columns="line")


def _genre_names(path: Path) -> tuple[str, ...]:
    genre_file = path.with_name(ML100K_GENRES)
    if not genre_file.is_file():
        return ML100K_GENRE_NAMES
    names: dict[int, str] = {}
    with genre_file.open(encoding="latin-1") as handle:
        for number, line in enumerate(handle, start=1):
            text = line.strip()
            if not text:
                continue
            name, sep, index = text.rpartition("|")
            if not sep or not name or not index.isdigit():
                raise DataFormatError(
                    f"expected 'name|index', found {text!r}", path=genre_file, line=number
                )
            names[int(index)] = name
    if sorted(names) != list(range(len(names))):
        raise DataFormatError("genre indices are not 0..n-1", path=genre_file)
    return tuple(names[i] for i in range(len(names)))


def _read_u_item(path: Path) -> list[dict[str, Any]]:
    genres = _genre_names(path)
    n_fields = 5 + len(genres)
    records: list[dict[str, Any]] = []
    with path.open(encoding="latin-1", newline="") as handle:
        for number, line in enumerate(handle, start=1):
            text = line.rstrip("\r\n")
            if not text.strip():
                continue
            fields = text.split("|")
            if len(fields) != n_fields:
                raise DataFormatError(
                    f"expected {n_fields} '|'-separated fields, found {len(fields)}",
                    path=path,
                    line=number,
                )
            item_id, title, release, _video_release, url = fields[:5]
            flags = fields[5:]
            if not item_id:
                raise DataFormatError("missing item id", path=path, line=number)
            if any(flag not in {"0", "1"} for flag in flags):
                raise DataFormatError("genre flags must be 0 or 1", path=path, line=number)
            attributes = {
                key: value for key, value in (("release_date", release), ("imdb_url", url)) if value
            }
            records.append(
                {
                    "id": item_id,
                    "title": title,
                    "genres": [
                        name for name, flag in zip(genres, flags, strict=True) if flag == "1"
                    ],
                    "attributes": attributes,
                    "line": number,
                }
            )
    return records


def _read_movies_csv(path: Path) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    with path.open(encoding="utf-8", errors="replace", newline="") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
            if (
                header is None
                or tuple(h.strip().lstrip("\ufeff") for h in header) != _CSV_ITEMS_HEADER
            ):
                raise DataFormatError(
                    f"expected the header {','.join(_CSV_ITEMS_HEADER)!r}", path=path, line=1
                )
            for fields in reader:
                number = reader.line_num
                if not fields:
                    continue
                if len(fields) != 3:
                    raise DataFormatError(
                        f"expected 3 fields (movieId,title,genres), found {len(fields)}",
                        path=path,
                        line=number,
                    )
                item_id, title, genre_text = fields
                if not item_id:
                    raise DataFormatError("missing item id", path=path, line=number)
                if "\ufffd" in item_id:
                    raise DataFormatError("not valid UTF-8 text", path=path, line=number)
                genre_list = (
                    []
                    if genre_text in {"", _NO_GENRES}
                    else [g for g in genre_text.split("|") if g]
                )
                records.append(
                    {
                        "id": item_id,
                        "title": title,
                        "genres": genre_list,
                        "attributes": {},
                        "line": number,
                    }
                )
        except csv.Error as exc:
            raise DataFormatError(f"bad CSV: {exc}", path=path, line=reader.line_num) from None
    return records
