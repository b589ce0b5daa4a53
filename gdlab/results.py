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

Writing: :func:`write_run` (config, metrics, summary, trajectory,
checkpoint; between chunks it appends the new metric rows), with
:func:`run_summary` the content of ``summary.json``.  Reading:
:func:`load_run` (a :class:`RunRecord`), :func:`load_history` (a
:class:`gdlab.history.History` to resume from), :func:`read_checkpoint`,
:func:`final_params` and :func:`final_loss`.

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
SUMMARY = "summary.json"
TRAJECTORY = "trajectory.json"
CHECKPOINT = "checkpoint.msgpack"
PLOTS = "plots"
# An experiment folder's seed sweeps: SEEDS/<variant>/ (see gdlab.run).
SEEDS = "seeds"


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
  run_dir = Path(run_dir)
  if not (run_dir / SUMMARY).exists() and not (run_dir / METRICS).exists():
    raise ValueError(f"run_dir: expected a run folder holding {SUMMARY} and "
                     f"{METRICS}; got {str(run_dir)!r}.")
  config = {}
  if (run_dir / CONFIG).exists():
    config = config_lib.read_yaml((run_dir / CONFIG).read_text()) or {}
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


def final_loss(summary: dict) -> float:
  """The final training loss of a ``summary.json`` (NaN when it has none)."""
  value = (summary.get("final") or {}).get("train_loss")
  return math.nan if value is None else float(value)


def load_history(run_dir: str | os.PathLike) -> history_lib.History:
  """The history logged in a run folder, to continue it from its checkpoint."""
  record = load_run(run_dir)
  steps, epochs, summary = record.steps, record.epochs, record.summary
  steps.pop("step", None)
  history = history_lib.empty_history()
  if steps:
    history.steps = steps
  if epochs:
    history.epochs = epochs
  trajectory = record.trajectory
  if trajectory is not None and len(trajectory) > 1:
    # The parameters of every step; the last row is the final parameters,
    # which write_run appends.
    history.steps["params"] = trajectory[:-1]
  history.compile_time = summary.get("compile_time", 0.0) or 0.0
  history.run_time = summary.get("run_time", 0.0) or 0.0
  return history


def read_checkpoint(run_dir: str | os.PathLike, template: loop.Carry):
  """The carry in a run folder's checkpoint, shaped like ``template``.

  Raises ``ValueError``, ``KeyError`` or ``TypeError`` (flax's) when the
  checkpoint does not hold a state of that shape.
  """
  return serialization.from_bytes(
      template, (Path(run_dir) / CHECKPOINT).read_bytes())


def final_params(run_dir: str | os.PathLike, template):
  """The parameters in a run's checkpoint, shaped like ``template``."""
  state = serialization.msgpack_restore(
      (Path(run_dir) / CHECKPOINT).read_bytes())
  return serialization.from_state_dict(template, state["params"])


def write_checkpoint(run_dir: str | os.PathLike, carry: loop.Carry) -> None:
  atomic_write(Path(run_dir) / CHECKPOINT,
               serialization.to_bytes(parallel.to_host(carry)))


def run_summary(cfg: config_lib.RunConfig, history: history_lib.History,
                extra: dict | None = None) -> dict:
  """The content of ``summary.json``."""
  final = {k: v for k, v in history.final().items()}
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

  ``written``: the (step, epoch) rows already in ``metrics.jsonl``; the rest
  are appended.  Without it the log is rewritten whole.
  """
  run_dir = Path(run_dir)
  run_dir.mkdir(parents=True, exist_ok=True)
  atomic_write(run_dir / CONFIG, config_lib.dump(cfg))
  steps = {k: v for k, v in history.steps.items() if k != "params"}
  if written is None:
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
    write_checkpoint(run_dir, carry)
