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


def test_the_study_driver_does_not_import_torch(tmp_path) -> None:
    """Validating a study, estimating its work and opening its store stay torch-free, so
    ``ckalab run --dry-run`` answers in under a second and the driver of ``--workers N`` does
    not compete with its workers' start-up (each imports torch: ~3 s of CPU here)."""
    import subprocess
    import sys

    study = tmp_path / "study.toml"
    study.write_text('[data]\ndataset = "digits"\n[sweep]\n"optim.lr" = [0.1, 0.01]\n')
    code = (
        "import sys\n"
        "from ckalab.cli import main\n"
        f"assert main(['run', {str(study)!r}, '--dry-run']) == 0\n"
        "from ckalab.study.runner import run_study\n"
        "from ckalab.study.store import ResultsStore, load_results\n"
        "from ckalab.study.executors.local import LocalExecutor\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
