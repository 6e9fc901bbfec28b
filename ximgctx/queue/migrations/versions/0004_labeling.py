"""Labeling page answers that are not labels: a task a labeler cannot tell, and a post skipped with a reason.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "abstentions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("item_id", sa.Integer(), sa.ForeignKey("items.id", ondelete="CASCADE"), nullable=False),
        sa.Column(
            "labeler_id", sa.Integer(), sa.ForeignKey("labelers.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("task", sa.String(128), nullable=True),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.UniqueConstraint("item_id", "labeler_id", "task", name="uq_abstention_item_labeler_task"),
    )
    op.create_index("ix_abstentions_item_id", "abstentions", ["item_id"])
    op.create_index("ix_abstentions_labeler_id", "abstentions", ["labeler_id"])


def downgrade() -> None:
    op.drop_table("abstentions")
