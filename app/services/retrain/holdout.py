"""The stable hold-out: which ratings a retrain keeps out of training to evaluate on.

A rating is held out when a hash of its (user, item) falls in the lowest
:data:`HOLDOUT_FRACTION` (about 10% of each user's ratings). The split is stable:
a held-out rating is held out in every run, so the active model (trained by an
earlier run) never trained on the ratings it is now evaluated on, and comparing
candidate and active version is fair.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from app.db.snapshot import RatingsSnapshot
from rbm_core.data import RatingMatrix
from rbm_core.scale import RatingScale

__all__ = ["HOLDOUT_FRACTION", "HoldOut", "holdout_mask", "split_snapshot"]

HOLDOUT_FRACTION: Final = 0.1
"""Share of ratings held out for validation (by a stable hash of user and item)."""

_HASH_BUCKETS: Final = 1_000_000


def holdout_mask(
    user_ids: NDArray[Any], item_ids: NDArray[Any], fraction: float = HOLDOUT_FRACTION
) -> NDArray[np.bool_]:
    """Which ratings are held out: a stable hash of (user, item), same in every run.

    A user all of whose ratings hash into the hold-out keeps them for training
    (there would be nothing to fold in for them).

    Parameters
    ----------
    user_ids, item_ids : ndarray of str, shape (n_ratings,)
        Who rated what.
    fraction : float
        Share held out, in (0, 1).

    Returns
    -------
    ndarray of bool, shape (n_ratings,)
        ``True`` for held-out ratings.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    if len(user_ids) == 0:
        return np.zeros(0, dtype=bool)
    frame = pd.DataFrame({"user": user_ids, "item": item_ids}, copy=False)
    # pandas' hash is SipHash with a fixed key: the same on every run and host.
    hashes = pd.util.hash_pandas_object(frame, index=False, categorize=False).to_numpy()
    held: NDArray[np.bool_] = (hashes % _HASH_BUCKETS) < int(fraction * _HASH_BUCKETS)
    codes, _ = pd.factorize(user_ids)
    kept_per_user = np.bincount(codes, weights=(~held).astype(np.float64))
    held &= kept_per_user[codes] > 0
    return held


@dataclass(frozen=True)
class HoldOut:
    """A snapshot split for one retrain.

    Attributes
    ----------
    train : RatingMatrix
        The ratings models are trained on; users are folded in from them.
    validation : RatingMatrix or None
        The held-out ratings of items in ``train``, for the model's early stopping
        and curves (``None`` when there are none).
    held : pandas.DataFrame
        Every held-out rating: columns ``user_id``, ``item_id`` (str), ``rating``.
        What the promotion gate scores models on.
    """

    train: RatingMatrix
    validation: RatingMatrix | None
    held: pd.DataFrame

    @property
    def n_held(self) -> int:
        """Number of held-out ratings."""
        return len(self.held)

    @property
    def ratings(self) -> NDArray[np.float64]:
        """The held-out ratings' values, in the order of :attr:`held`."""
        return self.held["rating"].to_numpy(dtype=np.float64)


def split_snapshot(snapshot: RatingsSnapshot, scale: RatingScale) -> HoldOut:
    """Split a snapshot into training ratings and the stable hold-out.

    Raises
    ------
    RatingScaleError
        A rating of the store is not on ``scale`` (the scale changed since it was written).
    """
    held = holdout_mask(snapshot.user_ids, snapshot.item_ids)
    kept = ~held
    train = RatingMatrix.from_arrays(
        snapshot.user_ids[kept].astype(str),
        snapshot.item_ids[kept].astype(str),
        snapshot.ratings[kept],
        scale,
    )
    held_users = snapshot.user_ids[held].astype(str)
    held_items = snapshot.item_ids[held].astype(str)
    held_ratings = snapshot.ratings[held]
    validation = None
    if held.any():
        validation = RatingMatrix.from_arrays(
            held_users, held_items, held_ratings, scale, item_catalog=train.item_ids
        )
        if validation.n_ratings == 0:
            validation = None
    held_frame = pd.DataFrame(
        {"user_id": held_users, "item_id": held_items, "rating": held_ratings}
    )
    return HoldOut(train=train, validation=validation, held=held_frame)
