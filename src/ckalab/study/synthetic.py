"""A realistic synthetic results store, written through the real store writer.

The shape of the classic slow-feature-learning study: MNIST digit pairs x hidden-layer learning
rates, readout learning rate 0.1, width 1,024, CKA every 4 epochs (513 evaluations for 2,048
epochs). Curves are made up but behave like the real ones: CKA rises over training, faster and
higher with the hidden learning rate, more for easy pairs (0/1) than hard ones (4/9, 3/5); loss
falls, accuracy rises; a few runs at the largest learning rate diverge (metrics stop, final
values NaN, status ``diverged``). Used by the tests, ``benchmarks/bench_studies.py`` and the
report's benchmark; no torch is needed.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from ckalab.config import RunConfig, run_id
from ckalab.metrics import MetricRow, arrow_schema, summaries_from_rows
from ckalab.study.store import ResultsStore, make_run_row

__all__ = ["ALL_PAIRS", "classic_study_toml", "write_synthetic_store"]

#: All 45 unordered digit pairs, in lexicographic order.
ALL_PAIRS: tuple[tuple[int, int], ...] = tuple(itertools.combinations(range(10), 2))

_HARD = {(4, 9): 0.25, (3, 5): 0.3, (7, 9): 0.4, (5, 8): 0.45, (3, 8): 0.45, (2, 7): 0.6}
_EASY = {(0, 1): 1.0, (1, 6): 0.95, (0, 7): 0.95, (1, 3): 0.9}


def _toml_value(v: object) -> str:
    return json.dumps(v)


def classic_study_toml(
    *,
    name: str = "synthetic-classic",
    pairs: Sequence[Sequence[int]] = ALL_PAIRS,
    lrs: Sequence[float] = (0.01, 0.1, 1.0),
    seeds: Sequence[int] = (0,),
    readout_lr: float = 0.1,
    width: int = 1024,
    epochs: int = 2048,
    every: int = 4,
    dataset: str = "mnist",
) -> str:
    """The study file whose runs :func:`write_synthetic_store` fakes."""
    pair_list = ", ".join(_toml_value(list(p)) for p in pairs)
    lr_list = ", ".join(repr(float(x)) for x in lrs)
    return (
        f"[study]\nname = {_toml_value(name)}\n\n"
        f'[data]\ndataset = "{dataset}"\n\n'
        f'[model]\narch = "mlp"\ndepth = 1\nwidth = {width}\n\n'
        f"[optim]\nreadout_lr = {float(readout_lr)!r}\n\n"
        f'[train]\nloss = "mse"\nepochs = {epochs}\n\n'
        f'[tracking]\nschedule = "epochs"\nevery = {every}\n\n'
        f'[sweep]\n"data.classes" = [{pair_list}]\n"optim.lr" = [{lr_list}]\n'
        f"seeds = {_toml_value(list(seeds))}\n"
    )


def _config(pair: Sequence[int], lr: float, seed: int, **kw: object) -> RunConfig:
    return RunConfig.model_validate(
        {
            "data": {"dataset": kw["dataset"], "classes": list(pair)},
            "model": {"arch": "mlp", "depth": 1, "width": kw["width"]},
            "optim": {"lr": float(lr), "readout_lr": float(kw["readout_lr"])},
            "train": {"loss": "mse", "epochs": kw["epochs"], "seed": seed},
            "tracking": {"schedule": "epochs", "every": kw["every"]},
        }
    )


def _ntk_columns(
    cols: dict[str, list],
    tt: np.ndarray,
    steps: np.ndarray,
    epochs: np.ndarray,
    rate: float,
    cka_max: float,
    rng: np.random.Generator,
) -> None:
    """Append made-up NTK rows to ``cols``: the alignment rises with the CKA, the distance to
    the initial kernel grows as the kernel moves, the distance to the previous one shrinks."""
    n = tt.size
    rise = 1.0 - np.exp(-rate * tt)
    for group, scale in (("", 1.0), ("features", 1.1), ("readout", 0.8)):
        align = np.clip(0.1 + (cka_max * scale - 0.1) * rise, 0.0, 1.0)
        dist = np.clip(0.9 * cka_max * scale * rise, 0.0, 1.0)
        prev = np.abs(np.diff(dist, prepend=dist[0])) + 1e-4
        per_metric = {
            "ntk_alignment": align + rng.normal(0, 0.003, n),
            "ntk_alignment_uncentered": 0.5 + 0.5 * align + rng.normal(0, 0.003, n),
            "ntk_distance_init": dist,
            "ntk_distance_prev": prev,
        }
        for metric, values in per_metric.items():
            first = 1 if metric == "ntk_distance_prev" else 0
            k = n - first
            cols["step"].append(steps[first:])
            cols["epoch"].append(epochs[first:])
            cols["split"].append(np.full(k, "train", dtype=object))
            cols["metric"].append(np.full(k, metric, dtype=object))
            cols["layer"].append(np.full(k, group, dtype=object))
            cols["value"].append(np.clip(values[first:], 0.0, None))


def write_synthetic_store(
    path: str | os.PathLike[str],
    *,
    runs: int = 135,
    evaluations: int = 513,
    layers: Sequence[str] = ("hidden1",),
    pairs: Sequence[Sequence[int]] = ALL_PAIRS,
    lrs: Sequence[float] = (0.01, 0.1, 1.0),
    seed: int = 0,
    diverged_fraction: float = 0.03,
    readout_lr: float = 0.1,
    every: int = 4,
    steps_per_epoch: int = 94,
    dataset: str = "mnist",
    ntk: bool = False,
) -> Path:
    """Write a synthetic store of ``runs`` runs at ``path`` and return ``path``.

    Runs are the product ``pairs x lrs x seeds`` in that order, with as many seeds as needed to
    reach ``runs`` (the default 135 = 45 pairs x 3 learning rates, one seed). Each run has
    ``evaluations`` evaluations (``epochs = (evaluations - 1) * every``); per evaluation and split
    the metrics ``loss``, ``acc``, ``cka_avg``, ``cka_debiased_avg`` and, per layer, ``cka`` and
    ``cka_debiased`` (12 rows with one layer: 135 x 513 x 12 = 831,060 rows by default).
    About ``diverged_fraction`` of the runs, taken from the largest learning rate, diverge.
    ``ntk=True`` adds the NTK tracking rows (:mod:`ckalab.ntk`; split ``train``, layer ``""``
    for the whole network and ``features`` / ``readout`` for the parameter groups):
    ``ntk_alignment``, ``ntk_alignment_uncentered``, ``ntk_distance_init`` and, from the second
    evaluation on, ``ntk_distance_prev``.
    """
    if runs < 1 or evaluations < 2:
        raise ValueError("need runs >= 1 and evaluations >= 2")
    rng = np.random.default_rng(seed)
    per_seed = len(pairs) * len(lrs)
    n_seeds = math.ceil(runs / per_seed)
    epochs = (evaluations - 1) * every
    combos = list(itertools.product(range(n_seeds), pairs, lrs))[:runs]
    common = {"dataset": dataset, "width": 1024, "readout_lr": readout_lr, "epochs": epochs}
    common["every"] = every

    top = max(lrs)
    candidates = [i for i, (_, _, lr) in enumerate(combos) if lr == top]
    n_div = min(len(candidates), round(diverged_fraction * runs))
    diverged = set(rng.choice(candidates, size=n_div, replace=False).tolist()) if n_div else set()

    store = ResultsStore.open(path)
    name = "synthetic-classic"
    configs = [_config(p, lr, s, **common) for s, p, lr in combos]
    ids = [run_id(c) for c in configs]
    store.write_study(
        classic_study_toml(
            name=name,
            pairs=pairs,
            lrs=lrs,
            seeds=list(range(n_seeds)),
            readout_lr=readout_lr,
            epochs=epochs,
            every=every,
            dataset=dataset,
        ),
        name=name,
        run_ids=ids,
        swept=["data.classes", "optim.lr", *(["train.seed"] if n_seeds > 1 else [])],
    )

    import pyarrow as pa

    epoch_grid = np.arange(evaluations, dtype=np.float64) * every
    step_grid = (epoch_grid * steps_per_epoch).astype(np.int64)
    t = epoch_grid / epochs
    lr_rank = {lr: i / max(1, len(lrs) - 1) for i, lr in enumerate(sorted(lrs))}
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    L = len(layers)
    names = ["loss", "acc", "cka_avg", "cka_debiased_avg"] + ["cka"] * L + ["cka_debiased"] * L
    layer_names = ["", "", "", "", *layers, *layers]
    m = len(names)

    for i, ((_s, pair, lr), config, rid) in enumerate(zip(combos, configs, ids, strict=True)):
        key = tuple(sorted(pair))
        ease = _EASY.get(key, _HARD.get(key, 0.55 + 0.3 * rng.random()))
        r = lr_rank[lr]
        n = evaluations
        status, div_at = "done", None
        if i in diverged:
            n = int(rng.integers(2, max(3, evaluations // 3)))
            status, div_at = "diverged", int(step_grid[n - 1] + steps_per_epoch)
        tt = t[:n]
        rate = 3.0 + 30.0 * r
        cka_max = 0.15 + 0.8 * ease * (0.35 + 0.65 * r)
        cols = {k: [] for k in ("step", "epoch", "split", "metric", "layer", "value")}
        for split, gap in (("train", 0.0), ("test", 0.04)):
            rise = 1.0 - np.exp(-rate * tt)
            noise = rng.normal(0.0, 0.004 * (1.5 - r), size=(m, n))
            cka = 0.08 + (cka_max - 0.08 - gap) * rise
            loss = 0.5 * np.exp(-rate * tt * (0.6 + ease)) + 0.02 + gap
            acc = 0.5 + (0.48 * ease + 0.02 - gap / 2) * rise
            per_metric = [loss, acc, cka, cka * 0.92]
            per_metric += [cka * (0.97 + 0.03 * j / max(1, L)) for j in range(L)]
            per_metric += [cka * 0.92 * (0.97 + 0.03 * j / max(1, L)) for j in range(L)]
            values = np.clip(np.stack(per_metric) + noise, 0.0, None)
            cols["step"].append(np.tile(step_grid[:n], m))
            cols["epoch"].append(np.tile(epoch_grid[:n], m))
            cols["split"].append(np.full(m * n, split, dtype=object))
            cols["metric"].append(np.repeat(np.array(names, dtype=object), n))
            cols["layer"].append(np.repeat(np.array(layer_names, dtype=object), n))
            cols["value"].append(values.reshape(-1))
        if ntk:
            _ntk_columns(cols, tt, step_grid[:n], epoch_grid[:n], rate, cka_max, rng)
        table = pa.table(
            {"run_id": pa.array([rid] * sum(len(v) for v in cols["value"]), pa.string())}
            | {k: np.concatenate(v) for k, v in cols.items()},
            schema=arrow_schema(),
        )
        last = step_grid[n - 1]
        last_rows = [
            MetricRow(int(last), float(epoch_grid[n - 1]), sp, me, la, float(va))
            for sp, me, la, va, st in zip(
                table.column("split").to_pylist(),
                table.column("metric").to_pylist(),
                table.column("layer").to_pylist(),
                table.column("value").to_pylist(),
                table.column("step").to_pylist(),
                strict=True,
            )
            if st == last
        ]
        summaries = summaries_from_rows(last_rows, layers, diverged=status == "diverged")
        row = make_run_row(
            config,
            status=status,
            wall_time=float(30 + 20 * rng.random()),
            steps=int(div_at if div_at is not None else step_grid[-1]),
            diverged_at=div_at,
            summaries=summaries,
            host="synthetic",
            finished_at=start + timedelta(minutes=i),
        )
        store.commit(row, table)
    store.compact()
    return Path(path)
