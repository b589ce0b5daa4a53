"""Runs to TensorBoard: a run's metrics and hyperparameters as event files.

A :class:`Writer` writes what a run logs (its :class:`~gdlab.history.History`)
into one TensorBoard run folder through tensorboardX, an optional extra
(``pip install "gdlab[tensorboard]"``).  It is a ``gdlab.fit`` callback::

    from gdlab.tensorboard import Writer

    with Writer("tb/sgd", hparams={"learning_rate": 0.1}) as writer:
      gdlab.fit(objective, optimizer, data, key=key, on_chunk=writer)

Called after every chunk with the history so far, it writes only the rows
added since its last call, then flushes, so the events on disk cover every
chunk it was given.  Closing it (:meth:`Writer.close`, or leaving the
``with`` block, also on an exception or an interruption) flushes and closes
its event file.  The ``gdlab`` command writes one such folder per run,
``<dir>/<run name>``, with ``--tensorboard DIR`` or the config key
``train.tensorboard`` (``gdlab.run``; sweeps from their histories once the
vmapped program has run, ``gdlab.sweep``).

Tags and steps (TensorBoard's *global step*):

* ``step/<metric>`` for every one-dimensional column of ``History.steps``
  (``step/loss``, ``step/grad_norm``, ``step/update_norm``,
  ``step/step_size``, ...), at the update's 1-based number: the run's step
  counter once the update is done (the ``step`` column of a history read
  from a run folder).
* ``epoch/<metric>`` for every column of ``History.epochs`` but ``step``
  (``epoch/train_loss``, ``epoch/test_accuracy``, ``epoch/epoch``,
  ``epoch/time``, ...), at the step counter at the end of the epoch (its
  ``step`` column), not at the epoch's number: step and epoch curves share
  one axis, and ``epoch/epoch`` maps it to epochs.  In the full-batch regime
  the two numbers are equal.
* NaN marks a metric that was not evaluated (``eval_every``) or not computed
  (``step_metrics: loss``); it is left out.  Values are stored as TensorBoard
  scalars, float32.

Hyperparameters go to TensorBoard's HParams plugin (an experiment, session
start and session end summary in the run's own folder, the way PyTorch's
``add_hparams`` writes them, but without a sub-folder), with
:data:`HPARAM_METRICS` as its metrics, and as a text summary ``hparams`` (a
Markdown table, tag ``hparams/text_summary``) for TensorBoards without
the plugin.  Numbers, strings and
booleans are kept; lists become their JSON text; ``None`` is left out.

Resuming.  A writer given the history a run resumes from (``start``) takes
its rows as written and writes from the next one.  Its event file starts
with a restart marker at the first step it may write (a ``SessionLog``
START event, what tensorboardX's ``purge_step`` writes; step 1 without
``start``): TensorBoard then hides the events of earlier files from that
step on, such as those a process wrote after its last checkpoint before it
was killed, which the resumed run writes again.  Every writer opens a new
event file, named to sort after the folder's earlier ones.  A new run into a
folder that holds event files would mix two runs (TensorBoard keeps the
first hyperparameters it reads): the command refuses it (:func:`check`).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from gdlab import config as config_lib
from gdlab import folders
from gdlab import results
from gdlab.history import History

EXTRA = 'pip install "gdlab[tensorboard]"'
# The metrics the HParams dashboard shows next to each run's hyperparameters.
HPARAM_METRICS = ("epoch/train_loss", "epoch/test_loss",
                  "epoch/train_accuracy", "epoch/test_accuracy", "step/loss")
# The config key of the folder: a path, not a hyperparameter.
CONFIG_KEY = "train.tensorboard"
# TensorBoard's event files: ``events.out.tfevents.<seconds>.<host>...``.
EVENTS_GLOB = "events.out.tfevents.*"

__all__ = ["EXTRA", "HPARAM_METRICS", "Writer", "check", "config_hparams",
           "require", "run_logdir"]


def require(what: str = "Writer"):
  """The ``tensorboardX`` module, or an ``ImportError`` naming the extra.

  Args:
    what: what needs it, named at the head of the message.
  """
  try:
    # An optional extra, imported on first use: `import gdlab` does not pay
    # for it.
    import tensorboardX  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ImportError(f"{what}: writing TensorBoard event files needs "
                      f"tensorboardX, an optional extra; install it with "
                      f"`{EXTRA}` (or `pip install tensorboardX`).") from None
  return tensorboardX


def run_logdir(cfg: config_lib.RunConfig) -> Path | None:
  """The TensorBoard folder of a run: ``<train.tensorboard>/<name>``."""
  if cfg.train.tensorboard is None:
    return None
  return Path(cfg.train.tensorboard) / cfg.name


def check(cfg: config_lib.RunConfig, *, resume: bool = False) -> None:
  """Checks, before anything is written, that a run can write its events.

  Nothing to check without ``train.tensorboard``.  Otherwise tensorboardX
  must be installed and, unless the run resumes, its folder
  (:func:`run_logdir`) must hold no event files.

  Raises:
    ImportError: tensorboardX is not installed.
    gdlab.folders.FolderError: a new run's folder holds event files.
  """
  logdir = run_logdir(cfg)
  if logdir is None:
    return
  require(CONFIG_KEY)
  if not resume and logdir.is_dir() and any(logdir.glob(EVENTS_GLOB)):
    raise folders.FolderError(
        f"{CONFIG_KEY}: expected a new folder, or one without event files, "
        f"for run {cfg.name!r}; got {str(logdir)!r}, which holds the events "
        f"of an earlier run. Give another TensorBoard folder or remove it.")


def config_hparams(cfg: config_lib.RunConfig) -> dict[str, Any]:
  """A run's hyperparameters: its flattened config, less the folder key."""
  flat = results.flatten(config_lib.to_dict(cfg))
  flat.pop(CONFIG_KEY, None)
  return flat


def _hparam_value(v: Any) -> bool | float | str | None:
  """A value the HParams plugin takes (``None``: leave it out)."""
  if isinstance(v, np.generic):
    v = v.item()
  if v is None or isinstance(v, (bool, str, int, float)):
    return v
  return json.dumps(v, default=str)


def _text_table(hparams: Mapping[str, Any]) -> str:
  """Hyperparameters as a two-column Markdown table."""
  rows = [f"| {k} | {v if isinstance(v, str) else json.dumps(v)} |"
          for k, v in hparams.items()]
  return "\n".join(["| hyperparameter | value |", "|---|---|"] + rows)


def _rows(table: Mapping[str, np.ndarray]) -> int:
  """The number of rows of a history table (0 for an empty one)."""
  return max((len(v) for v in table.values() if np.ndim(v) == 1), default=0)


def _columns(table: Mapping[str, np.ndarray], skip: tuple[str, ...] = ()
             ) -> dict[str, np.ndarray]:
  """The numeric one-dimensional columns of a history table."""
  out = {}
  for k, v in table.items():
    v = np.asarray(v)
    if k in skip or v.ndim != 1:
      continue
    if np.issubdtype(v.dtype, np.number) or v.dtype == bool:
      out[k] = v
  return out


class Writer:
  """A run's TensorBoard event file: a ``gdlab.fit`` callback.

  Events are written synchronously with tensorboardX's ``EventsWriter`` (its
  ``SummaryWriter`` queues them for a thread, and its ``flush`` leaves the
  queue as it is): once :meth:`write` returns, they are in the file.

  Args:
    logdir: the run's TensorBoard folder (made if missing).
    hparams: the run's hyperparameters (a flat mapping, such as
      :func:`config_hparams` of its config), written once, when the writer
      opens; ``None`` for none.
    start: the history the run resumes from: its rows count as written
      (see the module docstring); ``None`` for a new run.

  Raises:
    ImportError: tensorboardX is not installed (naming
      ``pip install "gdlab[tensorboard]"``).
  """

  def __init__(self, logdir: str | os.PathLike, *,
               hparams: Mapping[str, Any] | None = None,
               start: History | None = None):
    self._lib = lib = require("Writer")
    self.logdir = Path(logdir)
    self._steps = _rows(start.steps) if start is not None else 0
    self._epochs = _rows(start.epochs) if start is not None else 0
    self.logdir.mkdir(parents=True, exist_ok=True)
    # A nanosecond suffix: writers opened in the same second get files that
    # do not overwrite one another and sort in the order they were opened.
    self._file = lib.event_file_writer.EventsWriter(
        str(self.logdir / "events"), f".{time.time_ns()}")
    event_pb2 = lib.proto.event_pb2
    # The restart marker: TensorBoard drops earlier events from this step on.
    self._event(event_pb2.Event(step=self._steps + 1,
                                session_log=event_pb2.SessionLog(
                                    status=event_pb2.SessionLog.START)))
    if hparams is not None:
      values = {str(k): _hparam_value(v) for k, v in hparams.items()}
      values = {k: v for k, v in values.items() if v is not None}
      for summary in lib.summary.hparams(values,
                                         dict.fromkeys(HPARAM_METRICS)):
        self._event(event_pb2.Event(summary=summary))
      self._event(event_pb2.Event(summary=lib.summary.text(
          "hparams", _text_table(values))))
    self._file.flush()

  def _event(self, event) -> None:
    event.wall_time = time.time()
    self._file.write_event(event)

  def _scalars(self, rows: dict[int, list], prefix: str,
               table: Mapping[str, np.ndarray], steps: np.ndarray,
               first: int) -> None:
    """Gathers the scalars of ``table[first:]`` into ``rows`` by step."""
    value_cls = self._lib.proto.summary_pb2.Summary.Value
    for name, column in _columns(table, skip=("step",)).items():
      for step, value in zip(steps[first:], column[first:]):
        value = float(value)
        if not math.isnan(value):
          rows.setdefault(int(step), []).append(value_cls(
              tag=f"{prefix}/{name}", simple_value=value))

  def write(self, history: History) -> None:
    """Writes the rows ``history`` gained since the last call, and flushes."""
    n_steps, n_epochs = _rows(history.steps), _rows(history.epochs)
    rows: dict[int, list] = {}
    # A history read from a run folder numbers its steps in a column.
    steps = history.steps.get("step")
    steps = (np.arange(1, n_steps + 1) if steps is None
             else np.asarray(steps))
    self._scalars(rows, "step", history.steps, steps, self._steps)
    if n_epochs > self._epochs:
      self._scalars(rows, "epoch", history.epochs,
                    np.asarray(history.epochs["step"]), self._epochs)
    pb = self._lib.proto
    for step in sorted(rows):
      self._event(pb.event_pb2.Event(
          step=step, summary=pb.summary_pb2.Summary(value=rows[step])))
    self._file.flush()
    self._steps, self._epochs = n_steps, n_epochs

  def __call__(self, carry, history: History) -> None:
    """``fit``'s ``on_chunk(carry, history)``: :meth:`write` of the history."""
    del carry
    self.write(history)

  def close(self) -> None:
    """Flushes and closes the event file (a second call does nothing)."""
    if self._file is not None:
      self._file.close()
      self._file = None

  def __enter__(self) -> Writer:
    return self

  def __exit__(self, *exc) -> None:
    self.close()
