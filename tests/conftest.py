"""Shared fixtures.

``db_url``: an empty database for one test, on SQLite and on PostgreSQL. PostgreSQL is
``postgresql+psycopg://postgres@127.0.0.1:5432/test`` (override with
``ONCOTRIAGE_TEST_POSTGRES_URL``); each test gets its own schema (through the connection's
``search_path``), dropped afterwards. Where PostgreSQL cannot be reached the PostgreSQL
cases are skipped, except in CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def postgres_base_url() -> str:
    return os.environ.get("ONCOTRIAGE_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


@functools.cache
def _postgres_error(url: str) -> str | None:
    """``None`` when PostgreSQL at ``url`` answers, else why not (checked once per session)."""
    import sqlalchemy as sa

    try:
        engine = sa.create_engine(
            url, connect_args={"connect_timeout": 3}, poolclass=sa.pool.NullPool
        )
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
        engine.dispose()
    except Exception as error:  # any driver or network error means "not reachable"
        return f"{type(error).__name__}: {error}"
    return None


def require_postgres() -> None:
    """Skip (or, with ``CI=true``, fail) when PostgreSQL is not reachable."""
    error = _postgres_error(postgres_base_url())
    if error is None:
        return
    message = f"PostgreSQL at {postgres_base_url()} is not reachable: {error}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " (CI=true: PostgreSQL tests must run)")
    pytest.skip(message)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL whose ``search_path`` is a fresh schema (dropped afterwards)."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    require_postgres()
    schema = f"test_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(postgres_base_url(), poolclass=sa.pool.NullPool)
    with admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(postgres_base_url()).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ]
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database for this test, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'oncotriage.db'}"
    return str(request.getfixturevalue("postgres_url"))
