"""One home per rule: what must be declared in exactly one module is not re-implemented."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "ckalab"


def _python_files(*folders: Path) -> list[Path]:
    return [p for folder in folders for p in folder.rglob("*.py")]


def _offenders(pattern: str, files: list[Path], allowed: set[str]) -> list[str]:
    regex = re.compile(pattern)
    me = Path(__file__).resolve()
    return [
        p.relative_to(ROOT).as_posix()
        for p in files
        if p.resolve() != me
        and p.relative_to(ROOT).as_posix() not in allowed
        and regex.search(p.read_text())
    ]


def test_seeds_are_derived_only_in_ckalab_seeds() -> None:
    """Generators are seeded only through ckalab.seeds: no ad-hoc stream numbers elsewhere."""
    pattern = r"SeedSequence|default_rng\(\[|manual_seed\(derive"
    assert _offenders(pattern, _python_files(SRC), {"src/ckalab/seeds.py"}) == []


def test_one_hot_is_implemented_only_by_the_alignment_library() -> None:
    """Targets are encoded by ckalab.alignment.one_hot / signed_targets everywhere: in the
    package, the tests and the benchmarks."""
    files = _python_files(SRC, ROOT / "tests", ROOT / "benchmarks")
    allowed = {"src/ckalab/alignment.py"}
    allowed |= {p.relative_to(ROOT).as_posix() for p in (SRC / "alignment").rglob("*.py")}
    assert _offenders(r"functional\.one_hot|\bF\.one_hot", files, allowed) == []
