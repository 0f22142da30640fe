"""The declarative base (with a naming convention, so constraint names are stable in
migrations) and the two row writes every table module shares."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase, Session

__all__ = ["NAMING_CONVENTION", "Base", "insert_row", "update_row"]

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


RowT = TypeVar("RowT", bound=Base)


def insert_row(session: Session, table: type[RowT], **values: Any) -> RowT:
    """Insert a row and read it back (with the values the server set, such as times)."""
    row = table(**values)
    session.add(row)
    session.flush()
    session.refresh(row)
    return row


def update_row(session: Session, row: RowT, **values: Any) -> RowT:
    """Set columns of a row (read with ``FOR UPDATE``) and write them; never commits."""
    for name, value in values.items():
        setattr(row, name, value)
    session.flush()
    return row
