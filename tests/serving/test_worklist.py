"""Tenancy, the worklist, claims under concurrency, decisions and referrals, through real HTTP."""

from __future__ import annotations

import threading
from datetime import timedelta

import httpx
import pytest
import sqlalchemy as sa
from service_utils.dicom import dx_instance, to_bytes
from service_utils.server import Service, stow, study_id_for, wait_until

from oncotriage.serving.db.base import utcnow
from oncotriage.serving.db.models import AuditEvent, Referral, Review, Study
from oncotriage.serving.enums import AuditAction, Priority, ReviewStatus, StudyStatus


def _push_and_triage(service: Service, who: str, *cases: int) -> list[str]:
    """Push one radiograph study per case in one request; wait until all are triaged."""
    instances = [dx_instance(case) for case in cases]
    stow(service, who, [to_bytes(instance) for instance in instances]).raise_for_status()
    ids = [study_id_for(service, who, instance.StudyInstanceUID) for instance in instances]
    for study_id in ids:
        service.wait_for_study(study_id, who)
    return ids


def test_hospitals_see_only_their_studies(service_factory, flagging_bundle) -> None:
    with service_factory(model_uri=str(flagging_bundle)) as service:
        [study_a] = _push_and_triage(service, "A", 1)
        [study_c] = _push_and_triage(service, "C", 2)
        paths = ["", "/result", "/report.dcm", "/render.png", "/reviews"]
        with service.client("B") as other:
            assert [other.get(f"/v1/studies/{study_a}{p}").status_code for p in paths] == [404] * 5
            assert other.get("/v1/studies").json() == {"data": [], "count": 0}
            assert other.post(f"/v1/worklist/{study_a}/claim").status_code == 403
        with service.client("A") as own:
            assert [own.get(f"/v1/studies/{study_a}{p}").status_code for p in paths] == [200] * 5
            assert [s["id"] for s in own.get("/v1/studies").json()["data"]] == [study_a]
        # specialists see their centre's hospitals only; an admin sees all
        with service.client("spec1") as spec:
            assert [s["id"] for s in spec.get("/v1/worklist").json()["data"]] == [study_a]
            assert spec.get(f"/v1/studies/{study_c}").status_code == 404
            assert spec.post(f"/v1/worklist/{study_c}/claim").status_code == 404
        with service.client("spec_other") as spec_other:
            assert [s["id"] for s in spec_other.get("/v1/worklist").json()["data"]] == [study_c]
            assert spec_other.get(f"/v1/studies/{study_a}").status_code == 404
        with service.client("root") as admin:
            assert {s["id"] for s in admin.get("/v1/worklist").json()["data"]} == {study_a, study_c}
        # every read was audited; the 404s were not (nothing was read)
        service.flush_audit()
        with service.db.session() as session:
            reads = session.execute(
                sa.select(AuditEvent.actor_name, AuditEvent.study_id).where(
                    AuditEvent.action == AuditAction.STUDY_READ
                )
            ).all()
        assert ("Hospital A", study_a) in reads
        assert not any(actor == "Hospital B" for actor, _ in reads)


def _claim(
    service: Service, who: str, study_id: str, barrier: threading.Barrier, statuses: dict[str, int]
) -> None:
    with service.client(who) as client:  # its own connection
        client.get("/healthz")
        barrier.wait()
        statuses[who] = client.post(f"/v1/worklist/{study_id}/claim").status_code


def test_two_specialists_claim_at_once_and_exactly_one_wins(
    service_factory, flagging_bundle
) -> None:
    with service_factory(model_uri=str(flagging_bundle)) as service:
        studies = _push_and_triage(service, "A", 10, 11, 12, 13)
        for study_id in studies:
            barrier = threading.Barrier(2)
            statuses: dict[str, int] = {}
            threads = [
                threading.Thread(target=_claim, args=(service, who, study_id, barrier, statuses))
                for who in ("spec1", "spec2")
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert sorted(statuses.values()) == [200, 409], statuses
            winner = next(who for who, status in statuses.items() if status == 200)
            loser = "spec2" if winner == "spec1" else "spec1"
            with service.client(loser) as client:
                # the loser can neither decide nor release it
                review = client.post(f"/v1/studies/{study_id}/review", json={"decision": "return"})
                assert review.status_code == 409
                assert client.post(f"/v1/worklist/{study_id}/release").status_code == 409
            with service.client(winner) as client:
                listed = client.get("/v1/worklist").json()["data"]
                assert next(s for s in listed if s["id"] == study_id)["claimed_by"] == winner


def test_claim_release_decide_refer_and_both_sides_see_the_referral(
    service_factory, flagging_bundle
) -> None:
    with service_factory(model_uri=str(flagging_bundle)) as service:
        referred, returned = _push_and_triage(service, "A", 20, 21)
        with service.client("spec1") as spec1, service.client("spec2") as spec2:
            assert spec1.post(f"/v1/worklist/{referred}/claim").status_code == 200
            assert spec1.post(f"/v1/worklist/{referred}/claim").status_code == 200  # renew
            assert spec1.post(f"/v1/worklist/{referred}/release").status_code == 204
            assert spec2.post(f"/v1/worklist/{referred}/claim").status_code == 200
            result = spec2.get(f"/v1/studies/{referred}/result").json()
            finding = result["findings"][0]
            box = {
                "series_instance_uid": finding["series_instance_uid"],
                "sop_instance_uid": finding["sop_instance_uid"],
                "box_index": [10.0, 12.0, 20.0, 24.0],
            }
            bad = {**box, "series_instance_uid": "1.2.3.4"}
            rejected = spec2.post(
                f"/v1/studies/{referred}/review",
                json={"decision": "refer", "corrected_boxes": [bad]},
            )
            assert rejected.status_code == 422
            decided = spec2.post(
                f"/v1/studies/{referred}/review",
                json={"decision": "refer", "note": "8 mm nodule, refer", "corrected_boxes": [box]},
            )
            assert decided.status_code == 201, decided.text
            review = decided.json()
            assert (review["decision"], review["reviewer"], review["model_version"]) == (
                "refer",
                "spec2",
                "1",
            )
            assert review["corrected_boxes"][0]["box_index"] == [10.0, 12.0, 20.0, 24.0]
            # decided: off the worklist, and cannot be claimed or decided again
            assert referred not in [s["id"] for s in spec1.get("/v1/worklist").json()["data"]]
            assert spec1.post(f"/v1/worklist/{referred}/claim").status_code == 409

            spec1.post(f"/v1/worklist/{returned}/claim").raise_for_status()
            spec1.post(
                f"/v1/studies/{returned}/review", json={"decision": "return"}
            ).raise_for_status()

            centre_view = spec1.get("/v1/referrals").json()
        with service.client("A") as hospital, service.client("B") as other:
            hospital_view = hospital.get("/v1/referrals").json()
            study = hospital.get(f"/v1/studies/{referred}").json()
            reviews = hospital.get(f"/v1/studies/{referred}/reviews").json()
            assert other.get("/v1/referrals").json()["count"] == 0
        assert centre_view == hospital_view
        assert centre_view["count"] == 1
        referral = centre_view["data"][0]
        assert referral["study_id"] == referred
        assert (referral["from_hospital"]["name"], referral["to_centre"]["name"]) == (
            "Hospital A",
            "Centre",
        )
        assert (referral["referred_by"], referral["note"]) == ("spec2", "8 mm nodule, refer")
        assert (study["review_status"], study["decision"]) == ("decided", "refer")
        assert [r["decision"] for r in reviews["data"]] == ["refer"]
        with service.db.session() as session:
            assert session.scalar(sa.select(sa.func.count()).select_from(Referral)) == 1
            assert session.scalar(sa.select(sa.func.count()).select_from(Review)) == 2
            decisions = session.execute(
                sa.select(AuditEvent.actor_name, AuditEvent.study_id, AuditEvent.detail).where(
                    AuditEvent.action == AuditAction.REVIEW
                )
            ).all()
        assert sorted((a, s, d["decision"]) for a, s, d in decisions) == sorted(
            [("spec2", referred, "refer"), ("spec1", returned, "return")]
        )


def test_claim_lease_expires(sqlite_service_factory, flagging_bundle) -> None:
    with sqlite_service_factory(model_uri=str(flagging_bundle), claim_lease_s=0.5) as service:
        [study_id] = _push_and_triage(service, "A", 30)
        with service.client("spec1") as spec1, service.client("spec2") as spec2:
            claim = spec1.post(f"/v1/worklist/{study_id}/claim").json()
            assert claim["claimed_by"] == "spec1"
            assert spec2.post(f"/v1/worklist/{study_id}/claim").status_code == 409
            wait_until(lambda: spec2.post(f"/v1/worklist/{study_id}/claim").status_code == 200, 10)
            # spec1's lease is gone: its decision is refused
            late = spec1.post(f"/v1/studies/{study_id}/review", json={"decision": "return"})
            assert late.status_code == 409


def _study(hospital_id: int, priority: Priority, age: timedelta, uid: str) -> Study:
    now = utcnow()
    return Study(
        hospital_id=hospital_id,
        study_instance_uid=uid,
        modality="DX",
        status=StudyStatus.TRIAGED
        if priority is not Priority.NEEDS_MANUAL_REVIEW
        else StudyStatus.FAILED,
        priority=priority,
        suspicion_score=0.5,
        received_at=now - age,
        triaged_at=now - age,
        review_status=ReviewStatus.PENDING,
    )


def test_worklist_order_sla_escalation_and_filters(service_factory) -> None:
    minutes = timedelta(minutes=1)
    with service_factory(embedded_workers=0, sla_suspicious_minutes=30) as service:
        a, b = service.hospital_ids["A"], service.hospital_ids["B"]
        rows = {
            "routine": _study(a, Priority.ROUTINE, 500 * minutes, "1.1"),
            "urgent-new": _study(a, Priority.URGENT, 1 * minutes, "1.2"),
            "urgent-old": _study(b, Priority.URGENT, 20 * minutes, "1.3"),
            "suspicious-new": _study(a, Priority.SUSPICIOUS, 5 * minutes, "1.4"),
            "suspicious-overdue": _study(b, Priority.SUSPICIOUS, 45 * minutes, "1.5"),
            "manual": _study(a, Priority.NEEDS_MANUAL_REVIEW, 10 * minutes, "1.6"),
        }
        with service.db.session() as session:
            session.add_all(rows.values())
            session.flush()
            names = {row.id: name for name, row in rows.items()}
        with service.client("spec1") as client:
            listed = client.get("/v1/worklist").json()
            assert [names[s["id"]] for s in listed["data"]] == [
                "suspicious-overdue",  # past its 30-minute SLA: moved up
                "urgent-old",
                "urgent-new",
                "suspicious-new",
                "manual",
            ]
            assert listed["count"] == 5
            overdue = {names[s["id"]]: s["overdue"] for s in listed["data"]}
            assert overdue == {
                "suspicious-overdue": True,
                "urgent-old": False,
                "urgent-new": False,
                "suspicious-new": False,
                "manual": False,
            }
            by_hospital = client.get("/v1/worklist", params={"hospital_id": b}).json()
            assert [names[s["id"]] for s in by_hospital["data"]] == [
                "suspicious-overdue",
                "urgent-old",
            ]
            routine = client.get("/v1/worklist", params={"priority": "routine"}).json()
            assert [names[s["id"]] for s in routine["data"]] == ["routine"]
            failed = client.get("/v1/worklist", params={"status": "failed"}).json()
            assert [names[s["id"]] for s in failed["data"]] == ["manual"]
            page = client.get("/v1/worklist", params={"skip": 1, "limit": 2}).json()
            assert [names[s["id"]] for s in page["data"]] == ["urgent-old", "urgent-new"]
            assert page["count"] == 5
        with service.client("A") as hospital:
            assert hospital.get("/v1/worklist").status_code == 403


@pytest.mark.parametrize("decision", ["refer", "return", "more_imaging"])
def test_review_schema_rejects_bad_input(sqlite_service_factory, decision: str) -> None:
    with sqlite_service_factory(embedded_workers=0) as service, service.client("spec1") as client:
        bad_box = {"series_instance_uid": "1.2", "box_index": [5, 5, 1, 1]}
        responses = [
            client.post("/v1/studies/nope/review", json={"decision": "maybe"}),
            client.post(
                "/v1/studies/nope/review", json={"decision": decision, "corrected_boxes": [bad_box]}
            ),
            client.post("/v1/studies/nope/review", json={"decision": decision}),
        ]
        assert [r.status_code for r in responses] == [422, 422, 404]
        assert isinstance(client, httpx.Client)


def test_corrected_boxes_must_be_finite_inside_the_image_and_of_positive_size(
    service_factory, flagging_bundle
) -> None:
    """What a clumsy or hostile client sent (and was stored with 201 before boxes were
    checked): a box far outside the 64 x 64 image, infinity, NaN, zero size, a 3D box on a
    radiograph. Each is refused with the reason, and the case stays undecided."""
    with service_factory(model_uri=str(flagging_bundle)) as service:
        [study_id] = _push_and_triage(service, "A", 30)
        with service.client("spec1") as spec:
            spec.post(f"/v1/worklist/{study_id}/claim").raise_for_status()
            finding = spec.get(f"/v1/studies/{study_id}/result").json()["findings"][0]
            uids = (
                f'"series_instance_uid": "{finding["series_instance_uid"]}", '
                f'"sop_instance_uid": "{finding["sop_instance_uid"]}"'
            )
            cases = {
                "[-50, -50, 99999, 99999]": "the box runs outside the image: columns -50..99999",
                "[1e309, 0, 5, 5]": "finite numbers",
                "[NaN, 0, 5, 5]": "finite numbers",
                "[10, 10, 10, 20]": "positive size",
                "[1, 1, 1, 5, 5, 5]": "a box on a radiograph has 4 numbers (xyxy), not 6",
            }
            for box, reason in cases.items():
                body = (
                    f'{{"decision": "refer", "corrected_boxes": [{{{uids}, "box_index": {box}}}]}}'
                )
                answer = spec.post(
                    f"/v1/studies/{study_id}/review",
                    content=body,
                    headers={"Content-Type": "application/json"},
                )
                assert answer.status_code == 422, (box, answer.text)
                assert reason in answer.text, (box, answer.text)
            assert spec.get(f"/v1/studies/{study_id}/reviews").json()["count"] == 0
            good_box = f'{{{uids}, "box_index": [0, 0, 63, 63]}}'
            good = f'{{"decision": "refer", "corrected_boxes": [{good_box}]}}'
            decided = spec.post(
                f"/v1/studies/{study_id}/review",
                content=good,
                headers={"Content-Type": "application/json"},
            )
            assert decided.status_code == 201, decided.text
            listed = spec.get(f"/v1/studies/{study_id}/reviews").json()
            assert listed["data"][0]["corrected_boxes"][0]["box_index"] == [0, 0, 63, 63]


def test_claims_and_decisions_wait_for_triage(service_factory, flagging_bundle) -> None:
    """A specialist could claim and decide a study the model had not scored yet; the model
    then scored it urgent and it never reached the worklist. Now: 409 with the reason while
    it is received, queued or processing; a study flagged needs_manual_review (failed) can
    be claimed and decided."""
    with service_factory(model_uri=str(flagging_bundle), embedded_workers=0) as service:
        instance = dx_instance(31)
        stow(service, "A", [to_bytes(instance)]).raise_for_status()
        study_id = study_id_for(service, "A", instance.StudyInstanceUID)
        with service.client("spec1") as spec:
            for state in (StudyStatus.RECEIVED, StudyStatus.QUEUED, StudyStatus.PROCESSING):
                with service.db.session() as session:
                    session.execute(
                        sa.update(Study).where(Study.id == study_id).values(status=state)
                    )
                    session.commit()
                refused = spec.post(f"/v1/worklist/{study_id}/claim")
                assert refused.status_code == 409, (state, refused.text)
                assert f"still {state.value}" in refused.json()["detail"]
                decided = spec.post(f"/v1/studies/{study_id}/review", json={"decision": "refer"})
                assert decided.status_code == 409 and f"still {state.value}" in decided.text
            with service.db.session() as session:
                session.execute(
                    sa.update(Study)
                    .where(Study.id == study_id)
                    .values(status=StudyStatus.FAILED, priority=Priority.NEEDS_MANUAL_REVIEW)
                )
                session.commit()
            assert spec.post(f"/v1/worklist/{study_id}/claim").status_code == 200
            decided = spec.post(f"/v1/studies/{study_id}/review", json={"decision": "more_imaging"})
            assert decided.status_code == 201, decided.text
