"""The study-file reference, generated from the configuration schema.

``python -m ckalab.study.reference > docs/study-reference.md`` writes it; a test fails when the
committed file and the schema drift apart. Every key of every section comes from the pydantic
models themselves (:class:`~ckalab.study.spec.StudySettings` and the sections of
:class:`~ckalab.config.RunConfig`): type, default, constraints and description.
"""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from ckalab.config import RunConfig
from ckalab.study.spec import StudySettings

__all__ = ["study_reference"]

_BOUNDS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}

_SWEEP = """\
## `[sweep]`

Any run field above, by its dotted name, may be given a list of values: the runs are the
cartesian product of the lists (in file order), each `[[sweep.zip]]` group (fields that vary
together, lists of equal length: one factor), and the seeds (innermost).

| key | meaning |
|---|---|
| `"section.field" = [v1, v2, ...]` | one factor: the field takes each value in turn, \
e.g. `"optim.lr" = [0.1, 0.01]`; list-valued fields take a list of lists, \
e.g. `"data.classes" = [[0, 1], [4, 9]]` |
| `seeds = [0, 1]` or `seeds = 3` | `train.seed` values (a count `k` means `0 .. k-1`) |
| `[[sweep.zip]]` | a table of fields whose lists are zipped instead of crossed |

Every expanded run is validated by the run configuration's own rules before anything is created;
each problem is reported on one line naming its TOML path, e.g.
`sweep."optim.lr"[2] = -0.1: must be > 0`.
"""


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f'`"{a}"`' if isinstance(a, str) else f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is tuple:
        inner = ", ".join("..." if a is Ellipsis else _type_name(a) for a in args)
        return f"list [{inner}]"
    if annotation is type(None):
        return "none"
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return "table"
    return getattr(annotation, "__name__", str(annotation))


def _table_model(annotation: Any) -> type[BaseModel] | None:
    """The section model of a table-valued field (``Model`` or ``Model | None``), else None."""
    candidates = typing.get_args(annotation) or (annotation,)
    for candidate in candidates:
        if inspect.isclass(candidate) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _default(info: FieldInfo) -> str:
    if info.default_factory is not None:
        return "(table)"
    value = info.default
    if value is PydanticUndefined:
        return "required"
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, tuple):
        return "`[" + ", ".join(str(v) for v in value) + "]`"
    return f"`{value}`"


def _constraints(info: FieldInfo) -> str:
    parts = []
    for meta in info.metadata:
        for attr, sign in _BOUNDS.items():
            bound = getattr(meta, attr, None)
            if bound is not None:
                parts.append(f"{sign} {bound}")
        min_length = getattr(meta, "min_length", None)
        if min_length:
            parts.append(f"length >= {min_length}")
    return ", ".join(parts)


def _first_paragraph(doc: str | None) -> str:
    text = inspect.cleandoc(doc or "")
    return text.split("\n\n", 1)[0].replace("\n", " ")


def _section(title: str, model: type[BaseModel]) -> str:
    lines = [f"## `[{title}]`", "", inspect.cleandoc(model.__doc__ or ""), ""]
    lines += ["| key | type | default | allowed | description |", "|---|---|---|---|---|"]
    nested = []
    for name, info in model.model_fields.items():
        table = _table_model(info.annotation)
        if table is not None:
            nested.append((f"{title}.{name}", table))
            optional = table is not info.annotation
            lines.append(
                f"| `{name}` | table{' or none' if optional else ''} | "
                f"{'unset' if optional else ''} | | see `[{title}.{name}]`: "
                f"{_first_paragraph(table.__doc__)} |"
            )
            continue
        desc = (info.description or "").replace("|", "\\|")
        lines.append(
            f"| `{name}` | {_type_name(info.annotation)} | {_default(info)} | "
            f"{_constraints(info)} | {desc} |"
        )
    out = "\n".join(lines) + "\n"
    for sub_title, sub_model in nested:
        out += "\n" + _section(sub_title, sub_model)
    return out


def study_reference() -> str:
    """The study-file reference as Markdown: ``[study]``, every run section, ``[sweep]``."""
    parts = [
        "# Study file reference",
        "",
        "<!-- generated by `python -m ckalab.study.reference`; do not edit by hand -->",
        "",
        "A study file is TOML. `[study]` names the study and where and how it runs; the run "
        "sections (`[data]`, `[model]`, `[optim]`, `[train]`, `[tracking]`, `[checkpoint]`) are "
        "one run's configuration, the same schema as `ckalab.train.train(config)`; `[sweep]` "
        "turns any run field into a list of values. A study without `[sweep]` is exactly one "
        "run. Unknown keys are errors (with a did-you-mean suggestion).",
        "",
        _section("study", StudySettings),
    ]
    for name, info in RunConfig.model_fields.items():
        annotation = info.annotation
        assert inspect.isclass(annotation) and issubclass(annotation, BaseModel)
        parts.append(_section(name, annotation))
    parts.append(_SWEEP)
    return "\n".join(parts)


if __name__ == "__main__":  # pragma: no cover
    print(study_reference(), end="")
