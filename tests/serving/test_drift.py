"""Drift alarms: an injected shift (one hospital's images suddenly darker) trips the alarm
within the documented number of studies, through the real service, with its webhook, metric
and hold; no shift over a long run of the same generator trips nothing (false-alarm rate
measured with the real statistics)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import sqlalchemy as sa
from service_utils.dicom import dx_instance, to_bytes
from service_utils.receiver import webhook_receiver
from service_utils.server import stow, study_id_for, wait_until

from oncotriage.datasets.image import ImageVolume
from oncotriage.datasets.reader import read_image
from oncotriage.models.config import IntensityConfig
from oncotriage.models.fingerprint import (
    fingerprint_from_images,
    histogram_distance,
    image_stats,
)
from oncotriage.serving.db.models import MonitorRecord
from oncotriage.serving.enums import Priority
from oncotriage.serving.monitoring.drift import run_charts
from oncotriage.serving.monitoring.stats import bernoulli_cusum, gaussian_cusum, wilson_interval
from oncotriage.serving.settings import Settings

#: docs/monitoring.md: images 20 % darker trip an alarm within this many studies.
DARKER_TRIPS_WITHIN = 8
DARKER = 0.8


def _darker(ds: pydicom.Dataset, factor: float = DARKER) -> pydicom.Dataset:
    pixels = (ds.pixel_array.astype(np.float64) * factor).astype(np.uint16)
    ds.PixelData = pixels.tobytes()
    return ds


def test_wilson_intervals_match_published_values() -> None:
    # Newcombe (1998), table I: 81/263 -> 0.2553-0.3662; 15/148 -> 0.0624-0.1605
    a = wilson_interval(81, 263)
    assert (round(a.low or 0, 4), round(a.high or 0, 4)) == (0.2553, 0.3662)
    b = wilson_interval(15, 148)
    assert (round(b.low or 0, 4), round(b.high or 0, 4)) == (0.0624, 0.1605)
    full = wilson_interval(20, 20)
    assert full.high == 1.0 and round(full.low or 0, 4) == 0.8389
    assert wilson_interval(0, 0).value is None
    with pytest.raises(ValueError, match="k <= n"):
        wilson_interval(3, 2)


def test_cusum_false_alarm_rates_at_the_documented_thresholds() -> None:
    """In-control alarm rates and run lengths of the charts at the service's default
    thresholds (docs/monitoring.md has the table)."""
    settings = Settings()
    k, h = settings.drift_cusum_k, settings.drift_cusum_h
    odds, flag_h = settings.drift_flag_odds, settings.drift_flag_h
    rng = np.random.default_rng(7)
    studies = 400_000
    gaussian = gaussian_cusum(rng.standard_normal(studies), k=k, h=h)
    assert gaussian.alarms / studies * 100_000 < 3.0  # measured 1.25 per 100,000
    flags = rng.random(studies) < 0.2
    bernoulli = bernoulli_cusum(flags, p0=0.2, odds=odds, h=flag_h)
    assert bernoulli.alarms / studies * 100_000 < 2.0  # measured 0.45 per 100,000

    def run_length(result: Any, n: int) -> int:
        return result.alarm_at + 1 if result.alarm_at is not None else n

    two_sd = [
        run_length(gaussian_cusum(rng.standard_normal(200) + 2.0, k=k, h=h), 200)
        for _ in range(300)
    ]
    assert 6.0 < float(np.mean(two_sd)) < 9.0  # ~7.5 studies
    tripled = [
        run_length(bernoulli_cusum(rng.random(2000) < 3 / 7, p0=0.2, odds=odds, h=flag_h), 2000)
        for _ in range(200)
    ]
    assert 55.0 < float(np.mean(tripled)) < 90.0  # flag rate 20 % -> 43 %: ~71 studies


class _Flagged:
    """A monitor record as the flag-rate chart reads it."""

    def __init__(self, flagged: bool) -> None:
        self.champion_priority = Priority.SUSPICIOUS if flagged else Priority.ROUTINE


def _flag_rate_charts(
    settings: Settings, rng: np.random.Generator, *, charts: int, odds: float = 1.0
) -> tuple[float, float]:
    """Replay ``charts`` flag-rate charts (300-study warm-up at 11 % flagged, then 2,700
    studies at the rate's odds times ``odds``) through ``run_charts``: the share of charts
    that alarm, and the mean number of studies after the warm-up until they do."""
    p0 = 0.11
    shifted = p0 / (1 - p0) * odds / (1 + p0 / (1 - p0) * odds)
    warmup, after = settings.drift_warmup_studies, 2700
    alarmed, run_lengths = 0, []
    for _ in range(charts):
        flags = np.concatenate([rng.random(warmup) < p0, rng.random(after) < shifted])
        found = run_charts(
            [_Flagged(bool(f)) for f in flags],  # type: ignore[misc]
            None,
            settings,
            metrics=["flag_rate"],
        )
        alarmed += bool(found)
        run_lengths.append(found[0].studies if found else after)
    return alarmed / charts, float(np.mean(run_lengths))


def test_flag_rate_chart_with_an_estimated_baseline_rarely_alarms_and_still_finds_shifts() -> None:
    """The flag-rate chart's baseline is estimated from a 300-study warm-up; taken as it is,
    its error alone made about one chart in nine alarm within 3,000 in-control studies. From
    the estimate's Wilson bounds (z 1) it is one in fifty, and a tripled flag rate
    is still found within ~170 studies (docs/monitoring.md)."""
    rng = np.random.default_rng(5)
    settings = Settings()
    bounded, _ = _flag_rate_charts(settings, rng, charts=300)
    assert bounded <= 0.04  # measured 0.020 (seed 5)
    estimate_only, _ = _flag_rate_charts(
        settings.model_copy(update={"drift_flag_margin_z": 0.0}), rng, charts=300
    )
    assert estimate_only >= 0.05  # measured 0.113: the error the bounds remove
    found, run_length = _flag_rate_charts(settings, rng, charts=100, odds=3.0)
    assert found >= 0.95
    assert run_length < 220  # measured ~168 studies


def _exposure_image(rng: np.random.Generator, *, darker: float = 1.0) -> ImageVolume:
    """A radiograph as the reader gives it (display window, 0..1) with the exposure varying
    from study to study as at a real site: gain ~ N(1, 0.08), a smooth gradient, noise."""
    size = int(rng.choice([60, 64, 72]))
    gain = rng.normal(1.0, 0.08)
    ramp = np.linspace(0.35, 0.65, size)[:, None] * np.ones((1, size))
    pixels = np.clip((ramp + rng.normal(0, 0.08, (size, size))) * gain * darker, 0, 1)
    return ImageVolume(array=pixels.astype(np.float32), spacing=(0.5, 0.5), modality="DX")


class _Record:
    """A monitor record's statistics (the charts read nothing else)."""

    def __init__(
        self,
        image: ImageVolume,
        intensity: IntensityConfig,
        reference: list[float],
        score: float,
    ) -> None:
        stats = image_stats(image, intensity)
        self.intensity_mean = stats.intensity_mean
        self.histogram_distance = histogram_distance(stats.histogram, reference)
        self.spacing_mm = stats.spacing_mm
        self.pixels = stats.pixels
        # the champion's score: Beta(2, 5), flagged from 0.5 (about 11 % of studies)
        self.champion_score = score
        self.champion_priority = Priority.SUSPICIOUS if score >= 0.5 else Priority.ROUTINE


def test_no_shift_no_alarm_over_a_long_run_and_a_darker_site_trips_quickly() -> None:
    intensity = IntensityConfig(a_min=0.0, a_max=1.0)
    rng = np.random.default_rng(11)
    fingerprint = fingerprint_from_images((_exposure_image(rng) for _ in range(300)), intensity)
    settings = Settings()
    run = [
        _Record(_exposure_image(rng), intensity, fingerprint.histogram, rng.beta(2, 5))
        for _ in range(3000)
    ]
    # one chart replay over 3,000 in-control studies, every input metric at once
    assert run_charts(run, fingerprint, settings) == []  # type: ignore[arg-type]
    dark = [
        _Record(
            _exposure_image(rng, darker=DARKER), intensity, fingerprint.histogram, rng.beta(2, 5)
        )
        for _ in range(20)
    ]
    found = run_charts(run[-50:] + dark, fingerprint, settings)  # type: ignore[arg-type]
    by_metric = {finding.metric: finding for finding in found}
    assert by_metric["intensity_mean"].direction == "down"
    assert by_metric["intensity_mean"].studies - 50 <= DARKER_TRIPS_WITHIN


@pytest.fixture
def fingerprinted_bundle(make_bundle: Any) -> Path:
    """A bundle whose spec carries the fingerprint of the test generator's radiographs
    (read by the real reader), flagging nothing below 0.99."""
    images = [read_image(dx_instance(2000 + case)) for case in range(40)]
    bundle = make_bundle(operating=0.99, urgent=1.0)
    from oncotriage.models.spec import ModelSpec

    spec = ModelSpec.load(bundle)
    fingerprint = fingerprint_from_images(images, spec.preprocessing.intensity)
    spec.model_copy(update={"input_fingerprint": fingerprint}).save(bundle)
    return bundle


def test_a_darker_hospital_trips_the_alarm_and_hold_sends_it_to_people(
    service_factory: Any, fingerprinted_bundle: Path
) -> None:
    with (
        webhook_receiver() as operators,
        service_factory(
            model_uri=str(fingerprinted_bundle),
            operator_webhook_url=operators.url,
            hold_check_interval_s=0.0,
        ) as service,
    ):
        sent = 0

        def send(who: str, ds: pydicom.Dataset) -> dict[str, Any]:
            nonlocal sent
            stow(service, who, [to_bytes(ds)]).raise_for_status()
            study = service.wait_for_study(study_id_for(service, who, ds.StudyInstanceUID), who)
            sent += 1
            if study["status"] == "triaged":

                def recorded() -> bool:
                    with service.db.session() as session:
                        count = session.scalar(
                            sa.select(sa.func.count()).select_from(MonitorRecord)
                        )
                    return count == expected_records[0]

                expected_records[0] += 1
                wait_until(recorded, 30)
            return study

        expected_records = [0]
        spec = service.client("spec1")
        for case in range(4):  # both hospitals as usual
            send("A", dx_instance(3000 + case))
            send("B", dx_instance(3100 + case))
        assert spec.get("/v1/monitoring/alarms").json()["count"] == 0
        dark_sent = 0
        while dark_sent < DARKER_TRIPS_WITHIN:  # A's images suddenly come darker
            send("A", _darker(dx_instance(3200 + dark_sent)))
            dark_sent += 1
            alarms = spec.get("/v1/monitoring/alarms").json()["data"]
            if any(a["metric"] == "intensity_mean" for a in alarms):
                break
        alarms = spec.get("/v1/monitoring/alarms").json()["data"]
        assert {a["hospital"] for a in alarms} == {"Hospital A"}
        mean_alarm = next(a for a in alarms if a["metric"] == "intensity_mean" and not a["device"])
        assert (mean_alarm["direction"], mean_alarm["action"]) == ("down", "warn")
        assert dark_sent <= DARKER_TRIPS_WITHIN
        wait_until(lambda: len(operators.deliveries) >= len(alarms), 10)
        events = [d.event for d in operators.deliveries]
        assert {e["alarm"]["metric"] for e in events} >= {"intensity_mean"}
        assert {e["alarm"]["hospital_id"] for e in events} == {service.hospital_ids["A"]}
        metrics = service.client("root").get("/metrics").text
        hospital_a = service.hospital_ids["A"]
        assert (
            f'oncotriage_drift_alarms_active{{action="warn",hospital_id="{hospital_a}",'
            'metric="intensity_mean"}' in metrics
        )
        # B goes on as usual: no alarm of its own
        send("B", dx_instance(3104))
        assert {a["hospital"] for a in spec.get("/v1/monitoring/alarms").json()["data"]} == {
            "Hospital A"
        }

        # an operator sets A's alarm to hold: A's next study goes to people unscored
        assert (
            service.client("A")
            .post(f"/v1/monitoring/alarms/{mean_alarm['id']}", json={"action": "hold"})
            .status_code
            == 403
        )
        held = spec.post(f"/v1/monitoring/alarms/{mean_alarm['id']}", json={"action": "hold"})
        assert held.json()["action"] == "hold"
        a_study = send("A", dx_instance(3300))
        assert (a_study["status"], a_study["priority"]) == ("failed", "needs_manual_review")
        assert a_study["failure_reason"].startswith("held for manual review")
        assert "intensity_mean down" in a_study["failure_reason"]
        b_study = send("B", dx_instance(3301))
        assert b_study["status"] == "triaged"
        worklist = spec.get("/v1/worklist").json()["data"]
        assert a_study["id"] in [row["id"] for row in worklist]

        # cleared: A is scored again, and its chart starts afresh
        for alarm in spec.get("/v1/monitoring/alarms").json()["data"]:
            cleared = spec.post(f"/v1/monitoring/alarms/{alarm['id']}", json={"action": "clear"})
            assert cleared.json()["cleared_at"] is not None
        assert spec.get("/v1/monitoring/alarms").json()["count"] == 0
        again = send("A", dx_instance(3302))
        assert again["status"] == "triaged"
        spec.close()
