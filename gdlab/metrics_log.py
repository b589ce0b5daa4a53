"""The metrics log of a run folder: epoch lines and step arrays.

A run folder logs its metrics in::

    metrics.jsonl      one JSON object a line, {"kind": "epoch", ...} per
                       epoch (see gdlab.loop), any columns the loop logs
    steps.npz          the per-step metrics (loss, grad_norm, update_norm,
                       step_size, fun_evals, grad_evals), one NumPy array a
                       column, one row per update (``numpy.load`` reads it)
    steps/             while a run goes on: the rows of each chunk since
                       steps.npz was last written, ``<first row>.npz``

Writing: :func:`write_metrics` (the whole log) and :func:`append_metrics`
(between chunks).  Reading: :func:`read_metrics` (steps and epochs) and
:func:`read_steps` (the step rows alone).

Between chunks the epoch rows are appended to ``metrics.jsonl`` and the
chunk's step rows go to a new file ``steps/<first row, 9 digits>.npz``,
written whole (:func:`gdlab.folders.atomic_write`); when the run ends (and
when a resume starts) ``steps.npz`` and ``metrics.jsonl`` are rewritten
whole and ``steps/`` removed.  Reading concatenates ``steps.npz`` (rows from
0) and the chunk files in the order of their first rows, rows already read
being skipped (a chunk file left by a process killed while ``steps/`` was
removed).  The run's checkpoint (:mod:`gdlab.results`) records how many
step and epoch rows it covers; reading just those rows (``rows``) cuts the
rows of a chunk whose checkpoint was never written, so a resumed run's log
has the numbers (and the bytes of ``steps.npz`` and ``metrics.jsonl``) of
an uninterrupted run's.  Step files store a float column as float32 when
that holds every value exactly, and integer columns as int64; reading gives
float64 and int64 arrays.  Folders of gdlab 2-format checkpoints logged the
steps as ``{"kind": "step"}`` lines of ``metrics.jsonl``; they are read as
before, never resumed.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from gdlab import folders

METRICS = "metrics.jsonl"
STEPS = "steps.npz"
STEP_CHUNKS = "steps"


def json_safe(v: Any) -> Any:
  """A JSON-safe scalar: NumPy scalars become Python ones, NaN and
  infinities None (in ``metrics.jsonl`` and the folder's JSON files)."""
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
  columns = [[json_safe(v) for v in np.asarray(rows[k][start:]).tolist()]
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
    folders.atomic_write(run_dir / STEPS, npz_bytes(_step_columns(steps)))
  elif (run_dir / STEPS).exists():
    (run_dir / STEPS).unlink()
  lines = metric_lines("epoch", epochs)
  folders.atomic_write(run_dir / METRICS,
                       "\n".join(lines) + ("\n" if lines else ""))
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
    folders.atomic_write(run_dir / STEP_CHUNKS / f"{step_start:09d}.npz",
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
      raise folders.FolderError(
          f"{path}: cannot be read ({e.strerror}).") from None
    raise folders.FolderError(
        f"{path}: expected NumPy arrays (.npz); got bytes that do not parse: "
        f"the file is damaged.") from None
  except (ValueError, zipfile.BadZipFile, EOFError, KeyError) as e:
    raise folders.FolderError(
        f"{path}: expected NumPy arrays (.npz); got {type(e).__name__}: the "
        f"file is damaged.") from None


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
      :class:`gdlab.folders.FolderError` when there are fewer.
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
      raise folders.FolderError(
          f"{path}: expected step rows from {n + 1}; got rows from "
          f"{start + 1}: a chunk is missing, the folder is damaged.")
    part = _read_npz(path)
    if keys is None:
      keys = list(part)
    if sorted(part) != sorted(keys) or len({len(v) for v in part.values()
                                            }) > 1:
      raise folders.FolderError(f"{path}: expected equal-length columns "
                                f"{', '.join(keys)}; got {', '.join(part)}: "
                                f"the folder is damaged.")
    length = len(part[keys[0]]) if keys else 0
    if start + length > n:  # rows already read are skipped
      parts.append({k: part[k][n - start:] for k in keys})
      n = start + length
  if rows is not None and n < rows:
    raise folders.FolderError(
        f"{run_dir / STEPS}: expected the {rows} step rows that the checkpoint "
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
  ignored; any other line that is not a JSON object raises
  :class:`gdlab.folders.FolderError` naming the file and the line, as do
  fewer rows than ``rows``.
  """
  run_dir = Path(run_dir)
  npz_steps = read_steps(run_dir, None if rows is None else rows[0])
  steps: dict[str, list] = {}
  epochs: dict[str, list] = {}
  path = run_dir / METRICS
  counts = [0, 0]
  if path.exists():
    text = folders.read_text(path)
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
        raise folders.FolderError(
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
    raise folders.FolderError(
        f"{run_dir / STEPS}: expected the {rows[0]} step rows that "
        f"the checkpoint covers; got {counts[0]}: the file is missing. Start "
        f"the run again in a new folder.")
  if rows is not None and tuple(counts) != tuple(rows):
    raise folders.FolderError(
        f"{path}: expected the {rows[0]} step and {rows[1]} epoch rows that "
        f"the checkpoint covers; got {counts[0]} and {counts[1]}: the log was "
        f"cut or emptied. Start the run again in a new folder.")
  to_np = lambda d: {k: _column(v) for k, v in d.items()}
  return (npz_steps if npz_steps is not None else to_np(steps),
          to_np(epochs))
