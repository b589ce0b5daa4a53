"""Run folders: what a run writes, and reading it back.

A run folder holds::

    config.yaml        the resolved configuration of the run
    metrics.jsonl      one JSON object a line, {"kind": "epoch", ...} per
                       epoch (see gdlab.loop), any columns the loop logs
    steps.npz          the per-step metrics (loss, grad_norm, update_norm,
                       step_size, fun_evals, grad_evals), one NumPy array a
                       column, one row per update (``numpy.load`` reads it)
    steps/             while a run goes on: the rows of each chunk since
                       steps.npz was last written, ``<first row>.npz``
    summary.json       final metrics, stop reason, compile and run time,
                       steps/s, versions (gdlab, jax, jaxlib, python, device,
                       git commit)
    trajectory.json    (two-parameter problems) the iterates, one [x, y] a step
    checkpoint.msgpack the run's carry (parameters, optimizer state, key,
                       counters), flax serialization, with the number of
                       step and epoch rows it covers and a SHA-256 checksum
    gdlab.json         what the folder is (a run, an experiment, a sweep) and
                       the run's identity: fingerprints of its resolved
                       config and of its data, and the gdlab version
    gdlab.lock         while a process writes the folder: its process id
    plots/             PNG figures; report.md embeds them

Writing: :func:`write_run` (config, metrics, summary, trajectory,
checkpoint; between chunks it appends the new rows), with
:func:`run_summary` the content of ``summary.json``.  Reading:
:func:`load_run` (a :class:`RunRecord`), :func:`read_metrics`,
:func:`load_history` (a :class:`gdlab.history.History` to resume from),
:func:`read_checkpoint`, :func:`final_params` and :func:`final_loss`.

Every file is written atomically (to a temporary file in the same folder,
then renamed, with the permissions the umask gives), so an interrupted run
leaves each file either complete or as it was before.  Between chunks the
epoch rows are appended to ``metrics.jsonl`` and the chunk's step rows go to
a new file ``steps/<first row, 9 digits>.npz``, written whole; when the run
ends (and when a resume starts) ``steps.npz`` and ``metrics.jsonl`` are
rewritten whole and ``steps/`` removed.  Reading concatenates ``steps.npz``
(rows from 0) and the chunk files in the order of their first rows, rows
already read being skipped (a chunk file left by a process killed while
``steps/`` was removed).  The checkpoint is the commit point of a chunk: it
is written last and records how many step and epoch rows it covers, so a
run killed at any instant resumes (:func:`load_history`) from its last
checkpoint with the rows beyond it cut, to the numbers (and the bytes of
``steps.npz`` and ``metrics.jsonl``) of an uninterrupted run.  Step files
store a float column as float32 when that holds every value exactly, and
integer columns as int64; reading gives float64 and int64 arrays.  Folders
of gdlab 2-format checkpoints logged the steps as ``{"kind": "step"}`` lines
of ``metrics.jsonl``; they are read as before, never resumed.

Folders are guarded (:func:`check_out`, :func:`create`, :func:`locked`):
gdlab writes only into a new or empty folder or one it made, one process at
a time, and a resume is refused when the config or data differ from the
run's (:func:`check_resume`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import json
import math
import os
import platform
import re
import shutil
import socket
import subprocess
import tempfile
import time
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jaxlib
import numpy as np
from flax import serialization

import gdlab
from gdlab import config as config_lib
from gdlab import history as history_lib
from gdlab import loop
from gdlab import parallel

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
STEPS = "steps.npz"
STEP_CHUNKS = "steps"
SUMMARY = "summary.json"
TRAJECTORY = "trajectory.json"
CHECKPOINT = "checkpoint.msgpack"
PLOTS = "plots"
MARKER = "gdlab.json"
LOCK = "gdlab.lock"
# An experiment folder's seed sweeps: SEEDS/<variant>/ (see gdlab.run).
SEEDS = "seeds"
CHECKPOINT_FORMAT = "gdlab-checkpoint/3"
# Run, variant and experiment names become folder names.
NAME_CHARS = "letters, digits and _ - . = + , [ ] ( ) @"
_NAME = re.compile(r"^[A-Za-z0-9_\-.=+,\[\]()@]{1,200}$")
# What --resume may change with allow_changes: budgets and chunking, which
# change when the run stops, not the numbers of the steps it takes.
SAFE_CHANGES = ("train.stop.max_epochs", "train.stop.max_steps",
                "train.stop.max_grad_evals", "train.chunk_epochs")


class FolderError(config_lib.ConfigError):
  """A folder that gdlab cannot write or resume: one line, exit code 2."""


def _umask() -> int:
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def atomic_write(path: str | os.PathLike, data: str | bytes) -> None:
  """Writes ``data`` to ``path`` through a temporary file and a rename."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  mode = "wb" if isinstance(data, bytes) else "w"
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
  try:
    # mkstemp makes the file private (0600); a folder's files follow the
    # umask, as the figures matplotlib writes do.
    os.chmod(tmp, 0o666 & ~_umask())
    with os.fdopen(fd, mode) as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def _clean(v: Any) -> Any:
  """JSON-safe scalars: NaN and infinities become None."""
  if isinstance(v, (np.generic,)):
    v = v.item()
  if isinstance(v, float) and not math.isfinite(v):
    return None
  return v


def metric_lines(kind: str, rows: dict[str, np.ndarray],
                 start: int = 0) -> list[str]:
  """JSON lines for the rows ``start:`` of a dict of equal-length arrays."""
  keys = list(rows)
  # Column by column to Python scalars (one ``tolist`` each), then row by row.
  columns = [[_clean(v) for v in np.asarray(rows[k][start:]).tolist()]
             for k in keys]
  return [json.dumps({"kind": kind, **dict(zip(keys, values))})
          for values in zip(*columns)]


def _stored(column) -> np.ndarray:
  """A step column as stored: float32 when that holds every value exactly
  (the same file whether the rows came from the loop or from a resumed
  log), else float64; integers as int64."""
  a = np.asarray(column)
  if a.dtype.kind in "iub":
    return a.astype(np.int64)
  a = a.astype(np.float64)
  narrow = a.astype(np.float32)
  same = (narrow == a) | (np.isnan(a) & np.isnan(narrow))
  return narrow if bool(np.all(same)) else a


def npz_bytes(columns: dict[str, np.ndarray]) -> bytes:
  """The bytes of an ``.npz`` file of ``columns`` (what ``numpy.load``
  reads), compressed and with fixed timestamps, so that the same arrays
  give the same bytes."""
  buffer = io.BytesIO()
  with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
    for name, array in columns.items():
      info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
      info.compress_type = zipfile.ZIP_DEFLATED
      with z.open(info, "w", force_zip64=True) as f:
        np.lib.format.write_array(f, np.asarray(array), allow_pickle=False)
  return buffer.getvalue()


def _step_columns(steps: dict, start: int = 0) -> dict[str, np.ndarray]:
  return {k: _stored(np.asarray(v)[start:]) for k, v in steps.items()}


def _num_rows(steps: dict) -> int:
  return len(next(iter(steps.values()))) if steps else 0


def write_metrics(run_dir: str | os.PathLike, steps: dict,
                  epochs: dict) -> None:
  """Writes the whole log: ``steps.npz`` (or none, without step rows), then
  ``metrics.jsonl`` (the epoch rows), and removes the chunk files of
  ``steps/``.

  Rewritten whole when a run ends and when a resume starts, so that a
  resumed run's files are those of an uninterrupted one.
  """
  run_dir = Path(run_dir)
  if _num_rows(steps):
    atomic_write(run_dir / STEPS, npz_bytes(_step_columns(steps)))
  elif (run_dir / STEPS).exists():
    (run_dir / STEPS).unlink()
  lines = metric_lines("epoch", epochs)
  atomic_write(run_dir / METRICS, "\n".join(lines) + ("\n" if lines else ""))
  # The rows of the chunk files are in steps.npz now (or, at a resume, are
  # beyond the checkpoint and dropped).
  shutil.rmtree(run_dir / STEP_CHUNKS, ignore_errors=True)


def append_metrics(run_dir: str | os.PathLike, steps: dict, epochs: dict,
                   step_start: int, epoch_start: int) -> None:
  """Writes the step rows from ``step_start`` to the chunk file
  ``steps/<step_start>.npz`` and appends the epoch rows from
  ``epoch_start`` to ``metrics.jsonl`` (between chunks; when the run ends
  :func:`write_metrics` writes the log whole)."""
  run_dir = Path(run_dir)
  if _num_rows(steps) > step_start:
    atomic_write(run_dir / STEP_CHUNKS / f"{step_start:09d}.npz",
                 npz_bytes(_step_columns(steps, step_start)))
  lines = metric_lines("epoch", epochs, epoch_start)
  if lines:
    with open(run_dir / METRICS, "a") as f:
      f.write("\n".join(lines) + "\n")
      f.flush()
      os.fsync(f.fileno())


def _column(values: list) -> np.ndarray:
  # Integer columns (step, epoch, evaluation counts) stay integers, so that a
  # resumed run's log is written as an uninterrupted run's is.
  if values and all(isinstance(v, int) and not isinstance(v, bool)
                    for v in values):
    return np.asarray(values, dtype=np.int64)
  return np.asarray([np.nan if v is None else v for v in values],
                    dtype=float)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
  """The arrays of a step file; a one-line error naming it when damaged."""
  try:
    with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as z:
      return {k: z[k] for k in z.files}
  except OSError as e:
    if getattr(e, "strerror", None):
      raise FolderError(f"{path}: cannot be read ({e.strerror}).") from None
    raise FolderError(f"{path}: expected NumPy arrays (.npz); got bytes that "
                      f"do not parse: the file is damaged.") from None
  except (ValueError, zipfile.BadZipFile, EOFError, KeyError) as e:
    raise FolderError(f"{path}: expected NumPy arrays (.npz); got "
                      f"{type(e).__name__}: the file is damaged.") from None


def _step_files(run_dir: Path) -> list[tuple[int, Path]]:
  """``(first row, path)`` of ``steps.npz`` and the chunk files, in order."""
  files = [(0, run_dir / STEPS)] if (run_dir / STEPS).is_file() else []
  chunks = run_dir / STEP_CHUNKS
  if chunks.is_dir():
    files += sorted((int(p.stem), p) for p in chunks.glob("*.npz")
                    if p.stem.isdigit())
  return files


def read_steps(run_dir: str | os.PathLike,
               rows: int | None = None) -> dict[str, np.ndarray] | None:
  """The step rows of ``steps.npz`` and ``steps/``: float64 and int64
  columns, a 1-based ``step`` first; None when the folder has no step file.

  Args:
    run_dir: the run folder.
    rows: read only the first ``rows`` rows (a checkpoint's); raises
      :class:`FolderError` when there are fewer.
  """
  run_dir = Path(run_dir)
  files = _step_files(run_dir)
  if not files:
    return None
  parts, n, keys = [], 0, None
  for start, path in files:
    if rows is not None and n >= rows:
      break
    if start > n:
      raise FolderError(f"{path}: expected step rows from {n + 1}; got rows "
                        f"from {start + 1}: a chunk is missing, the folder is "
                        f"damaged.")
    part = _read_npz(path)
    if keys is None:
      keys = list(part)
    if sorted(part) != sorted(keys) or len({len(v) for v in part.values()
                                            }) > 1:
      raise FolderError(f"{path}: expected equal-length columns "
                        f"{', '.join(keys)}; got {', '.join(part)}: the "
                        f"folder is damaged.")
    length = len(part[keys[0]]) if keys else 0
    if start + length > n:  # rows already read are skipped
      parts.append({k: part[k][n - start:] for k in keys})
      n = start + length
  if rows is not None and n < rows:
    raise FolderError(
        f"{run_dir / STEPS}: expected the {rows} step rows that {CHECKPOINT} "
        f"covers; got {n}: the log was cut. Start the run again in a new "
        f"folder.")
  out = {"step": np.arange(1, n + 1 if rows is None else rows + 1)}
  for k in keys or ():
    column = np.concatenate([p[k] for p in parts]) if parts else np.zeros(0)
    column = column[:rows] if rows is not None else column
    out[k] = column.astype(np.int64 if column.dtype.kind in "iu"
                           else np.float64 if column.dtype.kind == "f"
                           else column.dtype)
  return out


def read_metrics(run_dir: str | os.PathLike, *,
                 rows: tuple[int, int] | None = None) -> tuple[dict, dict]:
  """``(steps, epochs)``: dicts of NumPy arrays (None read back as NaN).

  The steps come from ``steps.npz`` and ``steps/`` (:func:`read_steps`), or
  in a folder of the older format from the ``{"kind": "step"}`` lines of
  ``metrics.jsonl``; the epochs from its ``{"kind": "epoch"}`` lines.

  Args:
    run_dir: the run folder.
    rows: read only the first ``(step_rows, epoch_rows)`` rows (a
      checkpoint's); later rows, such as those of a chunk whose checkpoint
      was never written, are ignored.

  A last line cut short by a killed process (no newline at its end) is
  ignored; any other line that is not a JSON object raises ``FolderError``
  naming the file and the line, as do fewer rows than ``rows``.
  """
  run_dir = Path(run_dir)
  npz_steps = read_steps(run_dir, None if rows is None else rows[0])
  steps: dict[str, list] = {}
  epochs: dict[str, list] = {}
  path = run_dir / METRICS
  counts = [0, 0]
  if path.exists():
    text = _read_text(path)
    lines = text.split("\n")
    for i, line in enumerate(lines):
      if not line.strip():
        continue
      try:
        rec = json.loads(line)
        kind = rec.pop("kind")
      except (ValueError, AttributeError, KeyError, TypeError) as e:
        if i == len(lines) - 1 and not text.endswith("\n"):
          break  # torn last line
        raise FolderError(
            f"{path}: line {i + 1}: expected a JSON object with a 'kind'; "
            f"got {type(e).__name__}: the file is damaged.") from None
      which = 0 if kind == "step" else 1
      if which == 0 and npz_steps is not None:
        continue
      if rows is not None and counts[which] >= rows[which]:
        continue
      counts[which] += 1
      target = steps if which == 0 else epochs
      for k, v in rec.items():
        target.setdefault(k, []).append(v)
  if npz_steps is not None:
    counts[0] = rows[0] if rows is not None else 0
  elif rows is not None and counts[0] < rows[0]:
    raise FolderError(
        f"{run_dir / STEPS}: expected the {rows[0]} step rows that "
        f"{CHECKPOINT} covers; got {counts[0]}: the file is missing. Start "
        f"the run again in a new folder.")
  if rows is not None and tuple(counts) != tuple(rows):
    raise FolderError(
        f"{path}: expected the {rows[0]} step and {rows[1]} epoch rows that "
        f"{CHECKPOINT} covers; got {counts[0]} and {counts[1]}: the log was "
        f"cut or emptied. Start the run again in a new folder.")
  to_np = lambda d: {k: _column(v) for k, v in d.items()}
  return (npz_steps if npz_steps is not None else to_np(steps),
          to_np(epochs))


def _read_text(path: Path) -> str:
  """A file's text; a one-line error naming it when it cannot be read."""
  try:
    return path.read_text(encoding="utf-8")
  except UnicodeDecodeError:
    raise FolderError(f"{path}: expected UTF-8 text; got bytes that are "
                      f"not: the file is damaged.") from None
  except OSError as e:
    raise FolderError(f"{path}: cannot be read ({e.strerror}).") from None


def _read_json(path: Path) -> Any:
  try:
    return json.loads(_read_text(path))
  except json.JSONDecodeError as e:
    raise FolderError(f"{path}: expected JSON; got a syntax error at line "
                      f"{e.lineno}, column {e.colno} ({e.msg}): the file is "
                      f"damaged.") from None


def versions() -> dict[str, Any]:
  """Versions of gdlab and its stack, the device, and the git commit."""
  out = {
      "gdlab": gdlab.__version__,
      "jax": jax.__version__,
      "jaxlib": jaxlib.__version__,
      "python": platform.python_version(),
      "backend": jax.default_backend(),
      "device": jax.devices()[0].device_kind,
      "device_count": jax.device_count(),
      "git_commit": _git_commit(),
  }
  return out


@functools.lru_cache(maxsize=1)
def _git_commit() -> str | None:
  """The commit of gdlab's checkout, if it is one (asked once a process)."""
  try:
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True,
        cwd=Path(__file__).resolve().parent, timeout=5,
        check=True).stdout.strip() or None
  except (OSError, subprocess.SubprocessError):
    return None


def write_json(path: str | os.PathLike, obj: Any) -> None:
  def default(o):
    if isinstance(o, np.ndarray):
      return o.tolist()
    if isinstance(o, np.generic):
      return _clean(o.item())
    if dataclasses.is_dataclass(o):
      return dataclasses.asdict(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")

  def clean(o):
    if isinstance(o, dict):
      return {k: clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
      return [clean(v) for v in o]
    return _clean(o)
  atomic_write(path, json.dumps(clean(obj), indent=2, default=default) + "\n")


@dataclasses.dataclass
class RunRecord:
  """A run folder read back.

  Shown (``repr``, and as HTML in a notebook) as its name, folder and the
  headline of :attr:`history`, never its arrays.
  """
  path: Path
  name: str
  config: dict
  summary: dict
  steps: dict[str, np.ndarray]
  epochs: dict[str, np.ndarray]
  trajectory: np.ndarray | None

  @property
  def history(self) -> history_lib.History:
    """The logged metrics as a History, with the summary's stop reason and
    timings ("unknown" and 0 where the folder has no summary)."""
    s = self.summary
    return history_lib.History(
        self.steps, self.epochs,
        stop_reason=s.get("stop_reason") or "unknown",
        compile_time=float(s.get("compile_time") or 0.0),
        run_time=float(s.get("run_time") or 0.0))

  def to_dataframe(self, kind: str = "epoch"):
    """The per-epoch or per-step rows as a ``pandas.DataFrame``; see
    :meth:`gdlab.history.History.to_dataframe`."""
    return self.history.to_dataframe(kind)

  def __repr__(self) -> str:
    return self.history.summary_line("RunRecord", name=self.name,
                                     path=str(self.path))

  def _repr_html_(self) -> str:
    return self.history.summary_html("RunRecord", name=self.name,
                                     path=str(self.path))


def load_run(run_dir: str | os.PathLike) -> RunRecord:
  """Reads a run folder written by ``gdlab run`` or ``gdlab sweep``."""
  run_dir = Path(run_dir)
  if not (run_dir / SUMMARY).exists() and not (run_dir / METRICS).exists():
    raise ValueError(f"run_dir: expected a run folder holding {SUMMARY} and "
                     f"{METRICS}; got {str(run_dir)!r}.")
  config = {}
  if (run_dir / CONFIG).exists():
    config = _read_config(run_dir)
  summary = {}
  if (run_dir / SUMMARY).exists():
    summary = _read_json(run_dir / SUMMARY)
    if not isinstance(summary, dict):
      raise FolderError(f"{run_dir / SUMMARY}: expected a JSON object; got "
                        f"{type(summary).__name__}: the file is damaged.")
  steps, epochs = read_metrics(run_dir)
  trajectory = None
  if (run_dir / TRAJECTORY).exists():
    trajectory = _trajectory(run_dir)
  name = summary.get("name") or run_dir.name
  return RunRecord(run_dir, name, config, summary, steps, epochs, trajectory)


def final_loss(summary: dict) -> float:
  """The final training loss of a ``summary.json`` (NaN when it has none)."""
  value = (summary.get("final") or {}).get("train_loss")
  return math.nan if value is None else float(value)


def _read_config(run_dir: Path) -> dict:
  path = run_dir / CONFIG
  try:
    data = config_lib.read_yaml(_read_text(path))
  except FolderError:
    raise
  except Exception as e:  # PyYAML's errors
    raise FolderError(f"{path}: expected the run's YAML config; got "
                      f"{type(e).__name__}: the file is damaged.") from None
  if data is not None and not isinstance(data, dict):
    raise FolderError(f"{path}: expected a YAML mapping; got "
                      f"{type(data).__name__}: the file is damaged.")
  return data or {}


def _trajectory(run_dir: Path) -> np.ndarray:
  try:
    return np.asarray(_read_json(run_dir / TRAJECTORY), dtype=float)
  except (TypeError, ValueError) as e:
    if isinstance(e, FolderError):
      raise
    raise FolderError(f"{run_dir / TRAJECTORY}: expected rows of numbers; "
                      f"got {type(e).__name__}: the file is damaged.") from None


def load_history(run_dir: str | os.PathLike,
                 point: "Checkpoint | None" = None) -> history_lib.History:
  """The history logged in a run folder, to continue it from its checkpoint.

  With ``point`` (:func:`read_checkpoint`), exactly the rows it covers, and
  its compile and run times.
  """
  run_dir = Path(run_dir)
  rows = None if point is None else (point.meta["step_rows"],
                                     point.meta["epoch_rows"])
  steps, epochs = read_metrics(run_dir, rows=rows)
  steps.pop("step", None)
  history = history_lib.empty_history()
  if steps:
    history.steps = steps
  if epochs:
    history.epochs = epochs
  if (run_dir / TRAJECTORY).exists():
    trajectory = _trajectory(run_dir)
    n = history.num_steps
    # The parameters of every step; the row after them is the final
    # parameters, which write_run appends.
    if len(trajectory) <= n and n:
      raise FolderError(
          f"{run_dir / TRAJECTORY}: expected more than the {n} rows of the "
          f"steps {CHECKPOINT} covers; got {len(trajectory)}: the file was "
          f"cut. Start the run again in a new folder.")
    history.steps["params"] = trajectory[:n]
  if point is not None:
    history.compile_time = float(point.meta.get("compile_time", 0.0))
    history.run_time = float(point.meta.get("run_time", 0.0))
  else:
    summary = (_read_json(run_dir / SUMMARY) if (run_dir / SUMMARY).exists()
               else {})
    history.compile_time = summary.get("compile_time", 0.0) or 0.0
    history.run_time = summary.get("run_time", 0.0) or 0.0
  return history


# ----------------------------------------------------------------------------
# Checkpoints: the commit point of a chunk.


@dataclasses.dataclass
class Checkpoint:
  """A checkpoint read back: the carry's serialized state and what it covers.

  ``meta``: ``step_rows`` and ``epoch_rows`` (the metric rows it covers),
  ``compile_time`` and ``run_time``, ``config_sha256``.
  """
  state: bytes
  meta: dict

  def restore(self, template: loop.Carry) -> loop.Carry:
    """The carry, shaped like ``template`` (``ValueError`` and the like from
    flax when it holds a state of another shape)."""
    return serialization.from_bytes(template, self.state)


def _digest(meta_json: str, state: bytes) -> str:
  return hashlib.sha256(meta_json.encode() + b"\0" + state).hexdigest()


def write_checkpoint(run_dir: str | os.PathLike, carry: loop.Carry,
                     meta: dict | None = None) -> None:
  """Writes the carry with ``meta`` and a SHA-256 checksum of both."""
  state = serialization.to_bytes(parallel.to_host(carry))
  meta_json = json.dumps(meta or {}, sort_keys=True)
  blob = serialization.msgpack_serialize({
      "format": CHECKPOINT_FORMAT, "meta": meta_json, "state": state,
      "sha256": _digest(meta_json, state)})
  atomic_write(Path(run_dir) / CHECKPOINT, blob)


def read_checkpoint(run_dir: str | os.PathLike) -> Checkpoint:
  """A run folder's checkpoint, its checksum verified.

  Raises :class:`FolderError` (one line naming the file) when it is damaged
  or was written by an older gdlab.
  """
  path = Path(run_dir) / CHECKPOINT
  try:
    blob = serialization.msgpack_restore(path.read_bytes())
  except OSError as e:
    raise FolderError(f"{path}: cannot be read ({e.strerror}).") from None
  except Exception:  # msgpack's errors on damaged bytes
    raise FolderError(f"{path}: expected a gdlab checkpoint; got bytes that "
                      f"do not parse: the file is damaged. Start the run "
                      f"again in a new folder.") from None
  if isinstance(blob, dict) and blob.get("format") == "gdlab-checkpoint/2":
    raise FolderError(
        f"{path}: a checkpoint of format 'gdlab-checkpoint/2', whose run "
        f"logged its steps in {METRICS}; this gdlab logs them in {STEPS} "
        f"(format {CHECKPOINT_FORMAT!r}) and reads such a folder but does "
        f"not resume it. Start the run again in a new folder.")
  if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
    raise FolderError(
        f"{path}: expected a checkpoint of format {CHECKPOINT_FORMAT!r}; got "
        f"{blob.get('format', 'none') if isinstance(blob, dict) else 'none'}"
        f" (written by another version of gdlab, or damaged). Start the run "
        f"again in a new folder.")
  state, meta_json = blob.get("state"), blob.get("meta")
  if (not isinstance(state, bytes) or not isinstance(meta_json, str) or
      blob.get("sha256") != _digest(meta_json, state)):
    raise FolderError(f"{path}: the checksum does not match the contents: "
                      f"the file is damaged. Start the run again in a new "
                      f"folder.")
  return Checkpoint(state, json.loads(meta_json))


def final_params(run_dir: str | os.PathLike, template):
  """The parameters in a run's checkpoint, shaped like ``template``."""
  state = serialization.msgpack_restore(read_checkpoint(run_dir).state)
  return serialization.from_state_dict(template, state["params"])


def run_summary(cfg: config_lib.RunConfig, history: history_lib.History,
                extra: dict | None = None) -> dict:
  """The content of ``summary.json``."""
  final = {k: v for k, v in history.final.items()}
  return {
      "name": cfg.name,
      "stop_reason": history.stop_reason,
      "steps": history.num_steps,
      "epochs": int(history.epochs["epoch"][-1]) if len(
          history.epochs.get("epoch", ())) else 0,
      "grad_evals": int(np.sum(history.steps["grad_evals"])) if
      history.num_steps else 0,
      "fun_evals": int(np.sum(history.steps["fun_evals"])) if
      history.num_steps else 0,
      "final": final,
      "compile_time": history.compile_time,
      "run_time": history.run_time,
      "steps_per_second": history.steps_per_second,
      "versions": versions(),
      **(extra or {}),
  }


def write_run(run_dir: str | os.PathLike, cfg: config_lib.RunConfig,
              history: history_lib.History, carry: loop.Carry | None,
              extra: dict | None = None,
              written: tuple[int, int] | None = None) -> None:
  """Writes a run folder's config, metrics, summary and checkpoint.

  ``written``: the (step, epoch) rows already written; the rest are
  appended, the steps as one chunk file (and the config, written before, is
  left alone).  Without it the config and the log are rewritten whole.  The
  checkpoint goes last: it records the rows it covers, so a process killed
  in between leaves a folder that resumes from the previous checkpoint.
  """
  run_dir = Path(run_dir)
  run_dir.mkdir(parents=True, exist_ok=True)
  steps = {k: v for k, v in history.steps.items() if k != "params"}
  if written is None:
    atomic_write(run_dir / CONFIG, config_lib.dump(cfg))
    write_metrics(run_dir, steps, history.epochs)
  else:
    append_metrics(run_dir, steps, history.epochs, *written)
  if "params" in history.steps and len(history.steps["params"]):
    traj = np.asarray(history.steps["params"], float)
    if carry is not None:
      final = np.concatenate([np.ravel(np.asarray(p)) for p in
                              jax.tree_util.tree_leaves(carry.params)])
      traj = np.vstack([traj, final[None]])
    write_json(run_dir / TRAJECTORY, traj.tolist())
  write_json(run_dir / SUMMARY, run_summary(cfg, history, extra))
  if carry is not None:
    write_checkpoint(run_dir, carry, {
        "step_rows": history.num_steps,
        "epoch_rows": len(history.epochs.get("epoch", ())),
        "compile_time": history.compile_time,
        "run_time": history.run_time,
        "config_sha256": config_sha256(cfg)})


# ----------------------------------------------------------------------------
# Guarded folders: names, --out, the marker, the lock, resuming.


def check_name(key: str, name: Any) -> str:
  """A run, variant or experiment name that is safe as one folder name."""
  if (not isinstance(name, str) or not _NAME.match(name) or
      name in (".", "..") or name.startswith(".")):
    raise config_lib.ConfigError(
        f"{key}: expected a folder name of 1-200 {NAME_CHARS}, not starting "
        f"with '.'; got {name!r}.")
  return name


def config_sha256(cfg: config_lib.RunConfig) -> str:
  """The fingerprint of a resolved run config: SHA-256 of its YAML text."""
  return hashlib.sha256(config_lib.dump(cfg).encode()).hexdigest()


def data_sha256(arrays) -> str:
  """The fingerprint of a run's data: SHA-256 of its arrays' bytes."""
  h = hashlib.sha256()
  for leaf in jax.tree_util.tree_leaves(arrays):
    a = np.ascontiguousarray(parallel.to_host(leaf))
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
  return h.hexdigest()


def read_marker(folder: str | os.PathLike) -> dict | None:
  """The folder's ``gdlab.json``, or None when it has none."""
  path = Path(folder) / MARKER
  if not path.is_file():
    return None
  marker = _read_json(path)
  if not isinstance(marker, dict) or "kind" not in marker:
    raise FolderError(f"{path}: expected a JSON object with a 'kind'; got "
                      f"{type(marker).__name__}: the file is damaged.")
  return marker


_TEMPORARY = re.compile(r"^\.(config|metrics|steps|summary|trajectory|"
                        r"checkpoint|gdlab|report|[0-9]{9})\.[a-z]+\..+$")


def contents(folder: str | os.PathLike) -> list[str]:
  """A folder's entries, less a lock and the temporary files of writes that
  a killed process left (:func:`clean_temporaries`)."""
  return sorted(p.name for p in Path(folder).iterdir()
                if p.name != LOCK and not _TEMPORARY.match(p.name))


def _writable_ancestor(folder: Path) -> Path:
  parent = folder
  while not parent.exists():
    if parent.parent == parent:
      break
    parent = parent.parent
  return parent


def check_out(folder: str | os.PathLike, kind: str, *,
              resume: bool = False) -> None:
  """Checks that gdlab may write a ``kind`` folder (run, experiment, sweep).

  Allowed: a new folder, an empty one, or (with ``resume``) a folder of the
  same kind that gdlab made.  Refused, with one line: a file, a folder that
  cannot be written, a folder of the user's that is not empty, a gdlab
  folder without ``resume`` (nothing is replaced), and with ``resume`` a
  folder that does not exist or that gdlab did not make.  Creates nothing.
  """
  folder = Path(folder)
  if folder.exists() and not folder.is_dir():
    raise FolderError(f"--out: expected a folder; got {str(folder)!r}, "
                      f"which is a file.")
  base = _writable_ancestor(folder)
  if base.exists() and not base.is_dir():
    raise FolderError(f"--out: expected a folder; got {str(folder)!r}, "
                      f"inside the file {str(base)!r}.")
  if not os.access(base, os.W_OK | os.X_OK):
    raise FolderError(f"--out: cannot write in {str(base)!r} (permission "
                      f"denied); choose a folder you can write.")
  contents_ = contents(folder) if folder.is_dir() else []
  marker = read_marker(folder) if contents_ else None
  if resume:
    if not folder.is_dir():
      raise FolderError(f"--resume: expected the folder of an interrupted "
                        f"{kind}; got {str(folder)!r}, which does not exist.")
    if marker is None:
      raise FolderError(
          f"--resume: expected a folder that gdlab made for a {kind} "
          f"(holding {MARKER}); got {str(folder)!r}"
          + (", which is empty." if not contents_ else "."))
  elif contents_ and marker is None:
    raise FolderError(
        f"--out: expected a new or empty folder; got {str(folder)!r}, which "
        f"holds {len(contents_)} entries that gdlab did not write (such as "
        f"{contents_[0]!r}); gdlab does not write into other folders.")
  elif marker is not None:
    hint = (" pass --resume to continue it, or" if kind in ("run",
            "experiment") else "")
    raise FolderError(f"--out: {str(folder)!r} already holds a gdlab "
                      f"{marker['kind']};{hint} choose another folder.")
  if marker is not None and marker["kind"] != kind:
    raise FolderError(f"--resume: expected a gdlab {kind} folder; got "
                      f"{str(folder)!r}, which holds a {marker['kind']}.")


@contextlib.contextmanager
def removed_if_rejected(folder: str | os.PathLike):
  """Removes ``folder``, new when this began, if bad input (``ValueError``,
  ``TypeError``) stops the work before any run folder is written in it: a
  rejected config leaves nothing behind."""
  folder = Path(folder)
  new = not folder.exists() or not contents(folder)
  try:
    yield
  except (ValueError, TypeError):
    if new and folder.is_dir() and not (folder / "runs").exists():
      shutil.rmtree(folder, ignore_errors=True)
    raise


def make_folder(folder: Path) -> Path:
  """``folder.mkdir``, with a one-line error naming it when that fails."""
  try:
    folder.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise FolderError(f"--out: cannot make the folder {str(folder)!r} "
                      f"({e.strerror}); choose a folder you can "
                      f"write.") from None
  return folder


def create(folder: str | os.PathLike, kind: str, **fields) -> Path:
  """Makes ``folder`` (if new) and writes its ``gdlab.json`` marker."""
  folder = make_folder(Path(folder))
  write_json(folder / MARKER, {"kind": kind, "gdlab": gdlab.__version__,
                               **fields})
  return folder


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


@contextlib.contextmanager
def locked(folder: str | os.PathLike):
  """Holds ``folder/gdlab.lock`` (this process's id) for the duration.

  A second writer is refused with one line naming the holder; a lock left
  by a process that no longer runs on this host is taken over.
  """
  folder = make_folder(Path(folder))
  path = folder / LOCK
  me = {"pid": os.getpid(), "host": socket.gethostname(),
        "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
  for _ in range(2):
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY,
                   0o666 & ~_umask())
    except FileExistsError:
      try:
        holder = json.loads(path.read_text())
        pid, host = int(holder["pid"]), str(holder["host"])
      except (OSError, ValueError, KeyError, TypeError):
        holder, pid, host = {}, None, None
      if pid is not None and (host != me["host"] or _pid_alive(pid)):
        raise FolderError(
            f"--out: {str(folder)!r} is being written by another gdlab "
            f"process (pid {pid} on {host}, since "
            f"{holder.get('since', '?')}); wait for it to end, or remove "
            f"{str(path)!r} if that process is gone.") from None
      # A stale lock (its process is gone) or a damaged one.
      with contextlib.suppress(FileNotFoundError):
        path.unlink()
      continue
    with os.fdopen(fd, "w") as f:
      json.dump(me, f)
    break
  else:  # pragma: no cover - another process took it in between
    raise FolderError(f"--out: {str(folder)!r} is being written by another "
                      f"gdlab process.")
  try:
    yield folder
  finally:
    with contextlib.suppress(FileNotFoundError):
      path.unlink()


def clean_temporaries(folder: str | os.PathLike) -> None:
  """Removes the temporary files of writes that a killed process left
  (in ``steps/`` too)."""
  chunks = Path(folder) / STEP_CHUNKS
  for p in [*Path(folder).iterdir(),
            *(chunks.iterdir() if chunks.is_dir() else ())]:
    if _TEMPORARY.match(p.name) and p.is_file():
      p.unlink()


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """A nested config as one level of dotted keys: ``{"optimizer.name": ...}``."""
  out = {}
  for k, v in config.items():
    if isinstance(v, Mapping) and v:
      out.update(flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def check_resume(run_dir: str | os.PathLike, cfg: config_lib.RunConfig,
                 data_digest: str | None = None, *,
                 allow_changes: bool = False) -> list[str]:
  """Checks that ``cfg`` (and its data) are those the run folder started with.

  Returns the keys that differ, all of :data:`SAFE_CHANGES` when
  ``allow_changes``; raises :class:`FolderError` naming the keys that
  differ otherwise, or when the data, the gdlab version or the folder's
  files do not match.
  """
  run_dir = Path(run_dir)
  marker = read_marker(run_dir)
  if marker is None or marker.get("kind") != "run":
    raise FolderError(f"--resume: expected a gdlab run folder (holding "
                      f"{MARKER}); got {str(run_dir)!r}.")
  if marker.get("gdlab") != gdlab.__version__:
    raise FolderError(
        f"--resume: {str(run_dir)!r} was written by gdlab "
        f"{marker.get('gdlab')}; this is gdlab {gdlab.__version__}. Start "
        f"the run again in a new folder.")
  if not (run_dir / CONFIG).is_file():
    raise FolderError(f"--resume: {str(run_dir / CONFIG)!r} is missing: the "
                      f"folder is damaged.")
  text = _read_text(run_dir / CONFIG)
  if hashlib.sha256(text.encode()).hexdigest() != marker.get("config_sha256"):
    raise FolderError(
        f"--resume: {str(run_dir / CONFIG)!r} was changed after the run "
        f"started (its fingerprint in {MARKER} differs); gdlab resumes only "
        f"the config a run started with.")
  old = flatten(_read_config(run_dir))
  new = flatten(config_lib.read_yaml(config_lib.dump(cfg)))
  changed = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
  unsafe = [k for k in changed if k not in SAFE_CHANGES]
  if changed and (unsafe or not allow_changes):
    shown = ", ".join(f"{k} ({old.get(k)!r} -> {new.get(k)!r})"
                      for k in changed[:6])
    more = f" and {len(changed) - 6} more" if len(changed) > 6 else ""
    hint = ("; --allow-changes allows only " + ", ".join(SAFE_CHANGES)
            if unsafe else "; pass --allow-changes to allow them")
    raise FolderError(
        f"--resume: the config differs from the one {str(run_dir)!r} "
        f"started with in {shown}{more}{hint}, or start a new folder.")
  if data_digest is not None and marker.get("data_sha256") not in (
      None, data_digest):
    raise FolderError(
        f"--resume: the data differ from those {str(run_dir)!r} started "
        f"with (their fingerprints differ); resume on the same data, or "
        f"start a new folder.")
  return changed


def is_gdlab_folder(folder: str | os.PathLike) -> bool:
  """Whether ``folder`` is one that gdlab made (it holds ``gdlab.json``)."""
  return (Path(folder) / MARKER).is_file()


def describe(folder: str | os.PathLike) -> str:
  """What an interrupted command left in ``folder``, in a few words."""
  folder = Path(folder)
  if not is_gdlab_folder(folder):
    return f"nothing was written to {folder}"
  checkpoints = [p for p in [folder / CHECKPOINT,
                             *folder.glob(f"runs/*/{CHECKPOINT}")]
                 if p.is_file()]
  if checkpoints:
    return f"results so far and checkpoints are in {folder}"
  return f"{folder} holds no checkpoint yet (--resume starts it over)"
