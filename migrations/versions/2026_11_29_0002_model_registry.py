"""model registry: model_versions and training_runs

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_VERSION_STATUSES = ("training", "candidate", "active", "rejected", "retired", "failed")
_RUN_STATUSES = ("queued", "running", "activated", "rejected", "skipped", "failed")
_RUN_TRIGGERS = ("schedule", "api", "cli")


def _json() -> sa.types.TypeEngine[object]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _now() -> sa.TextClause:
    # Same text format as app.db.types.SQLITE_UTCNOW, so SQLite values sort as times.
    if op.get_context().dialect.name == "sqlite":
        return sa.text("(strftime('%Y-%m-%d %H:%M:%f000', 'now'))")
    return sa.text("now()")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _ts(name: str, **kwargs: object) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), **kwargs)  # type: ignore[arg-type]


def upgrade() -> None:
    op.create_table(
        "model_versions",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        _ts("created_at", server_default=_now(), nullable=False),
        _ts("activated_at", nullable=True),
        sa.Column("artifact_path", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        _ts("artifact_deleted_at", nullable=True),
        sa.Column("n_users", sa.Integer(), nullable=False),
        sa.Column("n_items", sa.Integer(), nullable=False),
        sa.Column("n_ratings", sa.Integer(), nullable=False),
        _ts("snapshot_max_rated_at", nullable=True),
        sa.Column("data_fingerprint", sa.String(200), nullable=True),
        sa.Column("hyperparameters", _json(), nullable=False),
        sa.Column("metrics", _json(), nullable=False),
        sa.Column("training_curves", _json(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.CheckConstraint(_in("status", _VERSION_STATUSES), name=op.f("ck_model_versions_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_versions")),
    )
    # At most one active version, enforced by the database on both backends.
    op.create_index(
        "uq_model_versions_one_active",
        "model_versions",
        ["status"],
        unique=True,
        postgresql_where=sa.text("status = 'active'"),
        sqlite_where=sa.text("status = 'active'"),
    )
    op.create_index("ix_model_versions_created_at", "model_versions", ["created_at"])

    op.create_table(
        "training_runs",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        _ts("requested_at", server_default=_now(), nullable=False),
        _ts("started_at", nullable=True),
        _ts("finished_at", nullable=True),
        sa.Column("owner", sa.String(200), nullable=True),
        sa.Column("n_users", sa.Integer(), nullable=True),
        sa.Column("n_items", sa.Integer(), nullable=True),
        sa.Column("n_ratings", sa.Integer(), nullable=True),
        sa.Column("n_train", sa.Integer(), nullable=True),
        sa.Column("n_validation", sa.Integer(), nullable=True),
        sa.Column("metrics", _json(), nullable=False),
        sa.Column("model_version_id", sa.String(64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint(_in("status", _RUN_STATUSES), name=op.f("ck_training_runs_status")),
        sa.CheckConstraint(_in("trigger", _RUN_TRIGGERS), name=op.f("ck_training_runs_trigger")),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_training_runs_model_version_id_model_versions"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_training_runs")),
    )
    op.create_index("ix_training_runs_status", "training_runs", ["status"])
    op.create_index("ix_training_runs_requested_at", "training_runs", ["requested_at"])


def downgrade() -> None:
    op.drop_index("ix_training_runs_requested_at", table_name="training_runs")
    op.drop_index("ix_training_runs_status", table_name="training_runs")
    op.drop_table("training_runs")
    op.drop_index("ix_model_versions_created_at", table_name="model_versions")
    op.drop_index("uq_model_versions_one_active", table_name="model_versions")
    op.drop_table("model_versions")
