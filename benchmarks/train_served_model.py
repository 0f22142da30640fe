"""Training time of the served model (RBMRecommender) on one ML-100K fold, search included.

Prints, for each run, the wall and CPU seconds of ``fit`` and where the time went (every
search trial, the rest: blend and ranking weights, retraining on all the ratings); then
the CPU time of what a recommendation request asks of the model for one user (fold-in
and ranking scores of every item, the expected ratings of the ten items returned), of
``predict`` for 20 items, and of the item RBM's fold-in alone, each the median over 300
training users with every fold-in cold.

    RBMREC_MOVIELENS_DIR=../shared/datasets/ml-100k python benchmarks/train_served_model.py
    python benchmarks/train_served_model.py --movielens-dir path/to/ml-100k --runs 3
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

from threadpoolctl import threadpool_limits

from rbm_core import DEFAULT_SCALE, RatingMatrix, RBMRecommender
from rbm_core.movielens import read_ratings


def per_user(model: RBMRecommender, train: RatingMatrix) -> None:
    """CPU milliseconds per user of the model's work behind the two GET routes.

    With one BLAS thread, as each API process scores (app/api/main.py), and the item
    RBM's memory of fold-ins off, so that every fold-in is cold (a user whose ratings
    just changed, or one the process has not seen).
    """
    users = [train.user_ratings(str(u)) for u in train.user_ids[:300]]
    items = [str(i) for i in train.item_ids[:20]]
    rank: list[float] = []
    predict: list[float] = []
    fold_in: list[float] = []
    item_rbm = model.item_rbm_
    kept = item_rbm.fold_in_cache_size
    item_rbm.set_params(fold_in_cache_size=0)
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            _time_users(model, users, items, rank, predict, fold_in)
    finally:
        item_rbm.set_params(fold_in_cache_size=kept)
    print(
        f"  per user (median of {len(users)}): recommendations "
        f"{1000 * statistics.median(rank):.2f} ms CPU, predictions of 20 items "
        f"{1000 * statistics.median(predict):.2f} ms CPU; of which the item RBM's fold-in "
        f"{1000 * statistics.median(fold_in):.2f} ms (slowest "
        f"{1000 * max(fold_in):.2f} ms, {max(len(u) for u in users)} ratings at most)"
    )


def _time_users(
    model: RBMRecommender,
    users: list[dict[str, float]],
    items: list[str],
    rank: list[float],
    predict: list[float],
    fold_in: list[float],
) -> None:
    for ratings in users:
        # what GET /users/{id}/recommendations asks (app/services/recommend.py): the
        # ranking of every item, then the expected ratings of the ten returned
        start = time.process_time()
        scores = model.score_items(ratings, predicted=False)
        scores.expected_at(scores.score.argsort()[::-1][:10])
        rank.append(time.process_time() - start)
        start = time.process_time()
        model.predict(ratings, items)
        predict.append(time.process_time() - start)
        start = time.process_time()
        model.item_rbm_.predict(ratings, items[:1])
        fold_in.append(time.process_time() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--movielens-dir", default=os.environ.get("RBMREC_MOVIELENS_DIR"))
    parser.add_argument("--fold", type=int, default=1)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not args.movielens_dir:
        print("skipped: give --movielens-dir or set RBMREC_MOVIELENS_DIR (ML-100K)")
        return
    path = Path(args.movielens_dir) / f"u{args.fold}.base"
    if not path.is_file():
        sys.exit(f"error: {path} not found")
    train = RatingMatrix.from_frame(read_ratings(path), DEFAULT_SCALE)
    size = f"{train.n_ratings} ratings, {train.n_users} users, {train.n_items} items"
    print(f"u{args.fold}.base: {size}")
    for run in range(args.runs):
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        model = RBMRecommender(random_state=args.seed + run).fit(train)
        wall = time.perf_counter() - start
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        trials = model.search_["trials"]
        searched = sum(t["seconds"] for t in trials)
        print(
            f"run {run + 1}: fit {wall:.1f} s wall, {cpu:.1f} s CPU; search {searched:.1f} s "
            f"({len(trials)} trials, budget {model.search_['budget_seconds']:.0f} s), "
            f"weights and retraining {wall - searched:.1f} s"
        )
        per_user(model, train)
        for trial in trials:
            held_out = f"held-out {trial['score']:.4f}  epochs {trial['epochs']}"
            print(f"  {trial['part']:<9} {trial['seconds']:6.1f} s  {held_out}")


if __name__ == "__main__":
    main()
