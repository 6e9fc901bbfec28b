"""Erasure in the store: purge audit records, the erased authors' keyed digests, replicas' acknowledgements.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "purges",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("opt_out", sa.String(128), nullable=False),
        sa.Column("key_id", sa.String(16), nullable=True),
        sa.Column("opted_out_authors", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.String(40), nullable=False),
        sa.Column("completed_at", sa.String(40), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("targets", sa.Text(), nullable=False),
        sa.Column("counts", sa.Text(), nullable=True),
        sa.Column("generation", sa.Integer(), nullable=True),
    )
    op.create_index("ix_purges_state", "purges", ["state"])
    op.create_index("ix_purges_opt_out", "purges", ["opt_out"])
    op.create_table(
        "erased_authors",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("purge_id", sa.String(32), nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.UniqueConstraint("key_id", "digest", name="uq_erased_author_key_digest"),
    )
    op.create_index("ix_erased_authors_purge_id", "erased_authors", ["purge_id"])
    op.create_table(
        "replicas",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("applied_at", sa.Float(), nullable=False),
        sa.Column("seen_at", sa.Float(), nullable=False),
        sa.Column("problem", sa.Text(), nullable=False),
    )
    op.create_index("ix_replicas_seen_at", "replicas", ["seen_at"])


def downgrade() -> None:
    for table in ("replicas", "erased_authors", "purges"):
        op.drop_table(table)
