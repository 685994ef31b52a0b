"""``oncotriage serve | worker | db ... | admin ... | datasets from-reviews``.

Heavy imports (FastAPI, SQLAlchemy, uvicorn) happen inside the commands, so
``oncotriage --help`` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from oncotriage.serving.settings import Settings

T = TypeVar("T")

db_app = typer.Typer(name="db", help="The service database: migrations.", no_args_is_help=True)
admin_app = typer.Typer(
    name="admin", help="Hospitals, specialists and API tokens.", no_args_is_help=True
)


class HospitalKindOption(StrEnum):
    COMMUNITY = "community"
    CENTRE = "centre"


def _settings() -> Settings:
    from pydantic import ValidationError

    from oncotriage.serving.settings import get_settings

    try:
        return get_settings()
    except ValidationError as error:
        typer.echo(f"invalid ONCOTRIAGE_* settings:\n{error}", err=True)
        raise typer.Exit(2) from None


def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    workers: Annotated[
        int | None,
        typer.Option(help="In-process worker threads (default ONCOTRIAGE_EMBEDDED_WORKERS)."),
    ] = None,
    demo: Annotated[
        bool,
        typer.Option(
            help="Make demo accounts (tokens under <data dir>/demo/) and an example study."
        ),
    ] = False,
) -> None:
    """Run the triage service (API, in-process workers, model following its registry alias)."""
    import uvicorn

    from oncotriage.logging import configure_logging
    from oncotriage.serving.app import create_app

    settings = _settings()
    if workers is not None:
        settings = settings.model_copy(update={"embedded_workers": workers})
    if settings.log_json:
        configure_logging(json_logs=True)
    if demo:
        if not settings.models and "model_uri" not in settings.model_fields_set:
            # Every bundled demo model present: the radiograph model, and LDCT when bundled.
            import json

            from oncotriage.serving.demo import demo_model_routes

            settings = settings.model_copy(update={"models": json.dumps(demo_model_routes())})
        _announce_demo(settings, host, port)
    app = create_app(settings)
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False)


def _announce_demo(settings: Settings, host: str, port: int) -> None:
    from oncotriage.serving.demo import ensure_demo

    setup = ensure_demo(settings)
    base = f"http://{host}:{port}"
    typer.echo(
        "\n".join(
            [
                "",
                "oncotriage demo (model trained on synthetic images, not for clinical use)",
                f"  pages:      {base}/ui",
                f"  sign in with the specialist token in {setup.specialist_token_file}",
                f"  API docs:   {base}/docs",
                "  push the example study (in another terminal):",
                f"    .venv/bin/oncotriage push --url {base} "
                f"--token-file {setup.hospital_token_file} {setup.example_study}",
                *(
                    [
                        "  and the example low-dose CT:",
                        f"    .venv/bin/oncotriage push --url {base} "
                        f"--token-file {setup.hospital_token_file} {setup.example_ct_study}",
                    ]
                    if setup.example_ct_study is not None
                    else []
                ),
                "",
            ]
        )
    )


def worker(
    threads: Annotated[int, typer.Option(min=1, help="Worker threads in this process.")] = 1,
) -> None:
    """Run workers that take inference jobs and webhook deliveries from the database."""
    import signal
    import threading

    from oncotriage.logging import configure_logging
    from oncotriage.serving.db.migrate import upgrade
    from oncotriage.serving.db.session import Database
    from oncotriage.serving.inference import ModelUnavailableError
    from oncotriage.serving.modelset import ModelSet
    from oncotriage.serving.pool import WorkerPool
    from oncotriage.serving.storage import open_store

    settings = _settings()
    if settings.log_json:
        configure_logging(json_logs=True)
    upgrade(settings.database_url)
    db = Database(settings.database_url)
    models = ModelSet.from_settings(settings, model_threads=threads)
    try:
        models.refresh()
    except ModelUnavailableError as error:
        typer.echo(f"no model yet, waiting for one: {error}", err=True)
    models.start_polling()
    pool = WorkerPool(settings, db, open_store(settings), models, threads)

    def _stop(signum: int, _frame: object) -> None:
        pool.stop_event.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
    pool.start()
    try:
        pool.wait()
    finally:
        pool.stop()
        models.stop()
        db.dispose()


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
) -> None:
    """Create or migrate the schema (ONCOTRIAGE_DATABASE_URL)."""
    from oncotriage.serving.db.migrate import current_revision, upgrade

    settings = _settings()
    upgrade(settings.database_url, revision)
    typer.echo(f"database at revision {current_revision(settings.database_url)}")


@db_app.command("current")
def db_current() -> None:
    """Print the schema revision of the database."""
    from oncotriage.serving.db.migrate import current_revision

    typer.echo(current_revision(_settings().database_url) or "empty")


def _run_account(action: Callable[[Session], T]) -> T:
    """Run ``action(session)`` in a committed transaction (schema migrated first);
    :class:`AccountError` becomes exit status 2 with its message."""
    from oncotriage.serving.accounts import AccountError
    from oncotriage.serving.db.migrate import upgrade
    from oncotriage.serving.db.session import Database

    settings = _settings()
    upgrade(settings.database_url)
    db = Database(settings.database_url)
    try:
        with db.session() as session:
            return action(session)
    except AccountError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    finally:
        db.dispose()


@admin_app.command("create-hospital")
def create_hospital_command(
    name: Annotated[str, typer.Argument(help="Hospital name (unique).")],
    kind: Annotated[HospitalKindOption, typer.Option(help="community or centre.")] = (
        HospitalKindOption.COMMUNITY
    ),
    centre: Annotated[
        str | None, typer.Option(help="The centre a community hospital refers to.")
    ] = None,
    webhook_url: Annotated[
        str | None, typer.Option(help="Where status changes are POSTed.")
    ] = None,
    webhook_secret: Annotated[
        str | None, typer.Option(help="HMAC secret for the webhook (default: generated).")
    ] = None,
) -> None:
    """Add a community hospital or a cancer centre."""
    from oncotriage.serving.accounts import create_hospital

    def action(session: Session) -> tuple[int, str | None, bool]:
        hospital = create_hospital(
            session,
            name,
            kind.value,
            centre=centre,
            webhook_url=webhook_url,
            webhook_secret=webhook_secret,
        )
        return hospital.id, hospital.webhook_secret, webhook_secret is None

    hospital_id, secret, generated = _run_account(action)
    typer.echo(f"hospital {name!r} created (id {hospital_id}, {kind.value})")
    if secret and generated:
        typer.echo(f"webhook secret (shown once): {secret}")


@admin_app.command("create-specialist")
def create_specialist_command(
    username: Annotated[str, typer.Argument(help="User name (unique).")],
    centre: Annotated[str, typer.Option(help="The centre the specialist works at.")],
    display_name: Annotated[str, typer.Option(help="Name shown in the worklist.")] = "",
) -> None:
    """Add a specialist at a centre."""
    from oncotriage.serving.accounts import create_user

    def action(session: Session) -> int:
        return create_user(
            session,
            username,
            "specialist",
            hospital=centre,
            display_name=display_name,
        ).id

    user_id = _run_account(action)
    typer.echo(f"specialist {username!r} created (id {user_id}) at {centre!r}")


@admin_app.command("create-community-doctor")
def create_community_doctor_command(
    username: Annotated[str, typer.Argument(help="User name (unique).")],
    hospital: Annotated[str, typer.Option(help="The community hospital the doctor works at.")],
    display_name: Annotated[str, typer.Option(help="Name shown on referrals.")] = "",
) -> None:
    """Add a community doctor at a community hospital (requests referrals up to its centre
    once granted a licence with ``grant-licence``)."""
    from oncotriage.serving.accounts import create_user

    def action(session: Session) -> int:
        return create_user(
            session,
            username,
            "community_doctor",
            hospital=hospital,
            display_name=display_name,
        ).id

    user_id = _run_account(action)
    typer.echo(f"community doctor {username!r} created (id {user_id}) at {hospital!r}")


@admin_app.command("create-admin")
def create_admin_command(
    username: Annotated[str, typer.Argument(help="User name (unique).")],
) -> None:
    """Add an administrator (sees every hospital's studies)."""
    from oncotriage.serving.accounts import create_user

    user_id = _run_account(lambda session: create_user(session, username, "admin").id)
    typer.echo(f"administrator {username!r} created (id {user_id})")


@admin_app.command("issue-token")
def issue_token_command(
    hospital: Annotated[str | None, typer.Option(help="Token for this hospital's systems.")] = None,
    user: Annotated[str | None, typer.Option(help="Token for this user.")] = None,
    label: Annotated[str, typer.Option(help="What the token is for.")] = "",
) -> None:
    """Issue a bearer token and print it once (only its hash is stored)."""
    from oncotriage.serving.accounts import issue_token

    issued = _run_account(
        lambda session: issue_token(session, hospital=hospital, user=user, label=label)
    )
    typer.echo(issued.token)


@admin_app.command("revoke-token")
def revoke_token_command(
    prefix: Annotated[str, typer.Argument(help="The 12 hex digits after 'otk_'.")],
) -> None:
    """Revoke a token by its prefix."""
    from oncotriage.serving.accounts import revoke_token
    from oncotriage.serving.db.base import utcnow

    if not _run_account(lambda session: revoke_token(session, prefix, at=utcnow())):
        typer.echo(f"no token with prefix {prefix}", err=True)
        raise typer.Exit(2)
    typer.echo(f"token {prefix} revoked")


@admin_app.command("grant-licence")
def grant_licence_command(
    username: Annotated[str, typer.Argument(help="The user (a specialist).")],
    until: Annotated[str, typer.Option(help="Valid until this date (YYYY-MM-DD, UTC).")],
) -> None:
    """Record a referral licence: only licensed users create, accept or return referrals."""
    from datetime import UTC, datetime

    from oncotriage.serving.accounts import grant_licence
    from oncotriage.serving.db.base import utcnow

    try:
        valid_until = datetime.fromisoformat(until).replace(tzinfo=UTC)
    except ValueError:
        typer.echo(f"error: --until {until!r} is not a date like 2027-12-31", err=True)
        raise typer.Exit(2) from None

    licence_id = _run_account(
        lambda session: grant_licence(session, username, valid_until, now=utcnow()).id
    )
    typer.echo(f"referral licence {licence_id} for {username!r} until {valid_until.date()}")


class DimsOption(StrEnum):
    TWO = "2"
    THREE = "3"


def from_reviews_command(
    out: Annotated[Path, typer.Option(help="Output folder (datalist.json and images/).")],
    dims: Annotated[
        DimsOption, typer.Option(help="2: radiographs; 3: CT volumes (one datalist each).")
    ] = DimsOption.TWO,
) -> None:
    """Turn specialists' decisions and corrected boxes into a datalist for retraining."""
    from oncotriage.serving.db.migrate import upgrade
    from oncotriage.serving.from_reviews import export_reviews
    from oncotriage.serving.storage import StoreError, open_store

    settings = _settings()
    upgrade(settings.database_url)
    try:
        path = export_reviews(
            settings.database_url, open_store(settings), out, spatial_dims=int(dims.value)
        )
    except StoreError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"datalist: {path}")


def register(app: typer.Typer) -> None:
    """Add ``serve``, ``worker``, ``db``, ``admin`` and ``datasets from-reviews``."""
    from oncotriage.datasets.cli import datasets_app

    app.command("serve")(serve)
    app.command("worker")(worker)
    app.add_typer(db_app)
    app.add_typer(admin_app)
    datasets_app.command("from-reviews")(from_reviews_command)
