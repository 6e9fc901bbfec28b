"""The loop's state: label rows (reviewers' feedback and labelers' votes), the audit trail, the generation.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "label_rows",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("post_id", sa.String(512), nullable=False),
        sa.Column("post_digest", sa.String(64), nullable=False),
        sa.Column("post", sa.Text(), nullable=False),
        sa.Column("image", sa.LargeBinary(), nullable=True),
        sa.Column("author", sa.String(64), nullable=True),
        sa.Column("reply_authors", sa.Text(), nullable=False),
        sa.Column("who", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column(
            "labeler_id", sa.Integer(), sa.ForeignKey("labelers.id", ondelete="CASCADE"), nullable=True
        ),
        sa.Column("labels", sa.Text(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("removed_at", sa.Float(), nullable=True),
        sa.Column("removed_by", sa.String(128), nullable=True),
    )
    op.create_index("ix_label_rows_post_id", "label_rows", ["post_id"])
    op.create_index("ix_label_rows_post_digest", "label_rows", ["post_digest"])
    op.create_index("ix_label_rows_author", "label_rows", ["author"])
    op.create_index("ix_label_rows_labeler_id", "label_rows", ["labeler_id"])
    op.create_table(
        "loop_audit",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("who", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("target", sa.String(512), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("why", sa.Text(), nullable=False),
    )
    op.create_index("ix_loop_audit_at", "loop_audit", ["at"])
    generation = op.create_table(
        "loop_generation",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("value", sa.Integer(), nullable=False),
    )
    op.bulk_insert(generation, [{"id": 1, "value": 0}])


def downgrade() -> None:
    for table in ("loop_generation", "loop_audit", "label_rows"):
        op.drop_table(table)
