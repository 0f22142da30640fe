"""Properties of user and item id validation (app.domain)."""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.domain import ID_MAX_LENGTH, ID_PATTERN, InvalidIdError, is_valid_id, validate_id

ALPHABET = string.ascii_letters + string.digits + "_.:-"
DOT_SEGMENTS = (".", "..")
valid_ids = st.text(alphabet=ALPHABET, min_size=1, max_size=ID_MAX_LENGTH).filter(
    lambda value: value not in DOT_SEGMENTS
)


def reference(value: object) -> bool:
    """The rule, written out plainly: 1-64 characters, each from the alphabet, and not
    a URL dot segment."""
    return (
        isinstance(value, str)
        and 1 <= len(value) <= ID_MAX_LENGTH
        and all(c in ALPHABET for c in value)
        and value not in DOT_SEGMENTS
    )


@given(valid_ids)
def test_valid_ids_are_returned_unchanged(value: str) -> None:
    assert validate_id(value) is value
    assert is_valid_id(value)


@given(st.text(max_size=200))
def test_any_text_is_valid_exactly_when_the_rule_says_so(value: str) -> None:
    assert is_valid_id(value) == reference(value)
    if reference(value):
        assert validate_id(value, "user id") == value
    else:
        with pytest.raises(InvalidIdError, match="invalid user id") as caught:
            validate_id(value, "user id")
        # the message names the rule and never echoes a huge input in full
        assert "1-64 characters" in str(caught.value)
        assert len(str(caught.value)) < 300


@given(valid_ids, st.sampled_from(["\n", "\r\n", " ", "\t", "\x00", "/", "'", "%", "é", "\u200b"]))
def test_one_foreign_character_anywhere_makes_an_id_invalid(value: str, extra: str) -> None:
    for candidate in (value + extra, extra + value, value[:1] + extra + value[1:]):
        assert not is_valid_id(candidate)
        with pytest.raises(InvalidIdError):
            validate_id(candidate)


@given(st.text(alphabet=ALPHABET, min_size=ID_MAX_LENGTH + 1, max_size=3 * ID_MAX_LENGTH))
def test_ids_longer_than_the_limit_are_invalid(value: str) -> None:
    with pytest.raises(InvalidIdError):
        validate_id(value)


@given(st.one_of(st.integers(), st.floats(), st.binary(), st.none(), st.lists(valid_ids)))
def test_non_strings_are_invalid_ids(value: object) -> None:
    assert not is_valid_id(value)
    with pytest.raises(InvalidIdError, match="must be a string"):
        validate_id(value, "item id")  # type: ignore[arg-type]


@given(st.text(max_size=100))
def test_the_api_pattern_agrees_with_the_validator(value: str) -> None:
    # ID_PATTERN is what the OpenAPI schema publishes; clients check with it.
    assert (re.fullmatch(ID_PATTERN, value) is not None) == is_valid_id(value)


@pytest.mark.parametrize("value", [".", ".."])
def test_url_dot_segments_are_not_ids(value: str) -> None:
    # /items/. and /users/../ratings are rewritten by clients: such ids could be
    # stored but never read back
    assert not is_valid_id(value)
    assert re.fullmatch(ID_PATTERN, value) is None
    with pytest.raises(InvalidIdError, match=r"not '\.' or '\.\.'"):
        validate_id(value, "item id")


@pytest.mark.parametrize("value", ["...", ".a", "a.", "..a", ".a.", "a" * 64, "." + "a" * 63])
def test_ids_with_dots_are_fine_when_they_are_not_dot_segments(value: str) -> None:
    assert is_valid_id(value)
    assert re.fullmatch(ID_PATTERN, value) is not None
