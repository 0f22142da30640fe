"""Id and rating rules of app.domain."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from app.domain import (
    ID_PATTERN,
    InvalidIdError,
    InvalidRatingError,
    ItemsNotInStoreError,
    is_valid_id,
    validate_id,
    validate_rating,
)
from app.settings import Settings
from rbm_core.scale import RatingScale, RatingScaleError

HALF_STARS = RatingScale.parse("0.5..5:0.5")


@pytest.mark.parametrize(
    "value",
    ["1", "242", "a" * 64, "550e8400-e29b-41d4-a716-446655440000", "tt0114709", "u:1_x.y-z"],
)
def test_valid_ids_are_returned_unchanged(value: str) -> None:
    assert validate_id(value) == value
    assert is_valid_id(value)
    assert re.fullmatch(ID_PATTERN, value)


@pytest.mark.parametrize(
    "value",
    ["", "a" * 65, "with space", "slash/x", "é", "1\n", "\n1", "x;drop", "tab\tid", "*"],
)
def test_invalid_ids_are_rejected_with_the_rule(value: str) -> None:
    with pytest.raises(InvalidIdError, match=r"1-64 characters from letters, digits"):
        validate_id(value, "user id")
    assert not is_valid_id(value)


def test_invalid_id_message_names_the_id_and_its_role() -> None:
    with pytest.raises(InvalidIdError, match=r"invalid item id 'bad id'"):
        validate_id("bad id", "item id")


@pytest.mark.parametrize("value", [17, None, b"1", 1.5])
def test_non_string_ids_are_rejected(value: object) -> None:
    with pytest.raises(InvalidIdError, match="must be a string"):
        validate_id(value, "user id")  # type: ignore[arg-type]


def test_long_ids_are_shortened_in_the_message() -> None:
    with pytest.raises(InvalidIdError) as info:
        validate_id("x" * 1000)
    assert len(str(info.value)) < 200


def test_invalid_id_error_is_a_value_error() -> None:
    assert issubclass(InvalidIdError, ValueError)


@pytest.mark.parametrize(("value", "expected"), [(1, 1.0), (5.0, 5.0), (3, 3.0)])
def test_ratings_on_the_default_scale_pass(value: float, expected: float) -> None:
    assert validate_rating(value, RatingScale.parse("1,2,3,4,5")) == expected


def test_floating_point_noise_snaps_to_the_level() -> None:
    assert validate_rating(0.1 + 0.2 + 3.2, HALF_STARS) == 3.5


@pytest.mark.parametrize("value", [0, 6, 3.5, -1, 1e9])
def test_off_scale_ratings_list_the_allowed_values(value: float) -> None:
    with pytest.raises(InvalidRatingError, match=r"allowed values: 1, 2, 3, 4, 5"):
        validate_rating(value, RatingScale.parse("1,2,3,4,5"))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), True, "4"])
def test_non_numbers_are_not_ratings(value: object) -> None:
    with pytest.raises(InvalidRatingError, match="allowed values"):
        validate_rating(value, HALF_STARS)  # type: ignore[arg-type]


def test_half_star_scale_accepts_half_stars_only() -> None:
    assert validate_rating(4.5, HALF_STARS) == 4.5
    with pytest.raises(InvalidRatingError, match=r"0\.5, 1, 1\.5"):
        validate_rating(4.25, HALF_STARS)


def test_invalid_rating_error_is_a_rating_scale_error() -> None:
    assert issubclass(InvalidRatingError, RatingScaleError)
    assert issubclass(InvalidRatingError, ValueError)


def test_the_settings_parse_the_rating_scale_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RBMREC_RATING_SCALE", "0.5..5:0.5")
    settings = Settings()
    assert settings.rating_scale == HALF_STARS
    assert validate_rating(2.5, settings.rating_scale) == 2.5
    monkeypatch.delenv("RBMREC_RATING_SCALE")
    assert Settings().rating_scale == RatingScale.parse("1,2,3,4,5")
    assert Settings(rating_scale="1..3:1").rating_scale.levels == (1.0, 2.0, 3.0)
    with pytest.raises(ValidationError, match="rating_scale"):
        Settings(rating_scale="1..x")


def test_unknown_item_error_lists_a_few_ids() -> None:
    error = ItemsNotInStoreError([str(i) for i in range(8)])
    assert error.item_ids == [str(i) for i in range(8)]
    assert "'0', '1', '2', '3', '4'" in str(error)
    assert "and 3 more" in str(error)
