"""``edge_of_stability``: tracked sharpness against ``2 / eta`` (Cohen et al.).

Gradient descent with step ``eta`` on a quadratic with Hessian ``H`` is
stable only while ``lambda_max(H) < 2 / eta``.  Cohen et al. (2021) observe
that full-batch gradient descent on a neural network first raises the
sharpness ``lambda_max`` of the training loss (progressive sharpening) until
it reaches ``2 / eta``, then keeps it there, hovering about the threshold,
while the loss goes on falling, non-monotonically: the edge of stability.

The analysis reads the sharpness that the runs tracked
(``train.track: {metrics: [sharpness]}``, ``gdlab.tracking``) from their
logs; it computes nothing at new parameters.

Reference:
  J. Cohen, S. Kaur, Y. Li, J. Z. Kolter, A. Talwalkar, Gradient descent on
  neural networks typically occurs at the edge of stability, ICLR 2021.
"""

from __future__ import annotations

import numpy as np

from gdlab import plots
from gdlab import results
from gdlab.analyses import common
from gdlab.analyses.common import register
from gdlab.report import Section

# A run "reaches the edge" at its first tracked sharpness above this share
# of 2 / eta.
REACHED = 0.9


def tracked(run, name: str = "sharpness") -> tuple[np.ndarray, np.ndarray]:
  """``(epochs, values)`` of a tracked epoch column, finite values only.

  Raises:
    KeyError: when the run did not track ``name``.
  """
  values = np.asarray(run.epochs[name], float)
  epochs = np.asarray(run.epochs["epoch"], float)
  ok = np.isfinite(values)
  return epochs[ok], values[ok]


def edge_row(epochs: np.ndarray, sharpness: np.ndarray,
             loss: np.ndarray, eta: float) -> dict:
  """The numbers of one run against the threshold ``2 / eta``.

  Args:
    epochs, sharpness: the tracked epochs and their sharpness.
    loss: the training loss of every epoch (NaN where not evaluated).
    eta: the constant step size.

  Returns:
    ``threshold`` (``2 / eta``), ``initial_sharpness`` (the first tracked),
    ``max_sharpness``, ``ratio`` (the mean of ``sharpness / threshold`` over
    the tracked epochs in the second half of training, ``epoch > E / 2``),
    ``reached_epoch`` (the first tracked epoch with a sharpness above
    ``REACHED`` times the threshold, or None), ``loss_increases`` (epochs
    whose training loss exceeds the previous one) and ``non_monotone``.
  """
  threshold = 2.0 / eta
  late = epochs > epochs.max() / 2 if len(epochs) else epochs.astype(bool)
  reached = epochs[sharpness >= REACHED * threshold]
  loss = np.asarray(loss, float)
  loss = loss[np.isfinite(loss)]
  increases = int(np.sum(np.diff(loss) > 0))
  return {
      "eta": eta, "threshold": threshold,
      "initial_sharpness": float(sharpness[0]) if len(sharpness) else None,
      "max_sharpness": float(sharpness.max()) if len(sharpness) else None,
      "ratio": float(np.mean(sharpness[late]) / threshold) if late.any()
               else None,
      "reached_epoch": int(reached[0]) if len(reached) else None,
      "loss_increases": increases, "non_monotone": increases > 0,
  }


@register("edge_of_stability")
def edge_of_stability(exp, out, run_dirs, smoke=False) -> list[Section]:
  """Tracked sharpness of constant-step full-batch GD runs against ``2/eta``.

  Writes ``edge_of_stability.json`` (one row per run, see :func:`edge_row`,
  and the tracked series) and ``plots/edge_of_stability.png``
  (:func:`gdlab.plots.tracked`, with each run's ``2/eta``).
  """
  rows, runs, etas, payload = [], {}, {}, {"runs": []}
  for run_dir in run_dirs:
    rec = results.load_run(run_dir)
    cfg = common.run_config(rec)
    o = cfg.optimizer
    common.need(o.name == "gd" and o.line_search is None and not o.momentum
                and o.schedule == "constant" and
                cfg.train.regime.kind == "full_batch", "edge_of_stability",
                "full-batch gradient descent with a constant step", cfg)
    common.need("sharpness" in rec.epochs, "edge_of_stability",
                "the sharpness tracked (train.track: {metrics: "
                "[sharpness]})", cfg)
    epochs, sharpness = tracked(rec)
    row = {"run": rec.name, "epochs": int(rec.summary.get("epochs", 0)),
           "stop_reason": rec.summary.get("stop_reason"),
           **edge_row(epochs, sharpness, rec.epochs["train_loss"],
                      o.learning_rate)}
    rows.append(row)
    runs[rec.name] = rec
    etas[rec.name] = o.learning_rate
    payload["runs"].append(dict(row, tracked_epochs=epochs,
                                sharpness=sharpness))
  path = plots.tracked(runs, out / results.PLOTS / "edge_of_stability.png",
                       step_sizes=etas,
                       title=f"{exp.name}: sharpness against 2/eta")
  results.write_json(out / "edge_of_stability.json", payload)
  text = (
      "Sharpness = lambda_max of the Hessian of the training loss, tracked "
      "during training (Lanczos on the training set, gdlab.tracking). "
      "ratio = mean of sharpness / (2/eta) over the tracked epochs of the "
      "second half of training: about 1 at the edge of stability (Cohen et "
      f"al., ICLR 2021). reached = first tracked epoch with a sharpness "
      f"above {REACHED:g} (2/eta); loss increases = epochs whose training "
      "loss exceeds the previous epoch's.\n\n"
      + common.table(rows, [
          ("run", "run"), ("eta", "eta"), ("threshold", "2/eta"),
          ("initial_sharpness", "first tracked sharpness"),
          ("max_sharpness", "max sharpness"),
          ("ratio", "sharpness / (2/eta), second half"),
          ("reached_epoch", "reached (epoch)"),
          ("loss_increases", "loss increases"),
          ("non_monotone", "loss non-monotone")]))
  return [Section("Sharpness at the edge of stability", text, [path])]
