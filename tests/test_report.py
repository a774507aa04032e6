"""The study report: statistics against scipy, chance levels, and reports of unexpected studies."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from ckalab.alignment import cka, one_hot
from ckalab.report.chance import did_not_learn, random_feature_cka, target_rank
from ckalab.report.html import build_report, render_report
from ckalab.report.results import STATE, prepare
from ckalab.report.tables import (
    _bootstrap_ranks,
    correlate,
    correlation_table,
    encode_hyperparameter,
    final_column,
)
from ckalab.study.store import load_results
from ckalab.study.synthetic import write_synthetic_store

# ---- statistics -------------------------------------------------------------------------------


def test_correlate_matches_scipy_with_ties_and_missing_values() -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(0, 4, 60).astype(float)  # many ties
    y = x + rng.normal(size=60)
    y[[3, 17]] = np.nan
    x[5] = np.inf
    ok = np.isfinite(x) & np.isfinite(y)
    out = correlate(x, y, n_boot=500, seed=0)
    assert out["n"] == ok.sum() == 57
    pr, sr = stats.pearsonr(x[ok], y[ok]), stats.spearmanr(x[ok], y[ok])
    assert out["pearson_r"] == pytest.approx(pr.statistic, abs=1e-12)
    assert out["pearson_p"] == pytest.approx(pr.pvalue, rel=1e-9)
    assert out["spearman_r"] == pytest.approx(sr.statistic, abs=1e-12)
    assert out["spearman_p"] == pytest.approx(sr.pvalue, rel=1e-9)
    assert out["pearson_lo"] < out["pearson_r"] < out["pearson_hi"]
    assert out["spearman_lo"] < out["spearman_r"] < out["spearman_hi"]


def test_bootstrap_intervals_are_seeded_and_cover_known_correlation() -> None:
    rng = np.random.default_rng(2)
    n, rho = 200, 0.6
    x = rng.normal(size=n)
    y = rho * x + math.sqrt(1 - rho**2) * rng.normal(size=n)
    a = correlate(x, y, n_boot=1000, seed=3)
    assert a == correlate(x, y, n_boot=1000, seed=3)
    assert a != correlate(x, y, n_boot=1000, seed=4)
    assert a["pearson_lo"] < rho < a["pearson_hi"]
    # the percentile interval is about +-1.96 Fisher standard errors wide
    z = np.arctanh(a["pearson_r"])
    lo, hi = np.tanh(z - 1.96 / math.sqrt(n - 3)), np.tanh(z + 1.96 / math.sqrt(n - 3))
    assert a["pearson_lo"] == pytest.approx(lo, abs=0.04)
    assert a["pearson_hi"] == pytest.approx(hi, abs=0.04)


def test_bootstrap_ranks_equal_scipy_rankdata() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 6, 40).astype(float)
    idx = rng.integers(0, 40, (25, 40))
    np.testing.assert_allclose(_bootstrap_ranks(x, idx), stats.rankdata(x[idx], axis=1))


def test_correlate_degenerate_inputs_give_nan_not_errors() -> None:
    assert math.isnan(correlate([1, 2], [3, 4])["pearson_r"])
    assert math.isnan(correlate([1, 1, 1, 1], [1, 2, 3, 4])["spearman_r"])
    assert correlate([], [])["n"] == 0


def _runs_table(n: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    lr = 10.0 ** rng.choice([-3, -2, -1], n)
    skip = rng.integers(0, 2, n).astype(bool)
    cka_last = 0.2 + 0.1 * np.log10(lr) * -1 + 0.2 * skip + 0.05 * rng.normal(size=n)
    df = pd.DataFrame(
        {
            "run_id": [f"r{i:03d}" for i in range(n)],
            "status": "done",
            "optim.lr": lr,
            "optim.readout_lr": np.where(rng.random(n) < 0.5, np.nan, 0.1),
            "model.skip": skip,
            "model.arch": "resnet",
            "model.width": 64,
            "train.seed": np.arange(n) % 3,
            final_column("train", "loss"): rng.random(n),
            final_column("test", "acc"): 0.5 + 0.5 * rng.random(n),
            final_column("train", "acc"): 0.9 + 0.1 * rng.random(n),
            final_column("test", "cka", last=True): cka_last,
            final_column("train", "cka", last=True): cka_last + 0.02,
            final_column("test", "cka_avg"): cka_last * 0.9,
            final_column("train", "cka_avg"): cka_last * 0.9 + 0.01,
        }
    )
    return df


def test_correlation_table_encodings_exclusions_and_notes(tmp_path: Path) -> None:
    df = _runs_table()
    df.loc[0, "status"] = "diverged"
    df.loc[1, "status"] = "failed"
    df.loc[0, [c for c in df if c.startswith("final.")]] = np.nan
    fields = ["optim.lr", "optim.readout_lr", "model.skip", "model.arch", "model.width"]
    t = correlation_table(df, fields, not_learned=["r002"], n_boot=200)
    assert t.excluded["diverged"] == ["r000"] and t.excluded["failed"] == ["r001"]
    assert t.excluded["did not learn"] == ["r002"]
    assert t.n_runs == len(df) - 3
    assert t.encodings == {"optim.lr": "log10", "optim.readout_lr": "log10", "model.skip": "0/1"}
    notes = " ".join(t.notes)
    assert "model.arch" in notes and "categorical" in notes
    assert "model.width" in notes and "does not vary" in notes
    # the lr cell against scipy on log10 values of the included runs
    inc = df.iloc[3:]
    col = final_column("test", "cka", last=True)
    cell = t.cells[(t.cells["row"] == "optim.lr") & (t.cells["column"] == col)].iloc[0]
    assert cell["n"] == len(inc)
    assert cell["pearson_r"] == pytest.approx(
        stats.pearsonr(np.log10(inc["optim.lr"]), inc[col]).statistic
    )
    # an unset readout_lr is the effective readout rate (= optim.lr)
    eff = inc["optim.readout_lr"].fillna(inc["optim.lr"])
    cell = t.cells[(t.cells["row"] == "optim.readout_lr") & (t.cells["column"] == col)].iloc[0]
    assert cell["spearman_r"] == pytest.approx(stats.spearmanr(eff, inc[col]).statistic)
    skip = t.cells[(t.cells["row"] == "model.skip") & (t.cells["column"] == col)].iloc[0]
    assert skip["pearson_r"] == pytest.approx(
        stats.pearsonr(inc["model.skip"].astype(float), inc[col]).statistic
    )
    # with the did-not-learn run
    t2 = correlation_table(df, fields, not_learned=["r002"], include_not_learned=True, n_boot=0)
    assert t2.n_runs == len(df) - 2 and "did not learn" not in t2.excluded
    # exports
    t.to_csv(tmp_path / "c.csv")
    back = pd.read_csv(tmp_path / "c.csv")
    assert {"n", "pearson_r", "pearson_p", "pearson_lo", "spearman_hi", "encoding"} <= set(back)
    md = t.to_markdown()
    assert "learning rate (log10)" in md and "r000" in md and "r002" in md
    assert "nan" not in md.lower()


def test_encode_hyperparameter() -> None:
    x, enc = encode_hyperparameter(pd.Series([True, False, True], name="train.augment"))
    assert enc == "0/1" and x.tolist() == [1.0, 0.0, 1.0]
    x, enc = encode_hyperparameter(pd.Series([0.0, 0.1], name="optim.weight_decay"))
    assert enc.startswith("linear") and x.tolist() == [0.0, 0.1]
    x, enc = encode_hyperparameter(pd.Series(["[4,9]", "[0,1]"], name="data.classes"))
    assert x is None and enc == "categorical"


# ---- chance levels ------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "p", "k"), [(200, 2000, 2), (300, 64, 2), (400, 128, 10)])
def test_random_feature_floor_matches_monte_carlo(n: int, p: int, k: int) -> None:
    g = torch.Generator().manual_seed(0)
    y = one_hot(torch.arange(n) % k, k).double()
    vals = [float(cka(torch.randn(n, p, generator=g, dtype=torch.float64), y)) for _ in range(12)]
    assert random_feature_cka(n, p, target_rank(k)) == pytest.approx(np.mean(vals), rel=0.05)
    assert target_rank(2, "signed") == 1 and target_rank(10) == 9


def test_did_not_learn_definition() -> None:
    acc = np.array([0.5, 0.54, 0.6, 0.97, np.nan, 0.12, 0.3])
    k = np.array([2, 2, 2, 2, 2, 10, 10])
    assert did_not_learn(acc, k, 10_000).tolist() == [True, True, False, False, True, True, False]
    # a small training set needs a larger margin above chance
    assert did_not_learn(0.6, 2, 50).item() and not did_not_learn(0.6, 2, 5000).item()


# ---- reports ------------------------------------------------------------------------------------


def _check_report(out: Path, result, min_figures: int = 1) -> str:  # type: ignore[no-untyped-def]
    assert result.failures == {}
    page = (out / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) >= min_figures
    assert 'src="http' not in page and "<link" not in page  # self-contained
    for f in result.figures:
        assert f.stat().st_size > 0
    assert (out / "tables" / "correlations.csv").is_file()
    assert (out / "tables" / "correlations.md").is_file()
    return page


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.slow
def test_report_of_the_classic_study_shape(tmp_path: Path, workers: int) -> None:
    out = write_synthetic_store(
        tmp_path / "s",
        runs=18,
        evaluations=12,
        pairs=[(0, 1), (4, 9), (3, 5)],
        lrs=[0.01, 0.1, 1],
        ntk=True,
    )
    result = build_report(out, n_boot=200, workers=workers)
    page = _check_report(out, result, min_figures=5)
    names = {p.name for p in result.figures}
    for stem in ("curves", "ntk", "task_map", "cka_vs_accuracy", "correlations"):
        assert {f"{stem}.png", f"{stem}.pdf"} <= names
    # one probe layer: no layer-wise figures, a note instead; no weights kept: no layer matrix
    assert not {"layerwise.png", "layer_time.png", "layer_matrix.png"} & names
    assert "the study tracks one probe layer" in page
    assert "no finished run kept its weights" in page
    assert "Main findings" in page and "Study configuration" in page
    assert "random features of the same width" in page
    assert "learning rate (log10)" in page
    # the readout has its own rate: the colors say which learning rate they show
    assert "hidden learning rate (optim.lr)" in page
    assert set(result.timings) >= {"load", "curves", "ntk", "task_map", "html"}


@pytest.mark.slow
def test_report_modules_load_without_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, ckalab.data.registry, ckalab.report.html\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "from ckalab.data import make_task, DATASETS, DataError\n"
        "import ckalab.data as d\n"
        "assert all(hasattr(d, n) for n in d.__all__)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _frames(tmp_path: Path, **kw) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:  # type: ignore[no-untyped-def]
    from ckalab.study.store import swept_fields

    path = write_synthetic_store(tmp_path / "src", **kw)
    runs, metrics = load_results(path, metrics=["loss", "acc", "cka"])
    return runs, metrics, swept_fields(path)


@pytest.mark.parametrize(
    "case",
    ["one_task", "one_lr", "one_run", "all_diverged", "deep_geometric_seeds", "did_not_learn"],
)
@pytest.mark.slow
def test_report_of_unexpected_studies(tmp_path: Path, case: str) -> None:
    kw: dict = {"evaluations": 9, "diverged_fraction": 0.0}
    if case == "one_task":
        kw |= {"runs": 3, "pairs": [(4, 9)], "lrs": [0.01, 0.1, 1]}
    elif case == "one_lr":
        kw |= {"runs": 3, "pairs": [(0, 1), (4, 9), (2, 7)], "lrs": [0.1]}
    elif case == "one_run":
        kw |= {"runs": 1, "pairs": [(4, 9)], "lrs": [0.1]}
    elif case == "all_diverged":
        kw |= {"runs": 4, "pairs": [(0, 1), (4, 9)], "lrs": [1.0, 2.0], "diverged_fraction": 1}
    elif case == "deep_geometric_seeds":
        kw |= {"runs": 12, "pairs": [(0, 1), (4, 9)], "lrs": [0.1, 1.0]}
        kw |= {"layers": ("hidden1", "hidden2", "hidden3")}
    else:
        kw |= {"runs": 6, "pairs": [(0, 1), (4, 9)], "lrs": [0.01, 0.1, 1]}
    runs, metrics, swept = _frames(tmp_path, **kw)
    if case == "all_diverged":
        runs["status"] = "diverged"  # also the ones the generator left alone
        runs[[c for c in runs if c.startswith("final.")]] = np.nan
    if case == "deep_geometric_seeds":
        runs["tracking.schedule"] = "geometric"
    if case == "did_not_learn":  # a collapsed net: constant output, chance accuracy, CKA ~ 0
        bad = runs.index[:2]
        runs.loc[bad, final_column("train", "acc")] = 0.5
        ids = runs.loc[bad, "run_id"]
        m = metrics["run_id"].isin(ids) & (metrics["step"] > 0)
        metrics.loc[m & (metrics["metric"] == "acc"), "value"] = 0.5
        metrics.loc[m & (metrics["metric"] == "cka"), "value"] = 1e-3
    study = prepare(runs, metrics, swept, path=tmp_path / "out")
    result = render_report(study, tmp_path / "out", n_boot=100, formats=("png",))
    page = _check_report(tmp_path / "out", result)
    if case == "all_diverged":
        assert (study.runs[STATE] == "diverged").all()
        assert "Diverged (4)" in page
        assert "Excluded (diverged, 4)" in page
    if case == "deep_geometric_seeds":
        assert study.log_x and study.layers == ["hidden1", "hidden2", "hidden3"]
    if case == "did_not_learn":
        assert (study.runs[STATE] == "did not learn").sum() == 2
        assert "Did not learn (2)" in page
        assert "Excluded (did not learn, 2)" in page
    if case in ("one_task", "one_run"):
        assert "task_map.png" not in {p.name for p in result.figures}
    assert "ntk.png" not in {p.name for p in result.figures}  # no NTK rows in these stores
    if case == "deep_geometric_seeds":
        assert {"layerwise.png", "layer_time.png"} <= {p.name for p in result.figures}


def test_report_of_partial_and_missing_stores(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        build_report(tmp_path / "nope")
    plain = tmp_path / "plain"
    plain.mkdir()
    result = build_report(plain, formats=("png",))
    page = _check_report(plain, result, min_figures=0)
    assert "not a ckalab results store" in page and "This report is partial" in page

    from ckalab.study.store import ResultsStore

    ResultsStore.open(tmp_path / "empty")
    page = _check_report(
        tmp_path / "empty", build_report(tmp_path / "empty", formats=("png",)), min_figures=0
    )
    assert "no finished runs yet" in page

    path = write_synthetic_store(
        tmp_path / "partial", runs=4, evaluations=6, pairs=[(0, 1), (4, 9)]
    )
    first = sorted((path / "metrics").glob("*.parquet"))[0]
    first.unlink()
    page = _check_report(path, build_report(path, n_boot=50, formats=("png",)))
    assert "1 finished runs have no metrics file" in page


@pytest.mark.slow
def test_cli_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ckalab.cli import main

    path = write_synthetic_store(tmp_path / "s", runs=4, evaluations=6, pairs=[(0, 1), (4, 9)])
    assert main(["report", str(path), "--formats", "png", "svg"]) == 0
    assert "report.html" in capsys.readouterr().out
    assert (path / "figures" / "curves.svg").is_file()
    assert main(["report", str(tmp_path / "missing")]) == 2


# ---- layer x layer CKA from kept weights (a tiny real study) ------------------------------------

TINY_STUDY = """
[study]
name = "tiny"
workers = 1

[data]
dataset = "digits"

[model]
arch = "mlp"
depth = 2
width = 16

[optim]
readout_lr = 0.1

[train]
loss = "mse"
batch_size = 64
epochs = 1

[tracking]
schedule = "epochs"
every = 1

[sweep]
"optim.lr" = [0.01, 0.5]
"""


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ckalab.cli import main

    root = tmp_path_factory.mktemp("tiny")
    (root / "tiny.toml").write_text(TINY_STUDY)
    assert main(["run", str(root / "tiny.toml"), "--out", str(root / "out"), "--no-report"]) == 0
    return root / "out"


def test_layer_matrix_of_kept_weights(tiny_study: Path) -> None:
    from ckalab.report.html import load_study
    from ckalab.report.layer_matrix import choose_runs, layer_matrix

    study = load_study(tiny_study)
    ids = choose_runs(study)
    assert len(ids) == 2
    by_id = study.runs.set_index("run_id")
    cka_last = by_id.loc[ids, final_column("test", "cka", last=True)].to_numpy()
    assert cka_last[0] >= cka_last[1]  # best first
    for rid, final in zip(ids, cka_last, strict=True):
        names, mat, n = layer_matrix(
            by_id.loc[rid, "config"], tiny_study / "weights" / f"{rid}.safetensors"
        )
        assert names == ["input", "hidden1", "hidden2", "output", "targets"]
        assert n == 359  # the digits test split of the task, whole (under the 1,000 cap)
        np.testing.assert_allclose(np.diag(mat), 1.0, atol=1e-12)
        np.testing.assert_allclose(mat, mat.T, atol=1e-12)
        assert ((mat >= 0) & (mat <= 1 + 1e-12)).all()
        # the rebuilt network on the same probe set gives the CKA that training recorded
        assert mat[names.index("hidden2"), -1] == pytest.approx(final, abs=1e-5)

    result = build_report(tiny_study, n_boot=50, formats=("png",))
    page = _check_report(tiny_study, result)
    assert "layer_matrix.png" in {p.name for p in result.figures}
    assert "Layer x layer CKA of chosen runs" in page


def test_layer_matrix_skipped_without_weights_or_data(tiny_study: Path, tmp_path: Path) -> None:
    import json
    import shutil

    from ckalab.report.html import load_study
    from ckalab.report.layer_matrix import layer_matrix_figure

    copy = tmp_path / "copy"
    shutil.copytree(tiny_study, copy, ignore=shutil.ignore_patterns("figures", "tables", "*.html"))
    study = load_study(copy)
    study.runs["config"] = [
        json.dumps({**json.loads(c), "data": {"dataset": "cifar10"}}) for c in study.runs["config"]
    ]
    note = layer_matrix_figure(study)
    assert isinstance(note, str) and "cifar10" in note and "not available" in note
    shutil.rmtree(copy / "weights")
    page = _check_report(copy, build_report(copy, n_boot=50, formats=("png",)))
    assert "no finished run kept its weights" in page
