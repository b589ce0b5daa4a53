"""``subgradient_bound``: the subgradient method's f_best - f* against the classical bound."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sklearn.linear_model import Lasso
from sklearn.svm import SVC

from gdlab import config as config_lib
from gdlab import plots
from gdlab import results
from gdlab.analyses import common
from gdlab.analyses.common import register
from gdlab.report import Section


def _svm_optimum(x, y, lam: float, s: float, bias: bool):
  """The l2-regularised hinge loss by libsvm (``sklearn.svm.SVC``).

  ``f(w, b) = s mean_i max(0, 1 - y_i (x_i w + b)) + (lam/2) ||w||^2`` is
  ``lam`` times the SVC primal ``||w||^2/2 + C sum_i xi_i`` with
  ``C = s / (n lam)`` (the bias unpenalised), a quadratic program that libsvm
  solves in its dual.  The dual value at libsvm's multipliers,
  ``lam (sum_i a_i - ||w||^2 / 2)``, is a certified lower bound on ``f*``.
  """
  if not bias:
    raise config_lib.ConfigError(
        "analysis: 'subgradient_bound' solves the hinge SVM with an "
        "unpenalised bias (libsvm); expected model.bias other than 'none' "
        "and loss.penalize_bias false.")
  y = y.ravel()
  n = len(y)
  svc = SVC(kernel="linear", C=s / (n * lam), tol=1e-10, shrinking=False)
  svc.fit(x, y)
  w = svc.coef_.ravel()
  f = lambda w, b: (s * np.mean(np.maximum(0.0, 1.0 - y * (x @ w + b))) +
                    0.5 * lam * w @ w)
  # libsvm's intercept is an average over free vectors; the exact best bias
  # for its w is one of the kinks y_i (x_i w + b) = 1 of the piecewise linear
  # f(w, .).
  kinks = np.r_[svc.intercept_[0], y - x @ w]
  b = float(kinks[np.argmin([f(w, k) for k in kinks])])
  lower = lam * (np.abs(svc.dual_coef_).sum() - 0.5 * w @ w)
  return np.r_[w, b], f(w, b), lower, "libsvm (sklearn.svm.SVC, linear " \
      "kernel, C = s/(n lambda), bias refined over the kinks), dual value " \
      "as certificate"


def _lasso_optimum(x, y, lam: float, s: float, bias: bool):
  """LASSO by coordinate descent (``sklearn.linear_model.Lasso``).

  ``f(w, b) = s (1/n) ||x w + b - y||^2 + lam ||w||_1`` equals ``2 s`` times
  sklearn's ``(1/(2n)) ||y - x w - b||^2 + alpha ||w||_1`` with
  ``alpha = lam / (2 s)``; the bias is eliminated by centring.  The dual
  point ``u = r/n`` scaled into ``||x^T u||_inf <= alpha`` gives the lower
  bound ``2 s (u^T y - n ||u||^2 / 2) <= f*``.
  """
  y = y.ravel()
  n = len(y)
  xm, ym = (x.mean(0), y.mean()) if bias else (np.zeros(x.shape[1]), 0.0)
  xc, yc = x - xm, y - ym
  alpha = lam / (2 * s)
  model = Lasso(alpha=alpha, fit_intercept=False, tol=1e-14,
                max_iter=1_000_000).fit(xc, yc)
  w = model.coef_.ravel()
  b = ym - xm @ w
  r = yc - xc @ w
  u = r / n
  u = u * min(1.0, alpha / max(np.max(np.abs(xc.T @ u)), 1e-300))
  lower = 2 * s * (u @ yc - 0.5 * n * u @ u)
  value = s * np.mean((x @ w + b - y) ** 2) + lam * np.abs(w).sum()
  theta = np.r_[w, b] if bias else w
  return theta, value, lower, "coordinate descent (sklearn.linear_model." \
      "Lasso, alpha = lambda/(2s), tol 1e-14), dual point as certificate"


def optimum(cfg: config_lib.RunConfig, data):
  """``(theta*, f*, lower bound on f*, solver)`` of a convex run config.

  Supported: a linear model with the hinge loss and an l2 penalty (SVM) or
  with ``mse`` and an l1 penalty (LASSO), one output, the bias (if any)
  unpenalised.  ``theta*`` is laid out as :func:`common.linear_theta`.
  """
  common.need(cfg.model.kind in ("linear", "logistic") and
        cfg.model.output_activation == "identity" and
        not cfg.loss.penalize_bias and
        (cfg.loss.name, cfg.loss.penalty) in (("hinge", "l2"),
                                              ("mse", "l1")),
        "subgradient_bound",
        "a linear model with hinge + l2 (SVM) or mse + l1 (LASSO), the "
        "bias unpenalised", cfg)
  x, y = common.train_arrays(data)
  if y.shape[1] != 1:
    raise config_lib.ConfigError(
        f"analysis: 'subgradient_bound' needs one output; data "
        f"{cfg.data.name!r} has {y.shape[1]}.")
  solve = _svm_optimum if cfg.loss.name == "hinge" else _lasso_optimum
  return solve(x, y, cfg.loss.strength, common.mean_factor(cfg, len(x)),
               cfg.model.bias != "none")


def fbest_gap(runs, f_star: float, bounds=None, path=None, *,
              log_x: bool = False,
              title: str | None = None) -> Figure | Path:
  """``f_best^(k) - f*`` against ``k`` on a log axis, with bound curves.

  For the subgradient method, which is not a descent method, the quantity
  of interest is the best value so far, ``f_best^(k) = min_{i <= k} f(x_i)``.

  Args:
    runs: mapping ``name -> f`` where ``f`` is an array of values (the best
      so far is taken, so raw ``f(x_k)`` works too), a pair ``(f, bound)``
      with ``bound`` an array drawn dashed in the run's colour (one legend
      entry says so for every run) or None, or a
      run whose per-step ``loss`` is used.
    f_star: the optimal value ``f*``.
    bounds: None or a mapping ``name -> array`` of further theoretical
      bounds on ``f_best^(k) - f*``, drawn dashed in grey.
    path: the PNG to write, or None: the figure is returned unsaved (the
      contract of :mod:`gdlab.plots`).
    log_x: also a log axis for ``k`` (``O(1/sqrt(k))`` rates become lines).
    title: the figure title.

  Returns:
    The figure when ``path`` is None, else ``path``.  Gaps that are zero
    (``f*`` reached exactly) are not drawn.
  """
  fig = plots.InlineFigure(figsize=(7.5, 4.5), layout="constrained")
  ax = fig.add_subplot()
  drawn = []

  def draw(k, y, **kw):
    ok = np.isfinite(y) & (y > 0)
    if (y == 0).any() and kw.get("label"):
      kw["label"] += f" (gap 0 from k = {k[np.argmax(y == 0)]})"
    ax.plot(k[ok], y[ok], **kw)
    if ok.any():
      drawn.append(y[ok])

  any_bound = False
  for i, (name, v) in enumerate(plots.named_runs(runs).items()):
    bound = None
    if hasattr(v, "steps"):
      f = v.steps.get("loss", np.zeros(0))
    elif isinstance(v, tuple) and len(v) == 2 and np.ndim(v[0]) == 1:
      f, bound = v
    else:
      f = v
    f = np.asarray(f, float)
    gap = np.fmin.accumulate(np.where(np.isnan(f), np.inf, f)) - f_star
    draw(np.arange(1, len(f) + 1), gap, color=plots.run_colour(i), lw=1.6, label=name)
    if bound is not None:
      b = np.asarray(bound, float)
      # One key entry for every run's bound (below): the colour says whose.
      draw(np.arange(1, len(b) + 1), b, color=plots.run_colour(i), ls="--",
           lw=1.2)
      any_bound = True
  greys = ("0.15", "0.45", "0.65")
  for j, (name, b) in enumerate((bounds or {}).items()):
    b = np.asarray(b, float)
    draw(np.arange(1, len(b) + 1), b, color=greys[j % 3], lw=1.2,
         ls=(0, (5, 2 + 2 * j)), label=str(name))
  if any_bound:
    ax.plot([], [], color="0.3", ls="--", lw=1.2,
            label="bound of each run (its colour)")
  if drawn:
    ax.set_yscale("log")
  else:
    plots.mark_no_data(ax, "f_best - f*")
  if log_x:
    ax.set_xscale("log")
  ax.set_xlabel("iteration k")
  ax.set_ylabel(r"$f_{\mathrm{best}}^{(k)} - f^\star$")
  ax.set_title(title or f"best value gap (f* = {f_star:.6g})")
  ax.grid(True, which="major", alpha=0.3)
  plots.place_legend(ax)
  return plots.finish(fig, path)


def subgradient_curves(steps: dict, f_star: float, r: float):
  """``(gap, bound, G)`` per step of a subgradient run.

  ``gap[k] = min_{i <= k} f(x_i) - f*`` from the logged ``loss`` (``f(x_k)``
  before update ``k``) and ``bound[k] = (R^2 + G^2 sum_{i<=k} a_i^2) /
  (2 sum_{i<=k} a_i)`` from the logged step sizes ``a_i``, with ``G`` the
  largest logged subgradient norm: the classical bound needs ``||g_i|| <= G``
  only at the iterates the run visited.
  """
  for key in ("step_size", "grad_norm"):
    if not np.isfinite(np.asarray(steps.get(key, np.nan), float)).any():
      raise config_lib.ConfigError(
          f"train.step_metrics: the 'subgradient_bound' analysis needs the "
          f"logged {key} of every step; set train.step_metrics: all.")
  f = np.asarray(steps["loss"], float)
  a = np.asarray(steps["step_size"], float)
  g = float(np.nanmax(steps["grad_norm"]))
  gap = np.fmin.accumulate(np.where(np.isnan(f), np.inf, f)) - f_star
  total = np.cumsum(a)
  with np.errstate(divide="ignore", invalid="ignore"):
    bound = np.where(total > 0, (r * r + g * g * np.cumsum(a * a)) /
                     (2 * total), np.inf)
  return gap, bound, g


@register("subgradient_bound")
def subgradient_bound(exp, out, run_dirs, smoke=False) -> list[Section]:
  """``f_best - f*`` of subgradient runs against the classical bound.

  ``f*`` comes from an independent solver (:func:`optimum`), ``R`` is the
  distance from the run's initial parameters to its minimiser, ``G`` the
  largest subgradient norm the run met.  Writes ``subgradient_bound.json``
  and one figure per problem (runs sharing data, model and loss).
  """
  recs = [results.load_run(d) for d in run_dirs]
  groups: dict[str, list] = {}
  for rec in recs:
    cfg = common.run_config(rec)
    common.need(cfg.optimizer.name == "subgradient", "subgradient_bound",
          "optimizer.name 'subgradient'", cfg)
    key = config_lib.dump({"data": cfg.data, "model": cfg.model,
                           "loss": cfg.loss})
    groups.setdefault(key, []).append((rec, cfg))
  sections, payload = [], {"problems": []}
  for gi, members in enumerate(groups.values()):
    cfg0 = members[0][1]
    data, _, objective = common.problem(cfg0, smoke)
    theta, f_star, lower, solver = optimum(cfg0, data)
    runs, rows = {}, []
    problem = {"data": cfg0.data.name, "loss": cfg0.loss.name,
               "penalty": cfg0.loss.penalty, "strength": cfg0.loss.strength,
               "f_star": f_star, "f_star_lower": lower, "solver": solver,
               "runs": []}
    for rec, cfg in members:
      r = float(np.linalg.norm(
          common.linear_theta(common.initial_params(cfg, objective)) - theta))
      gap, bound, g = subgradient_curves(rec.steps, f_star, r)
      ok = np.isfinite(bound)
      holds = bool(np.all(gap[ok] - (f_star - lower) <= bound[ok]))
      runs[rec.name] = (rec.steps["loss"], bound)
      row = {"run": rec.name, "schedule": cfg.optimizer.schedule,
             "steps": len(gap), "f_best": float(f_star + gap[-1]),
             "gap": float(gap[-1]), "bound": float(bound[-1]), "R": r,
             "G": g, "holds": holds}
      rows.append(row)
      problem["runs"].append(dict(row, gap_curve=gap, bound_curve=bound))
    name = f"fbest_gap_{cfg0.data.name}" + (f"_{gi}" if len(groups) > 1
                                             else "")
    path = fbest_gap(
        runs, f_star, None, out / results.PLOTS / f"{name}.png", log_x=True,
        title=f"{cfg0.data.name}, {cfg0.loss.name} + {cfg0.loss.penalty}: "
        f"f_best - f* (dashed: bound)")
    payload["problems"].append(problem)
    text = (
        f"f* = {f_star:.10g} from {solver}; certified lower bound "
        f"{lower:.10g} (gap {f_star - lower:.2g}).  f_best is the running "
        "minimum of the logged loss f(x_k); the dashed curves are the bound "
        "(R^2 + G^2 sum a_i^2) / (2 sum a_i) with R = ||x_0 - x*|| (x* from "
        "the solver) and G the largest subgradient norm the run met.\n\n" +
        common.table(rows, [("run", "run"), ("schedule", "step rule"),
                      ("steps", "steps"), ("f_best", "final f_best"),
                      ("gap", "f_best - f*"), ("bound", "bound"),
                      ("R", "R"), ("G", "G"),
                      ("holds", "below the bound at every step")]))
    sections.append(Section(
        f"Subgradient method against f* ({cfg0.data.name})", text, [path]))
  results.write_json(out / "subgradient_bound.json", payload)
  return sections
