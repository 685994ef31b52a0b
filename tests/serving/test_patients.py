"""Patient pseudonyms: keyed, issuer-scoped, and never the identifier itself."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from oncotriage.serving.patients import patient_pseudonym
from oncotriage.serving.settings import Settings

SECRET = "a-secret-key-that-is-long-enough-0123456789"


def _settings(**overrides: object) -> Settings:
    return Settings(environment="test", secret_key=SECRET, **overrides)  # type: ignore[arg-type]


def test_pseudonym_is_keyed_and_scoped_by_issuer() -> None:
    base = _settings()
    first = patient_pseudonym(base, "UNION-MPI", "MRN-0042")
    assert first is not None and len(first) == 64
    assert "MRN" not in first and "0042" not in first
    # the same person, whitespace aside, is the same pseudonym
    assert patient_pseudonym(base, " UNION-MPI ", "MRN-0042 ") == first
    # another issuer's identical number, another number, or another key: another pseudonym
    assert patient_pseudonym(base, "OTHER", "MRN-0042") != first
    assert patient_pseudonym(base, "UNION-MPI", "MRN-0043") != first
    keyed = _settings(patient_key=SecretStr("another-patient-key-0123456789abcdef"))
    assert patient_pseudonym(keyed, "UNION-MPI", "MRN-0042") != first
    # issuer and number are not simply concatenated ("AB"+"C" differs from "A"+"BC")
    assert patient_pseudonym(base, "AB", "C") != patient_pseudonym(base, "A", "BC")


@pytest.mark.parametrize("patient_id", ["", "   "])
def test_no_patient_id_no_patient(patient_id: str) -> None:
    assert patient_pseudonym(_settings(), "UNION-MPI", patient_id) is None
