"""Triage thresholds from validation studies: score calibration, operating and urgent points.

First the raw study score (highest finding score) is calibrated: Platt scaling (a logistic
map of its logit, two parameters) or temperature scaling (one), fitted by maximum likelihood
on the validation studies with Platt's smoothed targets, so that a detector whose scores
saturate near 1 spreads them out and the score reads as a probability. The thresholds are
then chosen on the calibrated scores, and stored in the model spec together with the map
(:class:`oncotriage.models.spec.ScoreCalibration`) that serving applies.

A study is flagged ``suspicious`` when its suspicion score (highest finding score) is at
least the *operating* threshold, chosen as the highest threshold that still flags the
target share of positive validation studies (sensitivity, 95 % by default). It is
``urgent`` when the score reaches the *urgent* threshold, the lowest threshold whose
specificity on negative studies reaches a high target (98 % by default) and that leaves at
most ``urgent_sensitivity`` (half, by default) of the positive validation studies above it:
the high-specificity band. The second condition keeps ``urgent`` above ``suspicious`` when
the validation negatives all score below the operating point (a model that separates them
would otherwise make every flagged study urgent). Each point is reported with Wilson 95 %
confidence intervals, since validation sets at a hospital union are small.

The threshold arithmetic is numpy and scipy only; :func:`calibrate_model` runs a model
through the serving pipeline (no torch).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from oncotriage.training.operating_points import OperatingPoint, operating_point

if TYPE_CHECKING:
    from oncotriage.models.spec import ScoreCalibration


def threshold_for_sensitivity(
    scores: Sequence[float] | np.ndarray,
    positive: Sequence[bool] | np.ndarray,
    target_sensitivity: float,
) -> float:
    """Highest threshold that flags at least ``target_sensitivity`` of positive studies.

    With ``P`` positive studies, ``k = ceil(target * P)`` of them must be flagged, so the
    threshold is the ``k``-th highest positive score.
    """
    if not 0.0 < target_sensitivity <= 1.0:
        raise ValueError(f"target sensitivity must be in (0, 1], got {target_sensitivity}")
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    pos_scores = np.sort(scores[positive])[::-1]
    if len(pos_scores) == 0:
        raise ValueError(
            "the calibration split has no positive study; calibrate on data with lesions"
        )
    needed = math.ceil(target_sensitivity * len(pos_scores) - 1e-9)
    return float(pos_scores[max(needed, 1) - 1])


def threshold_for_specificity(
    scores: Sequence[float] | np.ndarray,
    positive: Sequence[bool] | np.ndarray,
    target_specificity: float,
) -> float:
    """Lowest threshold whose specificity on negative studies is at least the target.

    With ``N`` negative studies at most ``m = floor((1 - target) * N)`` may be flagged;
    the threshold lies just above the ``(m + 1)``-th highest negative score.
    """
    if not 0.0 < target_specificity <= 1.0:
        raise ValueError(f"target specificity must be in (0, 1], got {target_specificity}")
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    neg_scores = np.sort(scores[~positive])[::-1]
    if len(neg_scores) == 0:
        raise ValueError(
            "the calibration split has no negative study; calibrate on data with normals"
        )
    allowed = math.floor((1.0 - target_specificity) * len(neg_scores) + 1e-9)
    if allowed >= len(neg_scores):
        return 0.0
    return float(np.nextafter(neg_scores[allowed], np.inf))


#: raw scores are clipped to [EPS, 1 - EPS] before taking their logit (as serving does)
EPS = 1e-9


def _logit(scores: np.ndarray) -> np.ndarray:
    clipped = np.clip(np.asarray(scores, dtype=np.float64), EPS, 1.0 - EPS)
    return np.log(clipped) - np.log1p(-clipped)


def fit_score_calibration(
    scores: Sequence[float] | np.ndarray,
    positive: Sequence[bool] | np.ndarray,
    method: str = "platt",
    fitted_on: str = "",
) -> ScoreCalibration:
    """Fit Platt (slope and intercept) or temperature (slope) scaling of the study score.

    Maximum likelihood of ``sigmoid(slope * logit(score) + intercept)`` with Platt's
    smoothed targets ``(P + 1) / (P + 2)`` for positives and ``1 / (N + 2)`` for negatives,
    which keeps the fit finite when the validation studies are perfectly separated.

    Raises:
        ValueError: without both positive and negative studies, or for an unknown method.
    """
    from scipy.optimize import minimize

    from oncotriage.models.spec import ScoreCalibration

    if method not in ("platt", "temperature"):
        raise ValueError(f"unknown score calibration {method!r}: use platt or temperature")
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            "score calibration needs positive and negative studies in the calibration split"
        )
    x = _logit(np.asarray(scores, dtype=np.float64))
    target = np.where(positive, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))

    def nll(params: np.ndarray) -> tuple[float, np.ndarray]:
        slope = math.exp(params[0])
        intercept = params[1] if method == "platt" else 0.0
        z = slope * x + intercept
        # log(1 + e^z) - t z, stable
        loss = float(np.sum(np.logaddexp(0.0, z) - target * z))
        residual = 0.5 * (1.0 + np.tanh(0.5 * z)) - target
        grad_intercept = float(np.sum(residual)) if method == "platt" else 0.0
        grad = np.array([float(np.sum(residual * x)) * slope, grad_intercept])
        return loss, grad

    start = np.array([math.log(0.2), 0.0])
    result = minimize(nll, start, jac=True, method="L-BFGS-B")
    slope = math.exp(float(result.x[0]))
    intercept = float(result.x[1]) if method == "platt" else 0.0
    return ScoreCalibration(
        method=method,  # type: ignore[arg-type]
        slope=slope,
        intercept=intercept,
        fitted_on=fitted_on or f"{len(x)} studies ({n_pos} positive)",
    )


@dataclass(frozen=True)
class Reliability:
    """Reliability diagram data and the expected calibration error (equal-width bins).

    Attributes:
        bin_edges: ``num_bins + 1`` edges over [0, 1].
        mean_score: mean predicted score per bin (NaN for an empty bin).
        positive_rate: share of positive studies per bin (NaN for an empty bin).
        counts: studies per bin.
        ece: sum over bins of ``count / n * |positive_rate - mean_score|``.
    """

    bin_edges: np.ndarray
    mean_score: np.ndarray
    positive_rate: np.ndarray
    counts: np.ndarray
    ece: float


def reliability(
    scores: Sequence[float] | np.ndarray,
    positive: Sequence[bool] | np.ndarray,
    num_bins: int = 10,
) -> Reliability:
    """Reliability diagram and expected calibration error of study scores."""
    scores = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    positive = np.asarray(positive, dtype=bool)
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    index = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, num_bins - 1)
    counts = np.bincount(index, minlength=num_bins)
    sums = np.bincount(index, weights=scores, minlength=num_bins)
    hits = np.bincount(index, weights=positive.astype(np.float64), minlength=num_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_score = np.where(counts > 0, sums / counts, np.nan)
        positive_rate = np.where(counts > 0, hits / counts, np.nan)
    total = max(len(scores), 1)
    filled = counts > 0
    ece = float(np.sum(counts[filled] / total * np.abs(positive_rate[filled] - mean_score[filled])))
    return Reliability(edges, mean_score, positive_rate, counts, ece)


def plot_reliability(
    before: Reliability, after: Reliability, path: Path, title: str = "Reliability"
) -> Path:
    """Reliability diagram (PNG): positive share against mean score per bin, raw and calibrated."""
    from oncotriage.training.plots import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=100)
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    for rel, label, marker in ((before, "raw", "s"), (after, "calibrated", "o")):
        filled = rel.counts > 0
        ax.plot(
            rel.mean_score[filled],
            rel.positive_rate[filled],
            marker=marker,
            label=f"{label} (ECE {rel.ece:.3f})",
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("mean study score in bin")
    ax.set_ylabel("share of positive studies in bin")
    ax.set_title(f"{title} ({int(after.counts.sum())} studies)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


@dataclass(frozen=True)
class Calibration:
    """The result of ``oncotriage calibrate``.

    Attributes:
        operating: threshold and performance of the ``suspicious`` flag.
        urgent: threshold and performance of the ``urgent`` flag.
        target_sensitivity: sensitivity the operating threshold was chosen for.
        target_specificity: specificity the urgent threshold was chosen for.
        num_studies: validation studies used.
        num_positive_studies: those with a lesion.
        urgent_sensitivity: most share of positive studies the urgent band may hold.
        ece_raw, ece: expected calibration error of the raw and the calibrated scores
            (equal when no score calibration was fitted).
    """

    operating: OperatingPoint
    urgent: OperatingPoint
    target_sensitivity: float
    target_specificity: float
    num_studies: int
    num_positive_studies: int
    urgent_sensitivity: float = 1.0
    ece_raw: float = float("nan")
    ece: float = float("nan")

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def as_metrics(self) -> dict[str, float]:
        """Flat numbers for MLflow."""
        out: dict[str, float] = {}
        for name, point in (("operating", self.operating), ("urgent", self.urgent)):
            out[f"{name}_threshold"] = point.threshold
            pairs = (("sensitivity", point.sensitivity), ("specificity", point.specificity))
            for kind, prop in pairs:
                out[f"{name}_{kind}"] = prop.value
                out[f"{name}_{kind}_ci_low"] = prop.low
                out[f"{name}_{kind}_ci_high"] = prop.high
        out["ece_raw"] = self.ece_raw
        out["ece"] = self.ece
        return out


def calibrate_thresholds(
    scores: Sequence[float] | np.ndarray,
    positive: Sequence[bool] | np.ndarray,
    *,
    target_sensitivity: float = 0.95,
    target_specificity: float = 0.98,
    urgent_sensitivity: float = 1.0,
    confidence: float = 0.95,
) -> Calibration:
    """Choose the operating and urgent thresholds on validation studies.

    Args:
        scores: suspicion score per study (calibrated, when a calibration is used).
        positive: whether each study holds a lesion.
        target_sensitivity: study-level sensitivity the operating threshold must reach.
        target_specificity: study-level specificity the urgent threshold must reach.
        urgent_sensitivity: the urgent threshold leaves at most this share of positive
            studies above it (1.0: no such limit).
        confidence: coverage of the Wilson intervals.

    Returns:
        both thresholds and their sensitivity/specificity with intervals.
    """
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    operating = threshold_for_sensitivity(scores, positive, target_sensitivity)
    urgent = max(threshold_for_specificity(scores, positive, target_specificity), operating)
    if urgent_sensitivity < target_sensitivity:
        urgent = max(urgent, _threshold_for_at_most(scores, positive, urgent_sensitivity))
    ece = reliability(scores, positive).ece
    return Calibration(
        operating=operating_point(scores, positive, operating, confidence),
        urgent=operating_point(scores, positive, urgent, confidence),
        target_sensitivity=target_sensitivity,
        target_specificity=target_specificity,
        num_studies=len(scores),
        num_positive_studies=int(positive.sum()),
        urgent_sensitivity=urgent_sensitivity,
        ece_raw=ece,
        ece=ece,
    )


def _threshold_for_at_most(scores: np.ndarray, positive: np.ndarray, share: float) -> float:
    """Lowest threshold that flags at most ``share`` of the positive studies (``share > 0``)."""
    if not 0.0 < share <= 1.0:
        raise ValueError(f"urgent sensitivity must be in (0, 1], got {share}")
    pos_scores = np.sort(scores[positive])[::-1]
    allowed = math.floor(share * len(pos_scores) + 1e-9)
    if allowed >= len(pos_scores):
        return 0.0
    return float(np.nextafter(pos_scores[allowed], np.inf))


@dataclass
class CalibrationReport:
    """What ``oncotriage calibrate`` chose and where it stored it.

    Attributes:
        model: ``NAME/VERSION`` or the bundle's name.
        split: datalist split used (``validation``).
        calibration: thresholds and performance.
        stored_in: where the thresholds were written (version tag or spec file).
        run_id: MLflow run that records the calibration.
        score_calibration: the fitted score map (``None`` when not asked for).
        reliability_raw, reliability_calibrated: reliability diagrams of the study scores
            before and after the score map.
    """

    model: str
    split: str
    calibration: Calibration
    stored_in: str = ""
    run_id: str | None = None
    score_calibration: ScoreCalibration | None = None
    reliability_raw: Reliability | None = None
    reliability_calibrated: Reliability | None = None


def calibrate_model(
    uri: str,
    datalist: Path,
    *,
    split: str = "validation",
    target_sensitivity: float = 0.95,
    target_specificity: float = 0.98,
    urgent_sensitivity: float = 0.5,
    score_calibration: str | None = "platt",
    tracking_uri: str | None = None,
    out: Path | None = None,
    log_to_mlflow: bool = True,
    intra_op_threads: int | None = None,
    on_start: Callable[[int], None] | None = None,
    on_image: Callable[[int], None] | None = None,
) -> CalibrationReport:
    """Choose a model's triage thresholds on a split and store them with the model.

    Studies are scored by the serving pipeline (suspicion score = highest finding score);
    ``score_calibration`` (``platt``, ``temperature`` or ``None``) fits a map of that score
    on the split, and the thresholds are chosen on the mapped scores and stored with it.
    Where the thresholds go: with ``out``, into a calibrated copy of the bundle there
    (register it as a new version); otherwise into a local bundle folder's
    ``model_spec.json``, or onto a registered version (``oncotriage.thresholds`` tag, which
    :func:`oncotriage.models.registry.resolve` applies). A ``runs:/`` model needs ``out``.

    Raises:
        ValueError: if the split lacks positive or negative studies, or a ``runs:/`` model
            is given without ``out``.
    """
    from oncotriage.datasets.datalist import CORNER_MODE, load_datalist
    from oncotriage.models import registry
    from oncotriage.models.spec import Thresholds
    from oncotriage.training.evaluate import predict_split

    model = registry.resolve(uri, tracking_uri=tracking_uri)
    kind = registry.parse_model_uri(model.uri).kind
    if kind == "runs" and out is None:
        raise ValueError(
            "a runs:/ model cannot be changed in place; give --out to write a calibrated copy"
        )
    entries = load_datalist(datalist, split, box_mode=CORNER_MODE[model.spec.spatial_dims])
    if on_start is not None:
        on_start(len(entries))
    predictions = predict_split(
        model.bundle_dir, entries, intra_op_threads=intra_op_threads, on_image=on_image
    )
    studies = predictions.studies()
    raw = np.asarray(studies.scores, dtype=np.float64)
    positive = np.asarray(studies.positive, dtype=bool)
    score_map = None
    scores = raw
    if score_calibration is not None:
        score_map = fit_score_calibration(
            raw,
            positive,
            score_calibration,
            fitted_on=f"{split} split of {datalist.name}: {len(raw)} studies, "
            f"{int(positive.sum())} positive",
        )
        scores = np.asarray(score_map.apply(raw), dtype=np.float64)
    calibration = calibrate_thresholds(
        scores,
        positive,
        target_sensitivity=target_sensitivity,
        target_specificity=target_specificity,
        urgent_sensitivity=urgent_sensitivity,
    )
    rel_raw = reliability(raw, positive)
    rel_cal = reliability(scores, positive)
    calibration = replace(calibration, ece_raw=rel_raw.ece, ece=rel_cal.ece)
    thresholds = Thresholds(
        operating=float(np.clip(calibration.operating.threshold, 0.0, 1.0)),
        urgent=float(np.clip(calibration.urgent.threshold, 0.0, 1.0)),
        target_sensitivity=target_sensitivity,
        calibrated=True,
        score_calibration=score_map,
    )
    metrics = {f"{split}_{k}": v for k, v in calibration.as_metrics().items() if np.isfinite(v)}
    report = CalibrationReport(
        model=model.label,
        split=split,
        calibration=calibration,
        score_calibration=score_map,
        reliability_raw=rel_raw,
        reliability_calibrated=rel_cal,
    )
    if out is not None:
        out = Path(out)
        if out.resolve() != model.bundle_dir.resolve():
            shutil.copytree(model.bundle_dir, out, dirs_exist_ok=True)
            (out / ".complete").unlink(missing_ok=True)
        target = out
    elif kind == "local":
        target = model.bundle_dir
    else:
        target = None
    if target is not None:
        spec = registry.load_spec(target)
        spec = spec.model_copy(
            update={"thresholds": thresholds, "metrics": {**spec.metrics, **metrics}}
        )
        report.stored_in = str(registry.save_spec(target, spec))
    else:
        assert model.version is not None
        registry.record_thresholds(
            model.name, model.version, thresholds.model_dump(), tracking_uri=tracking_uri
        )
        registry.record_metrics(model.name, model.version, metrics, tracking_uri=tracking_uri)
        report.stored_in = f"models:/{model.name}/{model.version} ({registry.THRESHOLDS_TAG})"
    if log_to_mlflow:
        report.run_id = _log_calibration(report, model, datalist, metrics, tracking_uri)
    return report


def _log_calibration(
    report: CalibrationReport,
    model: Any,
    datalist: Path,
    metrics: dict[str, float],
    tracking_uri: str | None,
) -> str:
    from oncotriage.models import registry
    from oncotriage.training.evaluate import EVALUATION_EXPERIMENT
    from oncotriage.training.tracking import log_metrics, log_params

    store = tracking_uri or registry.default_tracking_uri()
    client = registry.get_client(store)
    experiment_id = registry.get_or_create_experiment(EVALUATION_EXPERIMENT, store)
    run = client.create_run(
        experiment_id,
        run_name=f"calibrate {model.label} on {report.split}",
        tags={"oncotriage.model": model.label, "oncotriage.split": report.split},
    )
    run_id = str(run.info.run_id)
    cal = report.calibration
    log_params(
        client,
        run_id,
        {
            "model_uri": str(model.uri),
            "datalist": str(datalist),
            "split": report.split,
            "target_sensitivity": str(cal.target_sensitivity),
            "target_specificity": str(cal.target_specificity),
            "urgent_sensitivity": str(cal.urgent_sensitivity),
            "score_calibration": (
                report.score_calibration.model_dump_json() if report.score_calibration else "none"
            ),
            "stored_in": report.stored_in,
        },
    )
    log_metrics(client, run_id, metrics)
    if report.reliability_raw is not None and report.reliability_calibrated is not None:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            plot_reliability(
                report.reliability_raw,
                report.reliability_calibrated,
                Path(tmp) / "reliability.png",
                title=f"{model.label} on {report.split}",
            )
            client.log_artifacts(run_id, tmp, artifact_path="calibration")
    client.set_terminated(run_id)
    return run_id
