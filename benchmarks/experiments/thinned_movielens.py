"""A sparser MovieLens with a long tail: ML-100K thinned, to check the defaults carry over.

Keeps ``--keep`` of the ratings of ML-100K (``u.data``) at random, then holds out 20 %
of each user's remaining ratings as the test set (users keep at least one training
rating), and writes ``train.csv`` and ``test.csv`` (MovieLens CSV layout) to
``--out``. With the default 30 %, a user has about 32 ratings instead of 106, and about
a quarter of the items are rated at most twice in training: a long tail the defaults
were not tuned on. Then::

    rbmrec evaluate --train OUT/train.csv --test OUT/test.csv \\
        --models rbm,user_rbm,item_rbm,ranker,ease,bias,popularity

    python benchmarks/experiments/thinned_movielens.py --data ../shared/datasets/ml-100k \\
        --out /tmp/ml-thinned
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from rbm_core.movielens import read_ratings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the ML-100K directory")
    parser.add_argument("--out", type=Path, required=True, help="where to write the CSVs")
    parser.add_argument("--keep", type=float, default=0.3, help="share of ratings kept")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    ratings = read_ratings(args.data / "u.data")
    ratings = ratings[rng.random(len(ratings)) < args.keep].reset_index(drop=True)
    # 20 % of each user's ratings to the test set, at least one kept for training
    order = rng.permutation(len(ratings))
    rank = ratings.iloc[order].groupby("user_id").cumcount().reindex(ratings.index[order])
    count = ratings.groupby("user_id")["item_id"].transform("size")
    held = (rank.sort_index() < np.floor(0.2 * count)) & (count > 1)
    args.out.mkdir(parents=True, exist_ok=True)
    header = {"user_id": "userId", "item_id": "movieId", "rating": "rating"}
    for name, part in (("train", ratings[~held]), ("test", ratings[held])):
        frame = part[["user_id", "item_id", "rating"]].rename(columns=header)
        frame["timestamp"] = 0
        frame.to_csv(args.out / f"{name}.csv", index=False)
    per_item = ratings[~held].groupby("item_id").size()
    print(
        f"{len(ratings)} ratings kept of 100000: {int((~held).sum())} training, "
        f"{int(held.sum())} test; {ratings['user_id'].nunique()} users, "
        f"{per_item.size} items, {float((per_item <= 2).mean()):.0%} of them rated at most "
        f"twice in training; written to {args.out}"
    )


if __name__ == "__main__":
    main()
