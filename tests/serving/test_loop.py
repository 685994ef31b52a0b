"""Closing the loop through real HTTP: a flagged study to a diagnosis, back down with a
follow-up that a new study (at another hospital of the union) answers; timeline, figures,
escalation of overdue steps, licences and tenancy."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from service_utils.dicom import dx_instance, to_bytes
from service_utils.receiver import webhook_receiver
from service_utils.server import Service, stow, study_id_for, wait_until
from typer.testing import CliRunner

from oncotriage.cli import app as cli
from oncotriage.serving.db.models import AuditEvent, Hospital, Outcome, PatientStudy
from oncotriage.serving.enums import AuditAction


def _push(service: Service, who: str, case: int, patient_id: str, issuer: str) -> str:
    instance = dx_instance(case)
    instance.PatientID, instance.IssuerOfPatientID = patient_id, issuer
    stow(service, who, [to_bytes(instance)]).raise_for_status()
    study_id = study_id_for(service, who, instance.StudyInstanceUID)
    service.wait_for_study(study_id, who)
    return study_id


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _days(start: str, end: str) -> float:
    return round((_at(end) - _at(start)).total_seconds() / 86400, 2)


def _refer(service: Service, who: str, study_id: str) -> Any:
    with service.client(who) as spec:
        spec.post(f"/v1/worklist/{study_id}/claim").raise_for_status()
        return spec.post(f"/v1/studies/{study_id}/review", json={"decision": "refer"})


def test_flag_to_diagnosis_and_back_down_to_a_follow_up_closed_by_a_new_study(
    service_factory, flagging_bundle
) -> None:
    with service_factory(model_uri=str(flagging_bundle)) as service:
        first = _push(service, "A", 40, "MRN-0042", "UNION-MPI")
        referred = _refer(service, "spec1", first)
        assert referred.status_code == 201, referred.text
        referral_id = referred.json()["referral_id"]
        with service.client("spec1") as spec, service.client("A") as hospital:
            url = f"/v1/referrals/{referral_id}"
            opened = spec.get(url).json()
            assert (opened["stage"], opened["status"], opened["owner"]["name"]) == (
                "requested",
                "open",
                "Centre",
            )
            assert _days(opened["created_at"], opened["due_at"]) == 7.0
            assert opened["overdue"] is False
            # steps out of order are refused with what comes next
            early = spec.post(f"{url}/seen", json={})
            assert early.status_code == 409
            assert "follows scheduled" in early.json()["detail"]
            missing = spec.post(f"{url}/schedule", json={})
            assert missing.status_code == 422
            assert "appointment date" in missing.text
            appointment = datetime.now(UTC) + timedelta(days=3)
            scheduled = spec.post(
                f"{url}/schedule", json={"appointment_at": appointment.isoformat()}
            ).json()
            assert (scheduled["stage"], scheduled["status"]) == ("scheduled", "accepted")
            assert _at(scheduled["due_at"]) == appointment
            spec.post(f"{url}/seen", json={}).raise_for_status()
            diagnosed = spec.post(
                f"{url}/diagnosis",
                json={
                    "outcome": "malignant",
                    "site": "right upper lobe",
                    "histology": "adenocarcinoma",
                    "stage": "IA2",
                },
            ).json()
            assert diagnosed["stage"] == "diagnosed"
            # the community hospital cannot record the centre's steps
            assert hospital.post(f"{url}/return", json={"plan": "x"}).status_code == 403
            returned = spec.post(
                f"{url}/return",
                json={
                    "plan": "rehabilitation; repeat LDCT in 6 months",
                    "followup": {"months": 6, "category": "2"},
                },
            ).json()
            assert (returned["stage"], returned["owner"]["name"]) == ("returned", "Hospital A")
            patient_id = returned["patient_id"]
            timeline_url = f"/v1/patients/{patient_id}/timeline"
            pending = hospital.get(timeline_url).json()["open_followups"]
            assert [(f["months"], f["category"], f["modality"]) for f in pending] == [
                (6, "2", "CT")
            ]
            assert _days(returned["returned_at"], pending[0]["due_at"]) == round(6 * 30.4375, 2)
            due = hospital.get("/v1/followups").json()
            assert [(f["patient_id"], f["months"], f["overdue"]) for f in due["data"]] == [
                (patient_id, 6, False)
            ]
            assert hospital.get("/v1/followups", params={"state": "overdue"}).json()["count"] == 0
            with service.client("B") as other:
                assert other.get("/v1/followups").json()["count"] == 0  # not B's to do
            acknowledged = hospital.post(f"{url}/acknowledge", json={}).json()
            assert (acknowledged["stage"], acknowledged["owner"]["name"]) == (
                "acknowledged",
                "Centre",
            )
            closed = spec.post(f"{url}/close", json={}).json()
            assert (closed["stage"], closed["status"], closed["due_at"]) == (
                "closed",
                "closed",
                None,
            )

        # the same person at Hospital B (same issuer and Patient ID) answers the follow-up
        second = _push(service, "B", 41, "MRN-0042", "UNION-MPI")
        with service.client("B") as other:
            assert other.get(f"/v1/studies/{second}/patient").json()["patient_id"] == patient_id
        # another issuer's identical number is another person
        stranger = _push(service, "B", 42, "MRN-0042", "OTHER-ISSUER")
        with service.client("B") as other:
            assert other.get(f"/v1/studies/{stranger}/patient").json()["patient_id"] not in (
                patient_id,
                None,
            )

        with service.client("spec1") as spec:
            centre_view = spec.get(timeline_url).json()
        kinds = [(e["kind"], e["hospital"], e["study_id"]) for e in centre_view["data"]]
        assert kinds == [
            ("study.received", "Hospital A", first),
            ("study.triaged", "Hospital A", first),
            ("decision", "Hospital A", first),
            ("referral.requested", "Hospital A", first),
            ("referral.scheduled", "Centre", first),
            ("referral.seen", "Centre", first),
            ("outcome", "Centre", first),
            ("referral.diagnosed", "Centre", first),
            ("referral.returned", "Centre", first),
            ("followup.set", "Hospital A", None),
            ("referral.acknowledged", "Hospital A", first),
            ("referral.closed", "Centre", first),
            ("study.received", "Hospital B", second),
            ("followup.closed", "Hospital A", second),  # on arrival, before triage
            ("study.triaged", "Hospital B", second),
        ]
        assert centre_view["open_followups"] == []
        with service.client("A") as hospital:
            assert hospital.get("/v1/followups").json()["count"] == 0
            [done] = hospital.get("/v1/followups", params={"state": "closed"}).json()["data"]
            assert done["patient_id"] == patient_id and done["closed_at"] is not None
        by_kind = {e["kind"]: e for e in centre_view["data"] if e["study_id"] != second}
        assert by_kind["outcome"]["detail"]["kind"] == "malignant"
        assert by_kind["outcome"]["detail"]["histology"] == "adenocarcinoma"
        assert by_kind["referral.scheduled"]["detail"]["appointment_at"] == appointment.isoformat()
        assert by_kind["decision"]["detail"] == {"decision": "refer", "by": "spec1"}
        times = [_at(e["at"]) for e in centre_view["data"]]
        assert times == sorted(times)

        with service.client("A") as own, service.client("C") as foreign:
            hospital_view = own.get(timeline_url).json()
            assert foreign.get(timeline_url).status_code == 404
        # Hospital A sees its own entries, not Hospital B's study
        assert second not in {e["study_id"] for e in hospital_view["data"]}
        assert len(hospital_view["data"]) == len(centre_view["data"]) - 2
        with service.db.session() as session:
            assert session.scalar(sa.select(sa.func.count()).select_from(PatientStudy)) == 3
            outcome = session.scalars(sa.select(Outcome)).one()
            assert (outcome.study_id, outcome.referral_id) == (first, referral_id)
            assert outcome.review_id is not None
            steps = session.scalars(
                sa.select(AuditEvent.detail).where(AuditEvent.action == AuditAction.REFERRAL_STEP)
            ).all()
        assert [d["step"] for d in steps] == [
            "schedule",
            "seen",
            "diagnosis",
            "return",
            "acknowledge",
            "close",
        ]

        with service.client("spec1") as spec:
            figures = spec.get("/v1/figures").json()
            table = list(csv.DictReader(io.StringIO(spec.get("/v1/figures.csv").text)))
        month = _at(closed["created_at"]).strftime("%Y-%m")
        decided = spec_decided_at(service, first)
        rows = {row["hospital"]: row for row in figures["data"]}
        assert set(rows) == {"Hospital A", "Hospital B"}
        assert {row["month"] for row in figures["data"]} == {month}
        assert rows["Hospital A"] | {} == {
            "hospital": "Hospital A",
            "month": month,
            "screened": 1,
            "flagged": 1,
            "referred_up": 1,
            "returned_down": 1,
            "confirmed_cancers": 1,
            "flags_with_outcome": 1,
            "ppv": 1.0,
            "median_days_flag_to_decision": _days(decided[0], decided[1]),
            "median_days_decision_to_seen": _days(decided[1], closed["seen_at"]),
            "median_days_seen_to_diagnosis": _days(closed["seen_at"], closed["diagnosed_at"]),
            "overdue_steps": 0,
            "lost_to_follow_up": 0,
        }
        assert (rows["Hospital B"]["screened"], rows["Hospital B"]["referred_up"]) == (2, 0)
        assert rows["Hospital B"]["ppv"] is None
        assert [row["hospital"] for row in table] == ["Hospital A", "Hospital B"]
        assert table[0]["confirmed_cancers"] == "1" and table[0]["ppv"] == "1.0"
        assert table[1]["screened"] == "2" and table[1]["ppv"] == ""


def spec_decided_at(service: Service, study_id: str) -> tuple[str, str]:
    """The study's triage and decision times, as its hospital reads them."""
    with service.client("spec1") as spec:
        study = spec.get(f"/v1/studies/{study_id}").json()
    return study["triaged_at"], study["decided_at"]


def test_an_overdue_step_escalates_on_the_owners_list_by_webhook_and_in_metrics(
    service_factory, flagging_bundle
) -> None:
    with webhook_receiver() as receiver, service_factory(model_uri=str(flagging_bundle)) as service:
        with service.db.session() as session:
            centre = session.scalars(sa.select(Hospital).where(Hospital.name == "Centre")).one()
            centre.webhook_url = receiver.url
            centre.webhook_secret = "whsec-test-centre-secret-0123"
        on_time = _push(service, "A", 50, "MRN-1", "UNION-MPI")
        late = _push(service, "A", 51, "MRN-2", "UNION-MPI")
        ids = {}
        for study_id in (on_time, late):
            reply = _refer(service, "spec1", study_id)
            assert reply.status_code == 201, reply.text
            ids[study_id] = reply.json()["referral_id"]
        past = datetime.now(UTC) - timedelta(days=2)
        future = datetime.now(UTC) + timedelta(days=2)
        with service.client("spec1") as spec:
            for study_id, when in ((on_time, future), (late, past)):
                spec.post(
                    f"/v1/referrals/{ids[study_id]}/schedule",
                    json={"appointment_at": when.isoformat()},
                ).raise_for_status()
            listed = spec.get("/v1/referrals", params={"owned": "true"}).json()
            again = spec.get("/v1/referrals", params={"overdue": "true"}).json()
        # overdue first, highlighted; the other is not
        assert [(r["id"], r["overdue"]) for r in listed["data"]] == [
            (ids[late], True),
            (ids[on_time], False),
        ]
        assert [r["id"] for r in again["data"]] == [ids[late]]
        assert listed["data"][0]["escalated_at"] is not None
        wait_until(lambda: len(receiver.deliveries) >= 1)
        events = [d.event for d in receiver.deliveries if d.event["type"] == "referral.overdue"]
        assert len(events) == 1  # escalated once, though the list was read twice
        assert events[0]["referral"]["id"] == ids[late]
        assert events[0]["referral"]["stage"] == "scheduled"
        assert events[0]["referral"]["overdue_days"] >= 2.0
        with service.client("root") as admin:
            metrics = admin.get("/metrics").text
        centre_id = service.hospital_ids["centre"]
        assert (
            f'oncotriage_referral_steps_overdue{{owner_hospital_id="{centre_id}",'
            'stage="scheduled"} 1.0'
        ) in metrics
        assert "MRN-" not in metrics  # no patient identifier in metrics
        # Hospital A is party to both referrals but owns neither step
        with service.client("A") as hospital:
            assert hospital.get("/v1/referrals", params={"owned": "true"}).json()["count"] == 0


def test_unlicensed_cannot_refer_and_another_hospital_cannot_read_the_timeline(
    sqlite_service_factory, flagging_bundle
) -> None:
    with sqlite_service_factory(model_uri=str(flagging_bundle)) as service:
        study = _push(service, "A", 60, "MRN-9", "UNION-MPI")
        refused = _refer(service, "spec_unlicensed", study)
        assert refused.status_code == 403
        assert "referral licence" in refused.json()["detail"]
        with service.client("spec_unlicensed") as spec:
            # nothing was decided: the case is still on the worklist, still claimed by them
            assert spec.get(f"/v1/studies/{study}").json()["review_status"] == "pending"
            assert spec.get("/v1/referrals").json()["count"] == 0
            # returning (not referring) needs no licence
            decided = spec.post(f"/v1/studies/{study}/review", json={"decision": "return"})
            assert decided.status_code == 201
        # nor accept (schedule) one that a licensed colleague opened
        referred = _push(service, "A", 61, "MRN-10", "UNION-MPI")
        referral_id = _refer(service, "spec1", referred).json()["referral_id"]
        with service.client("spec_unlicensed") as spec:
            when = (datetime.now(UTC) + timedelta(days=1)).isoformat()
            accept = spec.post(
                f"/v1/referrals/{referral_id}/schedule", json={"appointment_at": when}
            )
            assert accept.status_code == 403 and "referral licence" in accept.json()["detail"]
            assert spec.get(f"/v1/referrals/{referral_id}").json()["stage"] == "requested"
        with service.client("A") as own:
            patient = own.get(f"/v1/studies/{study}/patient").json()["patient_id"]
            assert own.get(f"/v1/patients/{patient}/timeline").status_code == 200
        for who in ("B", "C", "spec_other"):
            with service.client(who) as other:
                reply = other.get(f"/v1/patients/{patient}/timeline")
                assert reply.status_code == 404, who
                assert other.get(f"/v1/patients/{patient + 1000}/timeline").status_code == 404


def test_the_workers_sweep_escalates_an_overdue_step_with_nobody_reading_the_list(
    service_factory, flagging_bundle
) -> None:
    with (
        webhook_receiver() as receiver,
        service_factory(
            model_uri=str(flagging_bundle), referral_escalation_interval_s=0.1
        ) as service,
    ):
        with service.db.session() as session:
            centre = session.scalars(sa.select(Hospital).where(Hospital.name == "Centre")).one()
            centre.webhook_url = receiver.url
            centre.webhook_secret = "whsec-test-centre-secret-0123"
        study = _push(service, "A", 52, "MRN-3", "UNION-MPI")
        reply = _refer(service, "spec1", study)
        assert reply.status_code == 201, reply.text
        referral_id = reply.json()["referral_id"]
        past = datetime.now(UTC) - timedelta(days=3)
        with service.client("spec1") as spec:
            spec.post(
                f"/v1/referrals/{referral_id}/schedule", json={"appointment_at": past.isoformat()}
            ).raise_for_status()
        # nobody lists referrals: the workers' periodic sweep alone escalates the step
        wait_until(lambda: any(d.event["type"] == "referral.overdue" for d in receiver.deliveries))
        events = [d.event for d in receiver.deliveries if d.event["type"] == "referral.overdue"]
        assert [(e["referral"]["id"], e["referral"]["stage"]) for e in events] == [
            (referral_id, "scheduled")
        ]
        assert events[0]["referral"]["overdue_days"] >= 3.0
        with service.db.session() as session:
            escalations = session.scalars(
                sa.select(AuditEvent).where(AuditEvent.action == AuditAction.REFERRAL_STEP)
            ).all()
            steps = [e.detail["step"] for e in escalations if e.detail]
        assert steps.count("escalated") == 1  # once, though the sweep keeps running
        with service.client("root") as admin:
            metrics = admin.get("/metrics").text
        centre_id = service.hospital_ids["centre"]
        assert (
            f'oncotriage_referral_steps_overdue{{owner_hospital_id="{centre_id}",'
            'stage="scheduled"} 1.0'
        ) in metrics
        with service.client("spec1") as spec:
            assert spec.get(f"/v1/referrals/{referral_id}").json()["escalated_at"] is not None


def test_outcomes_outside_a_referral_link_to_the_ai_result_and_decision_and_count(
    service_factory, flagging_bundle
) -> None:
    with service_factory(model_uri=str(flagging_bundle)) as service:
        returned = _push(service, "A", 70, "MRN-20", "UNION-MPI")
        elsewhere = _push(service, "A", 71, "MRN-21", "UNION-MPI")
        with service.client("spec1") as spec:
            spec.post(f"/v1/worklist/{returned}/claim").raise_for_status()
            spec.post(
                f"/v1/studies/{returned}/review", json={"decision": "return"}
            ).raise_for_status()
            patient = spec.get(f"/v1/studies/{returned}/patient").json()["patient_id"]
            other = spec.get(f"/v1/studies/{elsewhere}/patient").json()["patient_id"]
            study = spec.get(f"/v1/studies/{returned}").json()
        url = f"/v1/patients/{patient}/outcomes"
        body = {"study_id": returned, "kind": "no_cancer_12_months", "site": "lung"}
        with service.client("A") as hospital:
            refused = hospital.post(url, json=body)
            assert refused.status_code == 403 and "clinician" in refused.json()["detail"]
        with service.client("spec_other") as foreign:
            assert foreign.post(url, json=body).status_code == 404
        with service.client("spec1") as spec:
            wrong = spec.post(url, json=body | {"study_id": elsewhere})
            assert wrong.status_code == 422
            assert "not one of this patient's studies" in wrong.json()["detail"]
            assert spec.post(url, json=body | {"kind": "cured"}).status_code == 422
            created = spec.post(url, json=body)
            assert created.status_code == 201, created.text
            recorded = created.json()
            cancer = spec.post(
                f"/v1/patients/{other}/outcomes",
                json={
                    "study_id": elsewhere,
                    "kind": "malignant",
                    "site": "right upper lobe",
                    "histology": "squamous cell carcinoma",
                    "stage": "IIA",
                },
            )
            assert cancer.status_code == 201, cancer.text
            view = spec.get(f"/v1/patients/{patient}/timeline").json()
            figures = spec.get("/v1/figures").json()
        assert recorded["kind"] == "no_cancer_12_months"
        assert (recorded["patient_id"], recorded["study_id"], recorded["referral_id"]) == (
            patient,
            returned,
            None,
        )
        assert recorded["site"] == ""  # a site belongs to a malignant outcome only
        assert recorded["decision"] == "return" and recorded["review_id"] is not None
        assert recorded["ai_priority"] == study["priority"]
        assert recorded["ai_suspicion_score"] == study["suspicion_score"]
        assert recorded["recorded_by"] == "spec1"
        assert (cancer.json()["histology"], cancer.json()["decision"]) == (
            "squamous cell carcinoma",
            None,
        )
        [entry] = [e for e in view["data"] if e["kind"] == "outcome"]
        assert entry["study_id"] == returned and entry["referral_id"] is None
        assert entry["detail"]["kind"] == "no_cancer_12_months"
        assert entry["detail"]["decision"] == "return"
        assert entry["detail"]["recorded_by"] == "spec1"
        assert entry["detail"]["review_id"] == recorded["review_id"]
        assert [e["kind"] for e in view["data"]][-1] == "outcome"
        [row] = [r for r in figures["data"] if r["hospital"] == "Hospital A"]
        assert (row["flagged"], row["flags_with_outcome"], row["confirmed_cancers"]) == (2, 2, 1)
        assert row["ppv"] == 0.5
        with service.db.session() as session:
            audited = session.scalars(
                sa.select(AuditEvent).where(AuditEvent.action == AuditAction.OUTCOME_RECORDED)
            ).all()
            assert sorted((e.study_id, e.actor_name) for e in audited) == sorted(
                [(returned, "spec1"), (elsewhere, "spec1")]
            )
            outcomes = session.scalars(sa.select(Outcome).order_by(Outcome.id)).all()
            assert [(o.study_id, o.kind.value) for o in outcomes] == [
                (returned, "no_cancer_12_months"),
                (elsewhere, "malignant"),
            ]


def test_a_licensed_community_doctor_requests_a_referral_of_their_hospitals_study(
    service_factory, flagging_bundle, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from oncotriage.serving.settings import get_settings

    with service_factory(model_uri=str(flagging_bundle)) as service:
        monkeypatch.setenv("ONCOTRIAGE_DATA_DIR", str(tmp_path / "cli"))
        monkeypatch.setenv("ONCOTRIAGE_DATABASE_URL", service.settings.database_url)
        get_settings.cache_clear()
        runner = CliRunner()
        try:
            steps = [
                ["admin", "create-community-doctor", "dr_a", "--hospital", "Hospital A"],
                ["admin", "create-community-doctor", "dr_a2", "--hospital", "Hospital A"],
                ["admin", "grant-licence", "dr_a", "--until", "2099-12-31"],
                ["admin", "issue-token", "--user", "dr_a"],
                ["admin", "issue-token", "--user", "dr_a2"],
            ]
            results = [runner.invoke(cli, args) for args in steps]
            assert [r.exit_code for r in results] == [0] * len(steps), [r.output for r in results]
            at_centre = runner.invoke(
                cli, ["admin", "create-community-doctor", "dr_c", "--hospital", "Centre"]
            )
            assert at_centre.exit_code == 2 and "community hospital" in at_centre.output
        finally:
            get_settings.cache_clear()
        service.tokens["dr_a"] = results[3].output.strip()
        service.tokens["dr_a2"] = results[4].output.strip()

        ours = _push(service, "A", 80, "MRN-30", "UNION-MPI")
        theirs = _push(service, "B", 81, "MRN-31", "UNION-MPI")
        with service.client("dr_a2") as unlicensed:
            refused = unlicensed.post("/v1/referrals", json={"study_id": ours})
            assert refused.status_code == 403 and "referral licence" in refused.json()["detail"]
        with service.client("spec1") as spec:
            not_a_doctor = spec.post("/v1/referrals", json={"study_id": ours})
            assert not_a_doctor.status_code == 403
            assert "community doctor" in not_a_doctor.json()["detail"]
        with service.client("dr_a") as doctor:
            assert doctor.post("/v1/referrals", json={"study_id": theirs}).status_code == 404
            assert doctor.get(f"/v1/studies/{theirs}").status_code == 404
            created = doctor.post(
                "/v1/referrals", json={"study_id": ours, "note": "haemoptysis, smoker"}
            )
            assert created.status_code == 201, created.text
            referral = created.json()
            again = doctor.post("/v1/referrals", json={"study_id": ours})
            assert again.status_code == 409
            assert f"/v1/referrals/{referral['id']}" in again.json()["detail"]
            listed = doctor.get("/v1/referrals").json()
            when = (datetime.now(UTC) + timedelta(days=5)).isoformat()
            centre_step = doctor.post(
                f"/v1/referrals/{referral['id']}/schedule", json={"appointment_at": when}
            )
            assert centre_step.status_code == 403
        assert (referral["stage"], referral["status"], referral["owner"]["name"]) == (
            "requested",
            "open",
            "Centre",
        )
        assert (referral["from_hospital"]["name"], referral["to_centre"]["name"]) == (
            "Hospital A",
            "Centre",
        )
        assert (referral["referred_by"], referral["note"]) == ("dr_a", "haemoptysis, smoker")
        assert _days(referral["created_at"], referral["due_at"]) == 7.0
        assert [r["id"] for r in listed["data"]] == [referral["id"]]
        with service.client("spec1") as spec:
            owned = spec.get("/v1/referrals", params={"owned": "true"}).json()
            assert [r["id"] for r in owned["data"]] == [referral["id"]]
            scheduled = spec.post(
                f"/v1/referrals/{referral['id']}/schedule", json={"appointment_at": when}
            )
            assert scheduled.status_code == 200, scheduled.text
            assert scheduled.json()["stage"] == "scheduled"
        with service.client("dr_a") as doctor:
            patient = doctor.get(f"/v1/studies/{ours}/patient").json()["patient_id"]
            kinds = [
                e["kind"] for e in doctor.get(f"/v1/patients/{patient}/timeline").json()["data"]
            ]
            assert kinds[-2:] == ["referral.requested", "referral.scheduled"]
        with service.db.session() as session:
            requested = session.scalars(
                sa.select(AuditEvent).where(AuditEvent.action == AuditAction.REFERRAL_STEP)
            ).all()
            assert [(e.actor_name, e.study_id, e.detail["step"]) for e in requested] == [
                ("dr_a", ours, "requested"),
                ("spec1", ours, "schedule"),
            ]
