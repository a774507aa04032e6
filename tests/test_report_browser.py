"""report.html as a reader sees it: rendered by headless Chromium, every image decoded, no
console error, and a screenshot kept as a test artifact (its path is printed)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ckalab.report.html import build_report
from ckalab.study.synthetic import write_synthetic_store

CHROMIUM = next(
    (p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p),
    None,
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed (apt-get install chromium; .ci/run installs it as root)",
)

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--enable-logging=stderr",
    "--v=0",
]

#: Injected first in <head> of a copy of the page: records errors (script errors, failed
#: resources, console.error) and, once loaded, whether every image decoded.
PROBE = """<script>
window.__errors = [];
window.addEventListener('error', function (e) {
  var t = e.target;
  window.__errors.push(t && t.tagName ? 'resource failed: ' + t.tagName : String(e.message));
}, true);
var _ce = console.error;
console.error = function () {
  window.__errors.push(Array.prototype.join.call(arguments, ' '));
  return _ce.apply(console, arguments);
};
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var bad = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  var b = document.body;
  b.setAttribute('data-images', String(imgs.length));
  b.setAttribute('data-bad-images', JSON.stringify(bad.map(function (i) { return i.alt; })));
  b.setAttribute('data-errors', JSON.stringify(window.__errors));
  b.setAttribute('data-checked', 'yes');
});
</script>"""


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _attr(dom: str, name: str) -> str:
    m = re.search(rf'{name}="([^"]*)"', dom)
    assert m, f"{name} not set: the page's load handler did not run"
    return m.group(1).replace("&quot;", '"')


@pytest.mark.slow
def test_report_renders_in_chromium(tmp_path: Path) -> None:
    store = write_synthetic_store(
        tmp_path / "study",
        runs=12,
        evaluations=10,
        pairs=[(0, 1), (4, 9), (3, 5), (2, 7)],
        layers=("hidden1", "hidden2"),
        ntk=True,
    )
    result = build_report(store, n_boot=100)
    assert result.failures == {}
    page = result.html.read_text()
    probe_page = tmp_path / "probe.html"
    probe_page.write_text(page.replace("<head>", "<head>" + PROBE, 1))

    run = _chromium(
        ["--virtual-time-budget=15000", "--dump-dom", probe_page.as_uri()], tmp_path / "p1"
    )
    dom = run.stdout
    assert _attr(dom, "data-checked") == "yes", run.stderr[-2000:]
    n_images = int(_attr(dom, "data-images"))
    assert n_images == len(re.findall(r"<img ", page)) >= 5
    assert json.loads(_attr(dom, "data-bad-images")) == []
    assert json.loads(_attr(dom, "data-errors")) == []
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console

    shot = tmp_path / "report.png"
    run = _chromium(
        ["--window-size=1280,2400", f"--screenshot={shot}", result.html.as_uri()], tmp_path / "p2"
    )
    assert shot.is_file() and shot.stat().st_size > 10_000, run.stderr[-2000:]
    print(f"\nreport screenshot: {shot}\nreport page: {result.html}")
