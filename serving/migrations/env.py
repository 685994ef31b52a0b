"""Alembic environment for the oncotriage service schema."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from oncotriage.serving.db import models  # noqa: F401  (registers the tables)
from oncotriage.serving.db.base import Base
from oncotriage.serving.db.session import create_db_engine

config = context.config
_LOCK = 0x0C0_7A1A6E  # pg advisory lock key of oncotriage migrations
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no sqlalchemy.url: run migrations through oncotriage db upgrade")
    engine = create_db_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                render_as_batch=True,  # SQLite cannot ALTER most things in place
                compare_type=True,
            )
            with context.begin_transaction():
                if connection.dialect.name == "postgresql":
                    # Services and workers may start together: one migrates, the others wait.
                    connection.execute(
                        sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK}
                    )
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
