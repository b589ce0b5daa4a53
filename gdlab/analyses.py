"""Experiment-specific analyses, named by an experiment's ``analysis`` key.

Each analysis reads the experiment's run folders, computes what the theory
compares them with (a closed-form solution, an optimal value from an
independent solver, a bound), writes figures, and returns report sections
``(title, markdown, [image paths])`` for the experiment's ``report.md``.

Contract of the analyses registered here: ``fn(exp, out, run_dirs,
smoke=False)``; figures go to ``out/plots/``, the numbers behind the report
tables to ``out/<analysis name>.json`` (for tests and notebooks).  A run's
data, model and initial parameters are rebuilt from its ``config.yaml``
(the same seed gives the same arrays), its final parameters are read from
its checkpoint.  A run the analysis does not apply to raises ``ConfigError``
naming what was expected.

=====================  =====================================================
``subgradient_bound``  ``f_best - f*`` of subgradient runs, ``f*`` from an
                       independent solver, against the classical bound
``closed_form``        least squares: GD against the normal equations
``seed_spread``        final losses and parameters over many seeds
``gradcheck``          hand-written backpropagation against ``jax.grad``:
                       the gradient-check grid, loss curves and speed
``surface``            optimiser paths on 2-D test functions
=====================  =====================================================
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from gdlab import config as config_lib
from gdlab import experiment
from gdlab import gradcheck
from gdlab import plots
from gdlab import report
from gdlab import results
from gdlab import sweep
from gdlab.objective import value_and_grad_fn

Section = tuple[str, str, list]
ANALYSES: dict[str, Callable[..., list[Section]]] = {}


def register(name: str):
  def deco(fn):
    ANALYSES[name] = fn
    return fn
  return deco


def run(exp: config_lib.ExperimentConfig, out: Path, run_dirs: list[Path],
        smoke: bool = False) -> list[Section]:
  """Runs the experiment's analysis; no analysis gives no sections."""
  if exp.analysis is None:
    return []
  if exp.analysis not in ANALYSES:
    raise config_lib.ConfigError(
        f"analysis: expected one of {', '.join(sorted(ANALYSES))} or null; "
        f"got {exp.analysis!r}.")
  return ANALYSES[exp.analysis](exp, out, run_dirs, smoke=smoke)


# ----------------------------------------------------------------------------
# Shared helpers: a run folder back to its problem, parameters and numbers.


def run_config(rec: results.RunRecord) -> config_lib.RunConfig:
  """The resolved run config stored in a run folder."""
  return config_lib.from_dict(config_lib.RunConfig, rec.config)


def _problem(cfg: config_lib.RunConfig, smoke: bool):
  """``(loop.Data, dataset, objective)`` exactly as the run built them."""
  data, dataset = experiment.build_data(cfg, smoke)
  return data, dataset, experiment.build_objective(cfg, dataset)


def _initial_params(cfg: config_lib.RunConfig, objective):
  """The run's initial parameters (the key split of ``loop.fit``)."""
  k_init, _ = jax.random.split(jax.random.PRNGKey(cfg.seed))
  return objective.model.init(k_init)


def _final_params(run_dir: Path, template):
  """The parameters in a run's checkpoint, shaped like ``template``."""
  state = serialization.msgpack_restore(
      (Path(run_dir) / results.CHECKPOINT).read_bytes())
  return serialization.from_state_dict(template, state["params"])


def _flat(params) -> np.ndarray:
  return np.concatenate([np.ravel(np.asarray(p, np.float64))
                         for p in jax.tree_util.tree_leaves(params)])


def _linear_theta(params) -> np.ndarray:
  """``(w, b)`` of a one-layer model as one vector, bias last (if any)."""
  parts = [np.ravel(np.asarray(params["w"][0], np.float64))]
  if "b" in params:
    b = params["b"]
    parts.append(np.ravel(np.asarray(b[0] if isinstance(b, list) else b,
                                     np.float64)))
  return np.concatenate(parts)


def _train_arrays(data) -> tuple[np.ndarray, np.ndarray]:
  return (np.asarray(data.x_train, np.float64),
          np.asarray(data.y_train, np.float64).reshape(len(data.x_train), -1))


def _reduction_scale(cfg: config_lib.RunConfig, n: int) -> float:
  """``s`` with ``reduce_i l_i = s * mean_i l_i`` (1 for mean, n for sum)."""
  return float(n) if cfg.loss.reduction == "sum" else 1.0


def _need(cond: bool, analysis: str, what: str, cfg) -> None:
  if not cond:
    raise config_lib.ConfigError(
        f"analysis: {analysis!r} needs {what}; run {cfg.name!r} has "
        f"model.kind={cfg.model.kind!r}, loss.name={cfg.loss.name!r}, "
        f"loss.penalty={cfg.loss.penalty!r}, optimizer.name="
        f"{cfg.optimizer.name!r}.")


def _table(rows: list[dict], columns) -> str:
  """A Markdown table, formatted as the reports format theirs."""
  return report.format_table(rows, columns)


def _series(**steps) -> SimpleNamespace:
  """A pseudo-run holding per-step series, for ``plots.loss_curves``."""
  return SimpleNamespace(steps={k: np.asarray(v, float) for k, v in
                                steps.items()}, epochs={}, summary={})


# ----------------------------------------------------------------------------
# subgradient_bound: f_best - f* against the classical bound.


def _svm_optimum(x, y, lam: float, s: float, bias: bool):
  """The l2-regularised hinge loss by libsvm (``sklearn.svm.SVC``).

  ``f(w, b) = s mean_i max(0, 1 - y_i (x_i w + b)) + (lam/2) ||w||^2`` is
  ``lam`` times the SVC primal ``||w||^2/2 + C sum_i xi_i`` with
  ``C = s / (n lam)`` (the bias unpenalised), a quadratic program that libsvm
  solves in its dual.  The dual value at libsvm's multipliers,
  ``lam (sum_i a_i - ||w||^2 / 2)``, is a certified lower bound on ``f*``.
  """
  from sklearn.svm import SVC  # pylint: disable=g-import-not-at-top
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
  from sklearn.linear_model import Lasso  # pylint: disable=g-import-not-at-top
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
  unpenalised.  ``theta*`` is laid out as :func:`_linear_theta`.
  """
  _need(cfg.model.kind in ("linear", "logistic") and
        cfg.model.output_activation == "identity" and
        not cfg.loss.penalize_bias and
        (cfg.loss.name, cfg.loss.penalty) in (("hinge", "l2"),
                                              ("mse", "l1")),
        "subgradient_bound",
        "a linear model with hinge + l2 (SVM) or mse + l1 (LASSO), the "
        "bias unpenalised", cfg)
  x, y = _train_arrays(data)
  if y.shape[1] != 1:
    raise config_lib.ConfigError(
        f"analysis: 'subgradient_bound' needs one output; data "
        f"{cfg.data.name!r} has {y.shape[1]}.")
  solve = _svm_optimum if cfg.loss.name == "hinge" else _lasso_optimum
  return solve(x, y, cfg.loss.strength, _reduction_scale(cfg, len(x)),
               cfg.model.bias != "none")


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
    cfg = run_config(rec)
    _need(cfg.optimizer.name == "subgradient", "subgradient_bound",
          "optimizer.name 'subgradient'", cfg)
    key = config_lib.dump({"data": cfg.data, "model": cfg.model,
                           "loss": cfg.loss})
    groups.setdefault(key, []).append((rec, cfg))
  sections, payload = [], {"problems": []}
  for gi, members in enumerate(groups.values()):
    cfg0 = members[0][1]
    data, _, objective = _problem(cfg0, smoke)
    theta, f_star, lower, solver = optimum(cfg0, data)
    runs, rows = {}, []
    problem = {"data": cfg0.data.name, "loss": cfg0.loss.name,
               "penalty": cfg0.loss.penalty, "strength": cfg0.loss.strength,
               "f_star": f_star, "f_star_lower": lower, "solver": solver,
               "runs": []}
    for rec, cfg in members:
      r = float(np.linalg.norm(
          _linear_theta(_initial_params(cfg, objective)) - theta))
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
    path = plots.fbest_gap(
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
        _table(rows, [("run", "run"), ("schedule", "step rule"),
                      ("steps", "steps"), ("f_best", "final f_best"),
                      ("gap", "f_best - f*"), ("bound", "bound"),
                      ("R", "R"), ("G", "G"),
                      ("holds", "below the bound at every step")]))
    sections.append((f"Subgradient method against f* ({cfg0.data.name})",
                     text, [path]))
  results.write_json(out / "subgradient_bound.json", payload)
  return sections


# ----------------------------------------------------------------------------
# closed_form: gradient descent against the normal equations.


@register("closed_form")
def closed_form(exp, out, run_dirs, smoke=False) -> list[Section]:
  """Least squares by ``numpy.linalg.lstsq`` against each run's final point.

  With ``A = [X, 1]`` (the bias column where the model has a bias) and
  ``f(theta) = s (1/n) ||A theta - y||^2``, the minimiser solves the normal
  equations ``A^T A theta = A^T y``.  For constant-step gradient descent
  (no momentum, no line search) the error follows in closed form,
  ``theta_k - theta* = (I - eta H)^k (theta_0 - theta*)`` with
  ``H = (2 s / n) A^T A``, and ``f(theta_k) - f* = e_k^T H e_k / 2``: the
  figure draws this prediction (dashed) over the logged loss gap.
  Writes ``closed_form.json``.
  """
  rows, curves, payload = [], {}, {"runs": []}
  for run_dir in run_dirs:
    rec = results.load_run(run_dir)
    cfg = run_config(rec)
    _need(cfg.model.kind == "linear" and cfg.loss.name == "mse" and
          cfg.loss.penalty is None, "closed_form",
          "a linear model with the mse loss and no penalty", cfg)
    data, _, objective = _problem(cfg, smoke)
    x, y = _train_arrays(data)
    n = len(x)
    a = np.hstack([x, np.ones((n, 1))]) if cfg.model.bias != "none" else x
    theta_star = np.linalg.lstsq(a, y, rcond=None)[0].ravel()
    s = _reduction_scale(cfg, n)
    f = lambda t: s * float(np.mean((a @ t - y.ravel()) ** 2))
    f_star = f(theta_star)
    theta0 = _linear_theta(_initial_params(cfg, objective))
    theta = _linear_theta(_final_params(run_dir,
                                        _initial_params(cfg, objective)))
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
    curves[rec.name] = _series(**series)
    rows.append(row)
    payload["runs"].append(dict(row, theta=theta, theta_star=theta_star))
  path = plots.loss_curves(
      curves, out / results.PLOTS / "closed_form_gap.png", x="step",
      y=("measured", "predicted"), log_y=True, ylabel="f(theta_k) - f*",
      title="loss gap to the normal-equation solution (measured and "
      "predicted)")
  results.write_json(out / "closed_form.json", payload)
  text = (
      "theta* from numpy.linalg.lstsq on the training set (bias column "
      "appended); f* = f(theta*).  distance = ||theta_T - theta*|| for the "
      "final parameters in each run's checkpoint; rate = max |1 - eta "
      "lambda_i(H)|, the contraction factor of constant-step GD per step; "
      "the predicted gap is drawn down to 10 eps f*, about the resolution "
      "of the logged loss, and compared with the measured one where it "
      "exceeds 1e6 eps f*.\n\n"
      + _table(rows, [("run", "run"), ("steps", "steps"), ("f_star", "f*"),
                      ("final_gap", "f(theta_T) - f*"),
                      ("distance", "||theta_T - theta*||"),
                      ("relative_distance", "relative distance"),
                      ("rate", "predicted rate"),
                      ("prediction_error",
                       "max relative deviation from the predicted gap")]))
  return [("Gradient descent against the normal equations", text, [path])]


# ----------------------------------------------------------------------------
# seed_spread: one minimum for a convex model, many for an MLP.


def _align_hidden(p: dict, q: dict, odd: bool) -> float:
  """Distance between two one-hidden-layer MLPs up to their symmetries.

  Hidden units are matched by ``scipy.optimize.linear_sum_assignment`` on
  the cost ``||u_j - sigma u'_k||^2`` over each unit's incoming weights,
  bias and outgoing weights, with the sign flip ``sigma = -1`` allowed for
  odd activations (tanh).  The total decomposes over units, so the matching
  is the exact minimum over permutations (and flips).
  """
  from scipy import optimize  # pylint: disable=g-import-not-at-top
  def units(params):
    w1, w2 = (np.asarray(w, np.float64) for w in params["w"])
    cols = [w1, w2.T]
    b = params.get("b")
    if isinstance(b, list):
      cols.insert(1, np.asarray(b[0], np.float64)[None])
    return np.vstack(cols).T, (np.asarray(b[1], np.float64)
                               if isinstance(b, list) else np.zeros(0))
  u, out_u = units(p)
  v, out_v = units(q)
  cost = ((u[:, None] - v[None]) ** 2).sum(-1)
  if odd:
    cost = np.minimum(cost, ((u[:, None] + v[None]) ** 2).sum(-1))
  i, j = optimize.linear_sum_assignment(cost)
  return float(np.sqrt(cost[i, j].sum() + ((out_u - out_v) ** 2).sum()))


def _pairwise(vectors, dist) -> np.ndarray:
  n = len(vectors)
  return np.array([dist(vectors[i], vectors[j]) for i in range(n)
                   for j in range(i + 1, n)])


SMOKE_SEEDS = 5


@register("seed_spread")
def seed_spread(exp, out, run_dirs, smoke=False) -> list[Section]:
  """Final losses and parameters of each variant over the sweep's seeds.

  Every variant is run again for each seed of ``sweep.seed`` (the first
  ``SMOKE_SEEDS`` under ``smoke``; one vmapped program per variant,
  :func:`gdlab.sweep.run_sweep`, into ``seeds/<variant>/``); the spread of
  the final training losses and the pairwise distances between the final
  parameter vectors are tabulated.
  For a one-hidden-layer MLP the distance is also given after aligning
  hidden units (permutations, and sign flips for odd activations), so
  that copies of one minimum do not count as different minima.
  Writes ``seed_spread.json``.
  """
  seeds = exp.sweep.get("seed")
  if not seeds or len(seeds) < 2:
    raise config_lib.ConfigError(
        "sweep.seed: the 'seed_spread' analysis runs every variant over the "
        f"seeds of the sweep grid; expected a list of 2 or more; got "
        f"{seeds!r}.")
  seeds = list(seeds[:SMOKE_SEEDS] if smoke else seeds)
  rows, finals, figures, payload = [], {}, [], {"variants": []}
  for run_dir in run_dirs:
    rec = results.load_run(run_dir)
    cfg = run_config(rec)
    sub = sweep.run_sweep(
        dataclasses.replace(exp, base=cfg, variants={}, smoke={}),
        out / "seeds" / rec.name, grid={"seed": seeds}, smoke=smoke,
        report=False)
    dirs = [sub / "runs" / f"{rec.name}[seed={s}]" for s in seeds]
    _, _, objective = _problem(cfg, smoke)
    template = _initial_params(cfg, objective)
    params = [_final_params(d, template) for d in dirs]
    losses = np.array([experiment.final_loss(results.load_run(d).summary)
                       for d in dirs])
    flat = [_flat(p) for p in params]
    raw = _pairwise(flat, lambda u, v: float(np.linalg.norm(u - v)))
    scale = float(np.median([np.linalg.norm(v) for v in flat]))
    one_hidden = (cfg.model.kind == "mlp" and len(cfg.model.hidden) == 1 and
                  cfg.model.bias in ("per_neuron", "none"))
    aligned = (_pairwise(params, lambda p, q: _align_hidden(
        p, q, cfg.model.activation == "tanh")) if one_hidden else None)
    row = {"variant": rec.name, "seeds": len(seeds),
           "loss_min": float(np.nanmin(losses)),
           "loss_max": float(np.nanmax(losses)),
           "loss_range": float(np.nanmax(losses) - np.nanmin(losses)),
           "loss_std": float(np.nanstd(losses)),
           "dist_median": float(np.median(raw)), "dist_max": float(raw.max()),
           "aligned_median": (float(np.median(aligned)) if one_hidden
                              else None),
           "param_norm": scale}
    rows.append(row)
    finals[rec.name] = losses
    payload["variants"].append(dict(row, seed_list=seeds,
                                    final_losses=losses))
    runs = {d.name.split("[")[-1].rstrip("]"): results.load_run(d)
            for d in dirs}
    figures.append(plots.loss_curves(
        runs, out / results.PLOTS / f"seeds_{rec.name}.png", x="epoch",
        y="train_loss", title=f"{rec.name}: training loss, "
        f"{len(seeds)} seeds"))
  figures.insert(0, plots.sensitivity(
      seeds, finals, out / results.PLOTS / "seed_spread.png",
      xlabel="seed", ylabel="final training loss", log_x=False,
      title="final training loss of each seed"))
  results.write_json(out / "seed_spread.json", payload)
  text = (
      f"Each variant trained from {len(seeds)} seeds (initial parameters; "
      "the data are the same).  Losses are final training losses; distances "
      "are Euclidean between final parameter vectors, over all pairs of "
      "seeds; 'aligned' matches hidden units first (permutation and tanh "
      "sign symmetry), the distance between the minima themselves.\n\n" +
      _table(rows, [("variant", "variant"), ("seeds", "seeds"),
                    ("loss_min", "min loss"), ("loss_max", "max loss"),
                    ("loss_range", "max - min"), ("loss_std", "std"),
                    ("dist_median", "median pairwise distance"),
                    ("dist_max", "max pairwise distance"),
                    ("aligned_median", "median aligned distance"),
                    ("param_norm", "median ||theta||")]))
  return [("Spread over seeds", text, figures)]


# ----------------------------------------------------------------------------
# gradcheck: the hand-written backpropagation against jax.grad.


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


@register("gradcheck")
def gradcheck_analysis(exp, out, run_dirs, smoke=False) -> list[Section]:
  """The gradient-check grid, the engines' loss curves and their speed.

  Runs :func:`gdlab.gradcheck.grid` (every activation x every loss, one
  hidden layer, per-neuron biases; the one row of tanh with softmax
  cross-entropy under ``smoke``) in the precision the runs use, draws
  :func:`gdlab.plots.gradcheck_table`, compares the logged losses of the
  runs with those of the first run, and times one jitted gradient of the
  first run's model on its whole training set with each engine (median of
  repeats).  Writes ``gradcheck.json``.
  """
  recs = [results.load_run(d) for d in run_dirs]
  cfg = run_config(recs[0])
  data, _, objective = _problem(cfg, smoke)
  rows = gradcheck.grid(**(GRADCHECK_SMOKE_GRID if smoke else
                           GRADCHECK_GRID))
  precision = str(jnp.zeros(()).dtype)
  table = plots.gradcheck_table(rows, out / results.PLOTS / "gradcheck.png")
  passed = sum(bool(r.passed) for r in rows)
  ref = np.asarray(recs[0].steps["loss"], float)
  curves = []
  for rec in recs:
    loss = np.asarray(rec.steps["loss"], float)
    k = min(len(loss), len(ref))
    diff = np.abs(loss[:k] - ref[:k])
    curves.append({"run": rec.name, "engine": run_config(rec).train.engine,
                   "steps": len(loss), "max_abs_diff": float(diff.max()),
                   "max_rel_diff": float(np.max(diff / np.maximum(
                       np.abs(ref[:k]), 1e-300)))})
  params = _initial_params(cfg, objective)
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
          f"({recs[0].name}).\n\n" + _table(curves, [
              ("run", "run"), ("engine", "engine"), ("steps", "steps"),
              ("max_abs_diff", "max |loss - loss_ref|"),
              ("max_rel_diff", "max relative difference")]))
  fast = (f"One jitted (value, gradient) call of the runs' model over "
          f"all {int(data.x_train.shape[0])} training records, median of "
          f"{repeats} calls of each engine (in turn) after a warm-up, "
          f"{precision}.\n\n" + _table(
              speed, [("engine", "engine"),
                      ("microseconds", "time per gradient (us)"),
                      ("relative", "relative to jax.grad")]))
  return [("Gradient check: hand-written against jax.grad", check, [table]),
          ("Same loss curves from both engines", same, []),
          ("Speed of the two engines", fast, [])]


# ----------------------------------------------------------------------------
# surface: optimiser paths on 2-D test functions.


def _function_of(cfg: config_lib.RunConfig):
  from gdlab import data as data_lib  # pylint: disable=g-import-not-at-top
  options = {"kappa": cfg.data.kappa} if cfg.data.kappa is not None else {}
  return data_lib.get_function(cfg.data.name, **options)


@register("surface")
def surface(exp, out, run_dirs, smoke=False) -> list[Section]:
  """Each run's path on the surface of its 2-D test function.

  Runs on the same function (and ``kappa``) share one figure,
  :func:`gdlab.plots.surface`; the table gives where each path ended, its
  value above the minimum and its distance to the nearest minimiser.
  Writes ``surface.json``.
  """
  del smoke
  groups: dict[tuple, list] = {}
  for run_dir in run_dirs:
    rec = results.load_run(run_dir)
    cfg = run_config(rec)
    _need(cfg.model.kind == "function", "surface",
          "model.kind 'function' (a 2-D test function)", cfg)
    groups.setdefault((cfg.data.name, cfg.data.kappa), []).append((rec, cfg))
  sections, payload = [], {"runs": []}
  for (name, kappa), members in groups.items():
    fn = _function_of(members[0][1])
    label = name + (f"_kappa{kappa:g}" if kappa is not None else "")
    paths, rows = {}, []
    for rec, cfg in members:
      traj = rec.trajectory if rec.trajectory is not None else np.zeros((0, 2))
      paths[rec.name] = traj
      end = traj[-1] if len(traj) else np.full(2, np.nan)
      value = float(fn(jnp.asarray(end)))
      row = {"run": rec.name, "method": _method(cfg), "steps": len(traj) - 1,
             "grad_evals": rec.summary.get("grad_evals"),
             "end_x": float(end[0]), "end_y": float(end[1]),
             "gap": value - fn.f_min,
             "distance": float(np.min(np.linalg.norm(
                 fn.minimizers - end[None], axis=1))),
             "stop_reason": rec.summary.get("stop_reason")}
      rows.append(row)
      payload["runs"].append(dict(row, function=label))
    path = plots.surface(fn, paths,
                         out / results.PLOTS / f"surface_{label}.png")
    text = _table(rows, [("run", "run"), ("method", "method"),
                         ("steps", "steps"), ("grad_evals", "grad evals"),
                         ("end_x", "end x"), ("end_y", "end y"),
                         ("gap", "f - f*"),
                         ("distance", "to nearest minimiser"),
                         ("stop_reason", "stop reason")])
    sections.append((f"Paths on {label}", text, [path]))
  results.write_json(out / "surface.json", payload)
  return sections


def _method(cfg: config_lib.RunConfig) -> str:
  o = cfg.optimizer
  if o.line_search:
    return f"{o.name} + {o.line_search} line search"
  if o.name == "gd" and o.momentum:
    return (f"{'Nesterov' if o.nesterov else 'momentum'} {o.momentum:g}, "
            f"eta {o.learning_rate:g}")
  if o.name == "subgradient":
    return f"subgradient, {o.schedule} {o.learning_rate:g}"
  return f"{o.name}, eta {o.learning_rate:g}"
