"""DICOM reports of a triaged study (Structured Report, TID 1500)."""

from __future__ import annotations

from oncotriage.serving.reports.sr import build_sr, sr_to_bytes

__all__ = ["build_sr", "sr_to_bytes"]
