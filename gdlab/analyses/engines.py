"""``gradcheck``: the hand-written backpropagation against ``jax.grad``."""

from __future__ import annotations

import collections
import math
import time
from pathlib import Path
from typing import Any

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


# Errors below this are drawn as 0 (log10 = -18): exact agreement.
_ZERO = 1e-18


def _has_raw_error(row) -> bool:
  """Whether a row records its raw finite-difference error and noise floor.

  Rows built positionally, or saved before these were recorded, do not.
  """
  return not (math.isnan(float(getattr(row, "fd_raw", math.nan))) or
              math.isnan(float(getattr(row, "fd_noise", math.nan))))


def _worst_rows(rows, key) -> dict[tuple[str, str], Any]:
  """Per ``(activation, loss)``, the row with the largest ``key(row)``."""
  worst = {}
  for r in rows:
    cell = (r.activation, r.loss)
    if (cell not in worst or math.isnan(key(worst[cell]))
        or key(r) > key(worst[cell])):
      worst[cell] = r
  return worst


def _heat_panel(fig, ax, acts, losses, cells, tol: float, title: str,
                label: str) -> None:
  """One heat map of the grid, annotated, with its colour bar.

  ``cells`` maps ``(activation, loss)`` to ``(value, text, failed)``: the
  cell is coloured by ``log10 value`` (at least ``log10`` :data:`_ZERO`),
  shows ``text`` and, if ``failed``, "FAIL"; missing cells stay empty.
  """
  logs = np.full((len(acts), len(losses)), np.nan)
  for (act, loss), (value, _, _) in cells.items():
    logs[acts.index(act), losses.index(loss)] = math.log10(max(value, _ZERO))
  cmap, norm = _tolerance_cmap(math.log10(tol), math.log10(_ZERO))
  im = ax.imshow(logs, cmap=cmap, norm=norm, aspect="auto")
  for (act, loss), (_, text, failed) in cells.items():
    i, j = acts.index(act), losses.index(loss)
    r, g, b, _ = cmap(norm(logs[i, j]))
    dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
    ax.text(j, i, text + ("\nFAIL" if failed else ""), ha="center",
            va="center", fontsize=8, linespacing=1.1,
            color="white" if dark else "black",
            fontweight="bold" if failed else "normal")
  ax.set_xticks(range(len(losses)), losses, rotation=35, ha="right",
                rotation_mode="anchor", fontsize=9)
  ax.set_yticks(range(len(acts)), acts, fontsize=9)
  ax.tick_params(length=0)
  ax.set_title(title, fontsize=10)
  bar = fig.colorbar(im, ax=ax, fraction=0.06, pad=0.02, aspect=25)
  bar.set_label(label, fontsize=9)
  bar.ax.tick_params(labelsize=8)
  bar.ax.axhline(math.log10(tol), color="k", lw=1.5)


def _error_text(value: float) -> str:
  """A cell's error: ``0`` up to :data:`_ZERO`, else one significant digit."""
  return "0" if value <= _ZERO else f"{value:.0e}"


def gradcheck_table(rows, path=None, *, autodiff_tol: float | None = None,
                    fd_tol: float | None = None,
                    title: str | None = None) -> Figure | Path:
  """Heat maps of the gradient-check grid (:func:`gdlab.gradcheck.grid`).

  Two panels, one cell per (activation, loss) pair, each showing the row
  with the largest error over the other axes of the grid (bias arrangement,
  depth, reduction):

  * the hand-written gradient against ``jax.grad``: ``log10`` of the
    relative error ``vs_autodiff``, annotated with it;
  * against central finite differences: ``log10`` of the raw relative error
    ``fd_raw``, annotated with it and, below, with the same row's noise
    floor ``fd_noise`` after ``<`` (the difference is within what central
    differences resolve) or ``>``.  When some row lacks ``fd_raw`` the
    panel shows ``vs_finite_diff``, the error less the noise, instead.

  Colours turn from green to red at the panel's tolerance; a cell with a
  failing row says "FAIL" (against finite differences a row fails when its
  error less the noise, ``vs_finite_diff``, is above the tolerance).

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
  autodiff_tol = autodiff_tol or gradcheck.AUTODIFF_TOL
  fd_tol = fd_tol or gradcheck.FD_TOL
  acts = list(dict.fromkeys(r.activation for r in rows))
  losses = list(dict.fromkeys(r.loss for r in rows))
  fails = collections.defaultdict(lambda: [False, False])
  for r in rows:
    fails[r.activation, r.loss][0] |= r.vs_autodiff > autodiff_tol
    fails[r.activation, r.loss][1] |= r.vs_finite_diff > fd_tol
  raw = all(_has_raw_error(r) for r in rows)

  def fd_error(r) -> float:
    return float(r.fd_raw if raw else r.vs_finite_diff)

  def fd_text(r) -> str:
    if not raw:
      return _error_text(r.vs_finite_diff)
    below = "<" if r.fd_raw < r.fd_noise else ">"
    return f"{_error_text(r.fd_raw)}\n{below} {r.fd_noise:.0e}"

  # Wide enough for two-line titles and the colour bars' labels; the second
  # panel shares the first one's activation labels.
  fig = plots.InlineFigure(
      figsize=(min(14.0, 1.3 + 2 * max(0.62 * len(losses) + 1.2, 3.4)),
               0.42 * len(acts) + 2.5),
      layout="constrained")
  fig.get_layout_engine().set(w_pad=0.04, wspace=0.02)
  ax_auto, ax_fd = fig.subplots(1, 2, sharey=True)
  _heat_panel(
      fig, ax_auto, acts, losses,
      {cell: (float(r.vs_autodiff), _error_text(r.vs_autodiff),
              fails[cell][0])
       for cell, r in _worst_rows(rows, lambda r: r.vs_autodiff).items()},
      autodiff_tol, f"manual vs jax.grad\n(tol {autodiff_tol:.0e})",
      "log10 relative error")
  _heat_panel(
      fig, ax_fd, acts, losses,
      {cell: (fd_error(r), fd_text(r), fails[cell][1])
       for cell, r in _worst_rows(rows, fd_error).items()},
      fd_tol, f"manual vs finite differences\n(tol {fd_tol:.0e}"
      f"{' on error - noise floor' if raw else ''})",
      "log10 raw relative error\n(cell: error, < or > its noise floor)"
      if raw else "log10 relative error less noise")
  passed = sum(bool(r.passed) for r in rows)
  fig.suptitle(title or f"Gradient check: worst relative error per "
               f"activation and loss ({passed}/{len(rows)} rows pass)",
               fontsize=11)
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
