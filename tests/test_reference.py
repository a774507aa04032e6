"""docs/study-reference.md is generated from the schema and must not drift from it."""

from __future__ import annotations

from pathlib import Path

from ckalab.config import RunConfig
from ckalab.study.reference import study_reference
from ckalab.study.spec import StudySettings

REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "study-reference.md"


def test_reference_is_current() -> None:
    assert REFERENCE.read_text() == study_reference(), (
        "docs/study-reference.md is stale: regenerate it with "
        "`python -m ckalab.study.reference > docs/study-reference.md`"
    )


def test_reference_covers_every_key() -> None:
    text = study_reference()
    for section, info in RunConfig.model_fields.items():
        assert f"## `[{section}]`" in text
        for name in info.annotation.model_fields:  # type: ignore[union-attr]
            assert f"| `{name}` |" in text, f"{section}.{name}"
    for name in StudySettings.model_fields:
        assert f"| `{name}` |" in text
    assert "## `[sweep]`" in text
