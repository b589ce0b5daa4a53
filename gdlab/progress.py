"""Progress on the host: a bar where someone watches, plain lines in a log.

Between chunks, never inside compiled code, the loop's driver
(``gdlab.loop.drive``) hands the histories to a :class:`Progress`, which
shows them one of two ways (:func:`mode`):

* ``"bar"``, on a terminal or in a notebook: a ``tqdm.auto`` bar, a widget
  in Jupyter and Colab and a text bar on a terminal, e.g.
  ``default/sgd:  45%|####5     | 18/40 epochs [00:01<00:01, loss 0.1712,
  2,753 steps/s]``;
* ``"lines"``, where the output is a file (CI, nohup, Slurm logs): a plain
  line at the first update, then at most one every :data:`LINE_SECONDS`
  seconds, and one at the end, e.g. ``default/sgd: 18/40 epochs, loss
  0.1712, 2,753 steps/s, ETA 00:01``.

The rate is steps per second of compiled code running
(``History.steps_per_second``: compile time and the host's work between
chunks left out), the figure ``summary.json`` records; the ETA is wall
time (on a bar, tqdm's estimate; on lines, the wall time per epoch so far).

What ``show`` asks (``gdlab.fit(progress=...)``): ``None``, a bar on a
terminal or in a notebook and nothing otherwise; ``True``, a bar there and
plain lines elsewhere; ``False``, nothing.  The run lifecycle
(``gdlab.run``, ``gdlab.sweep``) and the ``gdlab`` command show progress
as ``True`` does.

A run that stops for any reason but its epoch budget says why in one line
(:func:`stop_message`); :func:`result_line` is the line the run lifecycle
prints after each run, on standard output, while progress goes to standard
error.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import sys
import time
from typing import Any, Callable, Sequence

from tqdm import auto as tqdm_auto

from gdlab import stopping
from gdlab.history import History

# Seconds between two plain lines (the "lines" mode).
LINE_SECONDS = 10.0


@dataclasses.dataclass(frozen=True)
class Options:
  """How to show progress: ``gdlab.fit(progress=Options(...))``.

  Attributes:
    show: ``None``, ``True`` or ``False``: see the module docstring.
    label: names the run on its bar and lines (``"default/sgd"``).
    stream: where to write (default: ``sys.stderr`` when shown).
    every: seconds between plain lines (default :data:`LINE_SECONDS`).
  """
  show: bool | None = None
  label: str = ""
  stream: Any = None
  every: float | None = None


def options(progress: bool | None | Options) -> Options:
  """``progress`` as :class:`Options`; ``None``, ``True``, ``False`` are its
  ``show``."""
  if isinstance(progress, Options):
    return progress
  if progress is None or isinstance(progress, bool):
    return Options(show=progress)
  raise TypeError(f"progress: expected None, True, False or a "
                  f"gdlab.progress.Options; got {type(progress).__name__}.")


def lifecycle(progress: bool | None | Options, label: str) -> Options:
  """The options of the run lifecycle: ``show=None`` becomes ``True``, and
  ``label`` names the run unless the options name it already."""
  opts = options(progress)
  return dataclasses.replace(
      opts, show=True if opts.show is None else opts.show,
      label=opts.label or label)


def in_notebook() -> bool:
  """Whether this process is a Jupyter (or Colab) kernel, as tqdm.auto asks."""
  ipython = sys.modules.get("IPython")
  try:
    return "IPKernelApp" in ipython.get_ipython().config
  except AttributeError:  # no IPython, or no shell running
    return False


def _is_terminal(stream) -> bool:
  try:
    return bool(stream.isatty())
  except (AttributeError, ValueError):  # no isatty, or a closed stream
    return False


def mode(show: bool | None, stream) -> str | None:
  """``"bar"``, ``"lines"`` or ``None`` (nothing) for ``show`` on ``stream``."""
  if show is False:
    return None
  if in_notebook() or _is_terminal(stream):
    return "bar"
  return "lines" if show else None


def _interval(seconds: float) -> str:
  return tqdm_auto.tqdm.format_interval(max(0.0, seconds))


class Progress:
  """One display of ``n`` out of ``total``: a bar, plain lines, or nothing.

  Args:
    total: the count at the end (epochs, rows).
    label: names what is counted, at the start of the bar and every line.
    unit: what is counted, singular (``"epoch"``, ``"row"``).
    show, stream, every: see :class:`Options`.
    initial: the count at the start (a resumed run's epochs).
    clock: seconds, for the period of the lines and their ETA.

  Attributes:
    mode: ``"bar"``, ``"lines"`` or ``None``.
    bar: the ``tqdm.auto`` bar in the ``"bar"`` mode, else ``None``.
    n: the count shown last.
  """

  def __init__(self, total: int, *, label: str = "", unit: str = "epoch",
               show: bool | None = None, stream=None,
               every: float | None = None, initial: int = 0,
               clock: Callable[[], float] = time.monotonic):
    self.stream = sys.stderr if stream is None else stream
    self.mode = mode(show, self.stream)
    self.total, self.label, self.unit = int(total), label, unit
    self.every = LINE_SECONDS if every is None else every
    self.clock = clock
    self.n = self.initial = int(initial)
    self.info = ""
    self.start = clock()
    self._last_line = None   # clock() at the last line
    self._shown = None       # (n, info) of the last line
    self._updated = False
    self.bar = None
    if self.mode == "bar":
      self.bar = tqdm_auto.tqdm(
          total=self.total, initial=self.initial, desc=label,
          file=self.stream, dynamic_ncols=True, leave=True,
          bar_format=("{l_bar}{bar}| {n_fmt}/{total_fmt} " + unit +
                      "s [{elapsed}<{remaining}{postfix}]"))

  @classmethod
  def of(cls, progress: bool | None | Options, total: int, **kwargs):
    """A display for ``fit(progress=...)``'s argument; ``kwargs`` as for
    the constructor (``unit``, ``initial``, ``clock``)."""
    opts = options(progress)
    return cls(total, label=opts.label, show=opts.show, stream=opts.stream,
               every=opts.every, **kwargs)

  def update(self, n: int, info: str = "") -> None:
    """Shows the count ``n`` and ``info`` (``"loss 0.17, 2,753 steps/s"``)."""
    self.n, self.info, self._updated = int(n), info, True
    if self.bar is not None:
      self.bar.set_postfix_str(info, refresh=False)
      self.bar.update(self.n - self.bar.n)
    elif self.mode == "lines":
      now = self.clock()
      if self._last_line is None or now - self._last_line >= self.every:
        self._line(now)

  def _line(self, now: float) -> None:
    elapsed = now - self.start
    done = self.n - self.initial
    if self.n >= self.total:
      when = f"{_interval(elapsed)} elapsed"
    elif done > 0:
      when = f"ETA {_interval(elapsed * (self.total - self.n) / done)}"
    else:
      when = "ETA ?"
    parts = [f"{self.n}/{self.total} {self.unit}s"] + (
        [self.info] if self.info else []) + [when]
    self.write(", ".join(parts))
    self._last_line, self._shown = now, (self.n, self.info)

  def write(self, text: str) -> None:
    """One line, ``label: text``, on the display's stream (if it shows)."""
    if self.mode is None:
      return
    line = f"{self.label}: {text}" if self.label else text
    if self.bar is not None and not self.bar.disable:
      self.bar.write(line, file=self.stream)
    else:
      self.stream.write(line + "\n")
      self.stream.flush()

  def close(self, message: str | None = None) -> None:
    """Ends the display (the last line, where the lines have not shown the
    last update), then writes ``message`` in a line of its own."""
    if self.bar is not None:
      self.bar.close()
    elif (self.mode == "lines" and self._updated
          and self._shown != (self.n, self.info)):
      self._line(self.clock())
    if message:
      self.write(message)
    self.mode = None  # closed: later calls write nothing


# ----------------------------------------------------------------------------
# What a display shows of runs' histories.


def last_epoch(history: History) -> int:
  epochs = history.epochs.get("epoch", ())
  return int(epochs[-1]) if len(epochs) else 0


def epoch_budget(criteria: stopping.Criteria, steps_per_epoch: int) -> int:
  """The epochs a run can last: ``max_epochs``, or fewer under ``max_steps``."""
  if criteria.max_steps is None:
    return criteria.max_epochs
  return min(criteria.max_epochs,
             math.ceil(criteria.max_steps / max(1, steps_per_epoch)))


def _last_finite(values) -> float:
  for v in reversed(values):
    if math.isfinite(float(v)):
      return float(v)
  return math.nan


def _rate(steps_per_second: float) -> str:
  if not math.isfinite(steps_per_second):
    return "? steps/s"
  if steps_per_second >= 100:
    return f"{steps_per_second:,.0f} steps/s"
  return f"{steps_per_second:.3g} steps/s"


def describe(histories: Sequence[History]) -> tuple[int, str]:
  """``(epoch, info)`` of runs: one run's loss and steps/s, or, for several
  (a sweep's group), how many are still running and their steps/s."""
  epoch = max(last_epoch(h) for h in histories)
  if len(histories) == 1:
    h = histories[0]
    loss = _last_finite(h.epochs.get("train_loss", ()))
    if math.isnan(loss):  # no evaluation yet: the last batch's loss
      loss = _last_finite(h.steps.get("loss", ())[-1:])
    return epoch, f"loss {loss:.4g}, {_rate(h.steps_per_second)}"
  running = sum(h.stop_reason == "running" for h in histories)
  run_time = histories[0].run_time  # shared: the runs run together
  steps = sum(h.num_steps for h in histories)
  rate = steps / run_time if run_time > 0 else math.nan
  return epoch, f"{running}/{len(histories)} running, {_rate(rate)}"


def _why(history: History, criteria: stopping.Criteria | None) -> str:
  """Why a run stopped, with the numbers of the test that held."""
  reason = history.stop_reason
  steps = history.steps
  loss = float(steps["loss"][-1]) if len(steps.get("loss", ())) else math.nan
  if criteria is None or reason in ("interrupted", "max_epochs"):
    return reason
  if reason == "diverged":
    grad = steps.get("grad_norm", ())
    first = float(steps["loss"][0]) if len(steps.get("loss", ())) else 0.0
    if not math.isfinite(loss):
      return f"diverged (loss {loss})"
    if len(grad) and not math.isfinite(float(grad[-1])):
      return f"diverged (gradient norm {float(grad[-1])})"
    factor = criteria.divergence_factor
    if factor is not None and first != 0 and loss > factor * abs(first):
      return (f"diverged (loss {loss:.2g} > {factor:g} x first loss "
              f"{first:.2g})")
    return "diverged (the update would make the parameters non-finite)"
  if reason == "loss_tol":
    return f"loss_tol reached (loss {loss:.3g} <= {criteria.loss_tol:g})"
  if reason == "rel_tol":
    return (f"rel_tol reached (relative change of the loss <= "
            f"{criteria.rel_tol:g} for {criteria.patience} steps)")
  if reason in ("grad_tol", "param_tol"):
    key, what = {"grad_tol": ("grad_norm", "gradient norm"),
                 "param_tol": ("update_norm", "update norm")}[reason]
    value = (float(steps[key][-1]) if len(steps.get(key, ()))
             else math.nan)
    return (f"{reason} reached ({what} {value:.3g} <= "
            f"{getattr(criteria, reason):g})")
  if reason == "max_steps":
    return f"max_steps reached ({history.num_steps:,} steps)"
  if reason == "max_grad_evals":
    evals = history.epochs.get("grad_evals", ())
    count = f"{int(evals[-1]):,} " if len(evals) else ""
    return f"max_grad_evals reached ({count}gradient evaluations)"
  return reason


def stop_message(history: History,
                 criteria: stopping.Criteria | None = None) -> str | None:
  """``"stopped at epoch 12: diverged (loss 3.1e+09 > 1e+06 x first loss
  ...)"`` for a run that stopped for any reason but its epoch budget;
  ``None`` for one that spent it (or is still running)."""
  if history.stop_reason in ("running", "max_epochs"):
    return None
  return f"stopped at epoch {last_epoch(history)}: {_why(history, criteria)}"


def group_message(histories: Sequence[History]) -> str:
  """``"12 runs stopped: 8 max_epochs, 4 diverged"``: a sweep group's end."""
  counts = collections.Counter(h.stop_reason for h in histories)
  reasons = ", ".join(f"{n} {r}" for r, n in sorted(
      counts.items(), key=lambda rn: (-rn[1], rn[0])))
  return f"{len(histories)} runs stopped: {reasons}"


def result_line(label: str, history: History) -> str:
  """One line about a finished run: its stop reason, epochs, final losses
  and accuracies where it has them, training and compile time.

  ``default/sgd: max_epochs after 40 epochs (57,600 steps); train loss
  0.0123, accuracy 0.9972; test loss 0.0871, accuracy 0.9722; training 20.9
  s (2,753 steps/s), compiling 0.81 s``
  """
  epochs = last_epoch(history)
  parts = [f"{label}: {history.stop_reason} after {epochs} "
           f"epoch{'' if epochs == 1 else 's'} ({history.num_steps:,} "
           f"step{'' if history.num_steps == 1 else 's'})"]
  for split in ("train", "test"):
    loss = _last_finite(history.epochs.get(f"{split}_loss", ()))
    acc = _last_finite(history.epochs.get(f"{split}_accuracy", ()))
    shown = ([f"loss {loss:.4g}"] if math.isfinite(loss) else []) + (
        [f"accuracy {acc:.4g}"] if math.isfinite(acc) else [])
    if shown:
      parts.append(f"{split} " + ", ".join(shown))
  parts.append(f"training {history.run_time:.3g} s "
               f"({_rate(history.steps_per_second)}), compiling "
               f"{history.compile_time:.3g} s")
  return "; ".join(parts)
