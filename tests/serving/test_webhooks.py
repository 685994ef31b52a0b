from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from oncotriage.serving.webhooks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    deliver,
    sign_payload,
    verify_signature,
)

SECRET = "whsec_synthetic_test_secret"
EVENT = {"type": "study.status", "study_id": "s-1", "status": "triaged", "priority": "urgent"}


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float
    signature_ok: bool


@dataclass
class Receiver:
    """A real HTTP endpoint on 127.0.0.1 answering with the scripted status codes in turn."""

    statuses: list[int]
    extra_headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    received: list[Received] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(statuses=[])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server API)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.received.append(
                Received(
                    headers=dict(self.headers.items()),
                    body=body,
                    at=time.monotonic(),
                    # the receiving side checks the signature as a hospital would
                    signature_ok=verify_signature(
                        SECRET, body, self.headers.get(SIGNATURE_HEADER, "")
                    ),
                )
            )
            if state.delay_s:
                time.sleep(state.delay_s)
            index = len(state.received) - 1
            status = state.statuses[min(index, len(state.statuses) - 1)]
            self.send_response(status)
            for name, value in state.extra_headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/oncotriage"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def test_fails_twice_then_delivers_with_backoff(receiver: Receiver) -> None:
    receiver.statuses = [503, 502, 200]
    result = deliver(receiver.url, SECRET, EVENT, backoff_s=0.05, max_attempts=5)
    assert result.delivered
    assert result.attempts == 3
    assert result.status_code == 200
    assert result.error is None
    assert len(receiver.received) == 3
    assert all(r.signature_ok for r in receiver.received)
    assert {r.headers[DELIVERY_HEADER] for r in receiver.received} == {result.delivery_id}
    assert all(r.headers[EVENT_HEADER] == "study.status" for r in receiver.received)
    assert all(r.headers["Content-Type"] == "application/json" for r in receiver.received)
    assert json.loads(receiver.received[-1].body) == {**EVENT, "delivery_id": result.delivery_id}
    gaps = [b.at - a.at for a, b in zip(receiver.received, receiver.received[1:], strict=False)]
    assert gaps[0] >= 0.05 * 0.9 and gaps[1] >= 0.10 * 0.9  # exponential backoff


def test_the_events_own_delivery_id_is_sent_in_header_and_body(receiver: Receiver) -> None:
    receiver.statuses = [503, 200]
    event = {**EVENT, "delivery_id": "4a1f0c9e-2b7d-4f4e-9a51-3c2d7e8f9a10"}
    result = deliver(receiver.url, SECRET, event, backoff_s=0.01, max_attempts=3)
    assert result.delivered and result.delivery_id == event["delivery_id"]
    for attempt in receiver.received:
        assert attempt.headers[DELIVERY_HEADER] == event["delivery_id"]
        assert json.loads(attempt.body)["delivery_id"] == event["delivery_id"]


@pytest.mark.parametrize("status", [400, 401, 404, 410, 422])
def test_client_errors_are_not_retried(receiver: Receiver, status: int) -> None:
    receiver.statuses = [status, 200]
    result = deliver(receiver.url, SECRET, EVENT, backoff_s=0.01)
    assert (result.delivered, result.attempts, result.status_code) == (False, 1, status)
    assert result.error == f"HTTP {status}"
    assert len(receiver.received) == 1


@pytest.mark.parametrize("status", [408, 429, 500, 503])
def test_transient_statuses_are_retried(receiver: Receiver, status: int) -> None:
    receiver.statuses = [status, 204]
    result = deliver(receiver.url, SECRET, EVENT, backoff_s=0.01)
    assert (result.delivered, result.attempts, result.status_code) == (True, 2, 204)


def test_gives_up_after_max_attempts(receiver: Receiver) -> None:
    receiver.statuses = [500]
    result = deliver(receiver.url, SECRET, EVENT, backoff_s=0.01, max_attempts=3)
    assert (result.delivered, result.attempts, result.status_code) == (False, 3, 500)
    assert len(receiver.received) == 3


def test_retry_after_is_honoured(receiver: Receiver) -> None:
    receiver.statuses = [429, 200]
    receiver.extra_headers = {"Retry-After": "0.3"}
    result = deliver(receiver.url, SECRET, EVENT, backoff_s=0.01)
    assert result.delivered
    assert receiver.received[1].at - receiver.received[0].at >= 0.3 * 0.9


def test_connection_refused_is_retried_then_reported() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = deliver(f"http://127.0.0.1:{port}/", SECRET, EVENT, backoff_s=0.01, max_attempts=3)
    assert (result.delivered, result.attempts, result.status_code) == (False, 3, None)
    assert result.error is not None and "ConnectError" in result.error


def test_timeouts_are_retried(receiver: Receiver) -> None:
    receiver.statuses = [200]
    receiver.delay_s = 0.5
    result = deliver(receiver.url, SECRET, EVENT, timeout_s=0.1, backoff_s=0.01, max_attempts=2)
    assert (result.delivered, result.attempts) == (False, 2)
    assert result.error is not None and "Timeout" in result.error


def test_a_shared_client_is_left_open(receiver: Receiver) -> None:
    receiver.statuses = [200]
    with httpx.Client() as client:
        assert deliver(receiver.url, SECRET, EVENT, client=client).delivered
        assert deliver(receiver.url, SECRET, {**EVENT, "status": "failed"}, client=client).delivered
        assert not client.is_closed
    assert len(receiver.received) == 2


def test_signature_matches_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b'{"a":1}'
    expected = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign_payload(SECRET, body, 1700000000) == f"t=1700000000,v1={expected}"


T0 = 1_700_000_000
BODY = b'{"type":"study.status"}'


@pytest.mark.parametrize(
    ("secret", "body", "header", "now", "valid"),
    [
        (SECRET, BODY, sign_payload(SECRET, BODY, T0), T0, True),
        (SECRET, BODY, sign_payload(SECRET, BODY, T0), T0 + 300, True),
        (SECRET, BODY, sign_payload(SECRET, BODY, T0), T0 + 301, False),  # replay, too old
        (SECRET, BODY, sign_payload(SECRET, BODY, T0), T0 - 301, False),  # from the future
        ("other-secret", BODY, sign_payload(SECRET, BODY, T0), T0, False),
        (SECRET, BODY + b" ", sign_payload(SECRET, BODY, T0), T0, False),  # tampered body
        # the timestamp is signed: moving it forward breaks the signature
        (SECRET, BODY, sign_payload(SECRET, BODY, T0).replace(f"t={T0}", f"t={T0 + 9}"), T0, False),
        # rotation: an old-secret signature next to the new one
        (
            SECRET,
            BODY,
            sign_payload("old", BODY, T0) + "," + sign_payload(SECRET, BODY, T0).split(",")[1],
            T0,
            True,
        ),
        (SECRET, BODY, "", T0, False),
        (SECRET, BODY, "garbage", T0, False),
        (SECRET, BODY, f"t=abc,v1={'0' * 64}", T0, False),
        (SECRET, BODY, f"v1={'0' * 64}", T0, False),
        (SECRET, BODY, f"t={T0}", T0, False),
        ("", BODY, sign_payload(SECRET, BODY, T0), T0, False),
    ],
)
def test_verify_signature(secret: str, body: bytes, header: str, now: int, valid: bool) -> None:
    assert verify_signature(secret, body, header, now=now) is valid


def test_event_needs_a_type() -> None:
    with pytest.raises(ValueError, match="needs a 'type'"):
        deliver("http://127.0.0.1:9/", SECRET, {"study_id": "x"})
