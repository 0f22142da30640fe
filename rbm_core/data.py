"""Rating data for the model: :class:`RatingMatrix`, a sparse users x items matrix of levels.

A :class:`RatingMatrix` maps opaque string ids to row / column indices and stores each
rating as its *level code*: the level index on the :class:`~rbm_core.scale.RatingScale`
plus one, so that ``0`` means "not rated" in the sparse structure. Every rating is
validated against the scale when the matrix is built; off-scale values raise
:class:`~rbm_core.scale.RatingScaleError`.

At inference time a single user's ratings are a plain mapping, :data:`UserRatings`
(item id -> rating value), so callers never need to build a matrix for one user.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray

from rbm_core.scale import RatingScale

if TYPE_CHECKING:
    import pandas as pd

UserRatings: TypeAlias = Mapping[str, float]
"""One user's ratings: item id -> rating value (a value on the model's rating scale)."""

CODE_DTYPE = np.int8
"""dtype of the level codes stored in the CSR (level index + 1; 0 = missing)."""


class RatingDataError(ValueError):
    """Rating data cannot be turned into a matrix (bad shape, duplicates, empty, ...)."""


def _as_id_array(values: ArrayLike | Iterable[Any], what: str) -> NDArray[np.str_]:
    arr = values if isinstance(values, np.ndarray) else np.asarray(list(values))  # type: ignore[arg-type]
    if arr.ndim != 1:
        raise RatingDataError(f"{what} must be one-dimensional, got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "USO":
        raise RatingDataError(f"{what} must be strings, got dtype {arr.dtype}")
    if arr.dtype.kind == "O":
        bad = [v for v in arr[:1000] if not isinstance(v, str)]
        if bad:
            raise RatingDataError(f"{what} must be strings, got {type(bad[0]).__name__}")
    # unicode input is used as is: a copy of millions of ids is not free
    return arr if arr.dtype.kind == "U" else arr.astype(np.str_)


def find_sorted(
    sorted_keys: NDArray[Any], keys: NDArray[Any]
) -> tuple[NDArray[np.intp], NDArray[np.bool_]]:
    """Where each of ``keys`` stands in ``sorted_keys``, and whether it is there at all.

    Parameters
    ----------
    sorted_keys : ndarray of shape (n,)
        Sorted ids (or other keys).
    keys : ndarray of shape (m,)
        The keys to look up.

    Returns
    -------
    positions : ndarray of int, shape (m,)
        Index into ``sorted_keys`` (a valid index, meaningless where absent).
    found : ndarray of bool, shape (m,)
    """
    if len(sorted_keys) == 0:
        return np.zeros(len(keys), dtype=np.intp), np.zeros(len(keys), dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    found: NDArray[np.bool_] = sorted_keys[pos] == keys
    return pos, found


@dataclass(frozen=True, eq=False)
class RatingMatrix:
    """A users x items matrix of ratings stored as level codes.

    Build one with :meth:`from_arrays` or :meth:`from_frame`; the constructor trusts
    its arguments.

    Attributes
    ----------
    user_ids : ndarray of str, shape (n_users,)
        Row ids, sorted.
    item_ids : ndarray of str, shape (n_items,)
        Column ids: sorted, or the order of the item catalog the matrix was built with.
    scale : RatingScale
        The rating scale the codes refer to.
    codes : scipy.sparse.csr_matrix of int8, shape (n_users, n_items)
        Level index + 1 of each rating; structural zeros are missing ratings. Column
        indices are sorted within each row and there are no explicit zeros.
    n_dropped : int
        Ratings left out because their item was not in the given item catalog.
    """

    user_ids: NDArray[np.str_]
    item_ids: NDArray[np.str_]
    scale: RatingScale
    codes: sp.csr_matrix
    n_dropped: int = 0

    # -- construction -------------------------------------------------------------
    @classmethod
    def from_arrays(
        cls,
        user_ids: ArrayLike | Sequence[str],
        item_ids: ArrayLike | Sequence[str],
        ratings: ArrayLike | Sequence[float],
        scale: RatingScale,
        item_catalog: Sequence[str] | NDArray[np.str_] | None = None,
    ) -> RatingMatrix:
        """Build a matrix from three parallel arrays, one entry per rating.

        Parameters
        ----------
        user_ids, item_ids : array-like of str, shape (n_ratings,)
            Who rated what.
        ratings : array-like of float, shape (n_ratings,)
            Rating values; each must be a level of ``scale``.
        scale : RatingScale
            The rating scale.
        item_catalog : sequence of str, optional
            If given, the columns are exactly these items in this order (items without
            ratings get empty columns) and ratings of other items are dropped and
            counted in :attr:`n_dropped`. Otherwise the columns are the distinct rated
            items, sorted.

        Raises
        ------
        RatingScaleError
            If a rating is not on the scale (or not a finite number).
        RatingDataError
            If the arrays differ in length, a (user, item) pair appears twice, or the
            catalog repeats an id.
        """
        users = _as_id_array(user_ids, "user_ids")
        items = _as_id_array(item_ids, "item_ids")
        try:
            values = np.asarray(ratings, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise RatingDataError(f"ratings must be numbers: {exc}") from None
        if values.ndim != 1:
            raise RatingDataError(f"ratings must be one-dimensional, got shape {values.shape}")
        if not (len(users) == len(items) == len(values)):
            raise RatingDataError(
                "user_ids, item_ids and ratings differ in length: "
                f"{len(users)}, {len(items)}, {len(values)}"
            )
        level_index = scale.indices_of(values)

        n_dropped = 0
        if item_catalog is None:
            col_ids, cols = np.unique(items, return_inverse=True)
        else:
            col_ids = _as_id_array(item_catalog, "item_catalog").copy()
            if np.unique(col_ids).size != col_ids.size:
                raise RatingDataError("item_catalog contains duplicate ids")
            order = np.argsort(col_ids, kind="stable")
            pos, known = find_sorted(col_ids[order], items)
            n_dropped = int((~known).sum())
            cols = order[pos[known]]
            users, level_index = users[known], level_index[known]

        row_ids, rows = np.unique(users, return_inverse=True)
        shape = (len(row_ids), len(col_ids))
        codes = (level_index + 1).astype(CODE_DTYPE)
        matrix = sp.csr_matrix((codes, (rows, cols)), shape=shape)
        # coo -> csr sums duplicates, so a repeated pair shows up as fewer stored entries
        if matrix.nnz != len(codes):
            key = rows.astype(np.int64) * max(shape[1], 1) + cols
            uniq, counts = np.unique(key, return_counts=True)
            dup = uniq[counts > 1][0]
            raise RatingDataError(
                f"duplicate rating for user {str(row_ids[dup // shape[1]])!r} "
                f"and item {str(col_ids[dup % shape[1]])!r}"
            )
        matrix.sort_indices()
        return cls(row_ids, col_ids, scale, matrix, n_dropped)

    @classmethod
    def from_frame(
        cls,
        df: pd.DataFrame,
        scale: RatingScale,
        item_catalog: Sequence[str] | NDArray[np.str_] | None = None,
    ) -> RatingMatrix:
        """Build a matrix from a DataFrame with columns ``user_id``, ``item_id``, ``rating``.

        Ids are converted to strings. See :meth:`from_arrays` for the rest.
        """
        missing = {"user_id", "item_id", "rating"} - set(df.columns)
        if missing:
            raise RatingDataError(f"missing column(s): {', '.join(sorted(missing))}")
        return cls.from_arrays(
            df["user_id"].astype(str).to_numpy(),
            df["item_id"].astype(str).to_numpy(),
            df["rating"].to_numpy(),
            scale,
            item_catalog=item_catalog,
        )

    @classmethod
    def from_user_ratings(
        cls,
        users: Sequence[UserRatings],
        scale: RatingScale,
        item_catalog: Sequence[str] | NDArray[np.str_],
    ) -> RatingMatrix:
        """Build a matrix whose row ``i`` holds the ratings in ``users[i]``.

        Rows are kept in input order (user ids are ``"0"``, ``"1"``, ...), so row ``i``
        always answers for ``users[i]``, even if it is empty. Items outside the
        catalog are dropped (and counted).
        """
        lengths = np.fromiter((len(u) for u in users), dtype=np.int64, count=len(users))
        items = [str(i) for u in users for i in u]
        values = [v for u in users for v in u.values()]
        cat = _as_id_array(item_catalog, "item_catalog").copy()
        order = np.argsort(cat, kind="stable")
        item_arr = np.asarray(items, dtype=np.str_) if items else np.empty(0, dtype=np.str_)
        pos, known = find_sorted(cat[order], item_arr)
        level_index = scale.indices_of(np.asarray(values, dtype=np.float64))
        rows = np.repeat(np.arange(len(users)), lengths)[known]
        cols = order[pos[known]]
        codes = (level_index[known] + 1).astype(CODE_DTYPE)
        matrix = sp.csr_matrix((codes, (rows, cols)), shape=(len(users), len(cat)))
        matrix.sort_indices()
        row_ids = np.arange(len(users)).astype(np.str_)
        return cls(row_ids, cat, scale, matrix, int((~known).sum()))

    # -- shape ----------------------------------------------------------------------
    @property
    def n_users(self) -> int:
        """Number of rows."""
        return int(self.codes.shape[0])

    @property
    def n_items(self) -> int:
        """Number of columns."""
        return int(self.codes.shape[1])

    @property
    def n_ratings(self) -> int:
        """Number of stored ratings."""
        return int(self.codes.nnz)

    @property
    def n_levels(self) -> int:
        """K, the number of rating levels of the scale."""
        return self.scale.n_levels

    def __repr__(self) -> str:
        return (
            f"RatingMatrix(n_users={self.n_users}, n_items={self.n_items}, "
            f"n_ratings={self.n_ratings}, scale={self.scale})"
        )

    # -- views ----------------------------------------------------------------------
    @property
    def values(self) -> sp.csr_matrix:
        """The ratings as values, a float64 CSR of shape (n_users, n_items)."""
        data = self.scale.values[self.codes.data.astype(np.int64) - 1]
        return sp.csr_matrix(
            (data, self.codes.indices.copy(), self.codes.indptr.copy()), shape=self.codes.shape
        )

    def triples(self) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
        """Row index, column index and level index of every rating, in CSR order."""
        rows = np.repeat(np.arange(self.n_users, dtype=np.int64), np.diff(self.codes.indptr))
        return rows, self.codes.indices.astype(np.int64), self.codes.data.astype(np.int64) - 1

    def to_frame(self) -> pd.DataFrame:
        """The ratings as a DataFrame with columns user_id, item_id, rating."""
        import pandas as pd

        rows, cols, levels = self.triples()
        return pd.DataFrame(
            {
                "user_id": self.user_ids[rows].astype(object),
                "item_id": self.item_ids[cols].astype(object),
                "rating": self.scale.values[levels],
            }
        )

    def user_index(self, user_id: str) -> int:
        """Row index of a user id; raises ``KeyError`` if absent."""
        pos = int(np.searchsorted(self.user_ids, user_id))
        if pos >= self.n_users or self.user_ids[pos] != user_id:
            raise KeyError(user_id)
        return pos

    def user_ratings(self, user_id: str) -> dict[str, float]:
        """The ratings of one user as a mapping item id -> value."""
        row = self.user_index(user_id)
        lo, hi = self.codes.indptr[row], self.codes.indptr[row + 1]
        cols = self.codes.indices[lo:hi]
        levels = self.codes.data[lo:hi].astype(np.int64) - 1
        return {
            str(i): float(v)
            for i, v in zip(self.item_ids[cols], self.scale.values[levels], strict=True)
        }

    # -- derived matrices -----------------------------------------------------------
    def with_item_catalog(self, item_catalog: Sequence[str] | NDArray[np.str_]) -> RatingMatrix:
        """The same ratings with columns aligned to ``item_catalog`` (others dropped).

        Users left with no rating are dropped too.
        """
        rows, cols, levels = self.triples()
        return RatingMatrix.from_arrays(
            self.user_ids[rows],
            self.item_ids[cols],
            self.scale.values[levels],
            self.scale,
            item_catalog=item_catalog,
        )

    def select_users(self, rows: NDArray[np.integer] | Sequence[int]) -> RatingMatrix:
        """The sub-matrix of the given rows (same columns), in the given order.

        The rows must be sorted by user id for the result to stay searchable; a sorted
        index array keeps that property.
        """
        idx = np.asarray(rows, dtype=np.int64)
        sub = self.codes[idx]
        sub.sort_indices()
        return RatingMatrix(self.user_ids[idx], self.item_ids, self.scale, sub)

    def transposed(self) -> RatingMatrix:
        """The same ratings with the roles swapped: items are the rows, users the columns.

        Rows come sorted by item id (so the result stays searchable), columns in the
        order of ``user_ids``. An item-based model trains on it (each item a case).
        """
        order = np.argsort(self.item_ids, kind="stable")
        codes = self.codes.T.tocsr()[order]
        codes.sort_indices()
        return RatingMatrix(self.item_ids[order], self.user_ids, self.scale, codes)

    def split(
        self,
        fraction: float,
        random_state: int | np.random.Generator | None = None,
        *,
        min_kept: int = 1,
    ) -> tuple[RatingMatrix, RatingMatrix]:
        """Hold out about ``fraction`` of each user's ratings at random.

        Parameters
        ----------
        fraction : float
            Share of each user's ratings to hold out, in (0, 1).
        random_state : int or numpy.random.Generator, optional
            Seed or generator for the draw.
        min_kept : int
            Users keep at least this many ratings in the first part.

        Returns
        -------
        kept, held_out : RatingMatrix
            Both with the same columns as ``self``; ``held_out`` lists only users who
            have held-out ratings, ``kept`` every user of ``self``.
        """
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"fraction must be in (0, 1), got {fraction}")
        rng = np.random.default_rng(random_state)
        counts = np.diff(self.codes.indptr)
        rows = np.repeat(np.arange(self.n_users), counts)
        # rank of each rating in a random order within its row
        key = rng.random(self.n_ratings)
        order = np.lexsort((key, rows))
        rank = np.empty(self.n_ratings, dtype=np.int64)
        rank[order] = np.arange(self.n_ratings) - np.repeat(self.codes.indptr[:-1], counts)
        n_out = np.minimum(np.round(counts * fraction).astype(np.int64), counts - min_kept)
        hold = rank < np.repeat(np.maximum(n_out, 0), counts)
        kept = self._with_mask(~hold, keep_empty_rows=True)
        held = self._with_mask(hold, keep_empty_rows=False)
        return kept, held

    def _with_mask(self, mask: NDArray[np.bool_], *, keep_empty_rows: bool) -> RatingMatrix:
        rows = np.repeat(np.arange(self.n_users), np.diff(self.codes.indptr))[mask]
        matrix = sp.csr_matrix(
            (self.codes.data[mask], (rows, self.codes.indices[mask])), shape=self.codes.shape
        )
        matrix.sort_indices()
        result = RatingMatrix(self.user_ids, self.item_ids, self.scale, matrix)
        if keep_empty_rows:
            return result
        return result.select_users(np.flatnonzero(np.diff(matrix.indptr) > 0))

    # -- statistics -----------------------------------------------------------------
    def level_counts(self) -> NDArray[np.int64]:
        """Number of ratings of each item at each level, shape (n_items, K)."""
        _, cols, levels = self.triples()
        flat = cols * self.n_levels + levels
        counts = np.bincount(flat, minlength=self.n_items * self.n_levels)
        return counts.reshape(self.n_items, self.n_levels).astype(np.int64)

    def fingerprint(self) -> str:
        """SHA-256 (hex) of the ids, the scale and every rating: equal data, equal digest."""
        digest = hashlib.sha256()
        digest.update(b"rbmrec-rating-matrix-v1\0")
        digest.update(str(self.scale).encode())
        for ids in (self.user_ids, self.item_ids):
            digest.update(len(ids).to_bytes(8, "little"))
            digest.update("\0".join(ids.tolist()).encode())
            digest.update(b"\1")
        digest.update(np.ascontiguousarray(self.codes.indptr, dtype=np.int64).tobytes())
        digest.update(np.ascontiguousarray(self.codes.indices, dtype=np.int64).tobytes())
        digest.update(np.ascontiguousarray(self.codes.data, dtype=np.int8).tobytes())
        return digest.hexdigest()
