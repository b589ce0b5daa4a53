"""What a run logs, on the host: its history.

``gdlab.loop`` runs the steps on device in chunks; after each chunk the host
appends the chunk's rows for the steps and epochs that actually ran to a
:class:`History` (NumPy arrays), which ``gdlab.progress`` shows while the
run goes on.

In a notebook a history shows as its headline (:attr:`History.headline`:
stop reason, steps, epochs, the final metrics that apply, timings), one line
as text and a small table as HTML, never its arrays; :class:`gdlab.FitResult`
and a loaded run (``gdlab.results.RunRecord``) show the same way.
:meth:`History.to_dataframe` gives the per-epoch or per-step rows as a
pandas ``DataFrame``; pandas is an optional extra (``pip install pandas``).
"""

from __future__ import annotations

import dataclasses
import html
import math
import numbers
from typing import Any

import numpy as np

STEP_METRICS = ("loss", "grad_norm", "update_norm", "step_size", "fun_evals",
                "grad_evals")
EPOCH_METRICS = ("train_loss", "test_loss", "train_accuracy", "test_accuracy")
TABLES = ("epoch", "step")
# The headline's keys and their labels in the HTML table, in order.
LABELS = {
    "name": "run",
    "path": "folder",
    "stop_reason": "stop reason",
    "steps": "steps",
    "epochs": "epochs",
    "loss": "final loss (last step)",
    "train_loss": "final training loss",
    "test_loss": "final test loss",
    "train_accuracy": "final training accuracy",
    "test_accuracy": "final test accuracy",
    "compile_time": "compile time (s)",
    "run_time": "run time (s)",
    "steps_per_second": "steps/s",
}
_SECONDS = ("compile_time", "run_time")


@dataclasses.dataclass
class History:
  """What a run logged, as NumPy arrays on the host.

  Attributes:
    steps: per update: ``loss``, ``grad_norm``, ``update_norm``,
      ``step_size``, ``fun_evals``, ``grad_evals`` (those of that update).
    epochs: per epoch: ``epoch``, ``step``, ``fun_evals`` and ``grad_evals``
      (cumulative), ``train_loss``, ``test_loss``, ``train_accuracy``,
      ``test_accuracy`` (NaN where they do not apply) and ``time`` (seconds of
      running since the start, spread evenly over the epochs of a chunk);
      with ``fit(..., track=...)`` also the tracked quantities
      (``sharpness``, ...; ``gdlab.tracking``), NaN on the epochs not
      tracked.
    stop_reason: why the run stopped (``gdlab.stopping.REASONS``, or
      ``"interrupted"``).
    compile_time: seconds spent compiling.
    run_time: seconds spent running compiled code.

  Derived values are properties: :attr:`num_steps`, :attr:`num_epochs`,
  :attr:`steps_per_second`, :attr:`final` and :attr:`headline`.
  """
  steps: dict[str, np.ndarray]
  epochs: dict[str, np.ndarray]
  stop_reason: str = "running"
  compile_time: float = 0.0
  run_time: float = 0.0

  @property
  def num_steps(self) -> int:
    """The number of updates logged."""
    return len(self.steps.get("loss", ()))

  @property
  def num_epochs(self) -> int:
    """The last logged epoch's number (0 before the first)."""
    epochs = self.epochs.get("epoch", ())
    return int(epochs[-1]) if len(epochs) else 0

  @property
  def steps_per_second(self) -> float:
    """Updates per second of running compiled code (NaN before any)."""
    return self.num_steps / self.run_time if self.run_time > 0 else float("nan")

  @property
  def final(self) -> dict[str, Any]:
    """The last epoch's metrics, and the run's totals."""
    out = {k: float(v[-1]) for k, v in self.epochs.items() if len(v)}
    out.update(stop_reason=self.stop_reason, steps=self.num_steps,
               compile_time=self.compile_time, run_time=self.run_time,
               steps_per_second=self.steps_per_second)
    return out

  @property
  def headline(self) -> dict[str, Any]:
    """What a notebook shows of the run, keyed as :data:`LABELS`.

    The stop reason, steps and epochs, the last epoch's
    :data:`EPOCH_METRICS` that are not NaN (the last step's ``loss`` when
    there is none), the compile and run times, and the steps per second
    (once there are any).
    """
    out = {"stop_reason": self.stop_reason, "steps": self.num_steps,
           "epochs": self.num_epochs}
    final = self.final
    metrics = {k: final[k] for k in EPOCH_METRICS
               if k in final and not math.isnan(final[k])}
    loss = self.steps.get("loss", ())
    if not metrics and len(loss) and not math.isnan(float(loss[-1])):
      metrics["loss"] = float(loss[-1])
    out.update(metrics)
    out.update(compile_time=self.compile_time, run_time=self.run_time)
    if not math.isnan(self.steps_per_second):
      out["steps_per_second"] = self.steps_per_second
    return out

  def summary_line(self, title: str = "History", /, **first) -> str:
    """``title(stop_reason='...', steps=..., ...)``: :attr:`headline` on a line.

    Steps per second are left out; times are in seconds, numbers to four
    significant digits.

    Args:
      title: the name before the parentheses.
      **first: fields shown first (a run's ``name`` and ``path``); they
        replace the headline's fields of the same name.
    """
    fields = _fields(self.headline, first)
    fields.pop("steps_per_second", None)
    text = ", ".join(f"{k}={_text(k, v)}" for k, v in fields.items())
    return f"{title}({text})"

  def summary_html(self, title: str = "History", /, **first) -> str:
    """:attr:`headline` as a small HTML table captioned ``title``.

    ``first``: as for :meth:`summary_line`.
    """
    rows = "".join(
        f'<tr><th style="text-align:left">{html.escape(LABELS.get(k, k))}'
        f'</th><td style="text-align:left">{html.escape(_cell(v))}</td></tr>'
        for k, v in _fields(self.headline, first).items())
    return (f"<table><caption>{html.escape(title)}</caption>"
            f"<tbody>{rows}</tbody></table>")

  def __repr__(self) -> str:
    return self.summary_line()

  def _repr_html_(self) -> str:
    return self.summary_html()

  def to_dataframe(self, kind: str = "epoch"):
    """The per-epoch or per-step rows as a ``pandas.DataFrame``.

    Args:
      kind: ``"epoch"``: one row per epoch, the columns of :attr:`epochs`;
        ``"step"``: one row per update, a 1-based ``step`` column (unless the
        steps hold one) and the one-dimensional columns of :attr:`steps`
        (logged parameters, one array per step, are left out).

    Returns:
      A ``DataFrame`` with a default integer index; NaN marks a metric that
      was not evaluated or does not apply.

    Raises:
      ValueError: ``kind`` is neither ``"epoch"`` nor ``"step"``.
      ImportError: pandas is not installed.
    """
    if kind not in TABLES:
      raise ValueError(f"kind: expected one of "
                       f"{', '.join(map(repr, TABLES))}; got {kind!r}.")
    try:
      # An optional extra, imported on first use: importing it costs every
      # `import gdlab` a quarter of a second.
      import pandas  # pylint: disable=import-outside-toplevel
    except ImportError:
      raise ImportError("to_dataframe: needs pandas, an optional extra; "
                        "install it with `pip install pandas` (or "
                        "`pip install gdlab[pandas]`).") from None
    table = self.epochs if kind == "epoch" else self.steps
    columns = {k: np.asarray(v) for k, v in table.items() if np.ndim(v) == 1}
    if kind == "step" and "step" not in columns:
      rows = len(next(iter(columns.values()), ()))
      columns = {"step": np.arange(1, rows + 1), **columns}
    return pandas.DataFrame(columns)


def _fields(headline: dict[str, Any], first: dict[str, Any]) -> dict[str, Any]:
  return {**first, **{k: v for k, v in headline.items() if k not in first}}


def _number(v) -> str:
  if isinstance(v, numbers.Integral):
    return str(int(v))
  return f"{float(v):.4g}"


def _text(key: str, v) -> str:
  """One field of :meth:`History.summary_line`."""
  if isinstance(v, str):
    return repr(v)
  return _number(v) + ("s" if key in _SECONDS else "")


def _cell(v) -> str:
  """One value of :meth:`History.summary_html`."""
  return v if isinstance(v, str) else _number(v)


def empty_history() -> History:
  return History({k: np.zeros((0,)) for k in STEP_METRICS},
                 {k: np.zeros((0,)) for k in EPOCH_METRICS + (
                     "epoch", "step", "fun_evals", "grad_evals", "time")})


def append_chunk(history: History, epochs: dict, steps: dict,
                 time_start: float, time_end: float) -> History:
  """Appends one chunk's active rows (host arrays) to a history."""
  e_active = np.asarray(epochs["active"], bool)
  s_active = np.asarray(steps["active"], bool)
  n_e = int(e_active.sum())
  times = time_start + (time_end - time_start) * np.arange(1, n_e + 1) / max(
      n_e, 1)
  new_e = {k: np.asarray(v)[e_active] for k, v in epochs.items()
           if k != "active"}
  new_e["time"] = times
  new_s = {k: np.asarray(v)[s_active] for k, v in steps.items()
           if k != "active"}
  def cat(a, b):
    return {k: (np.concatenate([a[k], b[k]]) if k in a and len(a[k])
                else b[k]) for k in b}
  return dataclasses.replace(history, steps=cat(history.steps, new_s),
                             epochs=cat(history.epochs, new_e))
