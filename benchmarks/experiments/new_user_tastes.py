"""New users with opposite tastes: how far apart are their top-20 lists?

Trains the served model (:class:`~rbm_core.recommender.RBMRecommender`, default
settings) on ``u1.base`` and folds in pairs of new users who rate the same ten films
with opposite tastes: six well-known films of genre A rated 5 and four of genre B rated
1, and the mirror image. For each pair it prints how many of the two top-20 lists'
items are shared (the issue's target: at most 5) and how many films of each genre
each list holds (each list should hold more of its user's favoured genre)::

    python benchmarks/experiments/new_user_tastes.py --data ../shared/datasets/ml-100k
    python benchmarks/experiments/new_user_tastes.py --data ... --param ranker.dislike_weight=0
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import typer

from app.cli.common import model_params
from rbm_core import RatingMatrix, RatingScale
from rbm_core.movielens import read_items, read_ratings
from rbm_core.recommender import RBMRecommender, recommender_settings

PAIRS = (
    ("Children's", "Horror"),
    ("Romance", "Sci-Fi"),
    ("Musical", "Thriller"),
    ("Documentary", "Action"),
    ("Film-Noir", "Comedy"),
)
"""Genre A (rated 5 by the first user, 1 by the second) and genre B (the mirror)."""


def most_rated(items: pd.DataFrame, genre: str, other: str, n: int) -> list[str]:
    """The ``n`` most rated films of ``genre`` that are not also of ``other``."""
    keep = items["genres"].apply(lambda g: genre in g and other not in g)
    return [str(i) for i in items.loc[keep, "id"].head(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the ML-100K directory")
    parser.add_argument("--no-search", action="store_true", help="the default settings only")
    parser.add_argument(
        "--param", action="append", default=[], help="NAME=VALUE or PART.NAME=VALUE (JSON)"
    )
    args = parser.parse_args()
    ratings = read_ratings(args.data / "u1.base")
    items = read_items(args.data / "u.item")
    counts = ratings["item_id"].astype(str).value_counts()
    items["n"] = items["id"].astype(str).map(counts).fillna(0)
    items = items.sort_values(["n", "id"], ascending=[False, True])
    genres = dict(zip(items["id"].astype(str), items["genres"], strict=True))

    # the command line's own --param reading (JSON values), checked before training
    try:
        settings = model_params(None, None, None, args.param)
    except typer.Exit as exc:  # the message is printed; exit as the CLI would
        raise SystemExit(exc.exit_code) from None
    started = time.perf_counter()
    model = RBMRecommender(
        search=not args.no_search, random_state=0, **recommender_settings(settings)
    ).fit(RatingMatrix.from_frame(ratings, RatingScale.parse("1..5")))
    print(f"trained on u1.base in {time.perf_counter() - started:.1f} s")

    print(f"{'genre A / genre B':<26}{'shared':>8}{'A in lists':>14}{'B in lists':>14}")
    for a, b in PAIRS:
        fav_a, fav_b = most_rated(items, a, b, 6), most_rated(items, b, a, 4)
        first = {**dict.fromkeys(fav_a, 5.0), **dict.fromkeys(fav_b, 1.0)}
        second = {**dict.fromkeys(fav_a, 1.0), **dict.fromkeys(fav_b, 5.0)}
        lists = [[r.item_id for r in model.recommend(u, n=20)] for u in (first, second)]
        shared = len(set(lists[0]) & set(lists[1]))
        in_a = [sum(a in genres[i] for i in lst) for lst in lists]
        in_b = [sum(b in genres[i] for i in lst) for lst in lists]
        pair = f"{a} / {b}"
        print(f"{pair:<26}{shared:>8}{in_a[0]:>7} vs {in_a[1]:<4}{in_b[0]:>7} vs {in_b[1]:<4}")


if __name__ == "__main__":
    main()
