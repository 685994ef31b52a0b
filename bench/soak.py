"""Soak: the real service under mixed traffic on loopback for a long time (30 minutes by
default). It answers three questions a hospital's operator asks before trusting a service
to run for months:

- does its memory stay bounded (RSS of the ``serve`` process sampled every few seconds; the
  growth trend is the least-squares slope over the second half of the run, in MB per hour);
- does it keep answering (errors: 5xx answers and dropped connections, which must be 0);
- does triage stay fast (time to triage percentiles, from the service's own timestamps).

Traffic, from ``--hospitals`` community hospitals and one specialist, all on 127.0.0.1:
each hospital pushes a synthetic radiograph study over STOW-RS every ``--interval`` seconds
(new UIDs every time), follows it (study, result, report.dcm, render.png), and lists its
studies; the specialist reads the worklist and decides one case in three. The run stops by
itself after ``--minutes``.

    python bench/soak.py --minutes 30            # writes its table to docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from benchdoc import markers, write_block
from service_load import (
    DEMO_MODEL,
    create_hospitals,
    free_port,
    start_service,
    write_studies,
)

BLOCK = "soak"
TOKEN_PREFIX = "otk_"
RELATED = 'multipart/related; type="application/dicom"; boundary='
HEADER = (
    "| duration | studies pushed | decided | requests | errors (5xx, dropped) "
    "| RSS start / max / end | RSS trend, 2nd half | time to triage p50 / p95 / p99 |"
)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def slope_mb_per_hour(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of RSS (MB) over time (s), per hour."""
    if len(samples) < 3:
        return 0.0
    t = np.array([s[0] for s in samples])
    y = np.array([s[1] for s in samples])
    return float(np.polyfit(t, y, 1)[0] * 3600)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


@dataclass
class Tally:
    requests: int = 0
    errors: list[str] = field(default_factory=list)
    pushed: int = 0
    decided: int = 0
    keepalive_retries: int = 0
    study_ids: list[tuple[str, str]] = field(default_factory=list)  # (token, id)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, response: httpx.Response | None, what: str) -> None:
        with self.lock:
            self.requests += 1
            if response is None or response.status_code >= 500:
                code = "dropped" if response is None else str(response.status_code)
                self.errors.append(f"{what}: {code}")


def fresh_body(files: list[Path], boundary: str) -> bytes:
    """The study's files with new Study/Series/SOP Instance UIDs (a new study each push)."""
    import io

    import pydicom
    from pydicom.uid import generate_uid

    from oncotriage.serving.dicomweb import encode_multipart

    study, series = generate_uid(), generate_uid()
    parts = []
    for path in files:
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        parts.append(buffer.getvalue())
    return encode_multipart(parts, "application/dicom", boundary)


def call(
    client: httpx.Client, tally: Tally, method: str, path: str, **kwargs
) -> httpx.Response | None:
    """One request. A keep-alive connection the server closed just as the client reused it
    (uvicorn closes idle connections after 5 s) is retried once on a new connection, as
    HTTP clients do, and counted apart; any other transport error is an error."""
    for attempt in (1, 2):
        try:
            response = client.request(method, path, **kwargs)
            break
        except httpx.RemoteProtocolError:
            if attempt == 2:
                response = None
                break
            with tally.lock:
                tally.keepalive_retries += 1
        except httpx.TransportError:
            response = None
            break
    tally.answer(response, f"{method} {path.split('?')[0]}")
    return response


def hospital_loop(
    url: str,
    token: str,
    folders: list[Path],
    tally: Tally,
    stop: threading.Event,
    interval: float,
    seed: int,
) -> None:
    rng = random.Random(seed)
    boundary = "soak-boundary"
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        while not stop.is_set():
            started = time.monotonic()
            folder = rng.choice(folders)
            body = fresh_body(sorted(folder.glob("*.dcm")), boundary)
            answer = call(
                client,
                tally,
                "POST",
                "/dicomweb/studies",
                content=body,
                headers={"Content-Type": RELATED + boundary},
            )
            if answer is not None and answer.status_code in (200, 202):
                study_id = answer.headers.get("location", "").rsplit("/", 1)[-1]
                with tally.lock:
                    tally.pushed += 1
                    tally.study_ids.append((token, study_id))
                for _ in range(40):  # follow it as a hospital system would
                    state = call(client, tally, "GET", f"/v1/studies/{study_id}")
                    if state is None or state.status_code != 200:
                        break
                    if state.json()["status"] in ("triaged", "failed"):
                        break
                    stop.wait(0.5)
                for suffix in ("/result", "/report.dcm", "/render.png?size=256"):
                    call(client, tally, "GET", f"/v1/studies/{study_id}{suffix}")
            call(client, tally, "GET", "/v1/studies?limit=20")
            stop.wait(max(0.0, interval - (time.monotonic() - started)))


def specialist_loop(url: str, token: str, tally: Tally, stop: threading.Event) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    turn = 0
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        while not stop.is_set():
            listed = call(client, tally, "GET", "/v1/worklist?limit=20")
            if listed is not None and listed.status_code == 200:
                for item in listed.json()["data"][:3]:
                    turn += 1
                    if turn % 3:
                        continue
                    claimed = call(client, tally, "POST", f"/v1/worklist/{item['id']}/claim")
                    if claimed is not None and claimed.status_code == 200:
                        decided = call(
                            client,
                            tally,
                            "POST",
                            f"/v1/studies/{item['id']}/review",
                            json={"decision": "return", "note": "soak"},
                        )
                        if decided is not None and decided.status_code == 201:
                            with tally.lock:
                                tally.decided += 1
            stop.wait(2.0)


def specialist_token(service) -> str:
    service.admin("create-specialist", "soak.specialist", "--centre", "Bench Centre")
    output = service.admin("issue-token", "--user", "soak.specialist")
    for word in output.split():
        if word.startswith(TOKEN_PREFIX):
            return word.strip(".,")
    raise RuntimeError(f"no token in:\n{output}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--hospitals", type=int, default=4)
    parser.add_argument(
        "--interval", type=float, default=4.0, help="seconds between a hospital's pushes"
    )
    parser.add_argument("--sample-s", type=float, default=5.0)
    parser.add_argument("--no-doc", action="store_true", help="print the table only")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="oncotriage-soak-"))
    folders = write_studies("cxr", 24, work / "studies", seed=11)
    port = free_port()
    env = {
        "ONCOTRIAGE_ENVIRONMENT": "development",
        "ONCOTRIAGE_DATA_DIR": str(work / "data"),
        "ONCOTRIAGE_MODEL_URI": str(DEMO_MODEL),
        "ONCOTRIAGE_REGISTER_DEMO_MODEL": "false",
        "ONCOTRIAGE_MLFLOW_TRACKING_URI": f"sqlite:///{work / 'data' / 'mlflow.db'}",
        "ONCOTRIAGE_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "ONCOTRIAGE_LOG_JSON": "true",
    }
    service = start_service(work, env, port)
    try:
        tokens = create_hospitals(service, args.hospitals)
        specialist = specialist_token(service)
        tally, stop = Tally(), threading.Event()
        threads = [
            threading.Thread(
                target=hospital_loop,
                args=(service.url, token, folders, tally, stop, args.interval, index),
                daemon=True,
            )
            for index, token in enumerate(tokens.values())
        ]
        threads.append(
            threading.Thread(
                target=specialist_loop, args=(service.url, specialist, tally, stop), daemon=True
            )
        )
        started = time.monotonic()
        samples = [(0.0, rss_mb(service.process.pid))]
        for thread in threads:
            thread.start()
        end = started + args.minutes * 60
        while time.monotonic() < end:
            time.sleep(min(args.sample_s, max(0.0, end - time.monotonic())))
            if service.process.poll() is not None:
                tally.errors.append("the service process exited")
                break
            samples.append((time.monotonic() - started, rss_mb(service.process.pid)))
            done = (time.monotonic() - started) / 60
            print(
                f"\r{done:5.1f}/{args.minutes:g} min  RSS {samples[-1][1]:6.1f} MB  "
                f"studies {tally.pushed}  errors {len(tally.errors)}",
                end="",
                file=sys.stderr,
            )
        stop.set()
        for thread in threads:
            thread.join(timeout=90)
        print(file=sys.stderr)
        triage_s: list[float] = []
        with httpx.Client(base_url=service.url, timeout=30) as client:
            for token, study_id in tally.study_ids:
                answer = client.get(
                    f"/v1/studies/{study_id}", headers={"Authorization": f"Bearer {token}"}
                )
                if answer.status_code == 200 and answer.json().get("time_to_triage_s") is not None:
                    triage_s.append(float(answer.json()["time_to_triage_s"]))
    finally:
        service.stop()
    second_half = [s for s in samples if s[0] >= samples[-1][0] / 2]
    rss = [s[1] for s in samples]
    lines = [
        f"Machine: {cpu_model()}, {len(os.sched_getaffinity(0))} usable cores; "
        f"`python bench/soak.py --minutes {args.minutes:g} --hospitals {args.hospitals} "
        f"--interval {args.interval:g}` (demo model, SQLite, in-process workers, loopback).",
        "",
        HEADER,
        "|---|---|---|---|---|---|---|---|",
        f"| {samples[-1][0] / 60:.1f} min | {tally.pushed} | {tally.decided} | {tally.requests} | "
        f"{len(tally.errors)} | {rss[0]:.0f} / {max(rss):.0f} / {rss[-1]:.0f} MB | "
        f"{slope_mb_per_hour(second_half):+.1f} MB/h | "
        f"{percentile(triage_s, 50):.2f} / {percentile(triage_s, 95):.2f} / "
        f"{percentile(triage_s, 99):.2f} s |",
    ]
    lines += [
        "",
        f"Requests retried once after the server closed an idle keep-alive connection as the "
        f"client reused it: {tally.keepalive_retries}. The machine was shared with other work "
        "during the run (times to triage include that).",
    ]
    if tally.errors:
        lines += ["", "Errors: " + "; ".join(sorted(set(tally.errors))[:10])]
    table = "\n".join(lines)
    print(table)
    if not args.no_doc:
        start, end_marker = markers(BLOCK)
        title = "### Soak: memory, errors and time to triage over a long run"
        write_block(BLOCK, f"{start}\n{title}\n\n{table}\n{end_marker}")
    return 0 if not tally.errors else 1


if __name__ == "__main__":
    sys.exit(main())
