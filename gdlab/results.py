"""Run folders: what a run writes, and reading it back.

A run folder holds::

    config.yaml        the resolved configuration of the run
    metrics.jsonl      the per-epoch metrics, one JSON object a line
    steps.npz          the per-step metrics, one NumPy array a column
    steps/             while a run goes on: each chunk's step rows
                       (these three: the metrics log, gdlab.metrics_log)
    summary.json       final metrics, stop reason, compile and run time,
                       steps/s, versions (gdlab, jax, jaxlib, python, device,
                       git commit)
    trajectory.npz     (runs with ``train.record_params``, which the
                       two-parameter problems set) the parameters of every
                       step, flattened, then the final ones: one array
                       ``params`` of shape (steps + 1, P); folders of
                       earlier versions hold trajectory.json, read as well
    checkpoint.msgpack the run's carry (parameters, optimizer state, key,
                       counters), flax serialization, with the number of
                       step and epoch rows it covers and a SHA-256 checksum
    gdlab.json         what the folder is, and the run's fingerprints
    gdlab.lock         while a process writes the folder: its process id
                       (these two: guarded folders, gdlab.folders)
    plots/             PNG figures; report.md embeds them

Writing: :func:`write_run` (config, metrics, summary, trajectory,
checkpoint; between chunks it appends the new rows), with
:func:`run_summary` the content of ``summary.json``.  Reading:
:func:`load_run` (a :class:`RunRecord`), :func:`load_history` (a
:class:`gdlab.history.History` to resume from), :func:`read_checkpoint`,
:func:`final_params` and :func:`final_loss`; the metrics alone,
:func:`gdlab.metrics_log.read_metrics`.

Every file is written atomically (:func:`gdlab.folders.atomic_write`), so
an interrupted run leaves each file either complete or as it was before.
The checkpoint is the commit point of a chunk: it is written last and
records how many step and epoch rows it covers, so a run killed at any
instant resumes (:func:`load_history`) from its last checkpoint with the
rows beyond it cut, to the numbers (and the bytes of ``steps.npz`` and
``metrics.jsonl``) of an uninterrupted run.

Resuming: :func:`describe` says what an interrupted command left,
:func:`clean_temporaries` removes the temporary files of the writes a
killed process left, and :func:`check_resume` refuses a resume when the
config or data differ from the run's (:data:`SAFE_CHANGES` aside).  The
folders themselves are guarded by :mod:`gdlab.folders`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import platform
import subprocess
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
from gdlab import folders
from gdlab import history as history_lib
from gdlab import loop
from gdlab import metrics_log
from gdlab import parallel

CONFIG = "config.yaml"
SUMMARY = "summary.json"
TRAJECTORY = "trajectory.npz"
# The trajectory as earlier versions wrote it, JSON rows: still read.
TRAJECTORY_JSON = "trajectory.json"
CHECKPOINT = "checkpoint.msgpack"
PLOTS = "plots"
# An experiment folder's seed sweeps: SEEDS/<variant>/ (see gdlab.run).
SEEDS = "seeds"
CHECKPOINT_FORMAT = "gdlab-checkpoint/3"
# What --resume may change with allow_changes: budgets and chunking, which
# change when the run stops, not the numbers of the steps it takes.
SAFE_CHANGES = ("train.stop.max_epochs", "train.stop.max_steps",
                "train.stop.max_grad_evals", "train.chunk_epochs")


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
      return metrics_log.json_safe(o.item())
    if dataclasses.is_dataclass(o):
      return dataclasses.asdict(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")

  def clean(o):
    if isinstance(o, dict):
      return {k: clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
      return [clean(v) for v in o]
    return metrics_log.json_safe(o)
  folders.atomic_write(path, json.dumps(clean(obj), indent=2,
                                       default=default) + "\n")


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
  if (not (run_dir / SUMMARY).exists() and
      not (run_dir / metrics_log.METRICS).exists()):
    raise ValueError(f"run_dir: expected a run folder holding {SUMMARY} and "
                     f"{metrics_log.METRICS}; got {str(run_dir)!r}.")
  config = {}
  if (run_dir / CONFIG).exists():
    config = _read_config(run_dir)
  summary = {}
  if (run_dir / SUMMARY).exists():
    summary = folders.read_json(run_dir / SUMMARY)
    if not isinstance(summary, dict):
      raise folders.FolderError(
          f"{run_dir / SUMMARY}: expected a JSON object; got "
          f"{type(summary).__name__}: the file is damaged.")
  steps, epochs = metrics_log.read_metrics(run_dir)
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
    data = config_lib.read_yaml(folders.read_text(path))
  except folders.FolderError:
    raise
  except Exception as e:  # PyYAML's errors
    raise folders.FolderError(f"{path}: expected the run's YAML config; got "
                      f"{type(e).__name__}: the file is damaged.") from None
  if data is not None and not isinstance(data, dict):
    raise folders.FolderError(f"{path}: expected a YAML mapping; got "
                      f"{type(data).__name__}: the file is damaged.")
  return data or {}


def _trajectory(run_dir: Path) -> np.ndarray | None:
  """The run's logged parameters, ``(steps + 1, P)``, or None if it has
  none; from ``trajectory.npz``, or an earlier version's JSON."""
  path = run_dir / TRAJECTORY
  if not path.exists():
    path = run_dir / TRAJECTORY_JSON
    if not path.exists():
      return None
  try:
    if path.suffix == ".npz":
      with np.load(path, allow_pickle=False) as f:
        rows = np.asarray(f["params"], dtype=float)
    else:
      rows = np.asarray(folders.read_json(path), dtype=float)
    if rows.ndim != 2:
      raise ValueError(f"{rows.ndim} dimensions")
    return rows
  except (TypeError, ValueError, KeyError, OSError, EOFError,
          zipfile.BadZipFile) as e:
    if isinstance(e, folders.FolderError):
      raise
    raise folders.FolderError(
        f"{path}: expected rows of numbers; got "
        f"{type(e).__name__}: the file is damaged.") from None


def load_history(run_dir: str | os.PathLike,
                 point: "Checkpoint | None" = None) -> history_lib.History:
  """The history logged in a run folder, to continue it from its checkpoint.

  With ``point`` (:func:`read_checkpoint`), exactly the rows it covers, and
  its compile and run times.
  """
  run_dir = Path(run_dir)
  rows = None if point is None else (point.meta["step_rows"],
                                     point.meta["epoch_rows"])
  steps, epochs = metrics_log.read_metrics(run_dir, rows=rows)
  steps.pop("step", None)
  history = history_lib.empty_history()
  if steps:
    history.steps = steps
  if epochs:
    history.epochs = epochs
  trajectory = _trajectory(run_dir)
  if trajectory is not None:
    n = history.num_steps
    # The parameters of every step; the row after them is the final
    # parameters, which write_run appends.
    if len(trajectory) <= n and n:
      raise folders.FolderError(
          f"{run_dir}: expected a trajectory of more than the {n} rows of the "
          f"steps {CHECKPOINT} covers; got {len(trajectory)}: the file was "
          f"cut. Start the run again in a new folder.")
    history.steps["params"] = trajectory[:n]
  if point is not None:
    history.compile_time = float(point.meta.get("compile_time", 0.0))
    history.run_time = float(point.meta.get("run_time", 0.0))
  else:
    summary = (folders.read_json(run_dir / SUMMARY)
               if (run_dir / SUMMARY).exists() else {})
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
  folders.atomic_write(Path(run_dir) / CHECKPOINT, blob)


def read_checkpoint(run_dir: str | os.PathLike) -> Checkpoint:
  """A run folder's checkpoint, its checksum verified.

  Raises :class:`gdlab.folders.FolderError` (one line naming the file) when
  it is damaged or was written by an older gdlab.
  """
  path = Path(run_dir) / CHECKPOINT
  try:
    blob = serialization.msgpack_restore(path.read_bytes())
  except OSError as e:
    raise folders.FolderError(
        f"{path}: cannot be read ({e.strerror}).") from None
  except Exception:  # msgpack's errors on damaged bytes
    raise folders.FolderError(
        f"{path}: expected a gdlab checkpoint; got bytes that do not parse: "
        f"the file is damaged. Start the run again in a new folder.") from None
  if isinstance(blob, dict) and blob.get("format") == "gdlab-checkpoint/2":
    raise folders.FolderError(
        f"{path}: a checkpoint of format 'gdlab-checkpoint/2', whose run "
        f"logged its steps in {metrics_log.METRICS}; this gdlab logs them in "
        f"{metrics_log.STEPS} (format {CHECKPOINT_FORMAT!r}) and reads such a "
        f"folder but does not resume it. Start the run again in a new "
        f"folder.")
  if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
    raise folders.FolderError(
        f"{path}: expected a checkpoint of format {CHECKPOINT_FORMAT!r}; got "
        f"{blob.get('format', 'none') if isinstance(blob, dict) else 'none'}"
        f" (written by another version of gdlab, or damaged). Start the run "
        f"again in a new folder.")
  state, meta_json = blob.get("state"), blob.get("meta")
  if (not isinstance(state, bytes) or not isinstance(meta_json, str) or
      blob.get("sha256") != _digest(meta_json, state)):
    raise folders.FolderError(
        f"{path}: the checksum does not match the contents: the file is "
        f"damaged. Start the run again in a new folder.")
  return Checkpoint(state, json.loads(meta_json))


def final_params(run_dir: str | os.PathLike, template):
  """The parameters in a run's checkpoint, shaped like ``template``."""
  state = serialization.msgpack_restore(read_checkpoint(run_dir).state)
  return serialization.from_state_dict(template, state["params"])


def data_counts(data) -> dict[str, int]:
  """``n_train`` and ``n_test`` of a run's data (a ``loop.Data``), as
  ``summary.json`` records them (``gdlab.report.data_sizes`` reads them)."""
  return {"n_train": int(data.x_train.shape[0]),
          "n_test": 0 if data.x_test is None else int(data.x_test.shape[0])}


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
    folders.atomic_write(run_dir / CONFIG, config_lib.dump(cfg))
    metrics_log.write_metrics(run_dir, steps, history.epochs)
  else:
    metrics_log.append_metrics(run_dir, steps, history.epochs, *written)
  if "params" in history.steps and len(history.steps["params"]):
    traj = np.asarray(history.steps["params"], float)
    if carry is not None:
      final = np.concatenate([np.ravel(np.asarray(p)) for p in
                              jax.tree_util.tree_leaves(carry.params)])
      traj = np.vstack([traj, final[None]])
    folders.atomic_write(run_dir / TRAJECTORY,
                         metrics_log.npz_bytes({"params": traj}))
  write_json(run_dir / SUMMARY, run_summary(cfg, history, extra))
  if carry is not None:
    write_checkpoint(run_dir, carry, {
        "step_rows": history.num_steps,
        "epoch_rows": len(history.epochs.get("epoch", ())),
        "compile_time": history.compile_time,
        "run_time": history.run_time,
        "config_sha256": folders.config_sha256(cfg)})


# ----------------------------------------------------------------------------
# Resuming: what an interrupted command left, and whether it may go on.


def clean_temporaries(folder: str | os.PathLike) -> None:
  """Removes the temporary files of writes that a killed process left
  (in ``steps/`` too)."""
  chunks = Path(folder) / metrics_log.STEP_CHUNKS
  for p in [*Path(folder).iterdir(),
            *(chunks.iterdir() if chunks.is_dir() else ())]:
    if folders.is_temporary(p.name) and p.is_file():
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
  ``allow_changes``; raises :class:`gdlab.folders.FolderError` naming the
  keys that differ otherwise, or when the data, the gdlab version or the
  folder's files do not match.
  """
  run_dir = Path(run_dir)
  marker = folders.read_marker(run_dir)
  if marker is None or marker.get("kind") != "run":
    raise folders.FolderError(
        f"--resume: expected a gdlab run folder (holding {folders.MARKER}); "
        f"got {str(run_dir)!r}.")
  if marker.get("gdlab") != gdlab.__version__:
    raise folders.FolderError(
        f"--resume: {str(run_dir)!r} was written by gdlab "
        f"{marker.get('gdlab')}; this is gdlab {gdlab.__version__}. Start "
        f"the run again in a new folder.")
  if not (run_dir / CONFIG).is_file():
    raise folders.FolderError(
        f"--resume: {str(run_dir / CONFIG)!r} is missing: the folder is "
        f"damaged.")
  text = folders.read_text(run_dir / CONFIG)
  if hashlib.sha256(text.encode()).hexdigest() != marker.get("config_sha256"):
    raise folders.FolderError(
        f"--resume: {str(run_dir / CONFIG)!r} was changed after the run "
        f"started (its fingerprint in {folders.MARKER} differs); gdlab "
        f"resumes only the config a run started with.")
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
    raise folders.FolderError(
        f"--resume: the config differs from the one {str(run_dir)!r} "
        f"started with in {shown}{more}{hint}, or start a new folder.")
  if data_digest is not None and marker.get("data_sha256") not in (
      None, data_digest):
    raise folders.FolderError(
        f"--resume: the data differ from those {str(run_dir)!r} started "
        f"with (their fingerprints differ); resume on the same data, or "
        f"start a new folder.")
  return changed


def describe(folder: str | os.PathLike) -> str:
  """What an interrupted command left in ``folder``, in a few words."""
  folder = Path(folder)
  if not folders.is_gdlab_folder(folder):
    return f"nothing was written to {folder}"
  checkpoints = [p for p in [folder / CHECKPOINT,
                             *folder.glob(f"runs/*/{CHECKPOINT}")]
                 if p.is_file()]
  if checkpoints:
    return f"results so far and checkpoints are in {folder}"
  return f"{folder} holds no checkpoint yet (--resume starts it over)"
