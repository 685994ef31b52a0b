"""Settings, schema migrations, the admin CLI, token handling and the content store."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from pydantic import ValidationError
from typer.testing import CliRunner

from oncotriage.cli import app
from oncotriage.serving.accounts import AccountError, create_hospital, create_user, issue_token
from oncotriage.serving.db.base import Base, utcnow
from oncotriage.serving.db.migrate import current_revision, downgrade, upgrade
from oncotriage.serving.db.session import Database, create_db_engine
from oncotriage.serving.enums import PrincipalKind, Priority
from oncotriage.serving.security import AuthenticationError, authenticate, hash_token
from oncotriage.serving.settings import Settings
from oncotriage.serving.storage import ContentStore, StoreError

GOOD_SECRET = "a-real-secret-of-more-than-thirty-two-characters"


def test_settings_defaults_derive_from_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.database_url == f"sqlite:///{tmp_path / 'oncotriage.db'}"
    assert settings.image_store_dir == tmp_path / "store"
    assert settings.heartbeat_interval_s == pytest.approx(settings.job_lease_s / 3)
    assert settings.model_uri == "models:/oncotriage-cxr2d@champion"
    assert settings.sla_minutes(Priority.URGENT) == 60
    assert settings.sla_minutes("routine") == 7 * 24 * 60


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ONCOTRIAGE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("ONCOTRIAGE_EMBEDDED_WORKERS", "0")
    monkeypatch.setenv("ONCOTRIAGE_INFERENCE_BACKEND", "triton")
    settings = Settings()
    assert (settings.data_dir, settings.embedded_workers, settings.inference_backend) == (
        tmp_path,
        0,
        "triton",
    )


@pytest.mark.parametrize("secret", ["change-me", "secret", "short-but-not-placeholder"])
@pytest.mark.parametrize("environment", ["production", "test"])
def test_placeholder_secrets_are_refused_outside_development(environment: str, secret: str) -> None:
    with pytest.raises(ValidationError, match="ONCOTRIAGE_SECRET_KEY"):
        Settings(environment=environment, secret_key=secret)
    assert Settings(environment="development", secret_key=secret).environment == "development"
    assert Settings(environment=environment, secret_key=GOOD_SECRET).environment == environment


def test_heartbeat_must_be_shorter_than_the_lease() -> None:
    with pytest.raises(ValidationError, match="job_heartbeat_s"):
        Settings(job_lease_s=10, job_heartbeat_s=10)


def test_migrations_match_the_models_and_go_both_ways(db_url: str) -> None:
    from alembic.script import ScriptDirectory

    from oncotriage.serving.db.migrate import alembic_config

    head = ScriptDirectory.from_config(alembic_config(db_url)).get_current_head()
    assert head is not None and head != "0001"  # the schema has revisions after the first
    upgrade(db_url)
    assert current_revision(db_url) == head
    engine = create_db_engine(db_url, poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
    downgrade(db_url, "base")
    assert current_revision(db_url) is None
    with engine.connect() as connection:
        assert set(sa.inspect(connection).get_table_names()) <= {"alembic_version"}
    upgrade(db_url)
    assert current_revision(db_url) == head
    engine.dispose()


def test_tokens_are_stored_hashed_and_checked(db_url: str) -> None:
    upgrade(db_url)
    db = Database(db_url)
    with db.session() as session:
        create_hospital(session, "Centre", "centre")
        create_hospital(session, "Hospital A", centre="Centre")
        create_user(session, "spec", "specialist", hospital="Centre")
        issued = issue_token(session, hospital="Hospital A")
        user_token = issue_token(session, user="spec").token
        with pytest.raises(AccountError, match="exactly one"):
            issue_token(session, hospital="Hospital A", user="spec")
        with pytest.raises(AccountError, match="centre"):
            create_user(session, "lost", "specialist", hospital="Hospital A")
    with db.session() as session:
        stored = session.execute(sa.text("SELECT prefix, token_hash FROM api_tokens")).all()
        assert issued.token not in {value for row in stored for value in row}
        assert (issued.prefix, hash_token(issued.token)) in [tuple(row) for row in stored]
        principal = authenticate(session, issued.token)
        assert (principal.kind, principal.name) == ("hospital", "Hospital A")
        specialist = authenticate(session, user_token)
        assert specialist.is_specialist and specialist.name == "spec"
        for bad in (issued.token[:-1] + "x", "otk_nothex_abc", issued.token + "x"):
            with pytest.raises(AuthenticationError):
                authenticate(session, bad)
    db.dispose()


def test_admin_cli_creates_accounts_and_prints_a_working_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from oncotriage.serving.settings import get_settings

    monkeypatch.setenv("ONCOTRIAGE_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    runner = CliRunner()
    try:
        steps = [
            ["db", "upgrade"],
            ["admin", "create-hospital", "Centre", "--kind", "centre"],
            [
                "admin",
                "create-hospital",
                "Hospital A",
                "--centre",
                "Centre",
                "--webhook-url",
                "https://a.example/hook",
            ],
            ["admin", "create-specialist", "spec", "--centre", "Centre"],
            ["admin", "grant-licence", "spec", "--until", "2099-12-31"],
            ["admin", "issue-token", "--hospital", "Hospital A"],
        ]
        results = [runner.invoke(app, args) for args in steps]
        assert [r.exit_code for r in results] == [0] * len(steps), [r.output for r in results]
        assert "database at revision " in results[0].output
        assert "referral licence 1 for 'spec' until 2099-12-31" in results[4].output
        refused = runner.invoke(app, ["admin", "grant-licence", "nobody", "--until", "2099-12-31"])
        assert refused.exit_code == 2 and "no user named 'nobody'" in refused.output
        lapsed = runner.invoke(app, ["admin", "grant-licence", "spec", "--until", "2001-01-01"])
        assert lapsed.exit_code == 2 and "in the future" in lapsed.output
        assert "webhook secret (shown once):" in results[2].output
        token = results[-1].output.strip()
        duplicate = runner.invoke(app, ["admin", "create-hospital", "Centre", "--kind", "centre"])
        assert duplicate.exit_code == 2 and "already exists" in duplicate.output
        db = Database(f"sqlite:///{tmp_path / 'oncotriage.db'}")
        with db.session() as session:
            assert authenticate(session, token).name == "Hospital A"
        prefix = token.split("_")[1]
        assert runner.invoke(app, ["admin", "revoke-token", prefix]).exit_code == 0
        with db.session() as session, pytest.raises(AuthenticationError, match="revoked"):
            authenticate(session, token, now=utcnow())
        db.dispose()
    finally:
        get_settings.cache_clear()


def test_content_store_paths_come_from_hashes_only(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    first = store.put(b"DICM bytes")
    again = store.put(b"DICM bytes")
    assert (first.created, again.created) == (True, False)
    assert (
        first.relative_path
        == f"objects/{first.content_hash[:2]}/{first.content_hash[2:4]}/{first.content_hash}.dcm"
    )
    assert store.get(first.relative_path) == b"DICM bytes"
    for hostile in (
        "../../etc/passwd",
        "objects/../../x.dcm",
        "objects/ab/cd/" + "a" * 64 + ".dcm",
        "/etc/passwd",
    ):
        with pytest.raises(StoreError):
            store.path(hostile)
    with pytest.raises(StoreError):
        ContentStore.relative_path_for("../" + "a" * 61)


def _root_conftest():  # the shared fixtures module (tests/conftest.py)
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "conftest.py"
    spec = importlib.util.spec_from_file_location("oncotriage_root_conftest", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("ci", "outcome"), [("true", "failed"), ("", "skipped")])
def test_unreachable_postgres_fails_in_ci_and_skips_elsewhere(
    monkeypatch: pytest.MonkeyPatch, ci: str, outcome: str
) -> None:
    conftest = _root_conftest()
    monkeypatch.setenv(
        "ONCOTRIAGE_TEST_POSTGRES_URL", "postgresql+psycopg://nobody@127.0.0.1:9/none"
    )
    monkeypatch.setenv("CI", ci)
    expected = pytest.fail.Exception if outcome == "failed" else pytest.skip.Exception
    with pytest.raises(expected, match="not reachable"):
        conftest.require_postgres()


def test_token_cache_forgets_after_its_ttl() -> None:
    import time

    from oncotriage.serving.api.deps import TokenCache
    from oncotriage.serving.security import Principal

    principal = Principal(kind=PrincipalKind.HOSPITAL, hospital_id=1, name="Hospital A")
    cache = TokenCache(ttl_s=0.2)
    cache.put("otk_token", principal)
    assert cache.get("otk_token") == principal
    assert cache.get("otk_other") is None
    time.sleep(0.25)
    assert cache.get("otk_token") is None
    disabled = TokenCache(ttl_s=0)
    disabled.put("otk_token", principal)
    assert disabled.get("otk_token") is None
