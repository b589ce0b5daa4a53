"""``closed_form``: gradient descent on least squares against the normal equations."""

from __future__ import annotations

import numpy as np

from gdlab import plots
from gdlab import results
from gdlab.analyses import common
from gdlab.analyses.common import register
from gdlab.report import Section


@register("closed_form")
def closed_form(exp, out, run_dirs, smoke=False) -> list[Section]:
  """Least squares by ``numpy.linalg.lstsq`` against each run's final point.

  With ``A = [X, 1]`` (the bias column where the model has a bias) and
  ``f(theta) = s (1/n) ||A theta - y||^2``, the minimiser solves the normal
  equations ``A^T A theta = A^T y``.  For constant-step gradient descent
  (no momentum, no line search) the error follows in closed form,
  ``theta_k - theta* = (I - eta H)^k (theta_0 - theta*)`` with
  ``H = (2 s / n) A^T A``, and ``f(theta_k) - f* = e_k^T H e_k / 2``: the
  figure draws this prediction (circles) over the logged loss gap.
  Writes ``closed_form.json``.
  """
  rows, curves, payload, floors = [], {}, {"runs": []}, []
  for run_dir in run_dirs:
    rec = results.load_run(run_dir)
    cfg = common.run_config(rec)
    common.need(cfg.model.kind == "linear" and cfg.loss.name == "mse" and
          cfg.loss.penalty is None, "closed_form",
          "a linear model with the mse loss and no penalty", cfg)
    data, _, objective = common.problem(cfg, smoke)
    x, y = common.train_arrays(data)
    n = len(x)
    a = np.hstack([x, np.ones((n, 1))]) if cfg.model.bias != "none" else x
    theta_star = np.linalg.lstsq(a, y, rcond=None)[0].ravel()
    s = common.mean_factor(cfg, n)
    f = lambda t: s * float(np.mean((a @ t - y.ravel()) ** 2))
    f_star = f(theta_star)
    theta0 = common.linear_theta(common.initial_params(cfg, objective))
    theta = common.linear_theta(common.final_params(run_dir,
                                        common.initial_params(cfg, objective)))
    dist = float(np.linalg.norm(theta - theta_star))
    gap = np.asarray(rec.steps["loss"], float) - f_star
    series = {"measured": gap}
    row = {"run": rec.name, "steps": len(gap), "f_star": f_star,
           "final_gap": f(theta) - f_star, "distance": dist,
           "relative_distance": dist / float(np.linalg.norm(theta_star)),
           "rate": None, "prediction_error": None}
    o = cfg.optimizer
    if o.name == "gd" and o.line_search is None and not o.momentum and \
        o.schedule == "constant":
      h = (2 * s / n) * a.T @ a
      m = np.eye(len(theta0)) - o.learning_rate * h
      # The logged loss resolves the gap only down to about eps f*: the
      # prediction is drawn down to 10 eps f* and compared above 1e6 eps f*.
      eps = float(np.finfo(np.asarray(data.x_train).dtype).eps)
      e, predicted = theta0 - theta_star, []
      while len(predicted) < len(gap) and (not predicted or
                                           predicted[-1] > 10 * eps * f_star):
        predicted.append(0.5 * e @ h @ e)
        e = m @ e
      series["predicted"] = predicted
      row["rate"] = float(np.max(np.abs(np.linalg.eigvalsh(m))))
      p = np.asarray(predicted)
      above = p > 1e6 * eps * f_star
      row["prediction_error"] = float(np.max(
          np.abs(gap[:len(p)] - p)[above] / p[above]))
    curves[rec.name if "predicted" in series else
           f"{rec.name} (no closed form)"] = common.series(**series)
    # Gaps below the loss's rounding level (about eps f*) are noise.
    floors.append(10 * float(np.finfo(np.asarray(data.x_train).dtype).eps)
                  * abs(f_star))
    rows.append(row)
    payload["runs"].append(dict(row, theta=theta, theta_star=theta_star))
  path = plots.loss_curves(
      curves, out / results.PLOTS / "closed_form_gap.png", x="step",
      y=("measured", "predicted"), log_y=True, ylabel="f(theta_k) - f*",
      title="loss gap to the normal-equation solution: measured (lines), "
      "closed form (circles)", floor=max(floors) or None,
      styles={"measured": {"lw": 2.0},
              "predicted": {"ls": "", "marker": "o", "ms": 4.5,
                            "mfc": "white", "mew": 1.3, "markevery": 6,
                            "zorder": 3}})
  results.write_json(out / "closed_form.json", payload)
  text = (
      "theta* from numpy.linalg.lstsq on the training set (bias column "
      "appended); f* = f(theta*).  distance = ||theta_T - theta*|| for the "
      "final parameters in each run's checkpoint; rate = max |1 - eta "
      "lambda_i(H)|, the contraction factor of constant-step GD per step; "
      "the predicted gap is drawn down to 10 eps f*, about the resolution "
      "of the logged loss, and compared with the measured one where it "
      "exceeds 1e6 eps f*.\n\n"
      + common.table(rows, [("run", "run"), ("steps", "steps"), ("f_star", "f*"),
                      ("final_gap", "f(theta_T) - f*"),
                      ("distance", "||theta_T - theta*||"),
                      ("relative_distance", "relative distance"),
                      ("rate", "predicted rate"),
                      ("prediction_error",
                       "max relative deviation from the predicted gap")]))
  return [Section("Gradient descent against the normal equations", text,
                  [path])]
