"""Champion against challenger on the same live studies.

Per (champion version, challenger version) of one model, over the studies both scored
(``monitor_records`` with a challenger score; a study's result is its most urgent series):

- agreement: both flag or both do not (flag = urgent or suspicious), with the 2 x 2 counts;
- each one's flag rate, and sensitivity and PPV of its flags against the studies' labels
  (:func:`oncotriage.serving.monitoring.performance.study_labels`), Wilson 95 %;
- the challenger's time per series (it runs behind, on the monitor thread).

The priorities the worklist shows are always the champion's; this is the only place the
challenger's are seen.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from oncotriage.serving.db.models import MonitorRecord
from oncotriage.serving.enums import Priority
from oncotriage.serving.monitoring.performance import Tally, study_labels
from oncotriage.serving.monitoring.stats import wilson_interval
from oncotriage.serving.triage import most_urgent

__all__ = ["Pair", "compare", "shadow_scores"]


@dataclass
class Pair:
    champion_version: str
    challenger_version: str
    champion: Tally = field(default_factory=Tally)
    challenger: Tally = field(default_factory=Tally)
    both_flagged: int = 0
    champion_only: int = 0
    challenger_only: int = 0
    neither: int = 0
    challenger_s: list[float] = field(default_factory=list)

    @property
    def studies(self) -> int:
        return self.both_flagged + self.champion_only + self.challenger_only + self.neither

    def as_dict(self) -> dict[str, Any]:
        seconds = sorted(self.challenger_s)
        return {
            "champion_version": self.champion_version,
            "challenger_version": self.challenger_version,
            "studies": self.studies,
            "both_flagged": self.both_flagged,
            "champion_only": self.champion_only,
            "challenger_only": self.challenger_only,
            "neither": self.neither,
            "agreement": wilson_interval(self.both_flagged + self.neither, self.studies).as_dict(),
            "labelled_positives": self.champion.positives,
            "champion": self.champion.as_dict(),
            "challenger": self.challenger.as_dict(),
            "challenger_median_s": seconds[len(seconds) // 2] if seconds else None,
        }


@dataclass(frozen=True)
class StudyShadow:
    """One study as the champion and the challenger scored it."""

    study_id: str
    champion_version: str
    challenger_version: str
    champion_priority: Priority
    champion_score: float
    challenger_priority: Priority
    challenger_score: float
    challenger_raw_score: float
    created_at: datetime
    challenger_s: float


def shadow_scores(
    session: Session,
    name: str,
    *,
    hospitals: Sequence[int] | None = None,
    since: datetime | None = None,
) -> list[StudyShadow]:
    """The studies of model ``name`` scored by a challenger too (one per study and version
    pair: its most urgent series, its highest scores)."""
    query = sa.select(MonitorRecord).where(
        MonitorRecord.champion_name == name,
        MonitorRecord.challenger_version.is_not(None),
    )
    if hospitals is not None:
        query = query.where(MonitorRecord.hospital_id.in_(list(hospitals)))
    if since is not None:
        query = query.where(MonitorRecord.created_at > since)
    by_study: dict[tuple[str, str, str], list[MonitorRecord]] = defaultdict(list)
    for record in session.scalars(query.order_by(MonitorRecord.id)):
        key = (record.study_id, record.champion_version, str(record.challenger_version))
        by_study[key].append(record)
    out = []
    for (study_id, champion_version, challenger_version), records in by_study.items():
        out.append(
            StudyShadow(
                study_id=study_id,
                champion_version=champion_version,
                challenger_version=challenger_version,
                champion_priority=most_urgent(r.champion_priority for r in records)
                or Priority.ROUTINE,
                champion_score=max(r.champion_score for r in records),
                challenger_priority=most_urgent(
                    r.challenger_priority for r in records if r.challenger_priority
                )
                or Priority.ROUTINE,
                challenger_score=max(r.challenger_score or 0.0 for r in records),
                challenger_raw_score=max(r.challenger_raw_score or 0.0 for r in records),
                created_at=max(r.created_at for r in records),
                challenger_s=sum(r.challenger_s or 0.0 for r in records),
            )
        )
    return out


def compare(
    session: Session, name: str, *, hospitals: Sequence[int] | None = None
) -> dict[str, Any]:
    """The comparison of model ``name``'s champion and challenger(s) (module docstring)."""
    shadows = shadow_scores(session, name, hospitals=hospitals)
    labels = study_labels(session, [s.study_id for s in shadows])
    pairs: dict[tuple[str, str], Pair] = {}
    for shadow in shadows:
        key = (shadow.champion_version, shadow.challenger_version)
        pair = pairs.setdefault(key, Pair(*key))
        label = labels.get(shadow.study_id)
        pair.champion.add(shadow.champion_priority, shadow.champion_score, label)
        pair.challenger.add(shadow.challenger_priority, shadow.challenger_score, label)
        a, b = shadow.champion_priority.flagged, shadow.challenger_priority.flagged
        if a and b:
            pair.both_flagged += 1
        elif a:
            pair.champion_only += 1
        elif b:
            pair.challenger_only += 1
        else:
            pair.neither += 1
        pair.challenger_s.append(shadow.challenger_s)
    return {
        "model": name,
        "pairs": [
            pairs[key].as_dict()
            for key in sorted(pairs, key=lambda k: (_number(k[0]), _number(k[1])))
        ],
    }


def _number(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (1 << 30, version)
