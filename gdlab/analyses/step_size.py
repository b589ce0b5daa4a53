"""``step_size``: each run's step size against ``2 / lambda_max``.

Gradient descent ``theta_{k+1} = theta_k - eta grad f(theta_k)`` on a
quadratic ``f`` with Hessian ``H`` moves the error along the eigenvector of
an eigenvalue ``lambda`` by the factor ``1 - eta lambda`` per step: it
converges when ``eta < 2 / lambda_max(H)`` and diverges (from a start with a
component along the top eigenvector) when ``eta > 2 / lambda_max``.  For
least squares with the mean squared error, ``f(theta) = s (1/n)
||A theta - y||^2`` with ``A = [X, 1]``, ``H = (2 s / n) A^T A`` exactly,
whatever ``theta``; the analysis computes its top eigenvalue in closed form
(``numpy.linalg.eigvalsh``).  For a neural network the Hessian changes as
the parameters move: the analysis gives the sharpness at initialisation
(``gdlab.curvature.sharpness``, Lanczos), and the sharpness tracked during
training where a run tracked it (``train.track``); ``eta`` above ``2 /
lambda_max`` at initialisation makes the first steps unstable.
"""

from __future__ import annotations

import jax
import numpy as np
from matplotlib.lines import Line2D

from gdlab import curvature
from gdlab import plots
from gdlab import results
from gdlab.analyses import common
from gdlab.analyses.common import register
from gdlab.report import Section

# Lanczos steps for the sharpness of a network at initialisation.
NUM_ITERS = 60


def least_squares_hessian(x: np.ndarray, bias: bool,
                          scale: float = 1.0) -> np.ndarray:
  """``H = (2 s / n) A^T A`` of ``s (1/n) ||A theta - y||^2``, ``A = [X, 1]``."""
  n = len(x)
  a = np.hstack([x, np.ones((n, 1))]) if bias else x
  return (2.0 * scale / n) * a.T @ a


def is_least_squares(cfg) -> bool:
  """A linear model with the mean squared error and no penalty."""
  return (cfg.model.kind == "linear" and cfg.loss.name == "mse" and
          cfg.loss.penalty is None)


def constant_step(cfg) -> float | None:
  """The step of constant-step plain gradient descent, else None."""
  o = cfg.optimizer
  if (o.name == "gd" and o.line_search is None and not o.momentum and
      o.schedule == "constant"):
    return float(o.learning_rate)
  return None


def lambda_max(cfg, data, objective) -> tuple[float, str]:
  """``(lambda_max at initialisation, how it was computed)``."""
  x, _ = common.train_arrays(data)
  if is_least_squares(cfg):
    h = least_squares_hessian(x, cfg.model.bias != "none",
                              common.mean_factor(cfg, len(x)))
    return float(np.linalg.eigvalsh(h)[-1]), "closed form"
  params = common.initial_params(cfg, objective)
  size = sum(int(np.size(p)) for p in jax.tree_util.tree_leaves(params))
  value = curvature.sharpness(objective, params, data.x_train, data.y_train,
                              num_iters=min(NUM_ITERS, size),
                              engine=cfg.train.engine)
  return float(value), f"Lanczos ({min(NUM_ITERS, size)} steps)"


def _row(rec, cfg, lam: float, method: str) -> dict:
  eta = constant_step(cfg)
  loss = np.asarray(rec.steps["loss"], float)
  finite = loss[np.isfinite(loss)]
  diverged = (rec.summary.get("stop_reason") == "diverged" or
              len(finite) < len(loss) or
              (len(finite) > 1 and finite[-1] > finite[0]))
  steps = np.asarray(rec.steps.get("step_size", ()), float)
  steps = steps[np.isfinite(steps)]
  row = {"run": rec.name, "model": "least squares" if is_least_squares(cfg)
         else cfg.model.kind, "eta": eta,
         "median_step": float(np.median(steps)) if len(steps) else None,
         "lambda_max": lam, "threshold": 2.0 / lam, "method": method,
         "eta_ratio": None if eta is None else eta * lam / 2.0,
         "predicted_diverges": None, "stop_reason":
         rec.summary.get("stop_reason"), "steps": len(loss),
         "first_loss": float(finite[0]) if len(finite) else None,
         "final_loss": float(finite[-1]) if len(finite) else None,
         "diverged": bool(diverged), "tracked_max_sharpness": None,
         "tracked_last_sharpness": None}
  if eta is not None:
    row["predicted_diverges"] = bool(eta > 2.0 / lam)
  sharp = np.asarray(rec.epochs.get("sharpness", ()), float)
  sharp = sharp[np.isfinite(sharp)]
  if len(sharp):
    row["tracked_max_sharpness"] = float(sharp.max())
    row["tracked_last_sharpness"] = float(sharp[-1])
  return row


def least_squares_check(rows: list[dict]) -> dict | None:
  """Whether the constant-step least-squares runs straddle ``2 / lambda``
  and do what the closed form predicts; None without such runs."""
  lsq = [r for r in rows if r["model"] == "least squares" and
         r["eta"] is not None]
  if not lsq:
    return None
  below = [r["run"] for r in lsq if not r["predicted_diverges"]]
  above = [r["run"] for r in lsq if r["predicted_diverges"]]
  return {"lambda_max": lsq[0]["lambda_max"],
          "threshold": lsq[0]["threshold"], "below": below, "above": above,
          "straddles": bool(below and above),
          "as_predicted": all(r["diverged"] == r["predicted_diverges"]
                              for r in lsq)}


def threshold_figure(rows: list[dict], path=None, *,
                     title: str = "step size against 2 / lambda_max"):
  """Each constant-step run's ``eta / (2 / lambda_max)``, one row a run.

  Log axis, with the threshold ``eta = 2 / lambda_max`` (ratio 1) dashed:
  points right of it are beyond the stability threshold.  Filled: the run
  diverged; open: it did not.  Least-squares runs are squares, networks
  circles; a key below the axes says so.  Each run keeps the colour of its
  place in ``rows`` (as in the figures of the runs' losses); runs without
  a constant step (a line search) are named under the axes.  Follows the
  contract of ``gdlab.plots``.
  """
  shown = [(i, r) for i, r in enumerate(rows) if r["eta"] is not None]
  left_out = [r["run"] for r in rows if r["eta"] is None]
  fig = plots.InlineFigure(figsize=(7.5, 2.2 + 0.45 * max(len(shown), 2)),
                           layout="constrained")
  ax = fig.add_subplot()
  ax.set_title(title)
  if not shown:
    plots.mark_no_data(ax, "constant step sizes")
    return plots.finish(fig, path)
  for y, (i, r) in enumerate(shown):
    colour = plots.run_colour(i)
    ax.plot(r["eta_ratio"], y, "s" if r["model"] == "least squares" else "o",
            ms=9, mew=2, color=colour,
            mfc=colour if r["diverged"] else "none")
    ax.annotate(f" eta = {r['eta']:.3g}, 2/lambda = {r['threshold']:.3g}",
                (r["eta_ratio"], y), fontsize="x-small",
                textcoords="offset points", xytext=(8, -3))
  ax.axvline(1.0, color="k", ls="--", lw=1)
  ax.set_xscale("log")
  lo = min(r["eta_ratio"] for _, r in shown)
  hi = max(r["eta_ratio"] for _, r in shown)
  ax.set_xlim(min(lo, 1.0) / 3, max(hi, 1.0) * 30)
  ax.set_yticks(range(len(shown)), [r["run"] for _, r in shown])
  ax.set_ylim(len(shown) - 0.5, -0.5)
  ax.set_xlabel("eta / (2 / lambda_max at initialisation)" + (
      f"\nnot shown (no constant step): {', '.join(left_out)}"
      if left_out else ""))
  ax.grid(True, axis="x", which="both", alpha=0.3)
  models = {r["model"] == "least squares" for _, r in shown}
  key = [Line2D([], [], color="k", ls="--", lw=1,
                label="eta = 2 / lambda_max")]
  key += [Line2D([], [], marker=m, ls="", ms=8, mew=2, color="0.3",
                 mfc="none", label=text)
          for m, text, lsq in (("s", "least squares (closed form)", True),
                               ("o", "network (Lanczos)", False))
          if lsq in models]
  key += [Line2D([], [], marker="o", ls="", ms=8, mew=2, color="0.3",
                 mfc=fill, label=text)
          for fill, text in (("0.3", "filled: diverged"),
                             ("none", "open: converged"))]
  fig.legend(handles=key, loc="outside lower center", ncols=3,
             fontsize="small")
  return plots.finish(fig, path)


@register("step_size")
def step_size(exp, out, run_dirs, smoke=False) -> list[Section]:
  """``lambda_max`` at initialisation and ``2 / lambda_max`` against each
  run's step size; least squares in closed form.

  Writes ``step_size.json`` (``runs``: one row per run; ``least_squares``:
  see :func:`least_squares_check`), ``plots/step_size_threshold.png`` and
  ``plots/step_size_loss.png``.
  """
  rows, runs, known = [], {}, {}
  for run_dir in run_dirs:
    rec = results.load_run(run_dir)
    cfg = common.run_config(rec)
    # Runs of one problem and initialisation share their lambda_max.
    same = (cfg.seed, cfg.data, cfg.model, cfg.loss, cfg.train.dtype,
            cfg.train.engine)
    if same not in known:
      data, _, objective = common.problem(cfg, smoke)
      known[same] = lambda_max(cfg, data, objective)
    lam, method = known[same]
    rows.append(_row(rec, cfg, lam, method))
    runs[rec.name] = rec
  lsq = least_squares_check(rows)
  plot_dir = out / results.PLOTS
  figure = threshold_figure(rows, plot_dir / "step_size_threshold.png",
                            title=f"{exp.name}: step size against "
                            "2 / lambda_max")
  fig = plots.loss_curves(runs, None, x="step", y="loss", log_y=True,
                          title=f"{exp.name}: training loss per step")
  # Room between the title and the triangles on the top edge.
  fig.axes[0].set_title(fig.axes[0].get_title(), pad=14)
  losses = plots.finish(fig, plot_dir / "step_size_loss.png")
  results.write_json(out / "step_size.json", {"runs": rows,
                                               "least_squares": lsq})
  text = (
      "lambda_max = the largest eigenvalue of the Hessian of the training "
      "loss at the initial parameters: in closed form for least squares "
      "(H = (2/n) A^T A with A = [X, 1], numpy.linalg.eigvalsh), by Lanczos "
      "for the network. Constant-step gradient descent on a quadratic "
      "converges for eta < 2/lambda_max and diverges beyond it; for the "
      "network the threshold at initialisation governs the first steps. "
      "eta / (2/lambda) > 1 is beyond the threshold; diverged = the run "
      "stopped as diverged or its loss ended above where it started. A "
      "network may start beyond the threshold and still train: its first "
      "steps move it to flatter parameters, where its sharpness (tracked "
      "during training where the run tracked it) stays near 2/eta.")
  if lsq is not None:
    text += (
        f"\n\nLeast squares: lambda_max = {lsq['lambda_max']:.6g}, "
        f"2/lambda_max = {lsq['threshold']:.6g}; below: "
        f"{', '.join(lsq['below']) or 'none'}; above: "
        f"{', '.join(lsq['above']) or 'none'}. "
        + ("The step sizes straddle the threshold and the runs "
           f"{'behave' if lsq['as_predicted'] else 'do NOT all behave'} as "
           "the closed form predicts." if lsq["straddles"] else
           "The step sizes do not straddle the threshold on these data."))
  text += "\n\n" + common.table(rows, [
      ("run", "run"), ("model", "model"), ("eta", "eta"),
      ("median_step", "median step taken"),
      ("lambda_max", "lambda_max at init"), ("threshold", "2/lambda_max"),
      ("eta_ratio", "eta / (2/lambda_max)"),
      ("predicted_diverges", "beyond 2/lambda"),
      ("diverged", "diverged"), ("stop_reason", "stop reason"),
      ("final_loss", "final loss"),
      ("tracked_max_sharpness", "max tracked sharpness")])
  return [Section("Step size against the stability threshold 2/lambda_max",
                  text, [figure, losses])]
