"""rbm_core.base: parameters, the item index, encoding and top-N shared by every estimator.

The behaviour every estimator must show is in test_estimator_contract.py; these are
the details of the shared plumbing itself.
"""

from __future__ import annotations

import numpy as np
import pytest

from rbm_core import DEFAULT_SCALE, RatingMatrix, SoftmaxRBM, UnknownItemError
from rbm_core.baselines import BiasBaseline, GlobalMean, Popularity


def _one_rating_per_item(n_items: int) -> RatingMatrix:
    items = [f"i{n:02d}" for n in range(n_items)]
    return RatingMatrix.from_arrays(
        [f"u{n}" for n in range(n_items)], items, [3.0] * n_items, DEFAULT_SCALE
    )


def test_hyperparameters_come_from_the_init_signature() -> None:
    assert BiasBaseline().get_params() == {"reg_user": 15.0, "reg_item": 10.0, "n_iter": 10}
    assert GlobalMean().get_params() == {}
    assert repr(Popularity(damping=2.0)) == "Popularity(by='count', damping=2.0)"
    assert list(SoftmaxRBM().get_params())[:3] == [
        "n_hidden",
        "learning_rate",
        "learning_rate_decay",
    ]
    model = BiasBaseline()
    assert model.set_params(n_iter=3) is model
    assert model.n_iter == 3
    with pytest.raises(ValueError, match="unknown hyperparameter 'n_iters'"):
        model.set_params(n_iters=3)


# item rating counts where argpartition alone returns a wrong set of 5 at the tie
TIED_COUNTS = [int(c) for c in "2111111323233223332113231233311313113222111123213223"]


def test_ties_at_the_cut_go_to_the_earlier_items() -> None:
    users, items = [], []
    for col, count in enumerate(TIED_COUNTS):
        users += [f"u{n}" for n in range(count)]
        items += [f"i{col:02d}"] * count
    model = Popularity().fit(
        RatingMatrix.from_arrays(users, items, [3.0] * len(users), DEFAULT_SCALE)
    )
    best = [f"i{c:02d}" for c, count in enumerate(TIED_COUNTS) if count == 3]
    assert [r.item_id for r in model.recommend({}, n=5)] == best[:5]
    top = model.recommend({best[0]: 3.0}, n=5, exclude=[best[2]])
    assert [r.item_id for r in top] == [best[1], *best[3:7]]
    assert model.recommend([{}, {best[1]: 1.0}], n=4) == [
        model.recommend({}, n=4),
        model.recommend({best[1]: 1.0}, n=4),
    ]


def test_encoding_keeps_one_row_per_user_and_reports_unknown_items() -> None:
    model = Popularity().fit(_one_rating_per_item(4))
    encoded = model._encode([{"i02": 5, "ghost": 1.0}, {}, {"i00": 2.0 + 1e-12, "i03": 1.0}])
    assert encoded.codes.shape == (3, 4)
    assert encoded.codes.toarray().tolist() == [[0, 0, 5, 0], [0, 0, 0, 0], [2, 0, 0, 1]]
    assert encoded.ignored == [["ghost"], [], []]
    items, levels, ignored = model._encode_one({"i03": 1.0, "i00": 4.0, "x": 2.0})
    assert (items.tolist(), levels.tolist(), ignored) == ([0, 3], [3, 0], ["x"])


def test_columns_of_items_asked_for() -> None:
    model = Popularity().fit(_one_rating_per_item(3))
    cols, names, unknown = model._columns(["i02", "nope", 7, "i00"])  # type: ignore[list-item]
    assert (cols.tolist(), names, unknown) == ([2, 0], ["i02", "i00"], ["nope", "7"])
    assert model._columns(None)[1] == ["i00", "i01", "i02"]
    assert model._column("i01") == 1
    with pytest.raises(UnknownItemError, match="unknown item id 'nope'"):
        model._column("nope")


def test_derived_values_are_rebuilt_after_a_refit() -> None:
    model = Popularity().fit(_one_rating_per_item(3))
    assert model._item_index == {"i00": 0, "i01": 1, "i02": 2}
    model.fit(_one_rating_per_item(2))
    assert model._item_index == {"i00": 0, "i01": 1}
    assert np.asarray(model.score_items({}).score).shape == (2,)
