"""Properties of the MovieLens readers: round trips, chunking, and garbage in.

Files are written with what Hypothesis draws and read back; any input at all gives
either a well-formed frame or a DataFormatError naming the file, never another
exception.
"""

from __future__ import annotations

import csv
import io
import string
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rbm_core.movielens import (
    ML100K_GENRE_NAMES,
    DataFormatError,
    iter_ratings,
    read_items,
    read_ratings,
)

# ids as MovieLens-like files hold them: no separators, quotes or whitespace
ID_CHARS = string.ascii_letters + string.digits + "_-.:/@#%&!?$ü漢"
ids = st.text(alphabet=ID_CHARS, min_size=1, max_size=12)
values = st.integers(-40, 40).map(lambda n: n / 4)  # exactly representable in text
stamps = st.integers(-(2**31), 2**40)


@st.composite
def rating_rows(draw: st.DrawFn) -> list[tuple[str, str, float, int]]:
    pairs = draw(st.lists(st.tuples(ids, ids), unique=True, max_size=40))
    return [(u, i, draw(values), draw(stamps)) for u, i in pairs]


@contextmanager
def scratch() -> Iterator[Path]:
    # not pytest's tmp_path: Hypothesis runs many examples per test call
    with tempfile.TemporaryDirectory() as directory:
        yield Path(directory)


def _attempt(
    reader: Callable[[Path], pd.DataFrame], path: Path
) -> tuple[pd.DataFrame | None, DataFormatError | None]:
    """The frame, or the DataFormatError; any other exception propagates (a failure)."""
    try:
        return reader(path), None
    except DataFormatError as exc:
        return None, exc


def _frame(rows: list[tuple[str, str, float, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])


def _text(rating: float) -> str:
    return repr(rating) if rating != int(rating) else str(int(rating))


@given(rating_rows(), st.booleans(), st.booleans())
def test_u_data_round_trips(
    rows: list[tuple[str, str, float, int]], blank_lines: bool, crlf: bool
) -> None:
    end = "\r\n" if crlf else "\n"
    lines = [f"{u}\t{i}\t{_text(r)}\t{t}" for u, i, r, t in rows]
    if blank_lines:
        lines = [x for line in lines for x in (line, "")]
    with scratch() as directory:
        path = directory / "u.data"
        path.write_text(end.join(lines) + (end if lines else ""), encoding="utf-8")
        frame = read_ratings(path)
    expected = _frame(rows)
    assert frame["user_id"].tolist() == expected["user_id"].tolist()
    assert frame["item_id"].tolist() == expected["item_id"].tolist()
    assert frame["rating"].tolist() == expected["rating"].tolist()
    assert frame["timestamp"].tolist() == expected["timestamp"].tolist()
    assert frame["rating"].dtype == np.float64
    assert frame["timestamp"].dtype == np.int64


@given(rating_rows())
def test_ratings_csv_round_trips(rows: list[tuple[str, str, float, int]]) -> None:
    with scratch() as directory:
        path = directory / "ratings.csv"
        body = "".join(f"{u},{i},{_text(r)},{t}\n" for u, i, r, t in rows)
        path.write_text("userId,movieId,rating,timestamp\n" + body, encoding="utf-8")
        frame = read_ratings(path)
    assert list(frame.itertuples(index=False, name=None)) == rows


@given(rating_rows(), st.integers(1, 50), st.data())
def test_blocks_of_any_size_agree_and_carry_true_line_numbers(
    rows: list[tuple[str, str, float, int]], chunksize: int, data: st.DataObject
) -> None:
    blanks = data.draw(st.lists(st.booleans(), min_size=len(rows), max_size=len(rows)))
    lines: list[str] = []
    where: list[int] = []
    for (u, i, r, t), blank in zip(rows, blanks, strict=True):
        if blank:
            lines.append("")
        lines.append(f"{u}\t{i}\t{_text(r)}\t{t}")
        where.append(len(lines))
    with scratch() as directory:
        path = directory / "u.data"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        blocks = list(iter_ratings(path, chunksize=chunksize))
    assert all(0 < len(b) <= chunksize for b in blocks)
    joined = pd.concat(blocks, ignore_index=True) if blocks else pd.DataFrame({"line": []})
    assert joined["line"].tolist() == where
    if rows:
        assert joined["user_id"].tolist() == [r[0] for r in rows]


# characters that matter to the parsers, plus anything at all
NOISE = st.one_of(
    st.sampled_from(
        ["\t", "\n", "\r", ",", '"', "-", ".", "e", "nan", "inf", "1", "0", " ", "\ufffd"]
    ),
    st.characters(),
)


@settings(max_examples=200)
@given(
    st.one_of(
        st.lists(NOISE, max_size=80).map("".join).map(lambda s: s.encode("utf-8", "replace")),
        st.binary(max_size=200),
    ),
    st.sampled_from(["u.data", "ratings.csv"]),
)
def test_any_ratings_file_reads_or_fails_with_a_data_format_error(raw: bytes, name: str) -> None:
    with scratch() as directory:
        path = directory / name
        header = b"userId,movieId,rating,timestamp\n" if name.endswith(".csv") else b""
        path.write_bytes(header + raw)
        frame, error = _attempt(read_ratings, path)
    if error is not None:
        assert error.path == path
        assert str(error).startswith(str(path))
        return
    assert frame is not None
    assert list(frame.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert np.isfinite(frame["rating"].to_numpy()).all()
    assert (frame["user_id"] != "").all()
    assert (frame["item_id"] != "").all()
    assert not frame.duplicated(["user_id", "item_id"]).any()


# -- items ---------------------------------------------------------------------------------
latin1_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="|\x7f"),
    max_size=30,
)


@given(
    st.lists(
        st.tuples(
            st.text(alphabet=ID_CHARS.replace("ü漢", ""), min_size=1, max_size=8),
            latin1_text,
            st.lists(st.booleans(), min_size=19, max_size=19),
        ),
        unique_by=lambda row: row[0],
        max_size=20,
    )
)
def test_u_item_round_trips(rows: list[tuple[str, str, list[bool]]]) -> None:
    lines = [
        f"{item}|{title}|01-Jan-1995||http://example.org/{item}|"
        + "|".join("1" if f else "0" for f in flags)
        for item, title, flags in rows
    ]
    with scratch() as directory:
        path = directory / "u.item"
        path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
        frame = read_items(path)
    assert frame["id"].tolist() == [r[0] for r in rows]
    assert frame["title"].tolist() == [r[1] for r in rows]
    expected_genres = [
        [g for g, f in zip(ML100K_GENRE_NAMES, flags, strict=True) if f] for *_, flags in rows
    ]
    assert frame["genres"].tolist() == expected_genres


genre_names = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="|"),
    min_size=1,
    max_size=10,
).filter(lambda g: g != "(no genres listed)")


@given(
    st.lists(
        st.tuples(
            st.text(alphabet=ID_CHARS, min_size=1, max_size=8),
            st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40),
            st.lists(genre_names, max_size=4),
        ),
        unique_by=lambda row: row[0],
        max_size=20,
    )
)
def test_movies_csv_round_trips_titles_with_commas_quotes_and_newlines(
    rows: list[tuple[str, str, list[str]]],
) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)  # "\r\n" line ends, so fields holding "\r" are quoted
    writer.writerow(["movieId", "title", "genres"])
    for item, title, genres in rows:
        writer.writerow([item, title, "|".join(genres) or "(no genres listed)"])
    with scratch() as directory:
        path = directory / "movies.csv"
        path.write_text(buffer.getvalue(), encoding="utf-8", newline="")
        frame = read_items(path)
    assert frame["id"].tolist() == [r[0] for r in rows]
    assert frame["title"].tolist() == [r[1] for r in rows]
    assert frame["genres"].tolist() == [r[2] for r in rows]


@settings(max_examples=150)
@given(st.binary(max_size=300), st.sampled_from(["u.item", "movies.csv"]))
def test_any_item_file_reads_or_fails_with_a_data_format_error(raw: bytes, name: str) -> None:
    with scratch() as directory:
        path = directory / name
        header = b"movieId,title,genres\n" if name.endswith(".csv") else b""
        path.write_bytes(header + raw)
        frame, error = _attempt(read_items, path)
    if error is not None:
        assert error.path is not None
        return
    assert frame is not None
    assert not frame["id"].duplicated().any()
    assert (frame["id"] != "").all()


def test_the_error_type_is_a_value_error() -> None:
    # callers (the importer, the CLI) catch ValueError for bad files
    with pytest.raises(ValueError, match=r"u\.data:1: x"):
        raise DataFormatError("x", path="u.data", line=1)
