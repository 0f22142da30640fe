"""Training speed of SoftmaxRBM: seconds per epoch, total fit time and peak memory.

Cases:

``ml100k``
    MovieLens 100K fold u1 (80,000 ratings) with the default hyperparameters: the full
    default training.
``synthetic-1m`` / ``synthetic-10m``
    Synthetic ratings with power-law item popularity and user activity (10,000 users x
    5,000 items, and 100,000 users x 10,000 items), rating levels drawn from a
    low-rank model; a few epochs of default training, to measure seconds per epoch.

Each case runs in a fresh subprocess so its peak resident memory (``ru_maxrss``,
which includes the data) is its own; the peak of the memory allocated during ``fit``
alone (tracemalloc, which sees numpy's buffers; on a separate one-epoch fit) is
printed too. Usage::

    python benchmarks/train_speed.py                      # every case
    python benchmarks/train_speed.py --cases ml100k --epochs 3
    RBMREC_BENCH_MOVIELENS_DIR=path/to/ml-100k python benchmarks/train_speed.py
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rbm_core import DEFAULT_SCALE, RatingMatrix, SoftmaxRBM  # noqa: E402

CASES = {
    "ml100k": None,
    "synthetic-1m": (10_000, 5_000, 1_000_000),
    "synthetic-10m": (100_000, 10_000, 10_000_000),
}
DEFAULT_EPOCHS = {"ml100k": None, "synthetic-1m": 3, "synthetic-10m": 2}


def movielens_dir() -> Path:
    env = os.environ.get("RBMREC_BENCH_MOVIELENS_DIR") or os.environ.get(
        "RBMREC_TEST_MOVIELENS_DIR"
    )
    return Path(env) if env else ROOT.parent / "shared" / "datasets" / "ml-100k"


def synthetic(n_users: int, n_items: int, n_ratings: int, seed: int = 0) -> RatingMatrix:
    """Power-law users and items; levels from a noisy rank-5 model, on the 1..5 scale.

    The matrix is assembled from integer codes (zero-padded ids sort like their
    numbers), so building it costs little memory next to the training itself.
    """
    rng = np.random.default_rng(seed)
    user_w = 1.0 / np.arange(1, n_users + 1) ** 0.7
    item_w = 1.0 / np.arange(1, n_items + 1) ** 0.9
    # heavy heads repeat pairs: over-draw, keep distinct pairs
    n_draw = int(n_ratings * 1.6)
    users = rng.choice(n_users, size=n_draw, p=user_w / user_w.sum())
    items = rng.choice(n_items, size=n_draw, p=item_w / item_w.sum())
    key = np.unique(users.astype(np.int64) * n_items + items)
    del users, items
    key = np.sort(rng.permutation(key)[:n_ratings])
    users, items = key // n_items, key % n_items
    del key
    pu = rng.normal(size=(n_users, 5)).astype(np.float32)
    qi = rng.normal(size=(n_items, 5)).astype(np.float32)
    score = (pu[users] * qi[items]).sum(axis=1) + rng.normal(size=len(users)).astype(np.float32)
    codes = np.clip(np.round(3 + score / 1.5), 1, 5).astype(np.int8)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(users, minlength=n_users))])
    matrix = sp.csr_matrix((codes, items.astype(np.int32), indptr), shape=(n_users, n_items))
    return RatingMatrix(
        np.char.add("u", np.char.zfill(np.arange(n_users).astype(str), 7)),
        np.char.add("i", np.char.zfill(np.arange(n_items).astype(str), 6)),
        DEFAULT_SCALE,
        matrix,
    )


def single_user_latency(model: SoftmaxRBM, train: RatingMatrix) -> dict[str, float]:
    """Median milliseconds of one user's predict / score_items / recommend (200 users).

    Each call folds in one training user's ratings and scores every item.
    """
    rng = np.random.default_rng(1)
    users = [
        train.user_ratings(str(u))
        for u in rng.choice(train.user_ids, size=min(200, train.n_users), replace=False)
    ]
    out = {}
    calls = {
        "predict": lambda r: model.predict(r),
        "score_items": lambda r: model.score_items(r),
        "recommend": lambda r: model.recommend(r, n=10),
    }
    # one BLAS thread per request, as the API process runs it
    with threadpool_limits(limits=1, user_api="blas"):
        for name, call in calls.items():
            times = []
            for ratings in users:
                start = time.perf_counter()
                call(ratings)
                times.append(time.perf_counter() - start)
            out[f"{name}_ms"] = round(float(np.median(times)) * 1e3, 3)
    return out


def run_case(name: str, epochs: int | None) -> dict[str, object]:
    start = time.perf_counter()
    if name == "ml100k":
        frame = pd.read_csv(
            movielens_dir() / "u1.base",
            sep="\t",
            names=["user_id", "item_id", "rating", "timestamp"],
        )
        train = RatingMatrix.from_frame(frame, DEFAULT_SCALE)
    else:
        train = synthetic(*CASES[name])  # type: ignore[misc]
    data_seconds = time.perf_counter() - start
    rss_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    params = {"random_state": 0}
    if epochs is not None:
        params["n_epochs"] = epochs
    model = SoftmaxRBM(**params)
    start = time.perf_counter()
    model.fit(train)
    fit_seconds = time.perf_counter() - start
    # tracing slows numpy down: measure the allocation peak on a separate 1-epoch fit
    tracemalloc.start()
    SoftmaxRBM(**{**params, "n_epochs": 1}).fit(train)
    _, fit_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    per_epoch = [h["seconds"] for h in model.history_]
    latency = single_user_latency(model, train)
    return {
        "case": name,
        "n_users": train.n_users,
        "n_items": train.n_items,
        "n_ratings": train.n_ratings,
        "epochs": model.n_epochs_,
        "data_seconds": round(data_seconds, 2),
        "fit_seconds": round(fit_seconds, 2),
        "seconds_per_epoch": round(float(np.median(per_epoch)), 3),
        "default_fit_seconds_estimate": round(
            float(np.median(per_epoch)) * SoftmaxRBM().n_epochs, 1
        ),
        "peak_rss_gib_data": round(rss_data, 3),
        "fit_allocated_peak_gib": round(fit_peak / 2**30, 3),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
        **latency,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated case names")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per case")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_case(args.child, args.epochs)))
        return
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    print(f"cpu cores: {os.cpu_count()}, OPENBLAS_NUM_THREADS={threads}")
    for name in args.cases.split(","):
        if name not in CASES:
            parser.error(f"unknown case {name!r}; choose from {', '.join(CASES)}")
        epochs = args.epochs if args.epochs is not None else DEFAULT_EPOCHS[name]
        cmd = [sys.executable, __file__, "--child", name]
        if epochs is not None:
            cmd += ["--epochs", str(epochs)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        result = json.loads(out.strip().splitlines()[-1])
        print(
            f"{name:14s} ratings={result['n_ratings']:>10,d} users={result['n_users']:>7,d} "
            f"items={result['n_items']:>6,d} epochs={result['epochs']:>3d} "
            f"s/epoch={result['seconds_per_epoch']:8.3f} fit={result['fit_seconds']:8.2f}s "
            f"(default {SoftmaxRBM().n_epochs} epochs ~{result['default_fit_seconds_estimate']}s) "
            f"peak RSS={result['peak_rss_gib']:.2f} GiB "
            f"(after data {result['peak_rss_gib_data']:.2f}, "
            f"fit allocations peak {result['fit_allocated_peak_gib']:.2f}); "
            f"one user: predict {result['predict_ms']} ms, score_items "
            f"{result['score_items_ms']} ms, recommend {result['recommend_ms']} ms",
            flush=True,
        )


if __name__ == "__main__":
    main()
