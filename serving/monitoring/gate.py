"""The promotion gate of ``oncotriage promote`` (to the ``champion`` alias).

A version is refused when

1. its thresholds were not calibrated for it (``thresholds.calibrated`` false on the
   version: run ``oncotriage calibrate`` on it; thresholds carried over from another
   version are exactly the Lunit lesson: a better AUC at the old threshold can be a worse
   sensitivity); or
2. on the reviewed and labelled live studies it scored (as champion, or in the shadow as
   challenger) since the model's last promotion, the sensitivity of its calibrated
   operating point is below the target (default 95 %) by more than its Wilson 95 % interval
   allows: the interval's upper end is below the target; or
3. the model has a champion already and the version has no such labelled positive study
   at all: there is no evidence yet (run it as the challenger first).

The first promotion of a model (no champion yet) and a rollback (to a version that was
champion before) are judged on 1 only: a rollback must never wait for evidence. ``--force`` with a
reason promotes anyway; the override is kept as a registry tag of the version
(``oncotriage.forced_promotion``) and as an audit event in the service's database.
The scores are re-thresholded with the version's *current* thresholds, so recalibrating a
version after its shadow run is judged on the new operating point.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.orm import Session

from oncotriage.serving.db.models import MonitorRecord
from oncotriage.serving.monitoring.performance import study_labels
from oncotriage.serving.monitoring.stats import Interval, wilson_interval

if TYPE_CHECKING:
    from oncotriage.models.spec import Thresholds

__all__ = ["GateResult", "evaluate_gate", "live_raw_scores"]

#: Registry tags the gate reads and promote writes.
PROMOTED_AT_TAG = "oncotriage.promoted_at"
FORCED_TAG = "oncotriage.forced_promotion"


@dataclass(frozen=True)
class GateResult:
    """The gate's verdict: ``allowed``, or the ``reasons`` it refuses."""

    allowed: bool
    reasons: list[str] = field(default_factory=list)
    sensitivity: Interval | None = None
    studies: int = 0
    target: float = 0.95
    since: datetime | None = None

    def summary(self) -> str:
        since = f" since {self.since.isoformat(timespec='seconds')}" if self.since else ""
        sens = self.sensitivity
        if sens is None or sens.n == 0 or sens.value is None:
            evidence = f"no labelled positive study{since} ({self.studies} labelled studies)"
        else:
            evidence = (
                f"sensitivity {sens.k}/{sens.n} = {sens.value:.3f} (95% CI {sens.low:.3f}-"
                f"{sens.high:.3f}) on {self.studies} labelled studies{since}, target "
                f"{self.target:g}"
            )
        return evidence


def live_raw_scores(
    session: Session, name: str, version: str, *, since: datetime | None
) -> dict[str, float]:
    """Study id -> the version's highest raw series score on the live studies it scored
    (as champion or as challenger) after ``since``."""
    out: dict[str, float] = {}
    as_champion = sa.select(MonitorRecord.study_id, MonitorRecord.champion_raw_score).where(
        MonitorRecord.champion_name == name, MonitorRecord.champion_version == version
    )
    as_challenger = sa.select(MonitorRecord.study_id, MonitorRecord.challenger_raw_score).where(
        MonitorRecord.challenger_name == name, MonitorRecord.challenger_version == version
    )
    for query in (as_champion, as_challenger):
        if since is not None:
            query = query.where(MonitorRecord.created_at > since)
        for study_id, raw in session.execute(query):
            if raw is not None:
                out[study_id] = max(out.get(study_id, 0.0), float(raw))
    return out


def evaluate_gate(
    session: Session | None,
    name: str,
    version: int,
    thresholds: Thresholds,
    *,
    since: datetime | None,
    require_evidence: bool,
    target: float = 0.95,
) -> GateResult:
    """Judge ``version`` of model ``name`` (module docstring). ``session`` None: the
    service's database is not there (no live evidence)."""
    reasons: list[str] = []
    if not thresholds.calibrated:
        reasons.append(
            f"the thresholds of version {version} were not calibrated for it: run "
            "`oncotriage calibrate` on this version before promoting it"
        )
    scores: Mapping[str, float] = {}
    labels: dict[str, bool] = {}
    if session is not None:
        scores = live_raw_scores(session, name, str(version), since=since)
        labels = study_labels(session, scores)
    positives = [s for s, label in labels.items() if label]
    caught = sum(
        thresholds.study_score(scores[study]) >= thresholds.operating for study in positives
    )
    sensitivity = wilson_interval(caught, len(positives))
    if require_evidence:
        if not positives:
            reasons.append(
                f"version {version} has scored no reviewed and labelled positive study since "
                "the last promotion: run it as the challenger first (alias challenger) until "
                "specialists' decisions and outcomes give it evidence"
            )
        elif sensitivity.high is not None and sensitivity.high < target:
            reasons.append(
                f"at its calibrated operating point version {version} found {caught} of "
                f"{len(positives)} labelled positive studies: sensitivity "
                f"{sensitivity.value:.3f}, 95% CI {sensitivity.low:.3f}-{sensitivity.high:.3f}, "
                f"below the target {target:g}"
            )
    return GateResult(
        allowed=not reasons,
        reasons=reasons,
        sensitivity=sensitivity,
        studies=len(labels),
        target=target,
        since=since,
    )
