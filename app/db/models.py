"""ORM models of the ratings store (SQLAlchemy 2 typed mappings)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    String,
    Text,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base

ID_LENGTH = 64
"""User and item ids are opaque strings of 1-64 characters: letters, digits, ``_.:-``."""
ID_PATTERN = r"^[A-Za-z0-9_.:\-]{1,64}$"


class Item(Base):
    __tablename__ = "items"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    title: Mapped[str] = mapped_column(Text, default="")
    genres: Mapped[list[str]] = mapped_column(JSON, default=list)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class Rating(Base):
    __tablename__ = "ratings"
    __table_args__ = (Index("ix_ratings_item_id", "item_id"),)

    # The composite primary key is the "one row per (user, item)" rule and the
    # index for "all ratings of a user"; ix_ratings_item_id serves "all of an item".
    user_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    item_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("items.id", ondelete="CASCADE"), primary_key=True
    )
    rating: Mapped[float] = mapped_column(Float)
    rated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
