"""``oncotriage serve | worker | dicom-listener | db ... | admin ... | datasets from-reviews``.

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
    name="admin",
    help="Hospitals, specialists, API tokens and DICOM AE titles.",
    no_args_is_help=True,
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


DICOM_LISTENER_HELP = (
    "Receive studies over DICOM DIMSE: C-ECHO, and C-STORE of CT, CR, DX and MG images "
    "(with their SRs, dose reports, secondary captures, presentation states and key "
    "objects).\n\n"
    "Only calling AE titles mapped to a hospital may associate (oncotriage admin "
    "set-ae-title --hospital NAME --ae-title AET); others are rejected. Modalities send to "
    "this listener's AE title (--ae-title) on --port.\n\n"
    "Each instance takes the same checks and storage as STOW-RS and is triaged by the "
    "workers (oncotriage worker, or serve). It is acknowledged (status 0000) only once it "
    "is stored and committed; a refused one gets a failure status with the reason in the "
    "Error Comment. Runs until SIGTERM or Ctrl-C."
)


def dicom_listener(
    host: Annotated[
        str | None,
        typer.Option(help="Address to bind (default ONCOTRIAGE_DICOM_LISTENER_HOST, 127.0.0.1)."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            help="TCP port (default ONCOTRIAGE_DICOM_LISTENER_PORT, else 11112; 0: a free one).",
        ),
    ] = None,
    ae_title: Annotated[
        str | None,
        typer.Option(
            help="The listener's own AE title, the called AE title modalities send to "
            "(default ONCOTRIAGE_DICOM_LISTENER_AE_TITLE, ONCOTRIAGE)."
        ),
    ] = None,
) -> None:
    """Receive studies over DICOM DIMSE (C-ECHO, C-STORE); see DICOM_LISTENER_HELP."""
    import signal
    import threading

    from oncotriage.logging import configure_logging
    from oncotriage.serving.accounts import AccountError
    from oncotriage.serving.db.migrate import upgrade
    from oncotriage.serving.db.session import Database
    from oncotriage.serving.listener import DicomListener
    from oncotriage.serving.storage import open_store

    settings = _settings()
    if settings.log_json:
        configure_logging(json_logs=True)
    upgrade(settings.database_url)
    db = Database(settings.database_url)
    store = open_store(settings)
    store.root.mkdir(parents=True, exist_ok=True)
    try:
        listener = DicomListener(
            settings, db, store, ae_title=ae_title or settings.dicom_listener_ae_title
        )
    except AccountError as error:
        typer.echo(f"error: --ae-title: {error}", err=True)
        raise typer.Exit(2) from None
    if port is None:
        port = settings.dicom_listener_port if settings.dicom_listener_port is not None else 11112
    try:
        address = listener.start(host or settings.dicom_listener_host, port)
    except OSError as error:
        typer.echo(f"error: cannot listen on port {port}: {error}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"DICOM listener {address.ae_title} on {address.host}:{address.port}")
    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while not stop.wait(3600):
            pass
    finally:
        listener.stop()
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


@admin_app.command("set-ae-title")
def set_ae_title_command(
    hospital: Annotated[str, typer.Option(help="The hospital whose modality or PACS it is.")],
    ae_title: Annotated[
        str, typer.Option(help="The calling AE title it uses (at most 16 characters).")
    ],
) -> None:
    """Let a modality or PACS send to the DICOM listener: what arrives from this calling AE
    title is filed under the hospital. Unmapped AE titles are rejected at association."""
    from oncotriage.serving.ae_titles import set_ae_title

    title = _run_account(lambda session: set_ae_title(session, hospital, ae_title).ae_title)
    typer.echo(f"AE title {title!r} sends for {hospital!r}")


@admin_app.command("remove-ae-title")
def remove_ae_title_command(
    ae_title: Annotated[str, typer.Argument(help="The calling AE title to stop accepting.")],
) -> None:
    """Stop accepting associations from a calling AE title."""
    from oncotriage.serving.ae_titles import remove_ae_title

    if not _run_account(lambda session: remove_ae_title(session, ae_title)):
        typer.echo(f"no AE title {ae_title.strip()!r} is mapped", err=True)
        raise typer.Exit(2)
    typer.echo(f"AE title {ae_title.strip()!r} removed")


@admin_app.command("list-ae-titles")
def list_ae_titles_command() -> None:
    """Print each calling AE title the DICOM listener accepts, with its hospital."""
    from oncotriage.serving.ae_titles import list_ae_titles

    for title, hospital in _run_account(list_ae_titles):
        typer.echo(f"{title}\t{hospital}")


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


@admin_app.command("set-results-destination")
def set_results_destination_command(
    hospital: Annotated[str, typer.Argument(help="The hospital (its name).")],
    stow_url: Annotated[
        str | None,
        typer.Option(help="Push by DICOMweb STOW-RS to this URL (e.g. .../dicom-web/studies)."),
    ] = None,
    bearer_token: Annotated[
        str | None, typer.Option(help="STOW-RS: send 'Authorization: Bearer <token>'.")
    ] = None,
    basic_user: Annotated[str | None, typer.Option(help="STOW-RS: HTTP Basic user.")] = None,
    basic_password: Annotated[
        str | None,
        typer.Option(help="STOW-RS: HTTP Basic password.", envvar="ONCOTRIAGE_PUSH_PASSWORD"),
    ] = None,
    ae_title: Annotated[
        str | None, typer.Option(help="Push by C-STORE to the DICOM node with this AE title.")
    ] = None,
    host: Annotated[str | None, typer.Option(help="C-STORE: the node's host.")] = None,
    port: Annotated[int | None, typer.Option(help="C-STORE: the node's port.")] = None,
    calling_ae_title: Annotated[str, typer.Option(help="C-STORE: our AE title.")] = "ONCOTRIAGE",
    clear: Annotated[bool, typer.Option("--clear", help="Stop pushing results.")] = False,
) -> None:
    """Push the hospital's result SRs (on triage and on each decision) to its PACS: by
    STOW-RS (--stow-url, with --bearer-token or --basic-user/--basic-password) or by
    C-STORE (--ae-title, --host, --port)."""
    from oncotriage.serving.push import (
        Destination,
        DestinationError,
        clear_destination,
        set_destination,
    )

    if clear:
        try:
            removed = _run_account(lambda session: clear_destination(session, hospital))
        except DestinationError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(2) from None
        typer.echo(f"{hospital}: results are not pushed" + ("" if removed else " (none was set)"))
        return
    if (stow_url is None) == (ae_title is None):
        typer.echo("error: give either --stow-url or --ae-title/--host/--port", err=True)
        raise typer.Exit(2)
    if stow_url is not None:
        auth = "bearer" if bearer_token else "basic" if basic_user else "none"
        destination = Destination(
            kind="stow",
            url=stow_url,
            auth=auth,
            username=basic_user,
            secret=bearer_token or basic_password,
        )
    else:
        destination = Destination(
            kind="dimse",
            ae_title=ae_title,
            host=host,
            port=port,
            calling_ae_title=calling_ae_title,
        )
    try:
        _run_account(lambda session: set_destination(session, hospital, destination))
    except DestinationError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{hospital}: results are pushed by {destination.describe()}")


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
    """Add ``serve``, ``worker``, ``dicom-listener``, ``db``, ``admin`` and
    ``datasets from-reviews``."""
    from oncotriage.datasets.cli import datasets_app

    app.command("serve")(serve)
    app.command("worker")(worker)
    app.command("dicom-listener", help=DICOM_LISTENER_HELP)(dicom_listener)
    app.add_typer(db_app)
    app.add_typer(admin_app)
    datasets_app.command("from-reviews")(from_reviews_command)
