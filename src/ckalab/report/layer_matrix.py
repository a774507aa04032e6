r"""Figure 6: layer x layer CKA matrices of chosen runs, from their kept weights.

The one place where the report runs networks: for each chosen run it rebuilds the task and the
model from the run's stored configuration (:mod:`ckalab.runs`, not the training loop), loads
the final weights the store kept (``DIR/weights/<run_id>.safetensors``), passes the test probe
set (at most :data:`MAX_EXAMPLES` examples, every class kept in proportion) through
:meth:`~ckalab.models.ProbedModel.forward_with_probes`, and computes the linear CKA
(:func:`ckalab.alignment.cka_matrix`) between every pair of: the input, each probe layer, the
network output and the targets. The diagonal is 1 and the matrix symmetric.

Runs shown (:func:`choose_runs`): by default the best- and the worst-aligned finished run (final
test CKA of the last hidden layer) among those whose weights were kept. The figure is replaced by
a note when no run kept its weights or the dataset is not available on this machine.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ckalab.report.results import HUE, STATE, TASK, Study, format_value

__all__ = ["MAX_EXAMPLES", "MAX_RUNS", "choose_runs", "layer_matrix", "layer_matrix_figure"]

#: Test-probe examples passed through each network (a class-proportional subset beyond this).
MAX_EXAMPLES = 1000
#: At most this many runs get a matrix.
MAX_RUNS = 4


def _weights_path(study: Study, run_id: str) -> Path | None:
    from ckalab.study.store import WEIGHTS_DIR

    if study.path is None:
        return None
    p = Path(study.path) / WEIGHTS_DIR / f"{run_id}.safetensors"
    return p if p.is_file() else None


def choose_runs(study: Study, limit: int = 2) -> list[str]:
    """The best- and worst-aligned finished runs (final test CKA, last hidden layer; runs that
    did not learn included, diverged ones have no final values) with kept weights, best first
    (``limit`` up to :data:`MAX_RUNS`: then the next best and the next worst)."""
    runs = study.runs
    cka = study.final("test", "cka", last=True)
    ok = runs[STATE].isin(["done", "did not learn"]) & np.isfinite(cka.to_numpy(dtype=float))
    kept = runs["run_id"].map(lambda r: _weights_path(study, r) is not None)
    order = cka[ok & kept].sort_values(ascending=False).index.tolist()
    chosen: list[int] = []
    while order and len(chosen) < min(limit, MAX_RUNS):
        chosen.append(order.pop(0))
        if order and len(chosen) < limit:
            chosen.append(order.pop())
    chosen.sort(key=lambda i: -float(cka[i]))
    return runs.loc[chosen, "run_id"].astype(str).tolist()


def _probe_subset(split: Any, limit: int) -> Any:
    """At most ``limit`` examples of ``split``, every class in proportion (the first of each)."""
    n = len(split)
    if n <= limit:
        return split
    labels = split.labels.cpu().numpy()
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        keep.append(idx[: max(1, round(limit * idx.size / n))])
    return split.subset(np.sort(np.concatenate(keep))[:limit])


def layer_matrix(config: Any, weights: str | Path, *, max_examples: int = MAX_EXAMPLES) -> tuple:
    """``(names, matrix, n)``: the linear CKA between the input, every probe layer, the output
    and the targets of the run (``config``: its canonical JSON or configuration; ``weights``:
    its safetensors file) on ``n`` test-probe examples; ``matrix`` is a float64 numpy array."""
    import torch

    from ckalab.alignment import cka_matrix
    from ckalab.runs import load_run_model
    from ckalab.tracking import cka_targets

    model, task = load_run_model(config, weights)
    probe = _probe_subset(task.probe_test, max_examples)
    with torch.no_grad():
        out, probes = model.forward_with_probes(probe.x)
    layers = list(model.probe_layers)
    targets = cka_targets(probe.y, probe.labels, task.num_classes)
    reps = [probe.x.flatten(1), *(probes[name] for name in layers), out, targets]
    reps = [r.double() for r in reps]
    matrix = cka_matrix(reps).numpy()
    return ["input", *layers, "output", "targets"], matrix, len(probe)


def _dataset_missing(study: Study, run_ids: Sequence[str]) -> list[str]:
    from ckalab.data import is_available

    missing = []
    by_id = study.runs.set_index("run_id")
    for rid in run_ids:
        cfg = json.loads(by_id.loc[rid, "config"])
        data = cfg.get("data", {})
        name = data.get("dataset", "digits")
        if not is_available(name, data_dir=data.get("data_dir")):
            missing.append(name)
    return sorted(set(missing))


def layer_matrix_figure(study: Study, run_ids: Sequence[str] | None = None) -> Any:
    """The figure (a :class:`~ckalab.report.figures.Drawn`), or a note (``str``) saying why it
    is not drawn, or ``None`` for a store without finished runs."""
    from ckalab.report.figures import Drawn, _figure

    runs = study.runs
    if runs.empty or "config" not in runs or not runs[STATE].isin(["done", "did not learn"]).any():
        return None
    ids = list(run_ids) if run_ids is not None else choose_runs(study)
    if not ids:
        return (
            "Layer x layer CKA matrices: not drawn, no finished run kept its weights (study "
            'setting <code>keep_weights</code>; with <code>"auto"</code> only networks below '
            "<code>weights_limit_mb</code> are kept)."
        )
    unknown = [r for r in ids if _weights_path(study, r) is None]
    if unknown:
        raise ValueError(f"no kept weights for run(s) {', '.join(unknown)}")
    missing = _dataset_missing(study, ids)
    if missing:
        return (
            "Layer x layer CKA matrices: not drawn, the dataset "
            + ", ".join(f"<code>{m}</code>" for m in missing)
            + " is not available on this machine (<code>ckalab datasets</code> shows where "
            "it is looked for)."
        )
    results = [
        layer_matrix(study.runs.set_index("run_id").loc[r, "config"], _weights_path(study, r))
        for r in ids
    ]
    width = max(len(names) for names, _, _ in results)
    cell = 0.42 if width <= 10 else 0.28
    side = max(2.6, cell * width + 1.2)
    fig = _figure(side * len(results) + 0.8, side + 0.6)
    axes = fig.subplots(1, len(results), squeeze=False)[0]
    image = None
    by_id = runs.set_index("run_id")
    cka = study.final("test", "cka", last=True)
    cka.index = runs["run_id"]
    for ax, rid, (names, mat, _n) in zip(axes, ids, results, strict=True):
        image = ax.imshow(mat, cmap="viridis", vmin=0.0, vmax=1.0)
        k = len(names)
        ax.set_xticks(range(k), names, rotation=45, ha="right")
        ax.set_yticks(range(k), names)
        ax.grid(False)
        if k <= 12:
            for (r, c), v in np.ndenumerate(mat):
                ax.text(
                    c,
                    r,
                    f"{v:.2f}",
                    ha="center",
                    va="center",
                    fontsize=6.5,
                    color="black" if v > 0.6 else "white",
                )
        row = by_id.loc[rid]
        head = f"run {rid}" + (f" ({row[TASK]})" if study.task_fields else "")
        if row[STATE] != "done":
            head += f", {row[STATE]}"
        hue = f"{study.colors.short_title} = {format_value(row[HUE])}" if study.colors.field else ""
        final = float(cka[rid])
        parts = [hue, f"final test CKA {final:.2f}" if math.isfinite(final) else ""]
        ax.set_title(head + "\n" + ", ".join(x for x in parts if x), fontsize=8)
    cb = fig.colorbar(image, ax=list(axes), shrink=0.8)
    cb.set_label("linear CKA")
    n_text = ", ".join(sorted({str(n) for _, _, n in results}))
    which = (
        "the best- and the worst-aligned finished runs (final test CKA of the last hidden layer)"
        if run_ids is None
        else "the chosen runs"
    )
    caption = (
        f"Linear CKA between every pair of representations of {which} with kept weights, on "
        f"{n_text} test-probe examples: the input, each probe layer (input → output), the "
        "network output and the targets. The last row/column is each layer's alignment with "
        "the targets; blocks of high CKA are layers that represent the data alike. The diagonal "
        "is 1 by definition."
    )
    return Drawn("layer_matrix", "Layer x layer CKA of chosen runs", fig, caption)
