"""``rbmrec evaluate`` end to end: JSON and table output, and every bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from app.cli import cli
from rbm_core.movielens import read_ratings

RBMREC = str(Path(sys.executable).with_name("rbmrec"))
FAST = ["--param", "search=false", "--hidden", "8", "--epochs", "2"]
FIGURES = {
    "rmse",
    "mae",
    "precision_at_10",
    "recall_at_10",
    "ndcg_at_10",
    "map_at_10",
    "coverage_at_10",
    "fit_seconds",
    "n_train",
    "n_test",
}


def _subset(path: Path, max_user: int) -> pd.DataFrame:
    frame = read_ratings(path)
    return frame[frame["user_id"].astype(int) <= max_user]


def _write_tab(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, sep="\t", header=False, index=False)
    return path


def _write_csv(frame: pd.DataFrame, path: Path) -> Path:
    frame.rename(columns={"user_id": "userId", "item_id": "movieId"}).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def small_folds(movielens_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """u1 and u2 of ML-100K, cut down to the first 150 users."""
    out = tmp_path_factory.mktemp("ml-small")
    for fold in (1, 2):
        for part in ("base", "test"):
            name = f"u{fold}.{part}"
            _write_tab(_subset(movielens_dir / name, 150), out / name)
    return out


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["evaluate", *args])
    return result.exit_code, result.stdout, result.stderr


def test_json_over_two_folds(small_folds: Path) -> None:
    code, out, err = _run("--data", str(small_folds), "--folds", "1,2", "--json", *FAST)
    assert code == 0, err
    result = json.loads(out)
    assert list(result["models"]) == [
        "rbm",
        "ease",
        "item_quality",
        "bias",
        "popularity",
        "global_mean",
    ]
    for name, entry in result["models"].items():
        assert [row["fold"] for row in entry["folds"]] == [1, 2]
        for row in [*entry["folds"], entry["mean"]]:
            assert set(row) >= FIGURES, name
    assert result["models"]["popularity"]["mean"]["rmse"] is None
    assert result["models"]["global_mean"]["folds"][0]["ndcg_at_10"] is None
    rbm = result["models"]["rbm"]["mean"]
    assert 0.0 < rbm["ndcg_at_10"] <= 1.0
    assert rbm["rmse"] < result["models"]["global_mean"]["mean"]["rmse"]
    settings = result["hyperparameters"]["rbm"]
    assert settings["search"] is False
    for part in ("user_rbm", "item_rbm", "ranker"):
        assert settings[f"{part}_params"] == {"n_hidden": 8, "n_epochs": 2}
    assert settings["random_state"] == 0
    # progress goes to stderr
    assert "fold 2: rbm" in err


def test_same_seed_same_numbers_and_param_changes_them(small_folds: Path) -> None:
    base = ["--data", str(small_folds), "--folds", "1", "--json", "--models", "rbm", *FAST]
    first = json.loads(_run(*base)[1])["models"]["rbm"]["folds"][0]
    second = json.loads(_run(*base)[1])["models"]["rbm"]["folds"][0]
    other = json.loads(_run(*base, "--seed", "7")[1])["models"]["rbm"]["folds"][0]
    assert first["rmse"] == second["rmse"]
    assert first["rmse"] != other["rmse"]


def test_train_test_files_csv_with_explicit_scale(movielens_dir: Path, tmp_path: Path) -> None:
    train = _write_csv(_subset(movielens_dir / "u1.base", 120), tmp_path / "train.csv")
    test = _write_csv(_subset(movielens_dir / "u1.test", 120), tmp_path / "test.csv")
    code, out, err = _run(
        "--train",
        str(train),
        "--test",
        str(test),
        "--rating-scale",
        "0.5..5:0.5",
        "--models",
        "bias,popularity",
        "--json",
    )
    assert code == 0, err
    result = json.loads(out)
    assert list(result["models"]) == ["bias", "popularity"]
    assert [row["fold"] for row in result["models"]["bias"]["folds"]] == [1]
    assert result["protocol"]["rating_scale"] == "0.5,1,1.5,2,2.5,3,3.5,4,4.5,5"


def test_table_output(small_folds: Path) -> None:
    code, out, err = _run("--data", str(small_folds), "--folds", "1", "--models", "bias,popularity")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["model", "fold", "RMSE", "MAE"]
    assert any(line.startswith("bias") and line.split()[1] == "1" for line in lines)
    popularity = next(line for line in lines if line.startswith("popularity"))
    assert popularity.split()[2:4] == ["-", "-"]
    assert "rating scale: 1,2,3,4,5" in out


def test_stdout_holds_only_the_json_object(small_folds: Path) -> None:
    proc = subprocess.run(
        [RBMREC, "evaluate", "--data", str(small_folds), "--folds", "1", "--json", "-v", *FAST],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)  # fails on any stray line
    assert proc.stdout.count("\n") == 1
    assert set(result) == {"models", "hyperparameters", "protocol"}
    assert "fold 1: rbm" in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give --data DIR"),
        (["--train", "x.data"], "give --data DIR"),
        (["--data", "{d}", "--train", "a", "--test", "b"], "not both"),
        (["--data", "{d}/nowhere"], "no such directory"),
        (["--data", "{d}", "--folds", "1,7"], "fold 7 does not exist"),
        (["--data", "{d}", "--folds", "one"], "bad --folds"),
        (["--data", "{d}", "--folds", "3"], "u3.base: no such file"),
        (["--data", "{d}", "--folds", "1", "--rating-scale", "5..1"], "bad --rating-scale"),
        (["--data", "{d}", "--folds", "1", "--rating-scale", "1,2,3"], "training ratings: rating"),
        (["--data", "{d}", "--folds", "1", "--models", "rbm,svd"], "unknown model 'svd'"),
        (["--data", "{d}", "--folds", "1", "--param", "n_hiden=3"], "unknown setting 'n_hiden'"),
        (["--data", "{d}", "--folds", "1", "--param", "n_hidden"], "NAME=VALUE"),
        (["--data", "{d}", "--folds", "1", "--param", "n_hidden=-4"], "n_hidden"),
        (["--train", "{d}/u1.base", "--test", "{d}/missing.test"], "missing.test: no such file"),
        (["--train", "{d}/u1.base", "--test", "{d}/u1.test", "--folds", "2"], "--folds goes"),
    ],
)
def test_bad_input_is_a_clear_error(small_folds: Path, args: list[str], message: str) -> None:
    code, out, err = _run(*[a.format(d=small_folds) for a in args])
    assert code != 0
    assert out == ""
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ")
    assert message in last
    assert "Traceback" not in err


def test_malformed_file_names_file_and_line(small_folds: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.test"
    bad.write_text("1\t1\t5\t874965758\n1\t2\tgreat\t874965758\n")
    code, out, err = _run("--train", str(small_folds / "u1.base"), "--test", str(bad))
    assert code != 0
    assert out == ""
    assert f"error: {bad}:2:" in err


def test_the_parts_of_the_served_model_are_reported_alone(small_folds: Path) -> None:
    models = "rbm,user_rbm,item_rbm,ranker,ease"
    code, out, err = _run(
        "--data", str(small_folds), "--folds", "1", "--json", "--models", models, *FAST
    )
    assert code == 0, err
    result = json.loads(out)["models"]
    assert list(result) == models.split(",")
    for part in ("user_rbm", "item_rbm", "ranker"):
        row = result[part]["folds"][0]
        assert row["fit_seconds"] is None  # trained inside rbm, not again
        assert 0.0 <= row["ndcg_at_10"] <= 1.0
        assert row["novelty_at_10"] > 0.0
        assert 0.0 <= row["personalisation_at_10"] <= 1.0
    # the rating parts predict ratings; the ranker alone does not blend them
    assert result["user_rbm"]["folds"][0]["rmse"] is not None
    assert result["item_rbm"]["folds"][0]["rmse"] is not None
    assert "(a part of rbm)" in err
    code, _, err = _run("--data", str(small_folds), "--folds", "1", "--models", "ranker,rbm")
    assert code != 0
    assert "list rbm before it" in err
