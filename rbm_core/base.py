"""What every rbm_core estimator shares: parameters, item index, encoding, top-N, persistence.

Three layers, each adding one thing:

- :class:`BaseEstimator`: hyperparameters (``get_params`` / ``set_params`` / ``repr``,
  read from the ``__init__`` signature as scikit-learn does), the not-fitted check and
  the persistence hooks :mod:`rbm_core.artifact` uses (learned arrays and metadata).
- :class:`RatingEstimator`: a model of users' ratings of a catalog of items. It holds
  the item index (ids <-> columns) and the rating scale, and encodes one user's
  ratings (a mapping item id -> value) or a batch of users into level codes, the
  same codes as :class:`~rbm_core.data.RatingMatrix`. Ratings of unknown items are
  left out and reported, never an error.
- :class:`Recommender`: ``score_items``, ``score_batch`` and ``recommend`` (top-N with
  exclusions, one user or many), written once on top of one hook, :meth:`Recommender._score_codes`.

Hyperparameters are validated with the helpers of :mod:`rbm_core.checks`.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self, TypeVar, cast, overload

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from rbm_core.checks import check_positive_int
from rbm_core.data import RatingMatrix, UserRatings
from rbm_core.metrics import top_k
from rbm_core.scale import RatingScale, RatingScaleError

__all__ = [
    "BaseEstimator",
    "EncodedUsers",
    "ItemScores",
    "NotFittedError",
    "Prediction",
    "RatingEstimator",
    "RatingPrediction",
    "Recommendation",
    "Recommender",
    "UnknownItemError",
    "is_user_batch",
]

T = TypeVar("T")


# -- errors ---------------------------------------------------------------------------------
class NotFittedError(ValueError, AttributeError):
    """The model is used before ``fit`` (or ``load_model``) gave it weights."""


class UnknownItemError(KeyError):
    """An item id the model does not know was asked for where it cannot be ignored."""

    def __init__(self, item_id: str) -> None:
        super().__init__(item_id)
        self.item_id = item_id

    def __str__(self) -> str:
        return f"unknown item id {self.item_id!r}"


# -- records --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Recommendation:
    """One recommended item: its id, ranking score and expected rating."""

    item_id: str
    score: float
    predicted_rating: float


@dataclass(frozen=True)
class RatingPrediction:
    """Predicted ratings of one user for some items.

    Attributes
    ----------
    item_ids : list of str
        The known items asked for (or every model item), in order.
    expected : ndarray of shape (n,)
        Predicted (expected) rating of each item, in value units.
    unknown_items : list of str
        Items asked for that the model does not know (no prediction made).
    ignored_ratings : list of str
        Rated items the model does not know (left out of the fold-in).
    """

    item_ids: list[str]
    expected: NDArray[np.floating]
    unknown_items: list[str] = field(default_factory=list)
    ignored_ratings: list[str] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class Prediction(RatingPrediction):
    """A :class:`RatingPrediction` with a distribution over the rating levels.

    Attributes
    ----------
    distribution : ndarray of shape (n, K)
        ``p(rating = level k)`` for each item; rows sum to one, and ``expected`` is
        the expected rating under it.
    """

    distribution: NDArray[np.floating]


@dataclass(frozen=True)
class ItemScores:
    """Scores of one user for every model item (in ``model.item_ids_`` order).

    Attributes
    ----------
    score : ndarray of shape (n_items,)
        The ranking score ``recommend`` sorts by.
    expected : ndarray of shape (n_items,) or None
        Expected (predicted) rating; None when not asked for (see
        :meth:`Recommender.score_items`).
    rated : ndarray of bool, shape (n_items,)
        Items present in the user's ratings.
    ignored_ratings : list of str
        Rated items the model does not know.
    """

    score: NDArray[np.floating]
    expected: NDArray[np.floating] | None
    rated: NDArray[np.bool_]
    ignored_ratings: list[str] = field(default_factory=list)
    predict_columns: Callable[[NDArray[np.int64]], NDArray[np.floating]] | None = field(
        default=None, repr=False, compare=False
    )
    """The model's expected ratings of chosen columns for the same user (see
    :meth:`expected_at`)."""

    def expected_at(self, columns: NDArray[np.int64]) -> NDArray[np.floating]:
        """The expected ratings of the items at ``columns`` (of ``score``), for this user.

        What a page of recommendations shows beside the ranking: when the scores were
        computed without every item's expected rating, the model answers for these
        columns alone from the fold-in it already made, without encoding or folding in
        the user again.
        """
        if self.expected is not None:
            return self.expected[columns]
        if self.predict_columns is None:
            raise ValueError("these scores carry no expected ratings")
        return self.predict_columns(np.asarray(columns, dtype=np.int64))


@dataclass(frozen=True)
class EncodedUsers:
    """A batch of users' ratings on a model's items.

    Attributes
    ----------
    codes : scipy.sparse.csr_matrix of int8, shape (n_users, n_items_)
        Level index + 1 of each known rating (0 = not rated), sorted indices.
    ignored : list of list of str
        Per user, the rated items the model does not know.
    """

    codes: sp.csr_matrix
    ignored: list[list[str]]


def is_user_batch(obj: object) -> bool:
    """Whether ``obj`` is a sequence of users' ratings rather than one user's mapping."""
    return isinstance(obj, Sequence) and not isinstance(obj, str | bytes | Mapping)


# -- estimators -------------------------------------------------------------------------------
class BaseEstimator:
    """Hyperparameters, the fitted check and the persistence hooks of every estimator.

    Subclasses take their hyperparameters as keyword-only ``__init__`` arguments and
    store them unchanged under the same names; learned state ends in ``_``.

    Persistence: ``_array_attributes`` names the learned arrays (saved as ``.npy``
    files, loadable memory-mapped) and ``_metadata_attributes`` the learned values
    saved in JSON (numbers, strings, lists); both drop the trailing ``_`` on disk.
    Override :meth:`_artifact_state` / :meth:`_restore_artifact_state` for values that
    need converting, and :meth:`_check_restored` to check a loaded state.
    """

    _array_attributes: ClassVar[tuple[str, ...]] = ()
    _metadata_attributes: ClassVar[tuple[str, ...]] = ()

    # -- hyperparameters ------------------------------------------------------------------
    @classmethod
    def _param_names(cls) -> tuple[str, ...]:
        """The keyword arguments of ``__init__``, in order."""
        signature = inspect.signature(cls.__init__)
        return tuple(p.name for p in signature.parameters.values() if p.kind is p.KEYWORD_ONLY)

    def get_params(self) -> dict[str, Any]:
        """The hyperparameters, as passed to ``__init__``."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> Self:
        """Set hyperparameters by name; returns ``self``.

        Values derived from the learned state and the settings are built anew.
        """
        names = self._param_names()
        for name, value in params.items():
            if name not in names:
                raise ValueError(f"unknown hyperparameter {name!r}")
            setattr(self, name, value)
        self._reset_caches()
        return self

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({shown})"

    def _validate_params(self) -> None:
        """Raise ``ValueError`` naming the rule a hyperparameter breaks (none by default)."""

    # -- fitted state ---------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        """Whether the model has its learned state (from ``fit`` or ``load_model``)."""
        return all(
            hasattr(self, name) for name in self._array_attributes + self._metadata_attributes
        )

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet: call fit() or load_model() first"
            )

    def _cached(self, name: str, build: Callable[[], T]) -> T:
        """A value derived from the learned state, built once until :meth:`_reset_caches`."""
        cache: dict[str, Any] = self.__dict__.setdefault("_derived", {})
        if name not in cache:
            cache[name] = build()
        return cast("T", cache[name])

    def _reset_caches(self) -> None:
        self.__dict__.pop("_derived", None)

    # -- persistence hooks ----------------------------------------------------------------
    def _artifact_state(self) -> tuple[dict[str, NDArray[Any]], dict[str, Any]]:
        """The learned arrays and the learned JSON metadata to save, keys without ``_``."""
        arrays = {name.rstrip("_"): getattr(self, name) for name in self._array_attributes}
        metadata = {name.rstrip("_"): getattr(self, name) for name in self._metadata_attributes}
        return arrays, metadata

    def _restore_artifact_state(
        self, arrays: Mapping[str, NDArray[Any]], metadata: Mapping[str, Any]
    ) -> None:
        """Set the learned state from saved arrays and metadata (``KeyError`` if missing)."""
        for name in self._array_attributes:
            setattr(self, name, arrays[name.rstrip("_")])
        for name in self._metadata_attributes:
            setattr(self, name, metadata[name.rstrip("_")])
        self._reset_caches()

    def _check_restored(self) -> None:
        """Raise ``ValueError`` if a restored state is inconsistent (shapes, sizes)."""


class RatingEstimator(BaseEstimator, ABC):
    """A model of users' ratings of a catalog of items: item index, scale and encoding.

    ``fit(train)`` stores the catalog with :meth:`_store_catalog`. At inference time a
    user is a mapping item id -> rating value, folded in from the ratings given.

    Attributes
    ----------
    item_ids_ : ndarray of str, shape (n_items_,)
    scale_ : RatingScale
    n_items_, n_users_ : int
        Items and users of the training data.
    """

    _metadata_attributes: ClassVar[tuple[str, ...]] = ("n_items_", "n_users_")

    item_ids_: NDArray[np.str_]
    scale_: RatingScale
    n_items_: int
    n_users_: int

    @abstractmethod
    def fit(self, train: RatingMatrix) -> Self:
        """Learn from ``train``; returns ``self``."""

    def _store_catalog(self, train: RatingMatrix) -> None:
        self.item_ids_ = train.item_ids.copy()
        self.scale_ = train.scale
        self.n_items_ = train.n_items
        self.n_users_ = train.n_users
        self._reset_caches()

    @property
    def is_fitted(self) -> bool:
        """Whether the model has its learned state (from ``fit`` or ``load_model``)."""
        return hasattr(self, "item_ids_") and hasattr(self, "scale_") and super().is_fitted

    # -- the item index ---------------------------------------------------------------------
    @property
    def _item_index(self) -> dict[str, int]:
        """Item id -> column."""
        return self._cached(
            "item_index", lambda: {str(item): i for i, item in enumerate(self.item_ids_.tolist())}
        )

    def _item_names(self) -> list[str]:
        """The item ids as a list of str, in column order."""
        return self._cached("item_names", lambda: [str(i) for i in self.item_ids_.tolist()])

    def _column(self, item_id: object) -> int:
        """The column of a known item; :class:`UnknownItemError` otherwise."""
        col = self._item_index.get(item_id) if isinstance(item_id, str) else None
        if col is None:
            raise UnknownItemError(str(item_id))
        return col

    def _columns(
        self, item_ids: Sequence[str] | None
    ) -> tuple[NDArray[np.int64], list[str], list[str]]:
        """Columns and ids of the known items asked for (all by default), and the unknown ids."""
        if item_ids is None:
            return np.arange(self.n_items_, dtype=np.int64), list(self._item_names()), []
        if isinstance(item_ids, str):
            raise TypeError("item_ids must be a sequence of item ids, not a single string")
        index = self._item_index
        cols: list[int] = []
        names: list[str] = []
        unknown: list[str] = []
        for item in item_ids:
            col = index.get(item) if isinstance(item, str) else None
            if col is None:
                unknown.append(str(item))
            else:
                cols.append(col)
                names.append(item)
        return np.asarray(cols, dtype=np.int64), names, unknown

    def _excluded_columns(self, exclude: Iterable[str]) -> NDArray[np.bool_]:
        """A mask of the known items in ``exclude`` (unknown ids are fine)."""
        if isinstance(exclude, str):
            raise TypeError("exclude must be an iterable of item ids, not a single string")
        mask = np.zeros(self.n_items_, dtype=bool)
        index = self._item_index
        for item in exclude:
            col = index.get(item)
            if col is not None:
                mask[col] = True
        return mask

    # -- encoding users' ratings ------------------------------------------------------------
    def _encode_user(self, ratings: UserRatings) -> tuple[list[int], list[int], list[str]]:
        """Validate one user's ratings: (item columns, level indices, unknown item ids).

        Raises
        ------
        TypeError
            Not a mapping, or an item id that is not a string.
        RatingScaleError
            A rating that is not a number or not on the model's scale.
        """
        if not isinstance(ratings, Mapping):
            raise TypeError(
                f"user ratings must be a mapping item id -> rating, got {type(ratings).__name__}"
            )
        index = self._item_index
        # exact scale values (4 and 4.0 alike) by dict lookup; anything else goes
        # through RatingScale.indices_of, which accepts float noise and names bad values
        level_of = {value: k for k, value in enumerate(self.scale_.values.tolist())}
        cols: list[int] = []
        levels: list[int] = []
        inexact: list[tuple[int, float]] = []
        unknown: list[str] = []
        for item, value in ratings.items():
            # exact-type tests first: isinstance with a union costs twice this whole loop
            if type(item) is not str and not isinstance(item, str):
                raise TypeError(f"item ids must be strings, got {item!r}")
            if type(value) is not float and (
                isinstance(value, bool) or not isinstance(value, (int, float, np.number))
            ):
                raise RatingScaleError(f"rating for item {item!r} is not a number: {value!r}")
            col = index.get(item)
            if col is None:
                unknown.append(item)
                continue
            level = level_of.get(value)
            if level is None:
                inexact.append((len(levels), float(value)))
                level = -1
            cols.append(col)
            levels.append(level)
        if inexact:
            found = self.scale_.indices_of(np.asarray([v for _, v in inexact], dtype=np.float64))
            for (pos, _), level in zip(inexact, found.tolist(), strict=True):
                levels[pos] = level
        return cols, levels, unknown

    def _encode_one(
        self, user_ratings: UserRatings
    ) -> tuple[NDArray[np.int64], NDArray[np.int64], list[str]]:
        """One user's (item columns, level indices, unknown item ids), columns sorted.

        The same encoding as one row of :meth:`_encode`, without building a sparse
        matrix (which costs more than the rest of a single-user fold-in).
        """
        cols, user_levels, unknown = self._encode_user(user_ratings)
        items = np.asarray(cols, dtype=np.int64)
        levels = np.asarray(user_levels, dtype=np.int64)
        # column order, as in a CSR row: float sums over the rated items then do not
        # depend on the order of the mapping
        order = np.argsort(items, kind="stable")
        return items[order], levels[order], unknown

    def _encode(self, users: Sequence[UserRatings]) -> EncodedUsers:
        """Many users' ratings as level codes (see :class:`EncodedUsers`)."""
        rows: list[int] = []
        cols: list[int] = []
        levels: list[int] = []
        ignored: list[list[str]] = []
        for row, ratings in enumerate(users):
            user_cols, user_levels, unknown = self._encode_user(ratings)
            rows.extend([row] * len(user_cols))
            cols.extend(user_cols)
            levels.extend(user_levels)
            ignored.append(unknown)
        codes = sp.csr_matrix(
            (
                (np.asarray(levels, dtype=np.int64) + 1).astype(np.int8),
                (np.asarray(rows, dtype=np.int64), cols),
            ),
            shape=(len(users), self.n_items_),
        )
        codes.sort_indices()
        return EncodedUsers(codes, ignored)

    def _one_row(self, items: NDArray[np.int64], levels: NDArray[np.int64]) -> sp.csr_matrix:
        """One user's sorted columns and level indices as a (1, n_items_) code matrix."""
        return sp.csr_matrix(
            ((levels + 1).astype(np.int8), items, [0, len(items)]), shape=(1, self.n_items_)
        )

    def _values_of(self, codes: sp.csr_matrix) -> sp.csr_matrix:
        """Level codes as rating values (a float64 CSR of the same structure)."""
        return sp.csr_matrix(
            (self.scale_.values[codes.data.astype(np.int64) - 1], codes.indices, codes.indptr),
            shape=codes.shape,
        )

    # -- persistence of the catalog ---------------------------------------------------------
    def _artifact_state(self) -> tuple[dict[str, NDArray[Any]], dict[str, Any]]:
        arrays, metadata = super()._artifact_state()
        metadata["rating_scale"] = list(self.scale_.levels)
        metadata["item_ids"] = list(self._item_names())
        return arrays, metadata

    def _restore_artifact_state(
        self, arrays: Mapping[str, NDArray[Any]], metadata: Mapping[str, Any]
    ) -> None:
        self.scale_ = RatingScale(tuple(float(v) for v in metadata["rating_scale"]))
        self.item_ids_ = np.asarray([str(i) for i in metadata["item_ids"]], dtype=np.str_)
        super()._restore_artifact_state(arrays, metadata)

    def _check_restored(self) -> None:
        if self.n_items_ != len(self.item_ids_):
            raise ValueError(f"n_items is {self.n_items_} for {len(self.item_ids_)} item ids")


class Recommender(RatingEstimator):
    """A rating estimator that ranks items: scoring and top-N over one scoring hook.

    Subclasses implement :meth:`_score_codes` and may override :meth:`_score_one` with a
    faster path for a single user.
    """

    @abstractmethod
    def _score_codes(
        self, codes: sp.csr_matrix
    ) -> tuple[NDArray[np.floating], NDArray[np.floating]]:
        """Ranking scores and predicted ratings of users given as level codes.

        Parameters
        ----------
        codes : scipy.sparse.csr_matrix of shape (n_users, n_items_)
            Level index + 1 of each rating, sorted indices.

        Returns
        -------
        scores, predicted : ndarray of shape (n_users, n_items_)
            Higher scores rank first; rated items are scored too.
        """

    def _score_one(
        self, items: NDArray[np.int64], levels: NDArray[np.int64]
    ) -> tuple[NDArray[np.floating], NDArray[np.floating]]:
        """:meth:`_score_codes` for one user given as sorted columns and level indices.

        Returns arrays of shape (1, n_items_).
        """
        return self._score_codes(self._one_row(items, levels))

    def _rank_one(self, items: NDArray[np.int64], levels: NDArray[np.int64]) -> NDArray[Any]:
        """The ranking scores alone of one user, shape (n_items_,).

        Override when the scores cost less than the predicted ratings.
        """
        scores: NDArray[Any] = self._score_one(items, levels)[0][0]
        return scores

    def _rank_one_then_predict(
        self, items: NDArray[np.int64], levels: NDArray[np.int64]
    ) -> tuple[NDArray[Any], Callable[[NDArray[np.int64]], NDArray[np.floating]]]:
        """One user's ranking scores, and a function of columns giving their expected
        ratings (:attr:`ItemScores.predict_columns`).

        Override to share the fold-in between the two; by default the function scores
        the user again.
        """

        def predict_columns(columns: NDArray[np.int64]) -> NDArray[np.floating]:
            expected: NDArray[np.floating] = self._score_one(items, levels)[1][0]
            return expected[columns]

        return self._rank_one(items, levels), predict_columns

    def score_items(self, user_ratings: UserRatings, *, predicted: bool = True) -> ItemScores:
        """Score every model item for one user.

        Parameters
        ----------
        user_ratings : mapping of str to float
        predicted : bool
            Also compute every item's predicted rating (``ItemScores.expected``); a
            caller that needs a few asks :meth:`ItemScores.expected_at` for those.

        Returns
        -------
        ItemScores
            Arrays over ``item_ids_``; rated items are scored too and flagged in
            ``rated``.
        """
        self._check_fitted()
        items, levels, ignored = self._encode_one(user_ratings)
        rated = np.zeros(self.n_items_, dtype=bool)
        rated[items] = True
        if not predicted:
            scores, predict_columns = self._rank_one_then_predict(items, levels)
            return ItemScores(scores, None, rated, ignored, predict_columns)
        scores, expected = self._score_one(items, levels)
        return ItemScores(scores[0], expected[0], rated, ignored)

    def score_batch(
        self, users: Sequence[UserRatings]
    ) -> tuple[NDArray[np.floating], sp.csr_matrix]:
        """Ranking scores of many users at once.

        Parameters
        ----------
        users : sequence of mapping of str to float
            Each user's ratings.

        Returns
        -------
        scores : ndarray of shape (n_users, n_items_)
            Higher is better; rated items are scored too.
        codes : scipy.sparse.csr_matrix of shape (n_users, n_items_)
            The users' known ratings as level codes (non-zero = rated).
        """
        self._check_fitted()
        codes = self._encode(users).codes
        return self._rank_codes(codes), codes

    def _rank_codes(self, codes: sp.csr_matrix) -> NDArray[Any]:
        """The ranking scores alone of users given as level codes, (n_users, n_items_).

        Override when the scores cost less than the predicted ratings.
        """
        scores: NDArray[Any] = self._score_codes(codes)[0]
        return scores

    @overload
    def recommend(
        self, user_ratings: UserRatings, n: int = 10, exclude: Iterable[str] = ()
    ) -> list[Recommendation]: ...

    @overload
    def recommend(
        self, user_ratings: Sequence[UserRatings], n: int = 10, exclude: Iterable[str] = ()
    ) -> list[list[Recommendation]]: ...

    def recommend(
        self,
        user_ratings: UserRatings | Sequence[UserRatings],
        n: int = 10,
        exclude: Iterable[str] = (),
    ) -> list[Recommendation] | list[list[Recommendation]]:
        """Top-``n`` items for one user (a mapping) or for many (a sequence of mappings).

        Items the user rated and items in ``exclude`` are never returned; items are
        ranked by the model's score, ties broken by item order. Deterministic.

        Parameters
        ----------
        user_ratings : mapping of str to float, or a sequence of them
        n : int
            Number of items per user (fewer if the catalog runs out).
        exclude : iterable of str
            Item ids never to return (for every user of a batch); unknown ids are fine.

        Returns
        -------
        list of Recommendation, or a list of such lists for a batch
        """
        self._check_fitted()
        n = check_positive_int("n", n)
        excluded = self._excluded_columns(exclude)
        if is_user_batch(user_ratings):
            rated = self._encode(cast("Sequence[UserRatings]", user_ratings)).codes
            scores, predicted = self._score_codes(rated)
        else:
            items, levels, _ = self._encode_one(cast("UserRatings", user_ratings))
            scores, predicted = self._score_one(items, levels)
            rated = self._one_row(items, levels)
        if excluded.any():
            scores = scores.astype(np.float64)
            scores[:, excluded] = -np.inf
        top = top_k(scores, n, exclude=rated)
        ids = self._item_names()
        lists = [
            [
                Recommendation(ids[c], float(scores[r, c]), float(predicted[r, c]))
                for c in top[r].tolist()
                if c >= 0
            ]
            for r in range(top.shape[0])
        ]
        return lists if is_user_batch(user_ratings) else lists[0]
