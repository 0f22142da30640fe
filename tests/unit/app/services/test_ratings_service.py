"""Writing and reading ratings (app.services.ratings) on real SQLite and PostgreSQL stores."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session, sessionmaker

from app.db.ratings import count_ratings, user_rating_map
from app.services import ratings as service
from app.services.items import find_item
from app.services.ratings import MAX_REPORTED, RatingIn, RatingsRejected
from rbm_core.scale import DEFAULT_SCALE

SCALE = DEFAULT_SCALE


def test_a_rating_is_created_then_replaced(store: sessionmaker[Session]) -> None:
    with store.begin() as session:
        row, created = service.write_rating(session, RatingIn("new", "i1", 4), scale=SCALE)
    assert created
    assert (row.user_id, row.item_id, row.rating) == ("new", "i1", 4.0)
    with store.begin() as session:
        row, created = service.write_rating(session, RatingIn("new", "i1", 2), scale=SCALE)
    assert not created
    with store() as session:
        assert user_rating_map(session, "new") == {"i1": 2.0}


def test_an_off_scale_rating_is_rejected_with_its_field(store: sessionmaker[Session]) -> None:
    with pytest.raises(RatingsRejected) as rejected, store.begin() as session:
        service.write_rating(session, RatingIn("new", "i1", 4.5), scale=SCALE)
    (problem,) = rejected.value.problems
    assert problem.loc == ("rating",)
    assert problem.type == "rating_scale"
    assert "allowed values: 1, 2, 3, 4, 5" in problem.msg
    assert not rejected.value.unknown_items_only
    with store() as session:
        assert user_rating_map(session, "new") == {}


def test_an_unknown_item_is_refused_or_created(store: sessionmaker[Session]) -> None:
    with pytest.raises(RatingsRejected) as rejected, store.begin() as session:
        service.write_rating(session, RatingIn("new", "nope", 4), scale=SCALE)
    assert rejected.value.unknown_items_only
    assert rejected.value.problems[0].loc == ("item_id",)
    with store.begin() as session:
        service.write_rating(
            session, RatingIn("new", "nope", 4), scale=SCALE, auto_create_items=True
        )
    with store() as session:
        created = find_item(session, "nope")
        assert created is not None
        assert (created.title, created.genres) == ("", [])


def test_a_batch_lists_every_wrong_entry_and_writes_nothing(
    store: sessionmaker[Session],
) -> None:
    with store() as session:
        before = count_ratings(session)
    batch = [
        RatingIn("a", "i1", 4),
        RatingIn("a", "nope", 7),
        RatingIn("a", "i2", 0),
        RatingIn("b", "gone", 3),
    ]
    with pytest.raises(RatingsRejected) as rejected, store.begin() as session:
        service.write_ratings(session, batch, scale=SCALE)
    assert [(p.loc, p.type) for p in rejected.value.problems] == [
        (("ratings", 1, "item_id"), "unknown_item"),
        (("ratings", 1, "rating"), "rating_scale"),
        (("ratings", 2, "rating"), "rating_scale"),
        (("ratings", 3, "item_id"), "unknown_item"),
    ]
    assert rejected.value.total == 4
    with store() as session:
        assert count_ratings(session) == before


def test_a_batch_reports_a_bounded_number_of_problems(store: sessionmaker[Session]) -> None:
    batch = [RatingIn(f"u{n}", "i1", 9) for n in range(MAX_REPORTED + 20)]
    with pytest.raises(RatingsRejected) as rejected, store.begin() as session:
        service.write_ratings(session, batch, scale=SCALE)
    assert len(rejected.value.problems) == MAX_REPORTED
    assert rejected.value.total == MAX_REPORTED + 20
    assert f"({MAX_REPORTED + 20} wrong entries)" in str(rejected.value)


def test_the_last_entry_of_a_repeated_pair_wins(store: sessionmaker[Session]) -> None:
    batch = [RatingIn("b", "i1", 5), RatingIn("a", "i2", 3), RatingIn("b", "i1", 1)]
    with store.begin() as session:
        assert service.write_ratings(session, batch, scale=SCALE) == 2
    with store() as session:
        assert user_rating_map(session, "b") == {"i1": 1.0}


def test_pages_of_a_users_ratings_and_deletion(store: sessionmaker[Session]) -> None:
    with store() as session:
        assert service.list_ratings(session, "nobody", offset=0, limit=10) == ([], 0)
        first, total = service.list_ratings(session, "u0", offset=0, limit=10)
        assert total == 15
        assert len(first) == 10
        rest, total = service.list_ratings(session, "u0", offset=10, limit=10)
        assert total == 15
        assert {r.item_id for r in first}.isdisjoint(r.item_id for r in rest)
        beyond, total = service.list_ratings(session, "u0", offset=100, limit=10)
        assert (beyond, total) == ([], 15)
        item = first[0].item_id
    with store.begin() as session:
        assert service.delete_rating(session, "u0", item)
        assert not service.delete_rating(session, "u0", item)
