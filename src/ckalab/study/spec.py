r"""Study files: one TOML file describes a whole study; :func:`load_study` validates it and
expands it into runs before anything is created or trained.

A study file has a ``[study]`` section (name, output directory, executor defaults), the run
configuration's own sections (``[data]``, ``[model]``, ``[optim]``, ``[train]``, ``[tracking]``,
``[checkpoint]``: the base run; a study without ``[sweep]`` is exactly one run), and an optional
``[sweep]``::

    [study]
    name = "slow-feature-learning"
    out = "results/slow"            # relative to the study file; --out overrides
    executor = "local"              # "local" | "ray" | "slurm"
    workers = 2
    keep_weights = "auto"           # true | false | "auto": kept below weights_limit_mb
    [study.ray]                     # address, num_cpus, num_gpus per run
    [study.slurm]                   # partition, time_min, gpus_per_task, cpus_per_task,
                                    # array_parallelism, runs_per_task, mem_gb

    [data]
    dataset = "mnist"
    [optim]
    readout_lr = 0.1

    [sweep]
    "optim.lr" = [0.1, 0.01, 0.001]              # any run field by dotted name: a list of values
    "data.classes" = [[0, 1], [4, 9], [2, 7]]    # list-valued fields: a list of lists
    seeds = [0, 1]                               # or a count: seeds = 3 -> 0, 1, 2
    [[sweep.zip]]                                # fields that vary together (equal lengths)
    "optim.momentum" = [0.0, 0.9]
    "optim.nesterov" = [false, true]

The runs are the cartesian product of the sweep fields (file order), each zip group (one
factor), and the seeds (innermost). Every expanded run passes the run configuration's own
validators. All problems are collected, one line each, naming the TOML path
(``sweep."optim.lr"[2] = -0.1: must be > 0``), and raised together as :class:`StudyError`.
"""

from __future__ import annotations

import difflib
import itertools
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ckalab.config import RunConfig, run_id

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "RUN_SECTIONS",
    "RaySettings",
    "RunSpec",
    "SlurmSettings",
    "Study",
    "StudyError",
    "StudySettings",
    "estimate_work",
    "load_study",
    "parse_study",
    "run_fields",
]

RUN_SECTIONS: tuple[str, ...] = tuple(RunConfig.model_fields)
_MAX_RUN_PROBLEMS = 20


class StudyError(ValueError):
    """An invalid study file. ``problems``: one line each; ``str()`` joins them by newlines."""

    def __init__(self, problems: Sequence[str], source: str = "study") -> None:
        self.problems = list(problems)
        self.source = source
        n = len(self.problems)
        head = f"{source}: {n} problem{'s' if n != 1 else ''}"
        super().__init__(head + "\n" + "\n".join(f"  {p}" for p in self.problems))


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RaySettings(_Settings):
    """``[study.ray]``: the cluster to join (none: start a local Ray instance) and the
    resources each run asks for."""

    address: str | None = None
    num_cpus: float = Field(default=1.0, gt=0)
    num_gpus: float = Field(default=0.0, ge=0)
    max_retries: int = Field(default=1, ge=0)


class SlurmSettings(_Settings):
    """``[study.slurm]``: the job array. ``runs_per_task`` runs share one array task (so
    thousands of tiny runs do not become thousands of jobs); at most ``array_parallelism``
    array tasks run at once."""

    partition: str | None = None
    time_min: int = Field(default=60, ge=1)
    gpus_per_task: int = Field(default=0, ge=0)
    cpus_per_task: int = Field(default=1, ge=1)
    mem_gb: float | None = Field(default=None, gt=0)
    array_parallelism: int = Field(default=64, ge=1)
    runs_per_task: int = Field(default=1, ge=1)


class StudySettings(_Settings):
    """``[study]``: name, output directory (relative to the study file; default
    ``results/<name>``), executor defaults, and whether final weights are kept
    (``"auto"``: when a run's weights are below ``weights_limit_mb``)."""

    name: str = Field(default="study", min_length=1)
    out: str | None = None
    executor: Literal["local", "ray", "slurm"] = "local"
    workers: int | None = Field(default=None, ge=1)
    keep_weights: bool | Literal["auto"] = "auto"
    weights_limit_mb: float = Field(default=64.0, gt=0)
    ray: RaySettings = Field(default_factory=RaySettings)
    slurm: SlurmSettings = Field(default_factory=SlurmSettings)


@dataclass(frozen=True)
class RunSpec:
    """One expanded run: its position, validated configuration, id and swept values."""

    index: int
    config: RunConfig
    run_id: str
    swept: dict[str, Any]
    #: The TOML path of each swept value of this run (``{"optim.lr": 'sweep."optim.lr"[2]'}``).
    paths: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Study:
    """A validated, expanded study."""

    settings: StudySettings
    runs: list[RunSpec]
    swept: list[str]
    out: Path
    source: Path | None = None
    base: dict[str, Any] = field(default_factory=dict)
    sweep: dict[str, Any] = field(default_factory=dict)
    #: Datasets whose split sizes could not be checked without downloading them (``--dry-run``
    #: says so; :func:`~ckalab.study.runner.run_study` checks them before anything starts).
    unchecked_data: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.settings.name

    def resolved_toml(self) -> str:
        """The resolved study file: ``[study]`` with every setting (``out`` absolute), the base
        run sections as given, and the sweep with seeds as a list."""
        settings = self.settings.model_dump(mode="json")
        settings["out"] = str(self.out)
        doc: dict[str, Any] = {"study": settings, **self.base}
        if self.sweep:
            doc["sweep"] = self.sweep
        header = f"# resolved by ckalab from {self.source}\n" if self.source else ""
        return header + _dump_toml(doc)


# ----------------------------------------------------------------------------------------------
# A minimal TOML writer (tables, scalars, lists; arrays of tables for sweep.zip)
# ----------------------------------------------------------------------------------------------


def _toml_key(key: str) -> str:
    bare = key.replace("_", "").replace("-", "").isalnum()
    return key if bare else json.dumps(key)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        if isinstance(v, float) and not math.isfinite(v):
            return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


def _dump_toml(doc: Mapping[str, Any], prefix: str = "") -> str:
    lines: list[str] = []
    tables: list[tuple[str, Mapping[str, Any]]] = []
    arrays: list[tuple[str, list[Mapping[str, Any]]]] = []
    for key, value in doc.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            tables.append((key, value))
        elif isinstance(value, list) and value and all(isinstance(x, Mapping) for x in value):
            arrays.append((key, value))
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    out = "\n".join(lines) + ("\n" if lines else "")
    for key, table in tables:
        name = f"{prefix}{_toml_key(key)}"
        out += f"\n[{name}]\n" + _dump_toml(table, name + ".")
    for key, items in arrays:
        name = f"{prefix}{_toml_key(key)}"
        for item in items:
            out += f"\n[[{name}]]\n" + _dump_toml(item, name + ".")
    return out


# ----------------------------------------------------------------------------------------------
# Validation helpers
# ----------------------------------------------------------------------------------------------


def run_fields() -> dict[str, Any]:
    """Every run field by dotted name, with its pydantic field info."""
    out = {}
    for section, sfield in RunConfig.model_fields.items():
        for name, f in sfield.annotation.model_fields.items():  # type: ignore[union-attr]
            out[f"{section}.{name}"] = f
    return out


def _is_list_field(dotted: str) -> bool:
    ann = str(run_fields()[dotted].annotation)
    return "tuple" in ann or "list" in ann


def _suggest(name: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _fmt(v: Any) -> str:
    return json.dumps(v) if isinstance(v, (str, list, tuple, bool)) or v is None else repr(v)


def _message(e: Mapping[str, Any]) -> str:
    kind, ctx = e.get("type"), e.get("ctx") or {}
    ops = {
        "greater_than": ("gt", ">"),
        "greater_than_equal": ("ge", ">="),
        "less_than": ("lt", "<"),
        "less_than_equal": ("le", "<="),
    }
    if kind in ops and ops[kind][0] in ctx:
        bound = ctx[ops[kind][0]]
        bound = f"{bound:g}" if isinstance(bound, float) else bound
        return f"must be {ops[kind][1]} {bound}"
    return str(e.get("msg", "invalid value")).removeprefix("Value error, ")


def _errors(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    try:
        RunConfig.model_validate(data)
    except ValidationError as err:
        return list(err.errors())
    return []


def _loc(e: Mapping[str, Any]) -> str:
    return ".".join(str(p) for p in e.get("loc", ()))


def _field_of(e: Mapping[str, Any]) -> str | None:
    """The dotted run field an error is about (``section.field``), else None."""
    loc = [str(p) for p in e.get("loc", ())]
    return ".".join(loc[:2]) if len(loc) >= 2 else None


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    section, name = dotted.split(".", 1)
    data.setdefault(section, {})
    data[section] = {**data[section], name: value}


def _with(base: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    data = {k: dict(v) for k, v in base.items()}
    for dotted, value in values.items():
        _set(data, dotted, value)
    return data


def _flatten_sweep(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, Mapping):
            out.update(_flatten_sweep(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# ----------------------------------------------------------------------------------------------
# Parsing
# ----------------------------------------------------------------------------------------------


def load_study(path: str | Path, *, out: str | Path | None = None) -> Study:
    """Read, validate and expand the study file at ``path`` (see the module docstring).
    ``out`` overrides ``[study] out``. Raises :class:`StudyError` listing every problem;
    nothing is created."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise StudyError(
            [f"cannot read the study file: {exc.strerror or exc}"], str(path)
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise StudyError([f"invalid TOML: {exc}"], str(path)) from None
    return parse_study(data, base_dir=path.resolve().parent, out=out, source=path)


def parse_study(
    data: Mapping[str, Any],
    *,
    base_dir: str | Path = ".",
    out: str | Path | None = None,
    source: str | Path | None = None,
    check_data: bool = True,
) -> Study:
    """Validate and expand a parsed study file (a nested mapping).

    ``check_data``: also check every run against its dataset's split sizes (``data.n_train``,
    ``data.n_test``, ``train.batch_size``; see :mod:`ckalab.study.preflight`) without
    downloading anything."""
    problems: list[str] = []
    label = str(source) if source is not None else "study"
    base_dir = Path(base_dir)

    known = ("study", "sweep", *RUN_SECTIONS)
    for key, value in data.items():
        if key not in known:
            problems.append(f"{_toml_key(key)}: unknown section{_suggest(key, known)}")
        elif key != "sweep" and not isinstance(value, Mapping):
            problems.append(f"{key} = {_fmt(value)}: must be a table ([{key}])")

    # [study]
    raw_settings = data.get("study", {})
    settings = StudySettings()
    if isinstance(raw_settings, Mapping):
        try:
            settings = StudySettings.model_validate(dict(raw_settings))
        except ValidationError as err:
            for e in err.errors():
                loc = "study." + _loc(e)
                if e.get("type") == "extra_forbidden":
                    parent = StudySettings
                    parts = [str(p) for p in e["loc"]]
                    if len(parts) == 2 and parts[0] in ("ray", "slurm"):
                        parent = RaySettings if parts[0] == "ray" else SlurmSettings
                    problems.append(
                        f"{loc}: unknown key{_suggest(parts[-1], list(parent.model_fields))}"
                    )
                else:
                    problems.append(f"{loc} = {_fmt(e.get('input'))}: {_message(e)}")

    base = {k: dict(v) for k, v in data.items() if k in RUN_SECTIONS and isinstance(v, Mapping)}
    for section, table in base.items():
        section_fields = list(RunConfig.model_fields[section].annotation.model_fields)  # type: ignore[union-attr]
        for key in table:
            if key not in section_fields:
                problems.append(f"{section}.{key}: unknown field{_suggest(key, section_fields)}")

    factors, swept, normalized_sweep = _parse_sweep(data.get("sweep", {}), problems)
    fields = run_fields()

    # Per-value checks: each swept value against the base (with the other fields at their
    # first value), attributed to its own TOML path.
    firsts = {name: vals[0] for names, rows, _ in factors for name, vals in _columns(names, rows)}
    unknown_base = {p.split(":")[0] for p in problems}
    base_known = {
        s: {k: v for k, v in t.items() if f"{s}.{k}" not in unknown_base} for s, t in base.items()
    }
    for names, rows, paths in factors:
        for i, row in enumerate(rows):
            values = {**firsts, **dict(zip(names, row, strict=True))}
            for e in _errors(_with(base_known, values)):
                f = _field_of(e)
                if f in names:
                    j = names.index(f)
                    hint = ""
                    if _is_list_field(f) and not isinstance(row[j], (list, tuple)):
                        hint = f" (the values of {f} are lists: write [[...], ...])"
                    problems.append(f"{paths[j]}[{i}] = {_fmt(row[j])}: {_message(e)}{hint}")
    problems = list(dict.fromkeys(problems))
    # Base checks: errors about fields nobody sweeps.
    for e in _errors(_with(base_known, firsts)):
        f = _field_of(e)
        if f is not None and f in firsts:
            continue
        if e.get("type") == "extra_forbidden":
            continue  # reported above with a suggestion
        loc = _loc(e)
        if f is not None and f in fields:
            problems.append(f"{loc} = {_fmt(e.get('input'))}: {_message(e)}")
        elif not firsts:  # a cross-field rule broken by the base run itself
            problems.append(f"{loc + ': ' if loc else ''}{_message(e)}")
    problems = list(dict.fromkeys(problems))

    runs: list[RunSpec] = []
    unchecked: tuple[str, ...] = ()
    if not problems:
        runs = _expand(base, factors, base_dir, problems)
    if not problems and not runs:
        problems.append("the study has no runs")
    if not problems and check_data:
        from ckalab.study.preflight import check_data_sizes

        data_check = check_data_sizes(runs, base, load=False)
        problems.extend(data_check.problems)
        unchecked = data_check.unchecked
    if problems:
        raise StudyError(problems, label)

    if out is not None:
        out_dir = Path(out)
    elif settings.out is not None:
        out_dir = Path(settings.out)
        out_dir = out_dir if out_dir.is_absolute() else base_dir / out_dir
    else:
        out_dir = base_dir / "results" / settings.name
    return Study(
        settings=settings,
        runs=runs,
        swept=swept,
        out=out_dir.resolve(),
        source=Path(source) if source is not None else None,
        base=base,
        sweep=normalized_sweep,
        unchecked_data=unchecked,
    )


def _columns(names: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[tuple[str, list[Any]]]:
    return [(n, [r[j] for r in rows]) for j, n in enumerate(names)]


_Factor = tuple[list[str], list[tuple[Any, ...]], list[str]]


def _parse_sweep(raw: Any, problems: list[str]) -> tuple[list[_Factor], list[str], dict[str, Any]]:
    """The sweep as factors ``(field names, rows of values, TOML paths)``, the swept field
    names, and the normalized sweep table (for the resolved study file)."""
    if not isinstance(raw, Mapping):
        problems.append(f"sweep = {_fmt(raw)}: must be a table ([sweep])")
        return [], [], {}
    fields = run_fields()
    factors: list[_Factor] = []
    swept: list[str] = []
    seen: dict[str, str] = {}
    normalized: dict[str, Any] = {}

    def check_name(name: str, path: str) -> bool:
        if name not in fields:
            problems.append(f"{path}: unknown run field{_suggest(name, list(fields))}")
            return False
        if name in seen:
            problems.append(f"{path}: {name} is already swept at {seen[name]}")
            return False
        seen[name] = path
        return True

    def check_list(name: str, path: str, values: Any) -> bool:
        if not isinstance(values, list):
            problems.append(f"{path} = {_fmt(values)}: must be a list of values")
            return False
        if not values:
            problems.append(f"{path} = []: empty list (give at least one value)")
            return False
        return True

    plain = {k: v for k, v in raw.items() if k not in ("zip", "seeds")}
    for name, values in _flatten_sweep(plain).items():
        path = f"sweep.{json.dumps(name)}"
        if check_name(name, path) and check_list(name, path, values):
            factors.append(([name], [(v,) for v in values], [path]))
            swept.append(name)
            normalized[name] = values

    zips = raw.get("zip", [])
    if isinstance(zips, Mapping):
        zips = [zips]
    if not isinstance(zips, list):
        problems.append(f"sweep.zip = {_fmt(zips)}: must be tables ([[sweep.zip]])")
        zips = []
    norm_zips = []
    for g, group in enumerate(zips):
        gpath = f"sweep.zip[{g}]"
        if not isinstance(group, Mapping) or not group:
            problems.append(f"{gpath}: must be a non-empty table of field = [values]")
            continue
        names, lists, paths, ok = [], [], [], True
        for name, values in _flatten_sweep(group).items():
            path = f"{gpath}.{json.dumps(name)}"
            if check_name(name, path) and check_list(name, path, values):
                names.append(name)
                lists.append(values)
                paths.append(path)
            else:
                ok = False
        lengths = {len(v) for v in lists}
        if len(lengths) > 1:
            desc = ", ".join(f"{n} has {len(v)}" for n, v in zip(names, lists, strict=True))
            problems.append(f"{gpath}: zipped lists must have equal lengths ({desc})")
            ok = False
        if ok and names:
            factors.append((names, list(zip(*lists, strict=True)), paths))
            swept.extend(names)
            norm_zips.append(dict(zip(names, lists, strict=True)))
    if norm_zips:
        normalized["zip"] = norm_zips

    if "seeds" in raw:
        seeds = raw["seeds"]
        path = "sweep.seeds"
        if isinstance(seeds, bool) or not isinstance(seeds, (int, list)):
            problems.append(f"{path} = {_fmt(seeds)}: must be a count or a list of seeds")
        elif isinstance(seeds, int):
            if seeds < 1:
                problems.append(f"{path} = {seeds}: must be >= 1")
            seeds = list(range(max(seeds, 0)))
        if isinstance(seeds, list) and check_name("train.seed", path):
            if not seeds and isinstance(raw["seeds"], list):
                problems.append(f"{path} = []: empty list (give at least one seed)")
            elif len(set(map(repr, seeds))) != len(seeds):
                problems.append(f"{path} = {_fmt(seeds)}: duplicate seeds")
            elif seeds:
                factors.append((["train.seed"], [(s,) for s in seeds], [path]))
                if len(seeds) > 1:
                    swept.append("train.seed")
                normalized["seeds"] = seeds
    return factors, swept, normalized


def _expand(
    base: Mapping[str, Any], factors: list[_Factor], base_dir: Path, problems: list[str]
) -> list[RunSpec]:
    runs: list[RunSpec] = []
    by_id: dict[str, int] = {}
    run_problems: list[str] = []
    choices = (list(enumerate(rows)) for _, rows, _ in factors)
    for index, combo in enumerate(itertools.product(*choices)):
        values: dict[str, Any] = {}
        paths: dict[str, str] = {}
        for (names, _, fpaths), (j, row) in zip(factors, combo, strict=True):
            values.update(zip(names, row, strict=True))
            paths.update((n, f"{p}[{j}]") for n, p in zip(names, fpaths, strict=True))
        desc = ", ".join(f"{k}={_fmt(v)}" for k, v in values.items())
        try:
            config = RunConfig.model_validate(_with(base, values))
        except ValidationError as err:
            for e in err.errors():
                loc = _loc(e)
                run_problems.append(
                    f"run #{index} ({desc}): {loc + ': ' if loc else ''}{_message(e)}"
                )
            continue
        rid = run_id(config)
        if config.checkpoint.dir is not None:
            ckpt = Path(config.checkpoint.dir)
            ckpt = ckpt if ckpt.is_absolute() else base_dir / ckpt
            config = config.model_copy(
                update={"checkpoint": config.checkpoint.model_copy(update={"dir": str(ckpt / rid)})}
            )
        if rid in by_id:
            other = runs[by_id[rid]]
            odesc = ", ".join(f"{k}={_fmt(v)}" for k, v in other.swept.items())
            run_problems.append(
                f"run #{index} ({desc}) duplicates run #{other.index} ({odesc}): the same run "
                f"{rid} (fields outside a run's identity, like train.device, do not make a "
                "new run)"
            )
            continue
        by_id[rid] = len(runs)
        runs.append(RunSpec(index=index, config=config, run_id=rid, swept=values, paths=paths))
    if len(run_problems) > _MAX_RUN_PROBLEMS:
        extra = len(run_problems) - _MAX_RUN_PROBLEMS
        run_problems = [*run_problems[:_MAX_RUN_PROBLEMS], f"... and {extra} more run problems"]
    problems.extend(run_problems)
    return runs


# ----------------------------------------------------------------------------------------------
# Work estimate
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkEstimate:
    steps: int
    evaluations: int
    approximate: bool


def estimate_work(config: RunConfig) -> WorkEstimate:
    """Updates and evaluations of one run, from the dataset's registered sizes (approximate
    when the registry does not know the class counts and a class subset's size is inferred as
    a fraction of the split)."""
    from ckalab.data.registry import get_info
    from ckalab.schedule import tracking_steps

    info = get_info(config.data.dataset)
    approximate = False
    n = config.data.n_train
    if n is None:
        n = info.n_train
        counts = info.class_counts("train")
        if config.data.classes is not None and counts is not None:
            n = sum(counts[c] for c in config.data.classes)
        elif config.data.classes is not None:
            n = round(n * len(config.data.classes) / info.num_classes)
            approximate = True
    bs = config.train.batch_size
    spe = max(1, n // bs if config.train.drop_last else math.ceil(n / bs))
    total = config.train.steps or config.train.epochs * spe
    evals = len(tracking_steps(config.tracking, spe, total))
    return WorkEstimate(steps=total, evaluations=evals, approximate=approximate)
