"""The MovieLens file readers of rbm_core.movielens (files in, frames out; no database)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rbm_core.movielens import (
    DataFormatError,
    count_data_lines,
    detect_format,
    iter_ratings,
    locate,
    read_items,
    read_ratings,
)

U_ITEM_HEADER_FIELDS = 5 + 19


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def _u_item_line(item_id: str, title: str, flags: str = "0" * 19) -> str:
    return f"{item_id}|{title}|01-Jan-1995||http://example.org/{item_id}|" + "|".join(flags)


# -- detection ------------------------------------------------------------------------------
def test_detects_ml100k(movielens_dir: Path) -> None:
    assert detect_format(movielens_dir) == "ml-100k"
    files = locate(movielens_dir)
    assert files.ratings.name == "u.data"
    assert files.items.name == "u.item"
    assert files.genres is not None


def test_detects_the_csv_family(tmp_path: Path) -> None:
    _write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n")
    _write(tmp_path / "movies.csv", "movieId,title,genres\n1,Toy Story (1995),Comedy\n")
    assert detect_format(tmp_path) == "csv"


def test_missing_directory_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such directory"):
        detect_format(tmp_path / "nope")


def test_a_file_is_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a directory"):
        detect_format(_write(tmp_path / "u.data", ""))


def test_empty_directory_is_not_movielens(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match=r"expected u\.data \+ u\.item"):
        detect_format(tmp_path)


@pytest.mark.parametrize(
    ("present", "missing"), [("u.data", "u.item"), ("movies.csv", "ratings.csv")]
)
def test_incomplete_directory_names_the_missing_file(
    tmp_path: Path, present: str, missing: str
) -> None:
    _write(tmp_path / present, "")
    with pytest.raises(DataFormatError, match=f"missing {missing}"):
        detect_format(tmp_path)


# -- ratings --------------------------------------------------------------------------------
def test_reads_ml100k_ratings(movielens_dir: Path) -> None:
    ratings = read_ratings(movielens_dir / "u.data")
    assert list(ratings.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert len(ratings) == 100_000
    assert ratings["user_id"].nunique() == 943
    assert ratings["item_id"].nunique() == 1682
    assert ratings["rating"].dtype == np.float64
    assert ratings["timestamp"].dtype == np.int64
    first = ratings.iloc[0]
    assert (first["user_id"], first["item_id"], first["rating"], first["timestamp"]) == (
        "196",
        "242",
        3.0,
        881250949,
    )
    assert all(isinstance(v, str) for v in ratings["user_id"].head())
    assert count_data_lines(movielens_dir / "u.data") == 100_000


def test_reads_a_split_file(movielens_dir: Path) -> None:
    assert len(read_ratings(movielens_dir / "u1.base")) == 80_000


def test_reads_ratings_csv(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "ratings.csv",
        "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n2,1,0.5,1\n",
    )
    ratings = read_ratings(path)
    assert ratings["rating"].tolist() == [4.0, 4.5, 0.5]
    assert ratings["item_id"].tolist() == ["1", "3", "1"]
    assert ratings["timestamp"].tolist() == [964982703, 964981247, 1]
    assert count_data_lines(path) == 3


def test_blank_lines_are_skipped_and_line_numbers_kept(tmp_path: Path) -> None:
    path = _write(tmp_path / "u.data", "1\t1\t3\t10\n\n2\t1\t4\t11\n\n3\t2\t5\t12\n")
    blocks = list(iter_ratings(path, chunksize=2))
    lines = np.concatenate([b["line"].to_numpy() for b in blocks]).tolist()
    assert lines == [1, 3, 5]
    assert read_ratings(path)["user_id"].tolist() == ["1", "2", "3"]


def test_blocks_carry_absolute_line_numbers(tmp_path: Path) -> None:
    body = "".join(f"{u},{u % 7},3,{u}\n" for u in range(1, 11))
    path = _write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n" + body)
    blocks = list(iter_ratings(path, chunksize=3))
    assert [len(b) for b in blocks] == [3, 3, 3, 1]
    assert blocks[1]["line"].tolist() == [5, 6, 7]
    assert blocks[3]["user_id"].tolist() == ["10"]


@pytest.mark.parametrize(
    ("body", "line", "message"),
    [
        ("1\t1\t3\t10\n1\t2\t3\n", 2, "missing timestamp"),
        ("1\t1\t3\t10\n1\t2\t3\t10\t99\n", 2, "expected 4 fields, found 5"),
        ("1\t1\t3\t10\n2\t2\tfive\t10\n", 2, "rating 'five' is not a number"),
        ("1\t1\t3\t10\n2\t2\tnan\t10\n", 2, "rating 'nan' is not a number"),
        ("1\t1\t3\t10\n2\t2\t3\t10.5\n", 2, "timestamp '10.5' is not a whole number"),
        ("1\t1\t3\t10\n2\t2\t3\tyesterday\n", 2, "timestamp 'yesterday'"),
        ("1\t1\t3\t10\n\t2\t3\t10\n", 2, "missing user id"),
        ("1\t1\t3\t10\n2\t\t3\t10\n", 2, "missing item id"),
        ("1\t1\t3\t10\n2\t2\t\t10\n", 2, "missing rating"),
        ("1\t1\t3\t10\n1\t2\t3\t10\n1\t1\t4\t10\n", 3, "second rating of user '1' for item '1'"),
    ],
)
def test_malformed_ratings_name_file_and_line(
    tmp_path: Path, body: str, line: int, message: str
) -> None:
    path = _write(tmp_path / "u.data", body)
    with pytest.raises(DataFormatError, match=message) as info:
        read_ratings(path)
    assert info.value.line == line
    assert info.value.path == path
    assert str(info.value).startswith(f"{path}:{line}: ")


def test_malformed_line_in_a_later_block_has_its_absolute_number(tmp_path: Path) -> None:
    good = "".join(f"{u}\t1\t3\t{u}\n" for u in range(1, 8))
    path = _write(tmp_path / "u.data", good + "8\t1\tx\t8\n")
    with pytest.raises(DataFormatError) as info:
        list(iter_ratings(path, chunksize=3))
    assert info.value.line == 8


def test_too_many_fields_in_a_later_block(tmp_path: Path) -> None:
    good = "".join(f"{u},1,3,{u}\n" for u in range(1, 8))
    path = _write(
        tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n" + good + "8,1,3,8,9\n"
    )
    with pytest.raises(DataFormatError, match="expected 4 fields") as info:
        list(iter_ratings(path, chunksize=3))
    assert info.value.line == 9


def test_invalid_utf8_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "u.data"
    path.write_bytes(b"1\t1\t3\t10\n\xff\xfe\t1\t3\t10\n")
    with pytest.raises(DataFormatError, match="not valid UTF-8") as info:
        read_ratings(path)
    assert info.value.line == 2


def test_csv_ratings_need_their_header(tmp_path: Path) -> None:
    path = _write(tmp_path / "ratings.csv", "1,1,4.0,964982703\n")
    with pytest.raises(DataFormatError, match="expected the header") as info:
        read_ratings(path)
    assert info.value.line == 1


def test_missing_ratings_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_ratings(tmp_path / "u.data")


def test_empty_ratings_file_reads_as_empty(tmp_path: Path) -> None:
    ratings = read_ratings(_write(tmp_path / "u.data", ""))
    assert len(ratings) == 0
    assert list(ratings.columns) == ["user_id", "item_id", "rating", "timestamp"]


# -- items ----------------------------------------------------------------------------------
def test_reads_ml100k_items(movielens_dir: Path) -> None:
    items = read_items(movielens_dir / "u.item")
    assert list(items.columns) == ["id", "title", "genres", "attributes"]
    assert len(items) == 1682
    assert items["id"].is_unique
    toy = items.iloc[0]
    assert toy["id"] == "1"
    assert toy["title"] == "Toy Story (1995)"
    assert toy["genres"] == ["Animation", "Children's", "Comedy"]
    assert toy["attributes"]["release_date"] == "01-Jan-1995"


def test_u_item_is_latin1_and_genres_come_from_u_genre(tmp_path: Path) -> None:
    _write(tmp_path / "u.genre", "unknown|0\nDrama|1\nComedy|2\n\n")
    flags = "011"
    _write(
        tmp_path / "u.item", _u_item_line("7", "Misérables, Les (1995)", flags) + "\n", "latin-1"
    )
    items = read_items(tmp_path / "u.item")
    assert items.iloc[0]["title"] == "Misérables, Les (1995)"
    assert items.iloc[0]["genres"] == ["Drama", "Comedy"]


def test_u_item_with_wrong_field_count(tmp_path: Path) -> None:
    good = _u_item_line("1", "A")
    path = _write(tmp_path / "u.item", good + "\n2|B|x\n")
    with pytest.raises(DataFormatError, match=f"expected {U_ITEM_HEADER_FIELDS}") as info:
        read_items(path)
    assert info.value.line == 2


def test_u_item_with_duplicate_id(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "u.item", _u_item_line("1", "A") + "\n" + _u_item_line("1", "B") + "\n"
    )
    with pytest.raises(DataFormatError, match="appears again") as info:
        read_items(path)
    assert info.value.line == 2


def test_u_item_with_bad_genre_flag(tmp_path: Path) -> None:
    path = _write(tmp_path / "u.item", _u_item_line("1", "A", "2" + "0" * 18) + "\n")
    with pytest.raises(DataFormatError, match="genre flags"):
        read_items(path)


def test_reads_movies_csv_with_quotes_and_no_genres(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "movies.csv",
        "movieId,title,genres\n"
        '11,"American President, The (1995)",Comedy|Drama|Romance\n'
        "209171,Women of Devil's Island (1962),(no genres listed)\n",
    )
    items = read_items(path, with_lines=True)
    assert items["id"].tolist() == ["11", "209171"]
    assert items.iloc[0]["title"] == "American President, The (1995)"
    assert items.iloc[0]["genres"] == ["Comedy", "Drama", "Romance"]
    assert items.iloc[1]["genres"] == []
    assert items["line"].tolist() == [2, 3]


def test_movies_csv_with_a_missing_field(tmp_path: Path) -> None:
    path = _write(tmp_path / "movies.csv", "movieId,title,genres\n1,Toy Story\n")
    with pytest.raises(DataFormatError, match="expected 3 fields") as info:
        read_items(path)
    assert info.value.line == 2


def test_movies_csv_needs_its_header(tmp_path: Path) -> None:
    path = _write(tmp_path / "movies.csv", "id,name\n1,x\n")
    with pytest.raises(DataFormatError, match="expected the header") as info:
        read_items(path)
    assert info.value.line == 1
