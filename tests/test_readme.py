"""The README's Python examples run as written, and print what their comments say.

Convention for the comment of a ``print(...)`` line in a README Python block:

- ``~X`` (anywhere in the comment, e.g. ``# ~0.98 vs ~0.01``): the i-th ``~X`` of the comment
  is compared with the i-th number the print writes; it matches within one unit of the last
  digit written (``~0.98``: 0.97..0.99, ``~0.8``: 0.7..0.9, ``~0.00``: -0.01..0.01).
- ``# -> TEXT`` (on the print line, or alone on the line below it when the line would be too
  long): the printed text, token by token (split on whitespace); a ``~X`` token matches a
  number as above, any other token must be printed exactly.

Every commented print must run at least once, and every time it runs its output must match.
"""

from __future__ import annotations

import io
import re
import sys
from decimal import Decimal
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
APPROX = re.compile(r"~(-?\d+(?:\.\d+)?)")


def approx_matches(expected: str, actual: str) -> bool:
    """``~expected`` (without the ``~``) matches ``actual`` within one unit of its last digit."""
    unit = Decimal(1).scaleb(Decimal(expected).as_tuple().exponent)
    return abs(Decimal(actual) - Decimal(expected)) <= unit


def check_output(comment: str, output: str) -> str | None:
    """None if ``output`` is what ``comment`` promises, else why not."""
    comment = comment.strip()
    if comment.startswith("->"):
        want, got = comment[2:].split(), output.split()
        if len(want) != len(got):
            return f"expected {' '.join(want)!r}, printed {output.strip()!r}"
        for w, g in zip(want, got, strict=True):
            ok = approx_matches(w[1:], g) if w.startswith("~") and NUMBER.fullmatch(g) else w == g
            if not ok:
                return f"expected {w!r}, printed {g!r} (in {output.strip()!r})"
        return None
    wanted = APPROX.findall(comment)
    printed = NUMBER.findall(output)
    if len(printed) < len(wanted):
        return f"expected {len(wanted)} numbers (~{', ~'.join(wanted)}), printed {output!r}"
    for w, g in zip(wanted, printed, strict=False):
        if not approx_matches(w, g):
            return f"expected ~{w}, printed {g} (in {output.strip()!r})"
    return None


def expectations(source: str) -> dict[int, str]:
    """Line number -> comment, for the print lines whose comment promises an output (on the
    print line, or a ``# -> ...`` line right below it)."""
    out = {}
    lines = source.splitlines()
    for lineno, line in enumerate(lines, start=1):
        code, sep, comment = line.partition("  # ")
        if "print(" not in code:
            continue
        below = lines[lineno].strip() if lineno < len(lines) else ""
        if sep and (comment.strip().startswith("->") or "~" in comment):
            out[lineno] = comment
        elif below.startswith("# ->"):
            out[lineno] = below[1:]
    return out


def run_block(source: str, name: str) -> dict[int, list[str]]:
    """Execute ``source``; the text of each print call, by the line it was called from."""
    printed: dict[int, list[str]] = {}

    def recording_print(*args, **kwargs) -> None:
        buffer = io.StringIO()
        print(*args, **{**kwargs, "file": buffer})
        caller = sys._getframe(1)
        if caller.f_code.co_filename == name:
            printed.setdefault(caller.f_lineno, []).append(buffer.getvalue())

    exec(compile(source, name, "exec"), {"print": recording_print})
    return printed


def test_readme_has_python_examples():
    assert len(BLOCKS) >= 2
    assert sum(len(expectations(b)) for b in BLOCKS) >= 5


@pytest.mark.parametrize(
    "index",
    [  # the examples that train a network are slow
        pytest.param(i, marks=[pytest.mark.slow] if "train(" in block else [])
        for i, block in enumerate(BLOCKS)
    ],
)
def test_readme_example_runs_and_prints_what_it_says(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = BLOCKS[index]
    printed = run_block(source, f"README.md[python block {index}]")
    for lineno, comment in expectations(source).items():
        line = source.splitlines()[lineno - 1].strip()
        assert printed.get(lineno), f"never printed: {line}"
        for output in printed[lineno]:
            problem = check_output(comment, output)
            assert problem is None, f"{line}\n  {problem}"


@pytest.mark.parametrize(
    ("comment", "output", "ok"),
    [
        ("~0.98 vs ~0.01", "0.9823 0.0076\n", True),
        ("~0.98 vs ~0.01", "0.9823 0.0312\n", False),
        ("~0.00: the debiased estimator", "-0.00012\n", True),
        ("~0.00: the debiased estimator", "0.2\n", False),
        ("-> torch.Size([2, 1])", "torch.Size([2, 1])\n", True),
        ("-> torch.Size([2, 1])", "torch.Size([2, 2])\n", False),
        ("-> done ~0.99 ~0.8", "done 0.986 0.79\n", True),
        ("-> done ~0.99 ~0.8", "diverged nan nan\n", False),
        ("(2, 1) matrix: ~0.98 and ~0.00", "tensor([[ 0.9826],\n [-0.0010]])", True),
    ],
)
def test_the_output_convention(comment, output, ok):
    assert (check_output(comment, output) is None) == ok
