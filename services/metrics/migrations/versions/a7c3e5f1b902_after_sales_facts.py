"""after-sales facts: returns, return steps, refunds, complaints, complaint steps

Revision ID: a7c3e5f1b902
Revises: d41f8e2c7b15
Create Date: 2026-12-03 08:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = 'a7c3e5f1b902'
down_revision: str | None = 'd41f8e2c7b15'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MOMENT = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table('return_request',
    sa.Column('return_id', sa.String(length=64), nullable=False),
    sa.Column('event_id', sa.String(length=64), nullable=False),
    sa.Column('order_id', sa.String(length=64), nullable=False),
    sa.Column('reason', sa.String(length=32), nullable=False),
    sa.Column('units', sa.Integer(), nullable=False),
    sa.Column('requested_at', MOMENT, nullable=False),
    sa.PrimaryKeyConstraint('return_id', name=op.f('pk_return_request'))
    )
    op.create_index(op.f('ix_return_request_order_id'), 'return_request', ['order_id'])
    op.create_index(op.f('ix_return_request_requested_at'), 'return_request', ['requested_at'])
    op.create_table('return_line',
    sa.Column('return_id', sa.String(length=64), nullable=False),
    sa.Column('line_id', sa.String(length=80), nullable=False),
    sa.Column('quantity', sa.Integer(), nullable=False),
    sa.Column('supplier_id', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('return_id', 'line_id', name=op.f('pk_return_line'))
    )
    op.create_table('return_step',
    sa.Column('event_id', sa.String(length=64), nullable=False),
    sa.Column('return_id', sa.String(length=64), nullable=False),
    sa.Column('step', sa.String(length=16), nullable=False),
    sa.Column('supplier_id', sa.String(length=64), nullable=True),
    sa.Column('at', MOMENT, nullable=False),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_return_step'))
    )
    op.create_index(op.f('ix_return_step_return_id'), 'return_step', ['return_id'])
    op.create_table('refund',
    sa.Column('refund_id', sa.String(length=64), nullable=False),
    sa.Column('event_id', sa.String(length=64), nullable=False),
    sa.Column('order_id', sa.String(length=64), nullable=False),
    sa.Column('return_id', sa.String(length=64), nullable=True),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('amount_micros', sa.BigInteger(), nullable=False),
    sa.Column('reason', sa.String(length=32), nullable=False),
    sa.Column('cost_bearer', sa.String(length=16), nullable=False),
    sa.Column('supplier_id', sa.String(length=64), nullable=True),
    sa.Column('channel', sa.String(length=64), nullable=False),
    sa.Column('issued_at', MOMENT, nullable=False),
    sa.PrimaryKeyConstraint('refund_id', name=op.f('pk_refund'))
    )
    op.create_index(op.f('ix_refund_return_id'), 'refund', ['return_id'])
    op.create_index(op.f('ix_refund_issued_at'), 'refund', ['issued_at'])
    op.create_table('complaint',
    sa.Column('complaint_id', sa.String(length=64), nullable=False),
    sa.Column('event_id', sa.String(length=64), nullable=False),
    sa.Column('order_id', sa.String(length=64), nullable=False),
    sa.Column('tier', sa.String(length=16), nullable=False),
    sa.Column('filed_at', MOMENT, nullable=False),
    sa.Column('respond_by', MOMENT, nullable=False),
    sa.Column('resolve_by', MOMENT, nullable=False),
    sa.PrimaryKeyConstraint('complaint_id', name=op.f('pk_complaint'))
    )
    op.create_index(op.f('ix_complaint_filed_at'), 'complaint', ['filed_at'])
    op.create_table('complaint_step',
    sa.Column('event_id', sa.String(length=64), nullable=False),
    sa.Column('complaint_id', sa.String(length=64), nullable=False),
    sa.Column('order_id', sa.String(length=64), nullable=False),
    sa.Column('step', sa.String(length=16), nullable=False),
    sa.Column('tier', sa.String(length=16), nullable=False),
    sa.Column('filed_at', MOMENT, nullable=False),
    sa.Column('at', MOMENT, nullable=False),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_complaint_step'))
    )
    op.create_index(op.f('ix_complaint_step_complaint_id'), 'complaint_step', ['complaint_id'])
    op.create_index(op.f('ix_complaint_step_filed_at'), 'complaint_step', ['filed_at'])


def downgrade() -> None:
    op.drop_index(op.f('ix_complaint_step_filed_at'), table_name='complaint_step')
    op.drop_index(op.f('ix_complaint_step_complaint_id'), table_name='complaint_step')
    op.drop_table('complaint_step')
    op.drop_index(op.f('ix_complaint_filed_at'), table_name='complaint')
    op.drop_table('complaint')
    op.drop_index(op.f('ix_refund_issued_at'), table_name='refund')
    op.drop_index(op.f('ix_refund_return_id'), table_name='refund')
    op.drop_table('refund')
    op.drop_index(op.f('ix_return_step_return_id'), table_name='return_step')
    op.drop_table('return_step')
    op.drop_table('return_line')
    op.drop_index(op.f('ix_return_request_requested_at'), table_name='return_request')
    op.drop_index(op.f('ix_return_request_order_id'), table_name='return_request')
    op.drop_table('return_request')
