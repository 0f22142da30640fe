"""The ranker variants tried on validation data (docs/model.md, "How the ranker was chosen").

Every variant is trained on 80 % of each user's ratings of an ML-100K training fold and
scored on the other 20 % (relevant: held-out ratings >= 4), never on the test fold:

- ``rated``: a Bernoulli RBM over the binary "rated" vector (the issue's prototype);
- ``liked``: over the "rated >= 4" vector only;
- ``rated+liked``: over both (2M units), scored by the sum of both log-odds (served);
- ``multinomial``: a replicated-softmax RBM (one softmax over all items, D draws;
  mean-field negative phase), scored by the softmax logits;
- ``softmax-k1``: one (K+1)-way softmax per item (unrated, 1..5) over all items,
  scored by log P(4) + P(5).

Each prints the held-out NDCG@10 of the plain score (``beta = 1``), of the best
popularity weight ``beta``, and, for the served variant, with the rating RBM's
``omega log P(high)`` and the evidence scaling, as the served model chooses them.

    python benchmarks/experiments/ranker_variants.py --data ../shared/datasets/ml-100k --fold 1
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.special import expit, log_softmax

from rbm_core import RatingMatrix, RatingScale
from rbm_core.bernoulli import BernoulliRBM
from rbm_core.metrics import ndcg_of_scores
from rbm_core.model import SoftmaxRBM
from rbm_core.movielens import read_ratings
from rbm_core.ranker import RBMRanker, visible_matrix
from rbm_core.recommender_training import high_probability, ranking_scores
from rbm_core.references import EASE_L2_GRID, ease_weights
from rbm_core.training import aligned_rows

SCALE = RatingScale.parse("1..5")
BETAS = (1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0)


def _bernoulli(visible: sp.csr_matrix, seed: int) -> BernoulliRBM:
    rbm = BernoulliRBM(
        n_hidden=200,
        learning_rate=0.01,
        momentum=0.9,
        weight_decay=0.01,
        batch_size=50,
        n_epochs=40,
        random_state=seed,
    )
    return rbm.fit(visible)


def _logits(rbm: BernoulliRBM, visible: sp.csr_matrix) -> np.ndarray:
    return expit(visible @ rbm.weights_ + rbm.hidden_bias_) @ rbm.weights_.T + rbm.visible_bias_


def _softmax_family(dense: np.ndarray, kind: str, seed: int, epochs: int = 40) -> np.ndarray:
    """Replicated softmax or (K+1)-softmax trained by CD-1 with mean-field negatives."""
    rng = np.random.default_rng(seed)
    n, d = dense.shape
    f, lr, mom, decay = 200, 0.01, 0.9, 0.01
    w = (0.01 * rng.standard_normal((d, f))).astype(np.float32)
    b = np.log(dense.mean(0) + 1e-3).astype(np.float32)
    c = np.zeros(f, np.float32)
    vw, vb, vc = np.zeros_like(w), np.zeros_like(b), np.zeros_like(c)
    groups = d if kind == "multinomial" else d // 5
    for _ in range(epochs):
        order = rng.permutation(n)
        for lo in range(0, n, 50):
            v0 = dense[order[lo : lo + 50]]
            h0 = expit(v0 @ w + c)
            h = (rng.random(h0.shape) < h0).astype(np.float32)
            logits = h @ w.T + b
            if kind == "multinomial":
                vk = np.exp(log_softmax(logits, axis=1)) * v0.sum(1, keepdims=True)
            else:  # five levels per item plus an implicit "unrated" state of logit 0
                z = logits.reshape(len(v0), groups, 5)
                top = np.maximum(z.max(2, keepdims=True), 0)
                e = np.exp(z - top)
                vk = (e / (np.exp(-top) + e.sum(2, keepdims=True))).reshape(len(v0), d)
            hk = expit(vk @ w + c)
            m = len(v0)
            vw = mom * vw + lr * ((v0.T @ h0 - vk.T @ hk) / m - decay * w)
            vb = mom * vb + lr * (v0 - vk).mean(0)
            vc = mom * vc + lr * (h0 - hk).mean(0)
            w += vw
            b += vb
            c += vc
    logits = expit(dense @ w + c) @ w.T + b
    if kind == "multinomial":
        return logits
    z = logits.reshape(n, groups, 5)
    return np.logaddexp(z[:, :, 3], z[:, :, 4])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the ML-100K directory")
    parser.add_argument("--fold", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", default="rated,liked,rated+liked,multinomial,softmax-k1")
    args = parser.parse_args()
    train = RatingMatrix.from_frame(read_ratings(args.data / f"u{args.fold}.base"), SCALE)
    kept, held = train.split(0.2, 100 + args.fold)
    codes = aligned_rows(kept, held.user_ids)
    relevant = sp.csr_matrix(held.with_item_catalog(kept.item_ids).values >= 4)
    m = kept.n_items
    print(f"ML-100K u{args.fold}.base: {kept.n_ratings} training, {held.n_ratings} held-out")

    def report(name: str, personal: np.ndarray, bias: np.ndarray, started: float) -> None:
        scores = {beta: ndcg_of_scores(personal + beta * bias, codes, relevant) for beta in BETAS}
        best = max(scores, key=lambda beta: scores[beta])
        print(
            f"{name:<12} NDCG@10 beta=1 {scores[1.0]:.4f}  best beta={best:g} {scores[best]:.4f}"
            f"  ({time.perf_counter() - started:.1f} s)"
        )

    for variant in args.variants.split(","):
        start = time.perf_counter()
        if variant in {"rated", "liked", "rated+liked"}:
            full = visible_matrix(kept.codes, 4)
            columns = {"rated": slice(0, m), "liked": slice(m, 2 * m), "rated+liked": slice(None)}
            visible = full[:, columns[variant]]
            rbm = _bernoulli(visible, args.seed)
            logits = _logits(rbm, visible_matrix(codes, 4)[:, columns[variant]])
            bias = rbm.visible_bias_
            if variant == "rated+liked":
                personal = (logits[:, :m] - bias[:m]) + (logits[:, m:] - bias[m:])
                report(variant, personal, bias[:m] + bias[m:], start)
            else:
                report(variant, logits - bias, bias, start)
        elif variant in {"multinomial", "softmax-k1"}:
            if variant == "multinomial":
                dense = (kept.codes > 0).astype(np.float32).toarray()
            else:
                one_hot = np.zeros((kept.n_users, m, 5), np.float32)
                rows, cols, levels = kept.triples()
                one_hot[rows, cols, levels] = 1
                dense = one_hot.reshape(kept.n_users, m * 5)
            logits = _softmax_family(dense, variant, args.seed)
            rows = np.searchsorted(kept.user_ids, held.user_ids)
            report(variant, logits[rows], np.zeros(m), start)
        else:
            raise SystemExit(f"unknown variant {variant!r}")

    # the reference: EASE with lambda chosen on this very split
    start = time.perf_counter()
    binary = (kept.codes > 0).astype(np.float64)
    inputs = (codes > 0).astype(np.float64)
    ease = max(
        (ndcg_of_scores(inputs @ ease_weights(binary, l2), codes, relevant), l2)
        for l2 in EASE_L2_GRID
    )
    print(
        f"{'EASE':<12} NDCG@10 {ease[0]:.4f} at lambda={ease[1]:g} "
        f"({time.perf_counter() - start:.1f} s)"
    )

    # the served combination: the ranker, the rating RBM's P(high), evidence scaling
    start = time.perf_counter()
    ranker = RBMRanker(random_state=args.seed).fit(kept)
    rating = SoftmaxRBM(implicit_input=True, random_state=args.seed).fit(kept)
    p_high = high_probability(rating, codes, 4.0)
    best = max(
        (
            ndcg_of_scores(
                ranking_scores(
                    ranker.personal_scores(codes, evidence_exponent=0.0),
                    ranker.item_bias,
                    p_high,
                    beta,
                    omega,
                ),
                codes,
                relevant,
            ),
            beta,
            omega,
        )
        for beta in BETAS
        for omega in (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)
    )
    print(
        f"{'served':<12} rated+liked with omega log P(high): best NDCG@10 {best[0]:.4f} at "
        f"beta={best[1]:g} omega={best[2]:g} ({time.perf_counter() - start:.1f} s)"
    )


if __name__ == "__main__":
    main()
