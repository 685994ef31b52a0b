"""Service settings: one ``Settings`` object read from ``ONCOTRIAGE_*`` environment variables.

Nothing is read at import time: :func:`get_settings` builds the object on first use and
caches it. The app factory and the worker take a ``Settings`` argument, so tests build
their own without touching the environment.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from oncotriage.serving.enums import Priority

#: Secret values that ship in examples and defaults; refused outside development.
PLACEHOLDER_SECRETS = frozenset({"", "change-me", "changeme", "secret", "development-only-secret"})
_MIN_SECRET_LENGTH = 32


class Settings(BaseSettings):
    """Everything the service and its workers can be told from the environment.

    Every field is ``ONCOTRIAGE_<FIELD>`` in the environment (case-insensitive), e.g.
    ``ONCOTRIAGE_DATABASE_URL=postgresql+psycopg://user@db/oncotriage``.
    """

    model_config = SettingsConfigDict(
        env_prefix="ONCOTRIAGE_", env_file=None, extra="ignore", validate_default=True
    )

    environment: Literal["development", "test", "production"] = "development"

    # --- where things live
    data_dir: Path = Path("./var")
    database_url: str = Field(
        default="", description="SQLAlchemy URL; default sqlite:///<data_dir>/oncotriage.db."
    )
    store_dir: Path | None = Field(default=None, description="Image store; default data_dir/store.")
    store_url: str | None = Field(
        default=None,
        description="s3://BUCKET/PREFIX keeps images in an S3-compatible object store "
        "(workers on other hosts read them from there); unset: the store_dir folder.",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="S3 API endpoint (SeaweedFS, MinIO); unset: AWS."
    )
    s3_region: str | None = Field(default=None, description="S3 region (default us-east-1).")
    s3_access_key_id: str | None = Field(
        default=None, description="S3 access key; unset: boto3's own (AWS_* env, profile, role)."
    )
    s3_secret_access_key: SecretStr | None = None
    store_cache_dir: Path | None = Field(
        default=None,
        description="With store_url: this process's local read cache of objects (DICOM "
        "readers want files); default data_dir/store-cache.",
    )
    store_cache_max_bytes: int = Field(
        default=2 * 1024**3,
        ge=0,
        description="With store_url: the read cache's size bound in bytes (default 2 GiB; 0: "
        "unbounded). Past it the least recently used copies are deleted, whole files, down "
        "to 90 % of the bound; copies used in the last store_cache_min_age_s are kept.",
    )
    store_cache_min_age_s: float = Field(
        default=60.0,
        ge=0,
        description="With store_url: a cached copy used this recently is never evicted (a "
        "series being read stays whole), even if the cache is over its bound meanwhile.",
    )
    public_base_url: str | None = Field(
        default=None,
        description="External URL of the service (for RetrieveURL and webhooks); "
        "default: the URL the request came in on.",
    )
    dicomweb_cors_origins: str = Field(
        default="",
        description="Web origins (comma-separated, e.g. https://viewer.hospital.example) whose "
        "pages may call the DICOMweb routes from a browser (a web viewer such as OHIF on "
        "another origin); empty: none. Applies to /dicomweb only.",
    )

    @property
    def dicomweb_cors_origin_list(self) -> list[str]:
        return [o.strip().rstrip("/") for o in self.dicomweb_cors_origins.split(",") if o.strip()]

    # --- models and inference
    model_uri: str = Field(
        default="models:/oncotriage-cxr2d@champion",
        description="models:/NAME@ALIAS, models:/NAME/VERSION, or a local bundle folder.",
    )
    models: str = Field(
        default="",
        description="Several models, one per route: a JSON object {route: uri}, e.g. "
        '{"cxr": "models:/oncotriage-cxr2d@champion", "ldct": "models:/oncotriage-ct3d@champion"}'
        "; each follows its own alias and each series goes to the first route whose model's "
        "intended input fits it. Empty: model_uri alone (route 'default').",
    )

    @field_validator("models", mode="before")
    @classmethod
    def _models_text(cls, value: Any) -> Any:
        """``models`` may be given as a mapping (tests, code); it is kept as JSON text."""
        return json.dumps(dict(value)) if isinstance(value, dict) else value

    @field_validator("models")
    @classmethod
    def _models_valid(cls, value: str) -> str:
        from oncotriage.serving.routing import parse_models

        if value.strip():
            parse_models(value, "")  # raises ValueError with the reason
        return value

    @property
    def model_routes(self) -> dict[str, str]:
        """Route -> model URI: ``models``, or ``model_uri`` alone as route ``default``."""
        from oncotriage.serving.routing import parse_models

        return parse_models(self.models, self.model_uri)

    mlflow_tracking_uri: str | None = Field(
        default=None, description="MLflow tracking URI; default: the registry's own default."
    )
    register_demo_model: bool = Field(
        default=True,
        description="On first run, register models/demo as version 1 (alias champion) when "
        "the registry has no model under model_uri's name.",
    )
    demo_model_dir: Path | None = Field(
        default=None, description="Bundle registered on first run; default models/demo."
    )
    allow_uncalibrated_models: bool = Field(
        default=False,
        description="Serve a model version whose triage thresholds were never calibrated "
        "(placeholders, e.g. an imported Model Zoo bundle before `oncotriage calibrate`). "
        "False: such a version is not loaded; its route's studies wait, and /readyz says "
        "why, rather than be called routine below a threshold nobody chose.",
    )
    model_poll_interval_s: float = Field(default=30.0, gt=0)
    inference_backend: Literal["embedded", "triton", "openvino"] = "embedded"
    allow_reduced_precision: bool = Field(
        default=True,
        description="With the openvino backend, serve the fastest accepted bf16/int8 variant of "
        "the model version (registered by `oncotriage optimize`) that this CPU supports; "
        "false: always the fp32 version itself.",
    )
    runner_factory: str | None = Field(
        default=None,
        description="'module:attribute' of a callable(settings) -> runner_factory, overriding "
        "the backend's default (ONNX Runtime for embedded, Triton for triton).",
    )
    ort_intra_op_threads: int | None = Field(
        default=None,
        ge=0,
        description="ONNX Runtime intra-op threads per model session. Default: the cores "
        "this process may use (CPU affinity and cgroup quota respected, SMT siblings counted "
        "once) less reserved_cores, split between the process's workers. 0: ONNX Runtime's "
        "own default (one per physical core of the machine).",
    )
    reserved_cores: int = Field(
        default=0,
        ge=0,
        description="Cores the default ONNX Runtime threads leave to the rest of the service "
        "(HTTP, intake, the database, the worker's reading): 1 keeps the API responsive and "
        "the service level with the bare model at saturation, at some peak throughput.",
    )
    triton_url: str = "127.0.0.1:8001"
    triton_model_repository: Path | None = None
    triton_timeout_s: float = Field(default=30.0, gt=0)
    triton_control_urls: str | None = Field(
        default=None,
        description="Comma-separated Triton instances that get model control (load/unload); "
        "default triton_url.",
    )
    triton_flavor: Literal["gpu", "portable"] | None = Field(
        default=None, description="Repository flavour for a model new to Triton (default gpu)."
    )

    # --- monitoring in the field (docs/monitoring.md)
    monitor_enabled: bool = Field(
        default=True,
        description="Run the monitor thread behind the workers: input statistics, the "
        "challenger's shadow score and drift alarms for every completed job.",
    )
    challenger_alias: str = Field(
        default="challenger",
        description="Registry alias of each served model's shadow model (models:/NAME@ALIAS "
        "of the champion's NAME); it scores live studies after the champion, stored apart, "
        "never changing a priority. Empty: no challengers.",
    )
    monitor_backlog: int = Field(
        default=64,
        ge=1,
        description="Completed jobs waiting for the monitor at most; beyond it a job is not "
        "monitored (counted in oncotriage_monitor_dropped_total), triage never waits.",
    )
    monitor_thread_nice: int = Field(
        default=15,
        ge=0,
        le=19,
        description="Nice steps the monitor thread (and the challenger's ONNX Runtime "
        "threads) run behind the model.",
    )
    operator_webhook_url: str | None = Field(
        default=None, description="Drift alarms are POSTed here as JSON (operators' hook)."
    )
    drift_warmup_studies: int = Field(
        default=300,
        ge=5,
        description="A hospital's (device's) first studies under a model version set the "
        "baseline of its flag rate and score charts.",
    )
    drift_window_studies: int = Field(
        default=500, ge=20, description="Studies each drift chart looks back over at most."
    )
    drift_cusum_k: float = Field(default=0.5, gt=0, description="CUSUM reference value (sd).")
    drift_cusum_h: float = Field(default=10.0, gt=0, description="CUSUM decision interval (sd).")
    drift_flag_odds: float = Field(
        default=3.0, gt=1, description="Flag-rate CUSUM: the odds ratio of the shift it tests."
    )
    drift_flag_h: float = Field(
        default=10.0, gt=0, description="Flag-rate CUSUM decision interval (log-likelihood)."
    )
    drift_flag_margin_z: float = Field(
        default=1.0,
        ge=0,
        description="Flag-rate CUSUM: the up chart starts from the warm-up rate's Wilson upper "
        "bound at this z, the down chart from its lower bound, so that the error of a rate "
        "estimated from the warm-up does not turn into alarms (0: the estimate itself).",
    )
    hold_check_interval_s: float = Field(
        default=1.0,
        ge=0,
        description="Workers re-read the held hospitals (drift alarms set to hold) this often.",
    )
    drift_action: Literal["warn", "hold"] = Field(
        default="warn",
        description="What a new drift alarm does: warn (banner, webhook, metric) or hold "
        "(also sends the hospital's new studies to people unscored until cleared).",
    )

    # --- workers and the job queue
    embedded_workers: int = Field(
        default=1, ge=0, description="Worker threads inside `serve`; 0 = separate workers."
    )
    worker_poll_interval_s: float = Field(default=0.5, gt=0)
    job_lease_s: float = Field(default=60.0, gt=0, description="A job's lease; heartbeats renew.")
    job_heartbeat_s: float | None = Field(default=None, gt=0, description="Default lease / 3.")
    job_max_attempts: int = Field(default=3, ge=1)
    job_backoff_base_s: float = Field(default=2.0, ge=0)
    job_backoff_max_s: float = Field(default=300.0, ge=0)
    series_settle_s: float = Field(
        default=2.0, ge=0, description="Wait this long after a CT series' last instance."
    )
    service_thread_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="Nice steps (Linux) that every thread but the model's runs behind it: "
        "HTTP, intake, job claims, DICOM reading, webhooks, audit. Keeps the model's core for "
        "the model at saturation; 0 turns it off.",
    )

    # --- intake
    estimated_chest_field_of_view_mm: float = Field(
        default=430.0,
        gt=0,
        le=1000,
        description="A chest radiograph without a usable Pixel Spacing is read as spanning "
        "this many mm along its long side; its millimetre figures are marked approximate.",
    )

    # --- DICOM listener (DIMSE C-ECHO / C-STORE SCP, serving/listener.py)
    dicom_listener_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Start the DICOM listener inside `serve` on this port (e.g. 11112; 0: a "
        "free port, for tests); unset: off (run `oncotriage dicom-listener` instead, or not "
        "at all).",
    )
    dicom_listener_host: str = Field(
        default="127.0.0.1",
        description="Address the DICOM listener binds (0.0.0.0: every interface).",
    )
    dicom_listener_ae_title: str = Field(
        default="ONCOTRIAGE",
        min_length=1,
        max_length=16,
        description="The listener's own AE title: modalities send to it as the called AE "
        "title, and an association addressed to another one is rejected.",
    )

    # --- intake limits (decompression bombs, runaway clients)
    max_request_bytes: int = Field(default=512 * 1024 * 1024, gt=0)
    max_instances_per_request: int = Field(default=2000, gt=0)
    max_pixels: int = Field(
        default=64 * 1024 * 1024, gt=0, description="Rows x Columns x Frames of one instance."
    )

    # --- worklist
    claim_lease_s: float = Field(default=900.0, gt=0)
    sla_urgent_minutes: float = Field(default=60.0, gt=0)
    sla_suspicious_minutes: float = Field(default=24 * 60.0, gt=0)
    sla_needs_manual_review_minutes: float = Field(default=8 * 60.0, gt=0)
    sla_routine_minutes: float = Field(default=7 * 24 * 60.0, gt=0)

    # --- authentication
    auth_cache_s: float = Field(
        default=10.0, ge=0, description="Seconds a verified token is remembered (0: never)."
    )

    # --- secrets and webhooks
    secret_key: SecretStr = SecretStr("change-me")
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    webhook_max_attempts: int = Field(default=8, ge=1)
    webhook_backoff_base_s: float = Field(default=5.0, ge=0)
    webhook_backoff_max_s: float = Field(default=3600.0, ge=0)

    metrics_token: SecretStr | None = Field(
        default=None,
        description="Bearer token Prometheus sends to read /metrics (an administrator's API "
        "token works too); without it only administrators read /metrics.",
    )

    # --- patients and referrals (serving/patients.py, serving/referrals.py)
    patient_key: SecretStr | None = Field(
        default=None,
        description="HMAC key of patient pseudonyms (Issuer of Patient ID + Patient ID); "
        "None derives one from secret_key. Changing it splits every patient record.",
    )
    referral_accept_days: float = Field(default=7.0, gt=0)
    referral_diagnosis_days: float = Field(default=14.0, gt=0)
    referral_acknowledge_days: float = Field(default=7.0, gt=0)
    referral_escalation_interval_s: float = Field(
        default=60.0,
        gt=0,
        description="How often each worker sweeps for overdue referral steps and escalates "
        "them (webhook, audit, /metrics) with nobody reading a list; safe with many workers.",
    )

    # --- logs
    log_json: bool = False

    @model_validator(mode="after")
    def _derive_and_check(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'oncotriage.db'}"
        if self.store_dir is None:
            self.store_dir = self.data_dir / "store"
        if self.store_url is not None and not self.store_url.startswith("s3://"):
            raise ValueError(
                f"ONCOTRIAGE_STORE_URL must be s3://bucket/prefix, not {self.store_url!r} "
                "(for a folder use ONCOTRIAGE_STORE_DIR)"
            )
        if self.job_heartbeat_s is None:
            self.job_heartbeat_s = self.job_lease_s / 3
        if self.job_heartbeat_s >= self.job_lease_s:
            raise ValueError(
                "job_heartbeat_s must be shorter than job_lease_s, or a live worker loses its lease"
            )
        if self.environment != "development":
            secret = self.secret_key.get_secret_value()
            if secret.lower() in PLACEHOLDER_SECRETS or len(secret) < _MIN_SECRET_LENGTH:
                raise ValueError(
                    f"ONCOTRIAGE_SECRET_KEY is a placeholder or shorter than {_MIN_SECRET_LENGTH} "
                    f"characters, which is refused when environment={self.environment!r}; "
                    "generate one: python -c 'import secrets; print(secrets.token_urlsafe(48))'"
                )
            if self.metrics_token is not None and (
                self.metrics_token.get_secret_value().lower() in PLACEHOLDER_SECRETS
                or len(self.metrics_token.get_secret_value()) < _MIN_SECRET_LENGTH
            ):
                raise ValueError(
                    "ONCOTRIAGE_METRICS_TOKEN is a placeholder or shorter than "
                    f"{_MIN_SECRET_LENGTH} characters, which is refused when "
                    f"environment={self.environment!r}"
                )
        return self

    @property
    def image_store_dir(self) -> Path:
        """The image store folder (``store_dir``, resolved)."""
        return Path(self.store_dir or self.data_dir / "store")

    @property
    def heartbeat_interval_s(self) -> float:
        return float(self.job_heartbeat_s or self.job_lease_s / 3)

    def sla_minutes(self, priority: Priority | str) -> float:
        """Minutes a study of this priority may wait before it escalates in the worklist."""
        return {
            Priority.URGENT: self.sla_urgent_minutes,
            Priority.SUSPICIOUS: self.sla_suspicious_minutes,
            Priority.NEEDS_MANUAL_REVIEW: self.sla_needs_manual_review_minutes,
            Priority.ROUTINE: self.sla_routine_minutes,
        }[Priority(priority)]


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first call."""
    return Settings()
