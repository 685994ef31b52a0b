"""Each refusal a data-access function raises carries the HTTP answer ``create_app`` gives."""

from __future__ import annotations

from typing import Any

import pytest

from oncotriage.serving.claims import ClaimConflictError
from oncotriage.serving.decisions import ReviewInputError
from oncotriage.serving.errors import ServiceError
from oncotriage.serving.outcomes import OutcomeInputError
from oncotriage.serving.patients import PatientNotFoundError
from oncotriage.serving.referrals import (
    LicenceError,
    ReferralConflictError,
    ReferralNotFoundError,
    StepError,
    StepInputError,
)
from oncotriage.serving.results import RenderRequestError, ResultNotReadyError
from oncotriage.serving.studies import StudyNotFoundError


def _field(loc: list[str], msg: str) -> dict[str, Any]:
    return {"detail": [{"type": "value_error", "loc": loc, "msg": msg}]}


@pytest.mark.parametrize(
    ("error", "status", "body"),
    [
        (StudyNotFoundError("3f2b8c1e"), 404, {"detail": "study not found"}),
        (PatientNotFoundError(17), 404, {"detail": "patient not found"}),
        (ReferralNotFoundError(5), 404, {"detail": "referral not found"}),
        (ClaimConflictError("held by dr_b"), 409, {"detail": "held by dr_b"}),
        (ReferralConflictError("already open"), 409, {"detail": "already open"}),
        (StepError("schedule first"), 409, {"detail": "schedule first"}),
        (ResultNotReadyError("not triaged"), 409, {"detail": "not triaged"}),
        (LicenceError("licence expired"), 403, {"detail": "licence expired"}),
        (OutcomeInputError("not this patient's"), 422, {"detail": "not this patient's"}),
        (StepInputError("needs a date"), 422, _field(["body"], "needs a date")),
        (
            ReviewInputError("box on a foreign series"),
            422,
            _field(["body", "corrected_boxes"], "box on a foreign series"),
        ),
        (RenderRequestError("no slice 99"), 422, _field(["query"], "no slice 99")),
    ],
)
def test_refusal_answers(error: ServiceError, status: int, body: dict[str, Any]) -> None:
    assert error.status_code == status
    assert error.body() == body


def test_refusals_keep_their_builtin_kinds() -> None:
    # callers outside HTTP (CLI, workers) still catch them by the built-in kind
    assert isinstance(StudyNotFoundError("x"), LookupError)
    assert isinstance(LicenceError("x"), PermissionError)
    assert isinstance(StepInputError("x"), StepError)
    assert isinstance(StepInputError("x"), ValueError)
