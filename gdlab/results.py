"""Run folders: what a run writes, and reading it back.

A run folder holds::

    config.yaml        the resolved configuration of the run
    metrics.jsonl      one JSON object a line: {"kind": "step", ...} per update
                       and {"kind": "epoch", ...} per epoch (see gdlab.loop)
    summary.json       final metrics, stop reason, compile and run time,
                       steps/s, versions (gdlab, jax, jaxlib, python, device,
                       git commit)
    trajectory.json    (two-parameter problems) the iterates, one [x, y] a step
    checkpoint.msgpack the run's carry (parameters, optimizer state, key,
                       counters), flax serialization
    plots/             PNG figures; report.md embeds them

Every file is written atomically (to a temporary file in the same folder,
then renamed), so an interrupted run leaves each file either complete or as
it was before.  ``metrics.jsonl`` is appended chunk by chunk and rewritten whole, in
order (steps, then epochs), when the run ends.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
TRAJECTORY = "trajectory.json"
CHECKPOINT = "checkpoint.msgpack"
PLOTS = "plots"


def atomic_write(path: str | os.PathLike, data: str | bytes) -> None:
  """Writes ``data`` to ``path`` through a temporary file and a rename."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  mode = "wb" if isinstance(data, bytes) else "w"
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
  try:
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


def write_metrics(run_dir: str | os.PathLike, steps: dict,
                  epochs: dict) -> None:
  """Writes the whole metrics log (steps numbered from 1, then epochs).

  The log is rewritten whole, atomically, after every chunk, so that a
  resumed run's log is exactly that of an uninterrupted one.
  """
  step_rows = dict(steps)
  n = len(next(iter(step_rows.values()))) if step_rows else 0
  step_rows = {"step": np.arange(1, n + 1), **step_rows}
  lines = metric_lines("step", step_rows) + metric_lines("epoch", epochs)
  atomic_write(Path(run_dir) / METRICS, "\n".join(lines) + ("\n" if lines
                                                              else ""))


def append_metrics(run_dir: str | os.PathLike, steps: dict, epochs: dict,
                   step_start: int, epoch_start: int) -> None:
  """Appends the step rows from ``step_start`` and epoch rows from
  ``epoch_start`` to the metrics log (between chunks; the final log is
  rewritten whole by :func:`write_metrics`)."""
  n = len(next(iter(steps.values()))) if steps else 0
  step_rows = {"step": np.arange(1, n + 1), **steps}
  lines = (metric_lines("step", step_rows, step_start) +
           metric_lines("epoch", epochs, epoch_start))
  if lines:
    with open(Path(run_dir) / METRICS, "a") as f:
      f.write("\n".join(lines) + "\n")
      f.flush()
      os.fsync(f.fileno())


def read_metrics(run_dir: str | os.PathLike) -> tuple[dict, dict]:
  """``(steps, epochs)``: dicts of NumPy arrays (None read back as NaN)."""
  steps: dict[str, list] = {}
  epochs: dict[str, list] = {}
  path = Path(run_dir) / METRICS
  if path.exists():
    for line in path.read_text().splitlines():
      if not line.strip():
        continue
      rec = json.loads(line)
      target = steps if rec.pop("kind") == "step" else epochs
      for k, v in rec.items():
        target.setdefault(k, []).append(np.nan if v is None else v)
  to_np = lambda d: {k: np.asarray(v, dtype=float) for k, v in d.items()}
  return to_np(steps), to_np(epochs)


def versions() -> dict[str, Any]:
  """Versions of gdlab and its stack, the device, and the git commit."""
  import jax  # pylint: disable=g-import-not-at-top
  import jaxlib  # pylint: disable=g-import-not-at-top
  import gdlab  # pylint: disable=g-import-not-at-top
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
  """A run folder read back."""
  path: Path
  name: str
  config: dict
  summary: dict
  steps: dict[str, np.ndarray]
  epochs: dict[str, np.ndarray]
  trajectory: np.ndarray | None


def load_run(run_dir: str | os.PathLike) -> RunRecord:
  """Reads a run folder written by ``gdlab run`` or ``gdlab sweep``."""
  import yaml  # pylint: disable=g-import-not-at-top
  run_dir = Path(run_dir)
  if not (run_dir / SUMMARY).exists() and not (run_dir / METRICS).exists():
    raise ValueError(f"run_dir: expected a run folder holding {SUMMARY} and "
                     f"{METRICS}; got {str(run_dir)!r}.")
  config = {}
  if (run_dir / CONFIG).exists():
    config = yaml.safe_load((run_dir / CONFIG).read_text()) or {}
  summary = {}
  if (run_dir / SUMMARY).exists():
    summary = json.loads((run_dir / SUMMARY).read_text())
  steps, epochs = read_metrics(run_dir)
  trajectory = None
  if (run_dir / TRAJECTORY).exists():
    trajectory = np.asarray(json.loads((run_dir / TRAJECTORY).read_text()),
                            dtype=float)
  name = summary.get("name") or run_dir.name
  return RunRecord(run_dir, name, config, summary, steps, epochs, trajectory)
