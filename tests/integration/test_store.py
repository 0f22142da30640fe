"""The repository functions against real SQLite and PostgreSQL stores."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from app.db.dialect import WRITE_CHUNK
from app.db.items import ItemIn, count_items, existing_item_ids, get_item, list_items, upsert_items
from app.db.ratings import (
    RatingIn,
    count_ratings,
    count_user_ratings,
    delete_rating,
    get_user_ratings,
    item_rating_counts,
    upsert_rating,
    upsert_ratings,
    user_rating_map,
)
from app.db.snapshot import read_ratings_snapshot
from app.db.tables import Item, Rating
from app.domain import InvalidIdError, InvalidRatingError, ItemsNotInStoreError
from rbm_core.scale import RatingScale

FIVE = RatingScale.parse("1,2,3,4,5")
T0 = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def items(session_factory: sessionmaker[Session]) -> list[str]:
    """Items i1..i6 in the store."""
    ids = [f"i{k}" for k in range(1, 7)]
    with session_factory.begin() as session:
        upsert_items(session, [ItemIn(id=i, title=f"Item {i}") for i in ids])
    return ids


def _all_ratings(session_factory: sessionmaker[Session]) -> list[tuple[str, str, float]]:
    with session_factory() as session:
        rows = session.execute(
            select(Rating.user_id, Rating.item_id, Rating.rating).order_by(
                Rating.user_id, Rating.item_id
            )
        )
        return [(u, i, float(r)) for u, i, r in rows]


# -- single upserts ------------------------------------------------------------------------
def test_upsert_creates_then_replaces(
    session_factory: sessionmaker[Session], items: list[str]
) -> None:
    with session_factory.begin() as session:
        row, created = upsert_rating(session, "u1", "i1", 4, T0, scale=FIVE)
        assert created is True
        assert (row.user_id, row.item_id, row.rating, row.version) == ("u1", "i1", 4.0, 1)
        assert isinstance(row.rating, float)
        assert row.rated_at == T0
    with session_factory.begin() as session:
        row, created = upsert_rating(session, "u1", "i1", 2, scale=FIVE)
        assert created is False
        assert (row.rating, row.version) == (2.0, 2)
        assert row.rated_at > T0, "no rated_at means now"
    assert _all_ratings(session_factory) == [("u1", "i1", 2.0)]


def test_upsert_returns_the_stored_row_in_the_same_session(
    session_factory: sessionmaker[Session], items: list[str]
) -> None:
    with session_factory.begin() as session:
        first, _ = upsert_rating(session, "u1", "i1", 4, T0, scale=FIVE)
        second, created = upsert_rating(session, "u1", "i1", 5, T0, scale=FIVE)
        assert created is False
        assert second is first, "one identity per row"
        assert first.rating == 5.0


def test_timestamps_are_utc_aware_and_naive_means_utc(
    session_factory: sessionmaker[Session], items: list[str]
) -> None:
    plus_two = timezone(timedelta(hours=2))
    with session_factory.begin() as session:
        upsert_rating(
            session, "u1", "i1", 3, datetime(2024, 1, 1, 14, 0, tzinfo=plus_two), scale=FIVE
        )
        upsert_rating(session, "u1", "i2", 3, datetime(2024, 1, 1, 12, 0), scale=FIVE)
    with session_factory() as session:
        times = {r.item_id: r for r in get_user_ratings(session, "u1")}
        assert times["i1"].rated_at == T0
        assert times["i1"].rated_at.utcoffset() == timedelta(0)
        assert times["i2"].rated_at == T0
        assert times["i1"].updated_at.tzinfo is not None


@pytest.mark.parametrize(
    ("user_id", "item_id", "rating", "error", "message"),
    [
        ("bad user", "i1", 3, InvalidIdError, "invalid user id"),
        ("u1", "", 3, InvalidIdError, "invalid item id"),
        ("u1", "i1", 6, InvalidRatingError, "allowed values: 1, 2, 3, 4, 5"),
        ("u1", "i1", 3.5, InvalidRatingError, "allowed values"),
        ("u1", "missing", 3, ItemsNotInStoreError, "unknown item id 'missing'"),
    ],
)
def test_bad_single_upserts_write_nothing(
    session_factory: sessionmaker[Session],
    items: list[str],
    user_id: str,
    item_id: str,
    rating: float,
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error, match=message), session_factory.begin() as session:
        upsert_rating(session, user_id, item_id, rating, scale=FIVE)
    assert _all_ratings(session_factory) == []


def test_ratings_are_checked_against_the_scale_passed_in(
    session_factory: sessionmaker[Session], items: list[str]
) -> None:
    with pytest.raises(InvalidRatingError), session_factory.begin() as session:
        upsert_rating(session, "u1", "i1", 4.5, scale=FIVE)
    half = RatingScale.parse("0.5..5:0.5")
    with session_factory.begin() as session:
        row, _ = upsert_rating(session, "u1", "i1", 4.5, scale=half)
    assert row.rating == 4.5


def test_concurrent_upserts_of_one_pair_leave_one_row(
    engine: Engine, session_factory: sessionmaker[Session], items: list[str]
) -> None:
    n_threads, rounds = 6, 5
    barrier = threading.Barrier(n_threads)
    created: list[bool] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def writer(k: int) -> None:
        try:
            barrier.wait(timeout=30)
            for r in range(rounds):
                with session_factory.begin() as session:
                    _, was_created = upsert_rating(session, "u1", "i1", 1 + (k + r) % 5, scale=FIVE)
                with lock:
                    created.append(was_created)
        except BaseException as exc:
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert len(created) == n_threads * rounds
    assert created.count(True) == 1, "exactly one writer created the row"
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Rating)) == 1
        row = session.get(Rating, ("u1", "i1"))
        assert row is not None
        assert row.version == n_threads * rounds


# -- batches -------------------------------------------------------------------------------
def test_batch_upsert_writes_all_and_last_entry_wins(
    session_factory: sessionmaker[Session], items: list[str]
) -> None:
    batch = [
        RatingIn("u1", "i1", 1, T0),
        RatingIn("u1", "i2", 2),
        RatingIn("u2", "i1", 3),
        RatingIn("u1", "i1", 5, T0),
    ]
    with session_factory.begin() as session:
        assert upsert_ratings(session, batch, scale=FIVE) == 3
    assert _all_ratings(session_factory) == [
        ("u1", "i1", 5.0),
        ("u1", "i2", 2.0),
        ("u2", "i1", 3.0),
    ]
    with session_factory.begin() as session:
        assert upsert_ratings(session, [RatingIn("u1", "i2", 4)], scale=FIVE) == 1
        assert upsert_ratings(session, [], scale=FIVE) == 0
    assert ("u1", "i2", 4.0) in _all_ratings(session_factory)


def test_large_batch_is_chunked(session_factory: sessionmaker[Session], items: list[str]) -> None:
    n_users = WRITE_CHUNK // len(items) + 10
    batch = [RatingIn(f"u{u}", item, 1 + (u % 5)) for u in range(n_users) for item in items]
    assert len(batch) > WRITE_CHUNK
    with session_factory.begin() as session:
        assert upsert_ratings(session, batch, scale=FIVE) == len(batch)
    with session_factory() as session:
        assert count_ratings(session) == len(batch)


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        (RatingIn("u 2", "i1", 3), InvalidIdError, r"rating #2: invalid user id"),
        (RatingIn("u2", "i1", 0), InvalidRatingError, r"rating #2: .*allowed values"),
        (RatingIn("u2", "nope", 3), ItemsNotInStoreError, r"unknown item id 'nope'"),
    ],
)
def test_batch_with_one_bad_entry_writes_nothing(
    session_factory: sessionmaker[Session],
    items: list[str],
    bad: RatingIn,
    error: type[Exception],
    message: str,
) -> None:
    with session_factory.begin() as session:
        upsert_rating(session, "u0", "i1", 3, T0, scale=FIVE)
    batch = [RatingIn("u0", "i1", 5), RatingIn("u1", "i2", 4), bad]
    with pytest.raises(error, match=message), session_factory.begin() as session:
        upsert_ratings(session, batch, scale=FIVE)
    assert _all_ratings(session_factory) == [("u0", "i1", 3.0)]


def test_unknown_items_are_all_listed(
    session_factory: sessionmaker[Session], items: list[str]
) -> None:
    batch = [
        RatingIn("u1", "x2", 3),
        RatingIn("u1", "i1", 3),
        RatingIn("u1", "x1", 3),
    ]
    with pytest.raises(ItemsNotInStoreError) as info, session_factory.begin() as session:
        upsert_ratings(session, batch, scale=FIVE)
    assert info.value.item_ids == ["x1", "x2"]


# -- delete and reads ----------------------------------------------------------------------
def test_delete_rating(session_factory: sessionmaker[Session], items: list[str]) -> None:
    with session_factory.begin() as session:
        upsert_rating(session, "u1", "i1", 3, scale=FIVE)
        upsert_rating(session, "u1", "i2", 3, scale=FIVE)
    with session_factory.begin() as session:
        assert delete_rating(session, "u1", "i1") is True
    with session_factory.begin() as session:
        assert delete_rating(session, "u1", "i1") is False
        assert delete_rating(session, "u9", "i2") is False
    assert _all_ratings(session_factory) == [("u1", "i2", 3.0)]
    with pytest.raises(InvalidIdError), session_factory() as session:
        delete_rating(session, "u1", "bad id")


def test_user_ratings_are_newest_first_and_paginated(
    session_factory: sessionmaker[Session], items: list[str]
) -> None:
    times = {"i1": T0, "i2": T0 + timedelta(days=2), "i3": T0 + timedelta(days=1)}
    times |= {"i4": T0 + timedelta(days=2), "i5": T0 - timedelta(days=1)}
    with session_factory.begin() as session:
        for k, (item, when) in enumerate(times.items()):
            upsert_rating(session, "u1", item, 1 + k, when, scale=FIVE)
        upsert_rating(session, "u2", "i6", 5, scale=FIVE)
    expected = ["i2", "i4", "i3", "i1", "i5"]
    with session_factory() as session:
        assert [r.item_id for r in get_user_ratings(session, "u1")] == expected
        pages = [
            [r.item_id for r in get_user_ratings(session, "u1", offset=o, limit=2)]
            for o in (0, 2, 4, 6)
        ]
        assert pages == [expected[:2], expected[2:4], expected[4:], []]
        assert count_user_ratings(session, "u1") == 5
        assert count_user_ratings(session, "nobody") == 0
        assert get_user_ratings(session, "nobody") == []
        assert user_rating_map(session, "u1") == {
            "i1": 1.0,
            "i2": 2.0,
            "i3": 3.0,
            "i4": 4.0,
            "i5": 5.0,
        }
        assert count_ratings(session) == 6
        with pytest.raises(ValueError, match="negative"):
            get_user_ratings(session, "u1", offset=-1)


def test_item_rating_counts_most_rated_first(
    session_factory: sessionmaker[Session], items: list[str]
) -> None:
    with session_factory.begin() as session:
        upsert_ratings(
            session,
            [
                RatingIn("u1", "i3", 5),
                RatingIn("u2", "i3", 4),
                RatingIn("u3", "i3", 3),
                RatingIn("u1", "i1", 2),
                RatingIn("u2", "i1", 4),
                RatingIn("u1", "i2", 1),
                RatingIn("u2", "i2", 2),
                RatingIn("u9", "i6", 1),
            ],
            scale=FIVE,
        )
    with session_factory() as session:
        counts = item_rating_counts(session)
        assert counts == [("i3", 3, 4.0), ("i1", 2, 3.0), ("i2", 2, 1.5), ("i6", 1, 1.0)]
        assert item_rating_counts(session, limit=2) == counts[:2]


# -- items ---------------------------------------------------------------------------------
def test_items_upsert_update_and_listing(session_factory: sessionmaker[Session]) -> None:
    with session_factory.begin() as session:
        written = upsert_items(
            session,
            [
                ItemIn("b", "Bee", ["Drama"], {"year": 1999}),
                ItemIn("a", "Ay"),
                ItemIn("c", "Sea", ["Comedy", "Drama"]),
            ],
        )
        assert written == 3
    with session_factory() as session:
        before = {i.id: i.updated_at for i in list_items(session)}
    with session_factory.begin() as session:
        upsert_items(
            session,
            [ItemIn("b", "Bee", ["Drama"], {"year": 1999}), ItemIn("c", "Sea 2")],
        )
    with session_factory() as session:
        listed = list_items(session)
        assert [i.id for i in listed] == ["a", "b", "c"]
        after = {i.id: i.updated_at for i in listed}
        assert after["b"] == before["b"], "an unchanged item is not rewritten"
        assert after["c"] > before["c"]
        c = get_item(session, "c")
        assert c is not None
        assert (c.title, c.genres) == ("Sea 2", [])
        b = get_item(session, "b")
        assert b is not None
        assert (b.genres, b.attributes) == (["Drama"], {"year": 1999})
        assert get_item(session, "zzz") is None
        assert [i.id for i in list_items(session, offset=1, limit=1)] == ["b"]
        assert count_items(session) == 3
        assert existing_item_ids(session, ["a", "c", "x", "a"]) == {"a", "c"}
        assert existing_item_ids(session, []) == set()


def test_items_with_a_bad_id_write_nothing(session_factory: sessionmaker[Session]) -> None:
    with pytest.raises(InvalidIdError, match="item #1"), session_factory.begin() as session:
        upsert_items(session, [ItemIn("ok"), ItemIn("not ok")])
    with session_factory() as session:
        assert count_items(session) == 0


def test_existing_item_ids_beyond_one_in_list(session_factory: sessionmaker[Session]) -> None:
    ids = [f"m{k}" for k in range(25_000)]
    with session_factory.begin() as session:
        upsert_items(session, [ItemIn(i) for i in ids[::2]])
    with session_factory() as session:
        assert existing_item_ids(session, ids) == set(ids[::2])


def test_deleting_an_item_deletes_its_ratings(
    session_factory: sessionmaker[Session], items: list[str]
) -> None:
    with session_factory.begin() as session:
        upsert_rating(session, "u1", "i1", 3, scale=FIVE)
        upsert_rating(session, "u1", "i2", 3, scale=FIVE)
    with session_factory.begin() as session:
        item = session.get(Item, "i1")
        assert item is not None
        session.delete(item)
    assert _all_ratings(session_factory) == [("u1", "i2", 3.0)]


# -- snapshot ------------------------------------------------------------------------------
@pytest.fixture
def snapshot_data(session_factory: sessionmaker[Session], items: list[str]) -> int:
    rng = np.random.default_rng(7)
    batch = [
        RatingIn(f"user-{u:03d}", item, float(rng.integers(1, 6)), T0 + timedelta(minutes=u))
        for u in range(150)
        for item in items
        if rng.random() < 0.7
    ]
    with session_factory.begin() as session:
        upsert_ratings(session, batch, scale=FIVE)
    return len(batch)


def test_snapshot_reads_every_rating_in_order(
    engine: Engine, session_factory: sessionmaker[Session], snapshot_data: int
) -> None:
    snap = read_ratings_snapshot(engine)
    assert snap.n_ratings == snapshot_data == len(snap.ratings)
    assert snap.ratings.dtype == np.float64
    assert snap.user_ids.dtype == object
    assert all(isinstance(u, str) for u in snap.user_ids[:10])
    pairs = list(zip(snap.user_ids.tolist(), snap.item_ids.tolist(), strict=True))
    assert pairs == sorted(pairs)
    with session_factory() as session:
        stored = {(u, i): r for u, i, r in _all_ratings(session_factory)}
        newest = session.scalar(select(func.max(Rating.rated_at)))
        latest_write = session.scalar(select(func.max(Rating.updated_at)))
    assert dict(zip(pairs, snap.ratings.tolist(), strict=True)) == stored
    assert snap.max_rated_at == newest
    assert snap.max_rated_at is not None
    assert snap.max_rated_at.tzinfo is not None
    assert snap.max_updated_at == latest_write


def test_snapshot_from_a_connection_or_a_session_agrees(
    engine: Engine, session_factory: sessionmaker[Session], snapshot_data: int
) -> None:
    reference = read_ratings_snapshot(engine)
    with engine.connect() as conn:
        from_conn = read_ratings_snapshot(conn)
    with engine.connect() as conn, conn.begin():
        from_open_transaction = read_ratings_snapshot(conn)
    with session_factory() as session:
        from_session = read_ratings_snapshot(session)
    for other in (from_conn, from_open_transaction, from_session):
        assert other.n_ratings == reference.n_ratings
        assert np.array_equal(other.user_ids, reference.user_ids)
        assert np.array_equal(other.item_ids, reference.item_ids)
        assert np.array_equal(other.ratings, reference.ratings)
        assert other.max_rated_at == reference.max_rated_at


def test_snapshot_sees_committed_state_only(
    engine: Engine, session_factory: sessionmaker[Session], snapshot_data: int
) -> None:
    with session_factory() as writer:
        writer.begin()
        upsert_ratings(writer, [RatingIn("late", "i1", 5)], scale=FIVE)
        writer.flush()
        # On SQLite the writer holds the write lock now: the snapshot must neither wait
        # for it nor see its uncommitted row (WAL readers see the last commit).
        snap = read_ratings_snapshot(engine)
        writer.rollback()
    assert snap.n_ratings == snapshot_data
    assert "late" not in set(snap.user_ids.tolist())


def test_snapshot_of_an_empty_store(engine: Engine) -> None:
    snap = read_ratings_snapshot(engine)
    assert snap.n_ratings == 0
    assert snap.user_ids.shape == snap.item_ids.shape == snap.ratings.shape == (0,)
    assert snap.max_rated_at is None
