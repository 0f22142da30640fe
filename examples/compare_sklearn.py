"""rbm_core's BernoulliRBM and scikit-learn's side by side on the digits: quality and speed.

    pip install -e '.[examples]'
    python examples/compare_sklearn.py [--runs 5] [--epochs 20] [--batch-size 10]
        [--learning-rate 0.1] [--output examples/output]

Same data (the split and float32 images of reconstruct_digits.py) and settings: 100
hidden units, learning rate 0.1, batches of 10, 20 epochs by default. scikit-learn's RBM trains
by persistent CD-1 without momentum or weight decay; rbm_core is run with exactly
that (``persistent=True, momentum=0, weight_decay=0``), and with its own defaults
(CD-1, momentum 0.5, weight decay 1e-4). Each run uses seed = run number; the
table gives the median over the runs of

- the reconstruction error of the held-out images (mean squared error per pixel of
  ``p(v | p(h | v))``),
- their pseudo-likelihood as each library's ``score_samples`` estimates it (one
  random pixel per image, times 64), and exactly (the sum over all 64 pixels of
  ``log p(v_i | v_-i)``, computed with the same function for both),
- the fit time (wall clock and process CPU time; the runs alternate between the
  models so that a busy machine slows them alike). rbm_core trains with one BLAS
  thread; scikit-learn is timed with the BLAS default and with one thread.

It also writes ``compare.png``: held-out digits, both reconstructions, both sets of
filters.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import sklearn
from reconstruct_digits import argument_parser, filters, load_split, mosaic, save
from sklearn.neural_network import BernoulliRBM as SklearnRBM
from threadpoolctl import threadpool_limits

from rbm_core import BernoulliRBM
from rbm_core import bernoulli_functional as bf
from rbm_core import functional as fn

Parameters = tuple[np.ndarray, np.ndarray, np.ndarray]
"""W (n_features, n_hidden), visible biases, hidden biases."""


def ours_like_sklearn(settings: dict[str, Any], seed: int) -> BernoulliRBM:
    return BernoulliRBM(
        **settings, persistent=True, momentum=0.0, weight_decay=0.0, random_state=seed
    )


def ours_defaults(settings: dict[str, Any], seed: int) -> BernoulliRBM:
    return BernoulliRBM(**settings, random_state=seed)


def theirs(settings: dict[str, Any], seed: int) -> SklearnRBM:
    return SklearnRBM(
        n_components=settings["n_hidden"],
        learning_rate=settings["learning_rate"],
        batch_size=settings["batch_size"],
        n_iter=settings["n_epochs"],
        random_state=seed,
    )


MODELS: dict[str, tuple[Callable[[dict[str, Any], int], Any], int | None]] = {
    "rbm_core, PCD-1 as scikit-learn": (ours_like_sklearn, None),
    "rbm_core, defaults (CD-1, momentum)": (ours_defaults, None),
    f"scikit-learn {sklearn.__version__}": (theirs, None),
    f"scikit-learn {sklearn.__version__}, 1 BLAS thread": (theirs, 1),
}
"""name: (factory, BLAS threads during fit: None for the library's own choice).

rbm_core trains with one BLAS thread (``blas_threads=1``); scikit-learn with the
BLAS default (here every core), and once more limited to one thread like rbm_core.
"""


def parameters(model: Any) -> Parameters:
    if isinstance(model, BernoulliRBM):
        return model.weights_, model.visible_bias_, model.hidden_bias_
    return model.components_.T, model.intercept_visible_, model.intercept_hidden_


def reconstruction(params: Parameters, X: np.ndarray) -> np.ndarray:
    w, b, c = params
    return bf.visible_probabilities(fn.hidden_probabilities(X, w, c), w, b)


def full_pseudo_likelihood(params: Parameters, X: np.ndarray) -> float:
    """Mean over images of sum_i log p(v_i | v_-i), every pixel i (no sampling)."""
    m = X.shape[1]
    total = sum(
        bf.pseudo_log_likelihood(X, *params, np.full(len(X), i, dtype=np.int64)) for i in range(m)
    )
    return float(np.mean(total) / m)


def measure(
    model: Any, threads: int | None, train: np.ndarray, held_out: np.ndarray
) -> dict[str, float]:
    limit = threadpool_limits(threads, user_api="blas") if threads else nullcontext()
    wall, cpu = time.perf_counter(), time.process_time()
    with limit:
        model.fit(train)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    params = parameters(model)
    return {
        "reconstruction error": float(np.mean((reconstruction(params, held_out) - held_out) ** 2)),
        "score_samples": float(np.mean(model.score_samples(held_out))),
        "pseudo-likelihood": full_pseudo_likelihood(params, held_out),
        "fit seconds": wall,
        "fit CPU seconds": cpu,
    }


def draw(models: dict[str, Any], held_out: np.ndarray, path: Path) -> None:
    """compare.png: originals, each model's reconstructions and filters."""
    shown = held_out[:16]
    rows: list[tuple[str, np.ndarray, str]] = [
        ("held-out digits", mosaic(shown, 16, 0.3), "gray_r")
    ]
    models = {name: model for name, model in models.items() if "thread" not in name}
    for name, model in models.items():
        params = parameters(model)
        rows.append(
            (f"{name}: reconstructions", mosaic(reconstruction(params, shown), 16, 0.3), "gray_r")
        )
    fig = plt.figure(figsize=(12, 8))
    grid = fig.add_gridspec(len(rows) + 2, len(models), height_ratios=[1] * len(rows) + [5, 0.1])
    for k, (title, image, cmap) in enumerate(rows):
        ax = fig.add_subplot(grid[k, :])
        ax.imshow(image, cmap=cmap, vmin=0.0, vmax=1.0)
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    for k, (name, model) in enumerate(models.items()):
        ax = fig.add_subplot(grid[len(rows), k])
        ax.imshow(mosaic(filters(parameters(model)[0]), 10), cmap="gray", vmin=0.0, vmax=1.0)
        ax.set_title(f"{name}: filters", fontsize=9)
        ax.set_axis_off()
    fig.subplots_adjust(left=0.02, right=0.98, top=0.96, bottom=0.01, hspace=0.35)
    save(fig, path)


def main(argv: list[str] | None = None) -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--learning-rate", type=float, default=0.1)
    args = parser.parse_args(argv)

    train, held_out = load_split()
    settings = {
        "n_hidden": 100,
        "learning_rate": args.learning_rate,
        "batch_size": args.batch_size,
        "n_epochs": args.epochs,
    }
    # warm up both libraries (imports, BLAS, first allocations) outside the timings
    for make, _ in MODELS.values():
        make({**settings, "n_epochs": 1}, 0).fit(train[:100])
    results: dict[str, list[dict[str, float]]] = {name: [] for name in MODELS}
    last: dict[str, Any] = {}
    names = list(MODELS)
    for run in range(args.runs):
        for name in names[run % len(names) :] + names[: run % len(names)]:
            make, threads = MODELS[name]
            model = make(settings, run)
            results[name].append(measure(model, threads, train, held_out))
            last[name] = model
    print(
        f"{len(train)} training and {len(held_out)} held-out digits; {settings}; "
        f"median of {args.runs} runs (seeds 0-{args.runs - 1})\n"
    )
    columns = list(results[names[0]][0])
    print("| model | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for name, runs in results.items():
        cells = [f"{np.median([r[c] for r in runs]):.4f}" for c in columns]
        print(f"| {name} | " + " | ".join(cells) + " |")
    args.output.mkdir(parents=True, exist_ok=True)
    draw(last, held_out, args.output / "compare.png")
    print(f"\nwrote {args.output / 'compare.png'}")


if __name__ == "__main__":
    main()
