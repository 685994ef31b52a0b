"""The union's figures (``GET /v1/figures``) over a generated year of a 26-hospital union.

One centre and 25 community hospitals, ``--studies`` studies (default 200,000) spread over
twelve months; about 10 % flagged and decided, a fifth of those referred up, most referrals
seen and diagnosed, half returned down, a few overdue or lost. Rows go in with PostgreSQL's
COPY into a schema of their own, which is dropped afterwards (nothing is left behind). The
figures are then computed the way the service computes them (``serving.figures.figures``)
for the centre's specialist, ``--repeat`` times; the table goes to docs/benchmarks.md.

    nice -n 10 .venv/bin/python bench/figures_queries.py            # writes the table
    nice -n 10 .venv/bin/python bench/figures_queries.py --studies 20000 --no-write
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import logging
import os
import platform
import random
import statistics
import sys
import time
import uuid
from pathlib import Path

import sqlalchemy as sa
from benchdoc import markers, write_block
from sqlalchemy.engine import make_url

from oncotriage.serving.db.base import Base
from oncotriage.serving.enums import PrincipalKind, Role
from oncotriage.serving.figures import figures
from oncotriage.serving.security import Principal

logger = logging.getLogger("bench.figures_queries")
DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
HOSPITALS = 26
START = dt.datetime(2025, 12, 1, tzinfo=dt.UTC)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _copy(connection: sa.Connection, table: str, columns: list[str], rows: list[tuple]) -> None:
    """COPY ``rows`` into ``table`` (text format; None is NULL)."""
    buffer = io.StringIO()
    for row in rows:
        buffer.write(
            "\t".join(
                "\\N"
                if value is None
                else value.isoformat()
                if isinstance(value, dt.datetime)
                else str(value)
                for value in row
            )
            + "\n"
        )
    raw = connection.connection.driver_connection
    with (
        raw.cursor() as cursor,
        cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy,
    ):
        copy.write(buffer.getvalue())


def generate(connection: sa.Connection, studies: int, seed: int) -> dict[str, int]:
    """Fill the schema; returns how many rows of each kind."""
    rng = random.Random(seed)
    _copy(
        connection,
        "hospitals",
        ["id", "name", "kind", "centre_id", "created_at"],
        [(1, "Centre", "centre", None, START)]
        + [(i, f"Hospital {i:02d}", "community", 1, START) for i in range(2, HOSPITALS + 1)],
    )
    _copy(
        connection,
        "users",
        ["id", "username", "display_name", "role", "hospital_id", "active", "created_at"],
        [(1, "spec", "spec", "specialist", 1, "t", START)],
    )
    study_rows, review_rows, referral_rows, outcome_rows = [], [], [], []
    year_s = 365 * 86400
    now = START + dt.timedelta(days=365)
    for index in range(studies):
        study_id = str(uuid.UUID(int=rng.getrandbits(128)))
        hospital = rng.randint(2, HOSPITALS)
        received = START + dt.timedelta(seconds=rng.uniform(0, year_s - 86400))
        triaged = received + dt.timedelta(seconds=rng.uniform(1, 60))
        flagged = rng.random() < 0.10
        priority = ("urgent" if rng.random() < 0.2 else "suspicious") if flagged else "routine"
        decided = triaged + dt.timedelta(hours=rng.uniform(0.5, 48)) if flagged else None
        refer = flagged and rng.random() < 0.2
        decision = ("refer" if refer else "return") if flagged else None
        study_rows.append(
            (study_id, hospital, f"1.2.826.0.1.{index}", "DX", "triaged", priority,
             round(rng.random(), 4), "bench", "1", "decided" if flagged else "pending",
             decision, received, triaged, decided, received)
        )  # fmt: skip
        if not flagged:
            continue
        review_id = len(review_rows) + 1
        review_rows.append((review_id, study_id, 1, decision, "", decided))
        if not refer:
            continue
        assert decided is not None
        referral_id = len(referral_rows) + 1
        scheduled = decided + dt.timedelta(days=rng.uniform(0.5, 5))
        appointment = scheduled + dt.timedelta(days=rng.uniform(3, 30))
        fate = rng.random()
        seen = appointment if fate < 0.9 else None
        diagnosed = seen + dt.timedelta(days=rng.uniform(2, 20)) if seen else None
        returned = (
            diagnosed + dt.timedelta(days=rng.uniform(5, 60))
            if diagnosed and rng.random() < 0.5
            else None
        )
        lost = fate > 0.97
        if lost:
            stage, due = "lost", None
        elif returned:
            stage, due = "returned", returned + dt.timedelta(days=7)
        elif diagnosed:
            stage, due = "diagnosed", diagnosed + dt.timedelta(days=7)
        elif seen:
            stage, due = "seen", seen + dt.timedelta(days=14)
        else:
            stage, due = "scheduled", appointment
        referral_rows.append(
            (referral_id, study_id, review_id, hospital, 1, "accepted", "", 1, decided, stage,
             1 if stage != "returned" else hospital, due, appointment, scheduled, seen, diagnosed,
             returned, now if lost else None)
        )  # fmt: skip
        if diagnosed:
            kind = "malignant" if rng.random() < 0.4 else "benign"
            outcome_rows.append(
                (
                    len(outcome_rows) + 1,
                    1,
                    referral_id,
                    study_id,
                    review_id,
                    kind,
                    1,
                    diagnosed,
                    "",
                    "",
                    "",
                )
            )
    _copy(
        connection,
        "studies",
        ["id", "hospital_id", "study_instance_uid", "modality", "status", "priority",
         "suspicion_score", "model_name", "model_version", "review_status", "decision",
         "received_at", "triaged_at", "decided_at", "updated_at"],
        study_rows,
    )  # fmt: skip
    _copy(
        connection,
        "reviews",
        ["id", "study_id", "user_id", "decision", "note", "created_at"],
        review_rows,
    )
    _copy(
        connection,
        "patients",
        ["id", "centre_id", "pseudonym", "created_at"],
        [(1, 1, "0" * 64, START)],
    )
    _copy(
        connection,
        "referrals",
        ["id", "study_id", "review_id", "from_hospital_id", "to_centre_id", "status", "note",
         "created_by_id", "created_at", "stage", "owner_hospital_id", "due_at", "appointment_at",
         "scheduled_at", "seen_at", "diagnosed_at", "returned_at", "lost_at"],
        referral_rows,
    )  # fmt: skip
    _copy(
        connection,
        "outcomes",
        ["id", "patient_id", "referral_id", "study_id", "review_id", "kind", "recorded_by_id",
         "recorded_at", "site", "histology", "cancer_stage"],
        outcome_rows,
    )  # fmt: skip
    connection.execute(sa.text("ANALYZE"))
    return {
        "studies": len(study_rows),
        "decided": len(review_rows),
        "referrals": len(referral_rows),
        "outcomes": len(outcome_rows),
    }


def run(url: str, studies: int, repeat: int, seed: int) -> tuple[dict[str, int], list[float], int]:
    schema = f"bench_figures_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    scoped = make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
    engine = sa.create_engine(scoped, poolclass=sa.pool.NullPool)
    try:
        Base.metadata.create_all(engine)
        started = time.perf_counter()
        with engine.begin() as connection:
            counts = generate(connection, studies, seed)
        logger.info("generated %s in %.1f s", counts, time.perf_counter() - started)
        # a specialist of the centre: visible_hospital_ids gives the whole union
        specialist = Principal(
            kind=PrincipalKind.USER, hospital_id=1, user_id=1, role=Role.SPECIALIST
        )
        timings: list[float] = []
        rows = 0
        now = START + dt.timedelta(days=365)
        with sa.orm.Session(engine) as session:
            for _ in range(repeat):
                started = time.perf_counter()
                result = figures(session, specialist, now=now)
                timings.append(time.perf_counter() - started)
                session.rollback()
                rows = len(result)
        return counts, timings, rows
    finally:
        engine.dispose()
        with admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def table(counts: dict[str, int], timings: list[float], rows: int) -> str:
    start, end = markers("figures_queries")
    return "\n".join(
        [
            start,
            "## The union's figures (PostgreSQL)",
            "",
            f"Machine: {cpu_model()}, {len(os.sched_getaffinity(0))} usable cores; "
            f"PostgreSQL on 127.0.0.1; `nice -n 10 python bench/figures_queries.py`.",
            "",
            f"A generated year of a 26-hospital union: {counts['studies']:,} studies, "
            f"{counts['decided']:,} flagged and decided, {counts['referrals']:,} referrals, "
            f"{counts['outcomes']:,} outcomes. `figures()` (what `GET /v1/figures` runs) for "
            f"the centre's specialist gives {rows} hospital-month rows.",
            "",
            "| runs | median s | best s | worst s | under 1 s |",
            "|---:|---:|---:|---:|:---:|",
            f"| {len(timings)} | {statistics.median(timings):.3f} | {min(timings):.3f} | "
            f"{max(timings):.3f} | {'yes' if max(timings) < 1 else 'no'} |",
            end,
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--url", default=os.environ.get("ONCOTRIAGE_TEST_POSTGRES_URL", DEFAULT_URL)
    )
    parser.add_argument("--studies", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    counts, timings, rows = run(args.url, args.studies, args.repeat, args.seed)
    block = table(counts, timings, rows)
    sys.stdout.write(block + "\n")
    if not args.no_write:
        write_block("figures_queries", block)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
