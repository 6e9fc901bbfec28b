"""The queue's first schema: settings, labelers, sessions, items, assignments, votes.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "queue_settings",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )
    op.create_table(
        "labelers",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("digest", sa.String(64), nullable=False, unique=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
    )
    op.create_table(
        "sessions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column(
            "labeler_id", sa.Integer(), sa.ForeignKey("labelers.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("expires_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_sessions_labeler_id", "sessions", ["labeler_id"])
    op.create_table(
        "items",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("post_id", sa.String(512), nullable=False, unique=True),
        sa.Column("post", sa.Text(), nullable=False),
        sa.Column("image", sa.LargeBinary(), nullable=True),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("overlap", sa.Integer(), nullable=False),
        sa.Column("taken", sa.Integer(), nullable=False),
        sa.Column("gold", sa.Text(), nullable=True),
        sa.Column("scores", sa.Text(), nullable=True),
        sa.Column("author", sa.String(64), nullable=True),
        sa.Column("reply_authors", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_items_priority", "items", ["priority"])
    op.create_index("ix_items_author", "items", ["author"])
    op.create_table(
        "assignments",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("item_id", sa.Integer(), sa.ForeignKey("items.id", ondelete="CASCADE"), nullable=False),
        sa.Column(
            "labeler_id", sa.Integer(), sa.ForeignKey("labelers.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("leased_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("done_at", sa.Float(), nullable=True),
        sa.UniqueConstraint("item_id", "labeler_id", name="uq_assignment_item_labeler"),
    )
    op.create_index("ix_assignments_item_id", "assignments", ["item_id"])
    op.create_index("ix_assignments_labeler_id", "assignments", ["labeler_id"])
    op.create_index("ix_assignments_expires_at", "assignments", ["expires_at"])
    op.create_table(
        "votes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("item_id", sa.Integer(), sa.ForeignKey("items.id", ondelete="CASCADE"), nullable=False),
        sa.Column(
            "labeler_id", sa.Integer(), sa.ForeignKey("labelers.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("task", sa.String(128), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.UniqueConstraint("item_id", "labeler_id", "task", name="uq_vote_item_labeler_task"),
    )
    op.create_index("ix_votes_item_id", "votes", ["item_id"])
    op.create_index("ix_votes_labeler_id", "votes", ["labeler_id"])


def downgrade() -> None:
    for table in ("votes", "assignments", "items", "sessions", "labelers", "queue_settings"):
        op.drop_table(table)
