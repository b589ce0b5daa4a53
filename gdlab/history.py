"""What a run logs, on the host: the history and the progress line.

``gdlab.loop`` runs the steps on device in chunks; after each chunk the host
appends the chunk's rows for the steps and epochs that actually ran to a
:class:`History` (NumPy arrays), and :class:`Progress` updates a one-line
display on a terminal.
"""

from __future__ import annotations

import dataclasses
import sys
import time

import numpy as np

STEP_METRICS = ("loss", "grad_norm", "update_norm", "step_size", "fun_evals",
                "grad_evals")
EPOCH_METRICS = ("train_loss", "test_loss", "train_accuracy", "test_accuracy")


@dataclasses.dataclass
class History:
  """What a run logged, as NumPy arrays on the host.

  Attributes:
    steps: per update: ``loss``, ``grad_norm``, ``update_norm``,
      ``step_size``, ``fun_evals``, ``grad_evals`` (those of that update).
    epochs: per epoch: ``epoch``, ``step``, ``fun_evals`` and ``grad_evals``
      (cumulative), ``train_loss``, ``test_loss``, ``train_accuracy``,
      ``test_accuracy`` (NaN where they do not apply) and ``time`` (seconds of
      running since the start, spread evenly over the epochs of a chunk).
    stop_reason: why the run stopped (``gdlab.stopping.REASONS``, or
      ``"interrupted"``).
    compile_time: seconds spent compiling.
    run_time: seconds spent running compiled code.
  """
  steps: dict[str, np.ndarray]
  epochs: dict[str, np.ndarray]
  stop_reason: str = "running"
  compile_time: float = 0.0
  run_time: float = 0.0

  @property
  def num_steps(self) -> int:
    return len(self.steps.get("loss", ()))

  @property
  def steps_per_second(self) -> float:
    return self.num_steps / self.run_time if self.run_time > 0 else float("nan")

  def final(self) -> dict[str, float]:
    """The last epoch's metrics, and the run's totals."""
    out = {k: float(v[-1]) for k, v in self.epochs.items() if len(v)}
    out.update(stop_reason=self.stop_reason, steps=self.num_steps,
               compile_time=self.compile_time, run_time=self.run_time,
               steps_per_second=self.steps_per_second)
    return out


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


class Progress:
  """A one-line progress display on a terminal; silent otherwise."""

  def __init__(self, total_epochs: int, stream=None, enabled: bool | None = None):
    self.stream = stream or sys.stderr
    self.enabled = (self.stream.isatty() if enabled is None else enabled)
    self.total = total_epochs
    self.start = time.perf_counter()

  def update(self, epoch: int, steps: int, loss: float) -> None:
    if not self.enabled:
      return
    elapsed = time.perf_counter() - self.start
    rate = steps / elapsed if elapsed > 0 else 0.0
    eta = elapsed * (self.total - epoch) / max(epoch, 1)
    self.stream.write(f"\repoch {epoch}/{self.total}  loss {loss:.4g}  "
                      f"{rate:,.0f} steps/s  ETA {eta:5.1f}s ")
    self.stream.flush()

  def close(self) -> None:
    if self.enabled:
      self.stream.write("\n")
      self.stream.flush()
