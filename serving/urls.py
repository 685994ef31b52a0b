"""Where a hospital finds things in the JSON API: one place builds each link."""

from __future__ import annotations

STUDIES_PATH = "/v1/studies"


def study_url(study_id: str) -> str:
    """The path of a study in the JSON API (relative to the service's root)."""
    return f"{STUDIES_PATH}/{study_id}"
