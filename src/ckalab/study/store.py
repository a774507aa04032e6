r"""The results store: one directory per study, Parquet files, no server.

Layout::

    DIR/store.json                    {"format": "ckalab-store", "version": 2,
                                       "metrics_schema": 1, "ckalab": "0.1.0", "created": ...,
                                       "study": {"name": ..., "runs": [run ids], "swept": [...]}}
    DIR/study.toml                    the resolved study file of the latest ``ckalab run``
    DIR/runs.parquet                  the runs table: one row per finished run
    DIR/runs/<run_id>.json            a run committed since the last compaction (its row)
    DIR/metrics/<run_id>.parquet      that run's metric rows (:func:`ckalab.metrics.arrow_schema`)
    DIR/weights/<run_id>.safetensors  final weights (when kept)
    DIR/.lock                         held by the driver while it writes (pid, host, start time)

Runs table columns: ``run_id, status ("done" / "diverged" / "failed"), wall_time, host,
ckalab_version, finished_at (UTC), steps, diverged_at, error, traceback, config`` (the canonical
JSON, :func:`ckalab.config.canonical_json`), then every field of the run's identity flattened by
dotted name (``data.classes``, ``optim.lr``, ...; tuples as compact JSON text ``"[4,9]"``, None
as null), then the final summaries as ``final.<summary key>`` (``final.test_acc``,
``final.test_cka.hidden1``; NaN for a diverged run, null for a failed one).

Durability: a finished run is committed by writing its metrics file, then its weights, then its
row as ``runs/<run_id>.json``, each atomically (temporary file in the same folder, fsync,
rename; the directory of the row is fsynced, the commit point). A run is *finished* exactly
when its row is in ``runs.parquet`` or ``runs/``; a metrics file without a row (a crash between
the writes) is never read and is overwritten when the run is redone. The driver *compacts* the
row files into ``runs.parquet`` when it finishes or is interrupted and when it opens the store
(after a crash): it writes the merged table atomically, then deletes the row files; a row in
both places (a crash in between) is the same row and is read once. Readers merge the two, a
row file winning over ``runs.parquet`` (it is newer: a failed run redone). So committing a run
costs the same for the 1st and the 10,000th run. Only the driver writes, under the lock
(:class:`StoreLock`).

Version 1 stores (no ``runs/``) are read as they are and upgraded to version 2 in place by the
next ``ckalab run``.
"""

from __future__ import annotations

import difflib
import functools
import json
import math
import os
import socket
import tempfile
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ckalab.metrics import COLUMNS as METRIC_COLUMNS
from ckalab.metrics import SCHEMA_VERSION as METRICS_SCHEMA_VERSION
from ckalab.metrics import arrow_schema

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from ckalab.config import RunConfig

__all__ = [
    "FIXED_COLUMNS",
    "STORE_FORMAT",
    "STORE_VERSION",
    "ResultsStore",
    "StoreError",
    "StoreLock",
    "StoreLockedError",
    "atomic_write_bytes",
    "flatten_config",
    "load_results",
    "make_run_row",
    "read_header",
    "study_run_ids",
    "swept_fields",
]

STORE_FORMAT = "ckalab-store"
#: Version of the store layout (file names, runs-table columns); bumped on any change.
STORE_VERSION = 2
#: Older layouts this version reads (version 1: no ``runs/`` folder); writing upgrades them.
READABLE_VERSIONS = (1, 2)

HEADER_FILE = "store.json"
STUDY_FILE = "study.toml"
RUNS_FILE = "runs.parquet"
PENDING_DIR = "runs"
METRICS_DIR = "metrics"
WEIGHTS_DIR = "weights"
LOCK_FILE = ".lock"

#: The columns every runs table starts with, in order (then ``config.*`` fields, ``final.*``).
FIXED_COLUMNS: tuple[str, ...] = (
    "run_id",
    "status",
    "wall_time",
    "host",
    "ckalab_version",
    "finished_at",
    "steps",
    "diverged_at",
    "error",
    "traceback",
    "config",
)
FINAL_PREFIX = "final."
STATUSES = ("done", "diverged", "failed")


class StoreError(ValueError):
    """A results store that cannot be read or written as asked (wrong format or version, a bad
    filter); the message says what and where."""


class StoreLockedError(RuntimeError):
    """Another ``ckalab run`` holds the store's lock; the message names it (pid, host, start)."""


# ----------------------------------------------------------------------------------------------
# Atomic files
# ----------------------------------------------------------------------------------------------


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, write: Any, *, sync_dir: bool = True) -> Path:
    """``write(file_object)`` into a temporary file next to ``path``, fsync, rename, fsync the
    directory (unless ``sync_dir`` is False: a later directory fsync makes the rename durable):
    readers see the old file or the new one, never a partial one."""
    if not path.parent.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide the results from collaborators
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if sync_dir:
        _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see the module docstring)."""
    return _atomic_write(Path(path), lambda f: f.write(data))


def _atomic_write_parquet(path: Path, table: pa.Table, *, sync_dir: bool = True) -> Path:
    import pyarrow.parquet as pq

    return _atomic_write(path, lambda f: pq.write_table(table, f), sync_dir=sync_dir)


def _row_json(row: Mapping[str, Any]) -> bytes:
    """A runs-table row as the JSON of ``runs/<run_id>.json`` (NaN kept; the UTC time as ISO)."""
    out = dict(row)
    if isinstance(out.get("finished_at"), datetime):
        out["finished_at"] = out["finished_at"].isoformat()
    return json.dumps(out, separators=(",", ":")).encode()


def _row_from_json(raw: bytes) -> dict[str, Any]:
    row = json.loads(raw)
    if isinstance(row.get("finished_at"), str):
        row["finished_at"] = datetime.fromisoformat(row["finished_at"])
    return row


def _read_pending(directory: Path) -> dict[str, dict[str, Any]] | None:
    """The rows of ``runs/`` by run id; None when a listed file vanished while reading (a
    compaction ran meanwhile: read again)."""
    folder = directory / PENDING_DIR
    if not folder.is_dir():
        return {}
    rows: dict[str, dict[str, Any]] = {}
    for p in sorted(folder.glob("*.json")):
        try:
            row = _row_from_json(p.read_bytes())
        except FileNotFoundError:
            return None
        rows[row["run_id"]] = row
    return rows


# ----------------------------------------------------------------------------------------------
# Rows of the runs table
# ----------------------------------------------------------------------------------------------


def _cell(value: Any) -> Any:
    """A config value as a runs-table cell: lists as compact JSON text, scalars as they are."""
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value), separators=(",", ":"))
    return value


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = _cell(value)
    return out


def flatten_config(config: RunConfig) -> dict[str, Any]:
    """The run's identity (:func:`ckalab.config.identity`) flattened by dotted name, lists as
    compact JSON text (``{"data.classes": "[4,9]", "optim.lr": 0.1, ...}``)."""
    from ckalab.config import identity

    return _flatten(identity(config))


@functools.cache
def _json_fields() -> frozenset[str]:
    """Dotted names of the config fields stored as JSON text (tuple-valued fields)."""
    from ckalab.config import RunConfig

    out = set()
    for section, sfield in RunConfig.model_fields.items():
        cls = sfield.annotation
        for name, f in getattr(cls, "model_fields", {}).items():
            if "tuple" in str(f.annotation) or "list" in str(f.annotation):
                out.add(f"{section}.{name}")
    return frozenset(out)


def make_run_row(
    config: RunConfig,
    *,
    status: str,
    wall_time: float,
    steps: int = 0,
    diverged_at: int | None = None,
    summaries: Mapping[str, float] | None = None,
    error: str | None = None,
    traceback: str | None = None,
    host: str | None = None,
    finished_at: datetime | None = None,
) -> dict[str, Any]:
    """One row of the runs table (see the module docstring for the columns)."""
    from ckalab import __version__
    from ckalab.config import canonical_json, run_id

    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    row: dict[str, Any] = {
        "run_id": run_id(config),
        "status": status,
        "wall_time": float(wall_time),
        "host": host or socket.gethostname(),
        "ckalab_version": __version__,
        "finished_at": finished_at or datetime.now(timezone.utc),
        "steps": int(steps),
        "diverged_at": None if diverged_at is None else int(diverged_at),
        "error": error,
        "traceback": traceback,
        "config": canonical_json(config),
    }
    row.update(flatten_config(config))
    if summaries:
        for key, value in summaries.items():
            row[FINAL_PREFIX + key] = float(value)
    return row


def _fixed_schema() -> list[pa.Field]:
    import pyarrow as pa

    return [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("wall_time", pa.float64()),
        pa.field("host", pa.string()),
        pa.field("ckalab_version", pa.string()),
        pa.field("finished_at", pa.timestamp("us", tz="UTC")),
        pa.field("steps", pa.int64()),
        pa.field("diverged_at", pa.int64()),
        pa.field("error", pa.string()),
        pa.field("traceback", pa.string()),
        pa.field("config", pa.string()),
    ]


def _runs_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """The runs table of ``rows``: fixed columns typed, config columns (sorted) then
    ``final.*`` (sorted) inferred; rows missing a column get null."""
    import pyarrow as pa

    fixed = _fixed_schema()
    names = {k for r in rows for k in r} - set(FIXED_COLUMNS)
    config_cols = sorted(n for n in names if not n.startswith(FINAL_PREFIX))
    final_cols = sorted(n for n in names if n.startswith(FINAL_PREFIX))
    arrays = [pa.array([r.get(f.name) for r in rows], type=f.type) for f in fixed]
    fields = list(fixed)
    for name in config_cols:
        arr = pa.array([r.get(name) for r in rows])
        arrays.append(arr)
        fields.append(pa.field(name, arr.type))
    for name in final_cols:
        arr = pa.array([r.get(name) for r in rows], type=pa.float64())
        arrays.append(arr)
        fields.append(pa.field(name, pa.float64()))
    meta = {"ckalab.store_version": str(STORE_VERSION)}
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=meta))


# ----------------------------------------------------------------------------------------------
# Header, version checks
# ----------------------------------------------------------------------------------------------


def _new_header() -> dict[str, Any]:
    from ckalab import __version__

    return {
        "format": STORE_FORMAT,
        "version": STORE_VERSION,
        "metrics_schema": METRICS_SCHEMA_VERSION,
        "ckalab": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def read_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The store's ``store.json``, checked: a directory that is not a ckalab store, or one
    written with another store or metric-schema version, raises :class:`StoreError` (never a
    silent misread)."""
    directory = Path(path)
    header_path = directory / HEADER_FILE
    if not header_path.is_file():
        if not directory.exists():
            raise StoreError(f"no results store at {directory} (the directory does not exist)")
        raise StoreError(f"{directory} is not a ckalab results store (no {HEADER_FILE})")
    try:
        header = json.loads(header_path.read_text())
    except (OSError, ValueError) as exc:
        raise StoreError(f"unreadable {header_path}: {exc}") from None
    if not isinstance(header, dict) or header.get("format") != STORE_FORMAT:
        raise StoreError(f"{header_path} is not a ckalab store header")
    version, schema = header.get("version"), header.get("metrics_schema")
    writer = header.get("ckalab", "?")
    if version not in READABLE_VERSIONS or schema != METRICS_SCHEMA_VERSION:
        newer = (version or 0) > STORE_VERSION or (schema or 0) > METRICS_SCHEMA_VERSION
        hint = (
            "upgrade ckalab to read it"
            if newer
            else "rerun the study with this ckalab into a new directory, or read it with "
            f"ckalab {writer}"
        )
        raise StoreError(
            f"results store {directory} has store version {version} / metrics schema {schema} "
            f"(written by ckalab {writer}); this ckalab reads store version {STORE_VERSION} / "
            f"metrics schema {METRICS_SCHEMA_VERSION}: {hint}"
        )
    return header


def study_run_ids(path: str | os.PathLike[str]) -> list[str] | None:
    """The run ids the store's current study describes (None: no study recorded, e.g. a store
    written directly through :class:`ResultsStore`)."""
    study = read_header(path).get("study")
    if not isinstance(study, dict) or "runs" not in study:
        return None
    return list(study["runs"])


def swept_fields(path: str | os.PathLike[str]) -> list[str]:
    """The dotted run fields the store's study varies (its ``[sweep]`` fields and zip groups in
    file order, plus ``"train.seed"`` when it sweeps seeds)."""
    study = read_header(path).get("study")
    if not isinstance(study, dict):
        return []
    return list(study.get("swept", []))


# ----------------------------------------------------------------------------------------------
# The lock
# ----------------------------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's process
        return True
    return True


class StoreLock:
    """An exclusive lock on a store directory for one driver (``DIR/.lock``).

    The lock is an ``flock`` on the file (released by the kernel when its process dies, however
    it dies) plus the owner's pid, host and start time written into it for the message a second
    driver shows. A lock file left by a dead process is taken over (:attr:`took_over` holds the
    previous owner's record).
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.path = Path(directory) / LOCK_FILE
        self._fd: int | None = None
        self.took_over: dict[str, Any] | None = None

    @staticmethod
    def _describe(info: Mapping[str, Any]) -> str:
        return (
            f"pid {info.get('pid', '?')} on host {info.get('host', '?')}, started "
            f"{info.get('started', '?')}"
        )

    def _read(self, fd: int) -> dict[str, Any] | None:
        os.lseek(fd, 0, os.SEEK_SET)
        raw = os.read(fd, 65536)
        try:
            info = json.loads(raw.decode() or "null")
        except ValueError:
            return None
        return info if isinstance(info, dict) else None

    def acquire(self) -> StoreLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            info = self._read(fd) or {}
            os.close(fd)
            raise StoreLockedError(
                f"results store {self.path.parent} is in use by another ckalab run "
                f"({self._describe(info)}); wait for it to finish, or stop it first"
            ) from None
        previous = self._read(fd)
        if previous:
            same_host = previous.get("host") == socket.gethostname()
            pid = previous.get("pid")
            if same_host and isinstance(pid, int) and pid != os.getpid() and _pid_alive(pid):
                # A live process on this host that does not hold the flock: an owner whose
                # flock does not reach us (e.g. another mount); refuse rather than share.
                os.close(fd)
                raise StoreLockedError(
                    f"results store {self.path.parent} is in use by another ckalab run "
                    f"({self._describe(previous)}); wait for it to finish, or stop it first"
                )
            self.took_over = previous
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(info).encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None

    def describe_takeover(self) -> str | None:
        if not self.took_over:
            return None
        return (
            f"took over a stale lock from a process that is gone ({self._describe(self.took_over)})"
        )

    def __enter__(self) -> StoreLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


# ----------------------------------------------------------------------------------------------
# The writer
# ----------------------------------------------------------------------------------------------


class ResultsStore:
    """Read-write access to one store directory (the driver's side).

    ``ResultsStore.open(path)`` creates the directory and its header when missing, checks the
    version of an existing one, and loads the runs table. :meth:`commit` adds (or replaces) one
    finished run durably. Hold a :class:`StoreLock` around any writing (the runner does).
    """

    def __init__(self, path: Path, header: dict[str, Any], rows: dict[str, dict[str, Any]]):
        self.path = path
        self.header = header
        self.rows = rows
        self._pending: set[str] = set()  # run ids with a row file in runs/

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, create: bool = True) -> ResultsStore:
        directory = Path(path)
        if not (directory / HEADER_FILE).exists():
            if not create:
                read_header(directory)  # raises the right message
            if directory.exists() and any(p.name not in (LOCK_FILE,) for p in directory.iterdir()):
                raise StoreError(
                    f"{directory} exists and is not a ckalab results store; choose another "
                    "output directory"
                )
            header = _new_header()
            directory.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(directory / HEADER_FILE, json.dumps(header, indent=1).encode())
        else:
            header = read_header(directory)
        rows: dict[str, dict[str, Any]] = {}
        runs_path = directory / RUNS_FILE
        if runs_path.exists():
            import pyarrow.parquet as pq

            for r in pq.read_table(runs_path).to_pylist():
                rows[r["run_id"]] = r
        pending = _read_pending(directory) or {}  # under the lock: nobody compacts meanwhile
        rows.update(pending)
        store = cls(directory, header, rows)
        store._pending = set(pending)
        return store

    # paths --------------------------------------------------------------------------------
    def metrics_path(self, run_id: str) -> Path:
        return self.path / METRICS_DIR / f"{run_id}.parquet"

    def weights_path(self, run_id: str) -> Path:
        return self.path / WEIGHTS_DIR / f"{run_id}.safetensors"

    def row_path(self, run_id: str) -> Path:
        return self.path / PENDING_DIR / f"{run_id}.json"

    # queries ------------------------------------------------------------------------------
    def status(self, run_id: str) -> str | None:
        row = self.rows.get(run_id)
        return None if row is None else row["status"]

    # writing ------------------------------------------------------------------------------
    def remove_temporary_files(self) -> int:
        """Delete temporary files a crashed writer left behind (they are never read)."""
        n = 0
        for folder in (
            self.path,
            self.path / METRICS_DIR,
            self.path / WEIGHTS_DIR,
            self.path / PENDING_DIR,
        ):
            if folder.is_dir():
                for p in folder.glob(".*.tmp"):
                    p.unlink(missing_ok=True)
                    n += 1
        return n

    def write_study(
        self, toml_text: str, *, name: str, run_ids: Sequence[str], swept: Sequence[str]
    ) -> None:
        """Record the resolved study file and which runs and fields it describes."""
        atomic_write_bytes(self.path / STUDY_FILE, toml_text.encode())
        header = dict(self.header)
        header["version"] = STORE_VERSION  # a version 1 store is upgraded in place
        header["study"] = {"name": name, "runs": list(run_ids), "swept": list(swept)}
        atomic_write_bytes(self.path / HEADER_FILE, json.dumps(header, indent=1).encode())
        self.header = header

    def commit(
        self,
        row: Mapping[str, Any],
        metrics: pa.Table | None = None,
        weights: bytes | None = None,
    ) -> None:
        """Add or replace one finished run: metrics file, weights, then its row file (the
        commit point; see the module docstring). ``metrics`` must have
        :func:`ckalab.metrics.arrow_schema`.

        The metrics and weights renames are made durable by the fsync of their directories
        before the row's rename (three directory fsyncs per run)."""
        if self.header.get("version") != STORE_VERSION:
            self._upgrade_header()
        rid = row["run_id"]
        if metrics is not None:
            if metrics.schema.remove_metadata() != arrow_schema().remove_metadata():
                metrics = metrics.cast(arrow_schema())
            _atomic_write_parquet(self.metrics_path(rid), metrics)
        else:
            self.metrics_path(rid).unlink(missing_ok=True)
        if weights is not None:
            atomic_write_bytes(self.weights_path(rid), weights)
        atomic_write_bytes(self.row_path(rid), _row_json(row))
        self.rows[rid] = dict(row)
        self._pending.add(rid)

    def _upgrade_header(self) -> None:
        header = {**self.header, "version": STORE_VERSION}
        atomic_write_bytes(self.path / HEADER_FILE, json.dumps(header, indent=1).encode())
        self.header = header

    def compact(self) -> int:
        """Merge the row files of ``runs/`` into ``runs.parquet`` (atomically), then delete
        them; returns how many there were."""
        folder = self.path / PENDING_DIR
        files = list(folder.glob("*.json")) if folder.is_dir() else []
        if not files:
            self._pending.clear()
            return 0
        _atomic_write_parquet(self.path / RUNS_FILE, _runs_table(list(self.rows.values())))
        for p in files:
            p.unlink(missing_ok=True)
        _fsync_dir(folder)
        self._pending.clear()
        return len(files)


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------


def _accepted(field: str, value: Any) -> list[Any]:
    """The accepted cell values of a filter: one value, or a list of accepted values (for a
    JSON-text field, ``[4, 9]`` is one value and ``[[4, 9], [0, 1]]`` a list of them)."""
    if field in _json_fields():
        if isinstance(value, (list, tuple)) and any(isinstance(v, (list, tuple)) for v in value):
            return [_cell(v) for v in value]
        return [_cell(value)]
    if isinstance(value, (list, tuple, set, frozenset)):
        return list(value)
    return [value]


def _filter_expression(filters: Mapping[str, Any], columns: Sequence[str]) -> Any:
    import pyarrow.dataset as ds

    expr = None
    for field, value in filters.items():
        if field not in columns:
            close = difflib.get_close_matches(field, columns, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise StoreError(f"load_results: runs has no column {field!r}{hint}")
        accepted = _accepted(field, value)
        nulls = any(v is None for v in accepted)
        values = [v for v in accepted if v is not None]
        nan = any(isinstance(v, float) and math.isnan(v) for v in values)
        values = [v for v in values if not (isinstance(v, float) and math.isnan(v))]
        col = ds.field(field)
        term = col.isin(values) if values else None
        if not values and not nulls and not nan:
            term = ds.scalar(False)  # an empty list of accepted values accepts nothing
        for extra in ([col.is_null()] if nulls else []) + ([col.is_nan()] if nan else []):
            term = extra if term is None else term | extra
        if term is None:
            continue
        expr = term if expr is None else expr & term
    return expr


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    """``table`` as pandas, integer columns with nulls as the nullable ``Int64`` dtype (not
    float64, so a missing ``diverged_at`` stays distinguishable from a step)."""
    import pyarrow as pa

    df = table.to_pandas()
    for f in table.schema:
        if pa.types.is_integer(f.type) and table.column(f.name).null_count:
            df[f.name] = table.column(f.name).to_pandas(integer_object_nulls=True).astype("Int64")
    return df


def _empty_runs_table() -> pa.Table:
    import pyarrow as pa

    return pa.schema(_fixed_schema()).empty_table()


def load_results(
    path: str | os.PathLike[str],
    *,
    runs: Mapping[str, Any] | None = None,
    metrics: Sequence[str] | None = None,
    splits: Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
    run_ids: Sequence[str] | None = None,
    include_stale: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The runs table and the metric rows of a results store, as two pandas DataFrames.

    - ``runs``: filters on runs-table columns, ``{column: value}`` or ``{column: [accepted
      values]}`` (``{"optim.lr": [0.1, 0.01], "data.classes": [4, 9], "status": "done"}``; for
      list-valued config fields ``[4, 9]`` is one value, ``[[4, 9], [0, 1]]`` two).
    - ``run_ids``: keep only these runs.
    - ``metrics``, ``splits``, ``layers``: keep only these metric names / splits / layers
      (``""`` is the whole-model layer).
    - ``include_stale``: also return runs the store's current study no longer describes.

    Returns ``(runs, metrics)``: ``runs`` with the columns of the runs table (see the module
    docstring), ``metrics`` with ``run_id, step, epoch, split, metric, layer, value`` for the
    selected runs only. Filters are pushed into the Parquet reads: only the selected runs'
    metrics files are opened, and rows are filtered while they are read. A store written by
    another layout version raises :class:`StoreError`.
    """
    import pyarrow as pa
    import pyarrow.dataset as ds

    directory = Path(path)
    read_header(directory)
    runs_path = directory / RUNS_FILE
    dataset = None
    for _ in range(10):  # a compaction between the reads: read again
        pending = _read_pending(directory)
        if pending is None:
            continue
        if not pending:
            dataset = ds.dataset(runs_path, format="parquet") if runs_path.exists() else None
            break
        import pyarrow.parquet as pq

        rows = {}
        if runs_path.exists():
            rows = {r["run_id"]: r for r in pq.read_table(runs_path).to_pylist()}
        if all((directory / PENDING_DIR / f"{rid}.json").exists() for rid in pending):
            rows.update(pending)
            dataset = ds.dataset(_runs_table(list(rows.values())))
            break
    else:  # pragma: no cover - a writer compacting continuously
        raise StoreError(f"results store {directory} kept changing while being read")
    if dataset is not None:
        columns = dataset.schema.names
        expr = _filter_expression(dict(runs or {}), columns)
        if run_ids is not None:
            ids_expr = ds.field("run_id").isin(list(run_ids))
            expr = ids_expr if expr is None else expr & ids_expr
        if not include_stale:
            current = study_run_ids(directory)
            if current is not None:
                cur_expr = ds.field("run_id").isin(current)
                expr = cur_expr if expr is None else expr & cur_expr
        runs_table = dataset.to_table(filter=expr)
    else:
        if runs:
            _filter_expression(dict(runs), list(FIXED_COLUMNS))
        runs_table = _empty_runs_table()

    selected = runs_table.column("run_id").to_pylist()
    files = [
        str(p) for rid in selected if (p := directory / METRICS_DIR / f"{rid}.parquet").is_file()
    ]
    mexpr = None
    for name, values in (("metric", metrics), ("split", splits), ("layer", layers)):
        if values is not None:
            accepted = [values] if isinstance(values, str) else list(values)
            term = ds.field(name).isin(accepted) if accepted else ds.scalar(False)
            mexpr = term if mexpr is None else mexpr & term
    if files:
        metrics_table = ds.dataset(files, format="parquet").to_table(filter=mexpr)
    else:
        metrics_table = pa.table(
            {c: pa.array([], type=arrow_schema().field(c).type) for c in METRIC_COLUMNS}
        )
    return _to_pandas(runs_table), metrics_table.to_pandas()
