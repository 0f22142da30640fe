"""rbm_core.datasets: rating files, the ML-100K folds, train / test pairs, scale inference."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _core_support import write_fold

from rbm_core import RatingScaleError
from rbm_core.datasets import DatasetError, infer_scale, load_ml100k_folds, read_rating_file
from rbm_core.movielens import DataFormatError


def _frame(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating"])


TRAIN = _frame(
    [("u1", "p", 5.0), ("u1", "q", 3.0), ("u2", "p", 4.0), ("u2", "r", 2.0), ("u3", "q", 4.0)]
)
TEST = _frame([("u1", "r", 5.0), ("u1", "s", 4.0), ("u2", "q", 1.0), ("u4", "p", 4.0)])


@pytest.mark.parametrize(
    ("values", "levels"),
    [
        ([1, 2, 3, 4, 5], (1, 2, 3, 4, 5)),
        ([5, 1, 2, 4, 4], (1, 2, 3, 4, 5)),
        ([0.5, 1.5, 5.0], tuple(np.arange(1, 11) / 2)),
        ([1.0, 2.5, 7.0], (1.0, 2.5, 4.0, 5.5, 7.0)),
        ([1.0, 2.0, math.pi], (1.0, 2.0, math.pi)),
        ([0.1, 0.3, 0.4], (0.1, 0.2, 0.3, 0.4)),
    ],
)
def test_infer_scale(values: list[float], levels: tuple[float, ...]) -> None:
    assert infer_scale(values).levels == pytest.approx(levels)


def test_infer_scale_needs_two_values() -> None:
    with pytest.raises(RatingScaleError, match="two distinct"):
        infer_scale([4.0, 4.0])
    with pytest.raises(RatingScaleError, match="finite"):
        infer_scale([1.0, float("nan")])


def test_read_rating_file_formats(tmp_path: Path) -> None:
    tab = tmp_path / "train.data"
    tab.write_text("1\t10\t5\t881250949\n2\t10\t3\t881250950\n")
    csv = tmp_path / "train.csv"
    csv.write_text("userId,movieId,rating,timestamp\n1,10,4.5,1\n2,11,0.5,2\n")
    assert read_rating_file(tab).to_dict("list") == {
        "user_id": ["1", "2"],
        "item_id": ["10", "10"],
        "rating": [5.0, 3.0],
    }
    assert read_rating_file(csv)["rating"].tolist() == [4.5, 0.5]
    misnamed = tmp_path / "train.txt"
    misnamed.write_text(csv.read_text())
    with pytest.raises(DataFormatError, match=r"\.csv"):
        read_rating_file(misnamed)
    with pytest.raises(FileNotFoundError):
        read_rating_file(tmp_path / "absent.data")
    bad = tmp_path / "bad.data"
    bad.write_text("1\t10\t5\t1\n1\t11\tfive\t2\n")
    with pytest.raises(DataFormatError, match=r"bad\.data:2"):
        read_rating_file(bad)


def test_load_ml100k_folds_and_its_errors(tmp_path: Path) -> None:
    write_fold(tmp_path, 2, TRAIN, TEST)
    (split,) = load_ml100k_folds(tmp_path, [2])
    assert split.fold == 2
    assert len(split.train) == 5
    assert len(split.test) == 4
    assert split.source == "u2.base/u2.test"
    with pytest.raises(FileNotFoundError, match=r"u1\.base"):
        load_ml100k_folds(tmp_path, [1])
    with pytest.raises(FileNotFoundError, match="no such directory"):
        load_ml100k_folds(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match=r"folds 1\.\.5"):
        load_ml100k_folds(tmp_path, [6])
    with pytest.raises(DatasetError, match="twice"):
        load_ml100k_folds(tmp_path, [2, 2])
    with pytest.raises(DatasetError, match="no folds"):
        load_ml100k_folds(tmp_path, [])
    (tmp_path / "u2.test").write_text("")
    with pytest.raises(DatasetError, match="test file has no ratings"):
        load_ml100k_folds(tmp_path, [2])
