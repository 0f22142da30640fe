"""Speed of the BernoulliRBM: its elementwise kernels, and training on sparse implicit data.

Kernels, on float32 arrays of the two shapes a batch takes (10 x 100: a digits batch's
hidden layer; 100 x 20,000: an implicit-feedback batch's visible layer), process CPU
time per call, median of 5 repeats:

- ``functional.sigmoid`` against ``scipy.special.expit``,
- ``functional.softplus`` against ``np.logaddexp(0, x)``,
- ``functional.sample_bernoulli`` against ``(draws < p).astype(float32)``.

Training: one epoch of ``BernoulliRBM(n_hidden=100, batch_size=100)``, CD-1 and PCD-1,
on a synthetic users x items CSR matrix of 1s ("rated") with power-law item
popularity (10,000 users x 20,000 items, 1 % filled, by default): seconds (wall and
CPU) and the peak memory allocated during the epoch (tracemalloc), against the size
the matrix would have dense. Usage::

    python benchmarks/bernoulli_speed.py
    python benchmarks/bernoulli_speed.py --users 100000 --items 20000 --density 0.005
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.special import expit
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rbm_core import BernoulliRBM  # noqa: E402
from rbm_core import functional as fn  # noqa: E402


def cpu_per_call(call: Callable[[], object], seconds: float = 0.2) -> float:
    """Median over 5 repeats of the CPU time per call (calls repeated for ``seconds``)."""
    start = time.process_time()
    call()
    once = max(time.process_time() - start, 1e-6)
    number = max(1, int(seconds / once))
    times = []
    for _ in range(5):
        start = time.process_time()
        for _ in range(number):
            call()
        times.append((time.process_time() - start) / number)
    return float(np.median(times))


def kernel_pairs(
    x: np.ndarray, p: np.ndarray, rng: np.random.Generator
) -> dict[str, tuple[Callable[[], object], Callable[[], object]]]:
    """Each kernel of rbm_core and the plain numpy / scipy way it replaces."""
    return {
        "sigmoid / expit": (lambda: fn.sigmoid(x), lambda: expit(x)),
        "softplus / logaddexp": (lambda: fn.softplus(x), lambda: np.logaddexp(np.float32(0), x)),
        "sample_bernoulli / astype": (
            lambda: fn.sample_bernoulli(p, rng),
            lambda: (rng.random(p.shape, dtype=np.float32) < p).astype(np.float32),
        ),
    }


def kernels() -> None:
    rng = np.random.default_rng(0)
    print("kernel                      shape          rbm_core    reference   speed-up")
    for shape in ((10, 100), (100, 20_000)):
        x = (rng.standard_normal(shape) * 4).astype(np.float32)
        p = rng.random(shape, dtype=np.float32)
        for name, (ours, reference) in kernel_pairs(x, p, rng).items():
            a, b = cpu_per_call(ours), cpu_per_call(reference)
            print(
                f"{name:27s} {f'{shape[0]} x {shape[1]}':14s} {a * 1e6:8.1f} us "
                f"{b * 1e6:8.1f} us {b / a:7.1f}x"
            )


def implicit_matrix(n_users: int, n_items: int, density: float, seed: int = 0) -> sp.csr_matrix:
    """1s where a user "rated" an item; item popularity falls as rank ** -0.8."""
    rng = np.random.default_rng(seed)
    popularity = np.arange(1, n_items + 1, dtype=np.float64) ** -0.8
    popularity /= popularity.sum()
    n_ratings = int(density * n_users * n_items)
    users = rng.integers(0, n_users, n_ratings)
    items = rng.choice(n_items, size=n_ratings, p=popularity)
    matrix = sp.csr_matrix(
        (np.ones(n_ratings, np.float32), (users, items)), shape=(n_users, n_items)
    )
    matrix.data[:] = 1.0  # repeated (user, item) pairs were summed
    return matrix


def training(n_users: int, n_items: int, density: float) -> None:
    X = implicit_matrix(n_users, n_items, density)
    dense_mb = X.shape[0] * X.shape[1] * 4 / 2**20
    filled = X.nnz / (X.shape[0] * X.shape[1])
    print(
        f"\n{n_users:,} users x {n_items:,} items, {X.nnz:,} ones ({filled:.2%}); "
        f"dense float32 it would take {dense_mb:,.0f} MiB"
    )
    print("one epoch, n_hidden=100, batch_size=100   wall s    CPU s   peak MiB during fit")
    for persistent in (False, True):
        model = BernoulliRBM(n_hidden=100, batch_size=100, n_epochs=1, persistent=persistent)
        tracemalloc.start()
        wall, cpu = time.perf_counter(), time.process_time()
        model.set_params(random_state=0).fit(X)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        name = "PCD-1" if persistent else "CD-1"
        print(f"{name:40s} {wall:8.2f} {cpu:8.2f} {peak / 2**20:10.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--density", type=float, default=0.01)
    args = parser.parse_args()
    with threadpool_limits(1, user_api="blas"):
        kernels()
    training(args.users, args.items, args.density)


if __name__ == "__main__":
    main()
