"""``gradcheck``: the hand-written backpropagation against ``jax.grad``."""

from __future__ import annotations

import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib import colormaps
from matplotlib import colors as mcolors
from matplotlib.figure import Figure

from gdlab import gradcheck
from gdlab import plots
from gdlab import results
from gdlab.objective import value_and_grad_fn
from gdlab.analyses import common
from gdlab.analyses.common import register
from gdlab.report import Section


GRADCHECK_GRID = dict(biases=("per_neuron",), depths=(1,))
GRADCHECK_SMOKE_GRID = dict(activation_names=("tanh",),
                            loss_names=("softmax_cross_entropy",),
                            biases=("per_neuron",), depths=(1,))


def time_gradients(objective, params, x, y,
                   engines=("manual", "autodiff"),
                   repeats: int = 50) -> dict[str, float]:
  """Median seconds per jitted ``(value, grad)`` call of each engine.

  The engines are called in turn, ``repeats`` rounds after a warm-up call
  each, so a change in the machine's load affects them alike.
  """
  fns = {e: jax.jit(value_and_grad_fn(objective, e)) for e in engines}
  for fn in fns.values():
    jax.block_until_ready(fn(params, x, y))
  times = {e: [] for e in engines}
  for _ in range(repeats):
    for e, fn in fns.items():
      t0 = time.perf_counter()
      jax.block_until_ready(fn(params, x, y))
      times[e].append(time.perf_counter() - t0)
  return {e: float(np.median(t)) for e, t in times.items()}


def _tolerance_cmap(log_tol: float, low: float):
  """Greens below ``log_tol``, oranges to reds above, on ``[low, 0]``."""
  below = max(1, round(8 * (log_tol - low)))
  above = max(1, round(-8 * log_tol))
  rgba = np.vstack([colormaps["Greens_r"](np.linspace(0.0, 0.75, below)),
                    colormaps["OrRd"](np.linspace(0.35, 0.95, above))])
  return mcolors.ListedColormap(rgba), mcolors.Normalize(low, 0.0)


def gradcheck_table(rows, path=None, *, autodiff_tol: float | None = None,
                    fd_tol: float | None = None,
                    title: str | None = None) -> Figure | Path:
  """Heat maps of the gradient-check grid (:func:`gdlab.gradcheck.grid`).

  Two panels, the hand-written gradient against ``jax.grad`` and against
  finite differences; each cell is ``log10`` of the worst relative error of
  an (activation, loss) pair over the other axes of the grid (bias
  arrangement, depth, reduction), annotated with the error.  Colours turn
  from green to red at the panel's tolerance; cells above it say "FAIL".

  Args:
    rows: :class:`gdlab.gradcheck.Row` records (or objects with the same
      fields).
    path: the PNG to write, or None: the figure is returned unsaved (the
      contract of :mod:`gdlab.plots`).
    autodiff_tol, fd_tol: the tolerances (default: those of
      :mod:`gdlab.gradcheck`).
    title: the figure title.

  Returns:
    The figure when ``path`` is None, else ``path``.
  """
  rows = list(rows)
  if not rows:
    raise ValueError("rows: expected at least one gradient-check row; got "
                     "none.")
  acts = list(dict.fromkeys(r.activation for r in rows))
  losses = list(dict.fromkeys(r.loss for r in rows))
  panels = (("vs_autodiff", "manual vs jax.grad",
             autodiff_tol or gradcheck.AUTODIFF_TOL),
            ("vs_finite_diff", "manual vs finite differences",
             fd_tol or gradcheck.FD_TOL))
  # Each panel wide enough for its two-line title and its colour bar's
  # label beside the next panel's.
  fig = plots.InlineFigure(
      figsize=(2 * max(1.1 * len(losses) + 2.4, 4.4), 0.5 * len(acts) + 2.6),
      layout="constrained")
  floor = 1e-18
  for p, (field, name, tol) in enumerate(panels):
    worst = np.full((len(acts), len(losses)), np.nan)
    for r in rows:
      i, j = acts.index(r.activation), losses.index(r.loss)
      worst[i, j] = np.fmax(worst[i, j], float(getattr(r, field)))
    logs = np.log10(np.maximum(worst, floor))
    cmap, norm = _tolerance_cmap(math.log10(tol), math.log10(floor))
    ax = fig.add_subplot(1, 2, p + 1)
    im = ax.imshow(logs, cmap=cmap, norm=norm, aspect="auto")
    for i in range(len(acts)):
      for j in range(len(losses)):
        v = worst[i, j]
        if np.isnan(v):
          continue
        r, g, b, _ = cmap(norm(logs[i, j]))
        dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
        failed = v > tol
        ax.text(j, i, ("0" if v <= floor else f"{v:.0e}") +
                ("\nFAIL" if failed else ""), ha="center", va="center",
                fontsize="small", color="white" if dark else "black",
                fontweight="bold" if failed else "normal")
    ax.set_xticks(range(len(losses)), losses, rotation=35, ha="right")
    ax.set_yticks(range(len(acts)), acts)
    ax.set_title(f"{name}\n(tol {tol:.0e})")
    bar = fig.colorbar(im, ax=ax, label="log10 relative error")
    bar.ax.axhline(math.log10(tol), color="k", lw=1.5)
  passed = sum(bool(r.passed) for r in rows)
  fig.suptitle(title or f"Gradient check: worst relative error per "
               f"activation and loss\n({passed}/{len(rows)} rows pass)")
  return plots.finish(fig, path)


@register("gradcheck")
def gradcheck_analysis(exp, out, run_dirs, smoke=False) -> list[Section]:
  """The gradient-check grid, the engines' loss curves and their speed.

  Runs :func:`gdlab.gradcheck.grid` (every activation x every loss, one
  hidden layer, per-neuron biases; the one row of tanh with softmax
  cross-entropy under ``smoke``) in the precision the runs use, draws
  :func:`gradcheck_table`, compares the logged losses of the
  runs with those of the first run, and times one jitted gradient of the
  first run's model on its whole training set with each engine (median of
  repeats).  Writes ``gradcheck.json``.
  """
  recs = [results.load_run(d) for d in run_dirs]
  cfg = common.run_config(recs[0])
  data, _, objective = common.problem(cfg, smoke)
  rows = gradcheck.grid(**(GRADCHECK_SMOKE_GRID if smoke else
                           GRADCHECK_GRID))
  precision = str(jnp.zeros(()).dtype)
  table = gradcheck_table(rows, out / results.PLOTS / "gradcheck.png")
  passed = sum(bool(r.passed) for r in rows)
  ref = np.asarray(recs[0].steps["loss"], float)
  curves = []
  for rec in recs:
    loss = np.asarray(rec.steps["loss"], float)
    k = min(len(loss), len(ref))
    diff = np.abs(loss[:k] - ref[:k])
    curves.append({"run": rec.name, "engine": common.run_config(rec).train.engine,
                   "steps": len(loss), "max_abs_diff": float(diff.max()),
                   "max_rel_diff": float(np.max(diff / np.maximum(
                       np.abs(ref[:k]), 1e-300)))})
  params = common.initial_params(cfg, objective)
  repeats = 5 if smoke else 200
  seconds = time_gradients(objective, params, data.x_train, data.y_train,
                           repeats=repeats)
  speed = [{"engine": e, "seconds": t} for e, t in seconds.items()]
  for s in speed:
    s["microseconds"] = 1e6 * s["seconds"]
    s["relative"] = s["seconds"] / speed[1]["seconds"]
  results.write_json(out / "gradcheck.json", {
      "precision": precision, "rows": [r._asdict() for r in rows],
      "passed": passed, "curves": curves, "speed": speed,
      "timed_on": {"records": int(data.x_train.shape[0]),
                   "repeats": repeats}})
  check = (
      f"{passed}/{len(rows)} rows pass in {precision} (tolerances "
      f"{gradcheck.AUTODIFF_TOL:g} against jax.grad, {gradcheck.FD_TOL:g} "
      "against central finite differences).")
  same = ("Logged loss per step of each run against the first run "
          f"({recs[0].name}).\n\n" + common.table(curves, [
              ("run", "run"), ("engine", "engine"), ("steps", "steps"),
              ("max_abs_diff", "max |loss - loss_ref|"),
              ("max_rel_diff", "max relative difference")]))
  fast = (f"One jitted (value, gradient) call of the runs' model over "
          f"all {int(data.x_train.shape[0])} training records, median of "
          f"{repeats} calls of each engine (in turn) after a warm-up, "
          f"{precision}.\n\n" + common.table(
              speed, [("engine", "engine"),
                      ("microseconds", "time per gradient (us)"),
                      ("relative", "relative to jax.grad")]))
  return [("Gradient check: hand-written against jax.grad", check, [table]),
          ("Same loss curves from both engines", same, []),
          ("Speed of the two engines", fast, [])]
