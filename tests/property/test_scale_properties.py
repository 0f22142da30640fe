"""Properties of the rating scale: parsing, value <-> index maps, refusals."""

from __future__ import annotations

import math
import time
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain import InvalidRatingError, validate_rating
from rbm_core.scale import RatingScale, RatingScaleError

STEPS = [Decimal(s) for s in ("0.1", "0.25", "0.5", "1", "2", "5", "10")]


@st.composite
def ranges(draw: st.DrawFn) -> tuple[str, list[Decimal]]:
    """A range spec 'lo..hi:step' and the levels it denotes, computed exactly."""
    step = draw(st.sampled_from(STEPS))
    lo = draw(st.integers(-100, 100)) * step
    count = draw(st.integers(1, 60))
    hi = lo + count * step
    return f"{lo}..{hi}:{step}", [lo + i * step for i in range(count + 1)]


scales = st.lists(
    st.integers(-1000, 1000).map(lambda n: n / 4), min_size=2, max_size=30, unique=True
).map(lambda values: RatingScale(tuple(sorted(values))))


@given(ranges())
def test_a_range_denotes_exactly_its_levels(spec: tuple[str, list[Decimal]]) -> None:
    text, levels = spec
    scale = RatingScale.parse(text)
    assert scale.levels == tuple(float(v) for v in levels)
    # the same levels written out as a list parse to the same scale
    assert RatingScale.parse(",".join(str(v) for v in levels)) == scale


@given(scales)
def test_levels_map_to_their_indices_and_back(scale: RatingScale) -> None:
    values = scale.values
    indices = scale.indices_of(values)
    assert indices.tolist() == list(range(scale.n_levels))
    assert np.array_equal(scale.values_of(indices), values)
    assert RatingScale.parse(str(scale)) == scale
    assert all(scale.contains(v) for v in scale.levels)


@given(scales)
def test_low_ratings_lie_below_the_middle_and_high_ones_above(scale: RatingScale) -> None:
    middle = (scale.min + scale.max) / 2
    assert scale.low_rating in scale.levels
    assert scale.high_rating in scale.levels
    assert scale.low_rating < scale.high_rating
    # the low rating is the highest level below the middle (the lowest level at least)
    below = [v for v in scale.levels if v < middle]
    assert scale.low_rating == (max(below) if below else scale.min)


@pytest.mark.parametrize(
    ("spec", "low", "high"),
    [("1..5", 2, 4), ("0.5..4:0.5", 2, 3.5), ("0.5..5:0.5", 2.5, 4), ("1..10", 5, 8)],
)
def test_low_and_high_ratings_of_common_scales(spec: str, low: float, high: float) -> None:
    scale = RatingScale.parse(spec)
    assert (scale.low_rating, scale.high_rating) == (low, high)


@given(scales, st.data())
def test_floating_point_noise_snaps_to_the_level(scale: RatingScale, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, scale.n_levels - 1))
    noise = data.draw(st.floats(-1e-10, 1e-10))
    assert scale.index_of(scale.levels[index] + noise) == index


@given(scales, st.floats(allow_nan=True, allow_infinity=True))
def test_values_off_the_scale_are_refused_with_the_allowed_values(
    scale: RatingScale, value: float
) -> None:
    on_scale = math.isfinite(value) and any(abs(value - v) < 1e-9 for v in scale.levels)
    if on_scale:
        assert scale.levels[scale.index_of(value)] == pytest.approx(value, abs=1e-9)
        return
    with pytest.raises(RatingScaleError, match="allowed values") as caught:
        scale.index_of(value)
    assert scale.describe() in str(caught.value)
    with pytest.raises(RatingScaleError):
        scale.indices_of(np.array([scale.levels[0], value]))


@given(st.one_of(st.integers(), st.floats(), st.text(), st.booleans(), st.none()))
def test_validate_rating_accepts_levels_only(value: object) -> None:
    scale = RatingScale.parse("1,2,3,4,5")
    is_level = (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and any(abs(value - v) < 1e-9 for v in scale.levels)
    )
    if is_level:
        assert validate_rating(value, scale) in scale.levels  # type: ignore[arg-type]
    else:
        with pytest.raises(InvalidRatingError, match="allowed values: 1, 2, 3, 4, 5"):
            validate_rating(value, scale)  # type: ignore[arg-type]


SPEC_ALPHABET = st.sampled_from([*"0123456789.,:-+eE ", "..", "inf", "nan", "1e999999999"])


@settings(max_examples=300)
@given(st.one_of(st.text(max_size=40), st.lists(SPEC_ALPHABET, max_size=12).map("".join)))
def test_parsing_any_text_gives_a_scale_or_a_clear_error_quickly(text: str) -> None:
    started = time.monotonic()
    scale: RatingScale | None = None
    try:
        scale = RatingScale.parse(text)
    except RatingScaleError as exc:
        message = str(exc)
    assert time.monotonic() - started < 1.0
    if scale is None:
        assert message
        return
    assert scale.n_levels >= 2
    assert all(math.isfinite(v) for v in scale.levels)
    assert list(scale.levels) == sorted(set(scale.levels))


@pytest.mark.parametrize(
    "spec",
    ["1..2:1e-999999999", "0..1e400000000:1e399999999", "0..1000000000", "0..1:0.0000001"],
)
def test_absurd_ranges_are_a_clear_error_not_a_hang(spec: str) -> None:
    started = time.monotonic()
    with pytest.raises(RatingScaleError):
        RatingScale.parse(spec)
    assert time.monotonic() - started < 1.0
