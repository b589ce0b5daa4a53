"""Every experiment in experiments/ runs end to end, and its analysis is right.

Each experiment runs once, in its smoke form, into a temporary folder; the
test then checks the results folder (run folders, report, figures) and the
analysis's numbers against an independent computation where that is cheap:
f* of the subgradient problems by scipy on a smooth reformulation, the
least-squares solution by ``numpy.linalg.lstsq``, the end points of the paths
on the test functions.  The summaries of a few cheap experiments are also
compared with numbers recorded before the orchestration was restructured
(``data/smoke_summaries.json``), and every analysis is run a second time on
the finished folders with training disabled: analyses only read runs.
"""

import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from jax.flatten_util import ravel_pytree
from flax import serialization

from gdlab import analyses
from gdlab import build
from gdlab import cli
from gdlab import config
from gdlab import data as data_lib
from gdlab import gradcheck
from gdlab import loop
from gdlab import metrics_log
from gdlab import report
from gdlab import results
from gdlab import run as run_lib
from gdlab import sweep
from gdlab.analyses import engines, subgradient

NAMES = run_lib.experiment_names()
RECORDED = json.loads((Path(__file__).parent / "data" /
                       "smoke_summaries.json").read_text())["experiments"]
PNG = b"\x89PNG\r\n\x1a\n"
RUN_FILES = (results.CONFIG, metrics_log.METRICS, results.SUMMARY,
             results.CHECKPOINT)


def _is_png(path: Path) -> bool:
  return path.is_file() and path.read_bytes()[:8] == PNG


def _train_set(run_dir: Path):
  cfg = analyses.run_config(results.load_run(run_dir))
  data, _ = build.dataset(cfg, smoke=True)
  x = np.asarray(data.x_train, np.float64)
  return cfg, x, np.asarray(data.y_train, np.float64).reshape(len(x), -1)


# ----------------------------------------------------------------------------
# The configs themselves.


@pytest.mark.parametrize("name", NAMES)
def test_config_is_complete(name):
  exp = config.load(run_lib.find(name))
  assert exp.name == name
  assert exp.question.strip() and "\n" not in exp.question.strip()
  assert exp.description.strip()
  assert exp.smoke, "a smoke section makes the experiment run in seconds"
  assert exp.analysis is None or exp.analysis in analyses.MODULES
  runs = config.resolve_runs(exp, smoke=True)
  assert len({r.name for r in runs}) == len(runs)


# ----------------------------------------------------------------------------
# Analysis checks: (experiment config, results folder) -> None.


def _check_subgradient_bound(exp, out: Path) -> None:
  payload = json.loads((out / "subgradient_bound.json").read_text())
  for problem in payload["problems"]:
    f_star, lower = problem["f_star"], problem["f_star_lower"]
    # The solver's f* is a value it attained; its dual certifies f* - lower.
    assert lower <= f_star + 1e-12 and f_star - lower < 1e-5 * abs(f_star)
    run_dir = out / "runs" / problem["runs"][0]["run"]
    cfg, x, y = _train_set(run_dir)
    assert _scipy_optimum(cfg, x, y.ravel()) == pytest.approx(
        f_star, rel=1e-5, abs=1e-9)
    for run in problem["runs"]:
      rec = results.load_run(out / "runs" / run["run"])
      f = rec.steps["loss"]
      a = rec.steps["step_size"]
      gap = np.minimum.accumulate(f) - f_star
      g = np.max(rec.steps["grad_norm"])
      bound = (run["R"] ** 2 + g ** 2 * np.cumsum(a ** 2)) / (2 * np.cumsum(a))
      assert np.all(gap >= -(f_star - lower) - 1e-12), run["run"]
      assert np.all(gap <= bound), run["run"]
      assert run["holds"]
      np.testing.assert_allclose(run["gap_curve"], gap, rtol=1e-12, atol=0)
  assert _is_png(next((out / "plots").glob("fbest_gap_*.png")))


def _scipy_optimum(cfg, x, y) -> float:
  """f* by scipy on a smooth reformulation of the run's objective."""
  n, d = x.shape
  lam = cfg.loss.strength
  if cfg.loss.name == "mse":  # LASSO, no bias: w = u - v with u, v >= 0.
    assert cfg.model.bias == "none"

    def fun(z):
      u, v = z[:d], z[d:]
      r = x @ (u - v) - y
      grad_w = 2 * x.T @ r / n
      return (r @ r / n + lam * z.sum(),
              np.r_[grad_w + lam, -grad_w + lam])

    res = scipy.optimize.minimize(
        fun, np.zeros(2 * d), jac=True, method="L-BFGS-B",
        bounds=[(0, None)] * (2 * d),
        options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 50_000})
    return float(res.fun)
  # SVM: min lam/2 ||w||^2 + mean(xi) s.t. xi >= 0, y (x w + b) >= 1 - xi.
  assert cfg.loss.name == "hinge"

  def fun(z):
    w, xi = z[:d], z[d + 1:]
    return 0.5 * lam * w @ w + xi.mean(), np.r_[lam * w, 0.0,
                                               np.full(n, 1.0 / n)]

  margin = {"type": "ineq",
            "fun": lambda z: y * (x @ z[:d] + z[d]) - 1 + z[d + 1:],
            "jac": lambda z: np.hstack([y[:, None] * x, y[:, None],
                                        np.eye(n)])}
  res = scipy.optimize.minimize(
      fun, np.r_[np.zeros(d + 1), np.ones(n)], jac=True, method="SLSQP",
      bounds=[(None, None)] * (d + 1) + [(0, None)] * n,
      constraints=[margin], options={"ftol": 1e-14, "maxiter": 2000})
  return float(res.fun)


def _check_closed_form(exp, out: Path) -> None:
  payload = json.loads((out / "closed_form.json").read_text())
  for run in payload["runs"]:
    run_dir = out / "runs" / run["run"]
    _, x, y = _train_set(run_dir)
    a = np.hstack([x, np.ones((len(x), 1))])
    theta_star = np.linalg.lstsq(a, y, rcond=None)[0].ravel()
    np.testing.assert_allclose(run["theta_star"], theta_star, rtol=1e-10,
                               atol=1e-12)
    theta = np.asarray(run["theta"])
    assert np.linalg.norm(theta - theta_star) < 1e-3 * np.linalg.norm(
        theta_star), run["run"]
    f = lambda t: np.mean((a @ t - y.ravel()) ** 2)
    assert run["final_gap"] == pytest.approx(f(theta) - f(theta_star),
                                             abs=1e-12)
    if run["prediction_error"] is not None:
      assert run["prediction_error"] < 1e-5
  assert _is_png(out / "plots" / "closed_form_gap.png")


def _check_seed_spread(exp, out: Path) -> None:
  payload = json.loads((out / "seed_spread.json").read_text())
  spread = {}
  for v in payload["variants"]:
    # The seed sweep ran as part of the experiment, into seeds/<variant>/.
    for seed in v["seed_list"]:
      sub = out / results.SEEDS / v["variant"] / "runs"
      assert (sub / f"{v['variant']}[seed={seed}]" / results.SUMMARY).is_file()
    assert v["seed_list"] == config.seed_sweep_seeds(exp, smoke=True)
    assert v["seed_list"] == exp.sweep["seed"][:config.SMOKE_SEEDS]
    losses = np.asarray(v["final_losses"], float)
    assert losses.shape == (v["seeds"],) and np.all(np.isfinite(losses))
    assert v["loss_range"] == pytest.approx(np.ptp(losses))
    spread[v["variant"]] = v
    assert _is_png(out / "plots" / f"seeds_{v['variant']}.png")
  # The convex model ends in one minimum; the MLP in several.
  assert spread["logistic"]["loss_range"] < 1e-4
  assert spread["mlp"]["loss_range"] > 100 * spread["logistic"]["loss_range"]
  assert spread["mlp"]["aligned_median"] <= spread["mlp"]["dist_median"]
  assert _is_png(out / "plots" / "seed_spread.png")


def _check_gradcheck(exp, out: Path) -> None:
  payload = json.loads((out / "gradcheck.json").read_text())
  assert payload["rows"] and payload["passed"] == len(payload["rows"])
  engines = {c["engine"] for c in payload["curves"]}
  assert engines == {"manual", "autodiff"}
  for c in payload["curves"]:
    assert c["max_rel_diff"] < 1e-10, c
  assert all(s["seconds"] > 0 for s in payload["speed"])
  assert _is_png(out / "plots" / "gradcheck.png")


def _payload_of_every_run(exp, out: Path, analysis: str) -> dict:
  """``out/<analysis>.json``, checked to have one row per run of the
  (smoke) experiment."""
  payload = json.loads((out / f"{analysis}.json").read_text())
  names = {r.name for r in config.resolve_runs(exp, smoke=True)}
  assert {r["run"] for r in payload["runs"]} == names
  return payload


def _check_surface(exp, out: Path) -> None:
  payload = _payload_of_every_run(exp, out, "surface")
  for row in payload["runs"]:
    rec = results.load_run(out / "runs" / row["run"])
    cfg = analyses.run_config(rec)
    options = {"kappa": cfg.data.kappa} if cfg.data.kappa else {}
    fn = data_lib.get_function(cfg.data.name, **options)
    end = rec.trajectory[-1]
    assert [row["end_x"], row["end_y"]] == pytest.approx(list(end))
    assert row["gap"] == pytest.approx(float(fn(end)) - fn.f_min, abs=1e-6)
    assert _is_png(out / "plots" / f"surface_{row['function']}.png")


def _check_mnist1d(exp, out: Path) -> None:
  payload = _payload_of_every_run(exp, out, "mnist1d")
  # The MNIST-1D README's table (github.com/greydanus/mnist1d).
  assert payload["reference"] == {"logistic regression": 0.32, "MLP": 0.68,
                                  "CNN": 0.94, "GRU": 0.91,
                                  "human expert": 0.96}
  for row in payload["runs"]:
    run_dir = out / "runs" / row["run"]
    rec = results.load_run(run_dir)
    cfg = analyses.run_config(rec)
    data, _ = build.dataset(cfg, smoke=True)
    # A forward pass in NumPy from the checkpoint's arrays.
    state = serialization.msgpack_restore(
        results.read_checkpoint(run_dir).state)["params"]
    layers = sorted(state["w"], key=int)
    assert len(layers) == (1 if cfg.model.kind == "logistic" else
                           len(cfg.model.hidden) + 1)

    def accuracy(x, y):
      z = np.asarray(x, np.float64)
      for i, layer in enumerate(layers):
        z = z @ state["w"][layer] + state["b"][layer]
        if i < len(layers) - 1:
          z = np.maximum(z, 0.0)  # relu
      return float(np.mean(z.argmax(axis=1) == np.asarray(y)))
    test = accuracy(data.x_test, data.y_test)
    assert row["test_accuracy"] == pytest.approx(test, abs=1e-12)
    assert row["logged_test_accuracy"] == pytest.approx(test, abs=1e-6)
    assert row["train_accuracy"] == pytest.approx(
        accuracy(data.x_train, data.y_train), abs=1e-12)
    reference = {"logistic": 0.32, "mlp": 0.68}[cfg.model.kind]
    assert row["reference"] == reference
    assert row["difference"] == pytest.approx(test - reference, abs=1e-12)
  assert _is_png(out / "plots" / "mnist1d_test_accuracy.png")


def _check_methods(exp, out: Path) -> None:
  payload = json.loads((out / "methods.json").read_text())
  rows = {r["run"]: r for r in payload["runs"]}
  assert set(rows) == {c.name for c in config.resolve_runs(exp, smoke=True)}
  finals = {}
  for name, row in rows.items():
    run_dir = out / "runs" / name
    cfg, x, _ = _train_set(run_dir)
    n, regime = len(x), cfg.train.regime
    assert payload["n_train"] == n
    batch = {"full_batch": n, "sgd": 1}.get(regime.kind, regime.batch_size)
    epochs = cfg.train.stop.max_epochs
    per_epoch = {"full_batch": 1, "sgd": n}.get(regime.kind, n // batch)
    assert row["updates"] == epochs * per_epoch, name
    # Record-gradients recounted from the per-step log.
    steps = metrics_log.read_metrics(run_dir)[0]
    assert row["record_grads"] == int(steps["grad_evals"].sum()) * batch
    if not cfg.optimizer.line_search:
      assert row["record_grads"] == epochs * per_epoch * batch
    # Test accuracy by NumPy from the checkpoint's parameters.
    data, dataset = build.dataset(cfg, smoke=True)
    template = analyses.common.initial_params(cfg, build.objective(cfg,
                                                                   dataset))
    params = results.final_params(run_dir, template)
    z = np.asarray(data.x_test, np.float64)
    for l, (w, b) in enumerate(zip(params["w"], params["b"])):
      z = z @ np.asarray(w, np.float64) + np.asarray(b, np.float64)
      z = np.tanh(z) if l < len(params["w"]) - 1 else z
    accuracy = np.mean(z.argmax(1) == np.asarray(data.y_test))
    assert abs(row["test_accuracy"] - accuracy) <= 1 / len(z) + 1e-9, name
    # The first epoch at the target, from the JSON lines themselves.
    lines = [json.loads(l) for l in
             (run_dir / metrics_log.METRICS).read_text().splitlines()]
    finals[name] = ([l for l in lines if l["kind"] == "epoch"],
                    json.loads((run_dir / results.SUMMARY).read_text()))
  target = max(s["final"]["train_loss"] for _, s in finals.values())
  assert payload["target_loss"] == pytest.approx(target, rel=1e-12)
  for name, (epochs, _) in finals.items():
    first = next(e for e in epochs if e["train_loss"] <= target)
    assert rows[name]["reached_epoch"] == first["epoch"]
    assert rows[name]["reached_record_grads"] == (
        first["grad_evals"] * rows[name]["batch"])
  assert _is_png(out / "plots" / "methods_loss_record_grads.png")


def _float64_problem(run_dir: Path, params_from: str):
  """``(flat params, unravel, f, x, y)`` of a run, in float64, at its
  initial or final parameters (the model of its config with ``train.dtype:
  float64``, its data and parameters cast)."""
  cfg = analyses.run_config(results.load_run(run_dir))
  data, ds = build.dataset(cfg, smoke=True)
  # The run's own initial parameters (drawn in its dtype), then float64.
  k_init, _ = loop.run_keys(jax.random.PRNGKey(cfg.seed))
  params = build.objective(cfg, ds).model.init(k_init)
  if params_from == "final":
    params = results.final_params(run_dir, params)
  to64 = lambda a: jnp.asarray(np.asarray(a, np.float64))
  flat, unravel = ravel_pytree(jax.tree_util.tree_map(to64, params))
  objective = build.objective(
      config.override(cfg, "train.dtype", "float64"), ds)
  return (flat, unravel, objective.value, to64(data.x_train),
          to64(data.y_train))


def _power_iteration(value, flat, unravel, x, y, iters: int = 100) -> float:
  """The top eigenvalue of the Hessian by power iteration on jax.grad."""
  grad = jax.grad(lambda f: value(unravel(f), x, y))
  hvp = jax.jit(lambda v: jax.jvp(grad, (flat,), (v,))[1])
  v = np.random.default_rng(0).standard_normal(flat.shape)
  lam = 0.0
  for _ in range(iters):
    w = np.asarray(hvp(jnp.asarray(v)))
    lam = float(v @ w / (v @ v))
    v = w / np.linalg.norm(w)
  return lam


def _check_edge_of_stability(exp, out: Path) -> None:
  payload = _payload_of_every_run(exp, out, "edge_of_stability")
  for row in payload["runs"]:
    rec = results.load_run(out / "runs" / row["run"])
    cfg = analyses.run_config(rec)
    eta = cfg.optimizer.learning_rate
    assert row["threshold"] == pytest.approx(2 / eta, rel=1e-12)
    sharp = np.asarray(rec.epochs["sharpness"], float)
    epochs = np.asarray(rec.epochs["epoch"])[np.isfinite(sharp)]
    sharp = sharp[np.isfinite(sharp)]
    every = cfg.train.track.every
    assert list(epochs) == list(range(every, int(epochs[-1]) + 1, every))
    np.testing.assert_allclose(row["sharpness"], sharp, rtol=1e-12)
    late = epochs > epochs[-1] / 2
    assert row["ratio"] == pytest.approx(np.mean(sharp[late]) * eta / 2,
                                         rel=1e-12)
    assert row["max_sharpness"] == pytest.approx(sharp.max(), rel=1e-12)
    loss = rec.epochs["train_loss"]
    assert row["non_monotone"] == bool(np.any(np.diff(loss) > 0))
    # The run's own report draws what it tracked.
    assert (rec.path / "plots" / "tracked.png").stat().st_size > 0
    assert "](plots/tracked.png)" in (rec.path / "report.md").read_text()
  assert "](plots/tracked.png)" in (out / "report.md").read_text()
  # The last tracked sharpness is at the final parameters: against power
  # iteration on jax.grad in float64.
  row = payload["runs"][-1]
  flat, unravel, value, x, y = _float64_problem(out / "runs" / row["run"],
                                                "final")
  assert row["sharpness"][-1] == pytest.approx(
      _power_iteration(value, flat, unravel, x, y), rel=1e-4)
  assert _is_png(out / "plots" / "edge_of_stability.png")


def _check_step_size(exp, out: Path) -> None:
  payload = _payload_of_every_run(exp, out, "step_size")
  mlp_lam = None
  for row in payload["runs"]:
    run_dir = out / "runs" / row["run"]
    rec = results.load_run(run_dir)
    cfg = analyses.run_config(rec)
    flat, unravel, value, x, y = _float64_problem(run_dir, "initial")
    if cfg.model.kind == "linear":
      a = np.hstack([np.asarray(x), np.ones((len(x), 1))])
      y = np.asarray(y).ravel()
      lam = np.linalg.eigvalsh(a.T @ a / len(a))[-1] * 2  # H = (2/n) A^T A
      assert row["lambda_max"] == pytest.approx(lam, rel=1e-6)
      # Plain gradient descent in NumPy from the same start.
      p = unravel(flat)
      theta = np.r_[np.ravel(p["w"][0]), np.ravel(p["b"][0])]  # bias last
      losses = []
      for _ in range(len(rec.steps["loss"])):
        r = a @ theta - y
        losses.append(r @ r / len(r))
        theta = theta - cfg.optimizer.learning_rate * 2 * a.T @ r / len(r)
      np.testing.assert_allclose(rec.steps["loss"], losses, rtol=1e-4)
    else:  # the networks share their initial parameters: one Hessian
      if mlp_lam is None:
        h = jax.jit(jax.hessian(lambda f: value(unravel(f), x, y)))(flat)
        mlp_lam = np.linalg.eigvalsh(np.asarray(h))[-1]
      lam = mlp_lam
      assert row["lambda_max"] == pytest.approx(lam, rel=1e-4)
    if row["eta"] is not None:
      assert row["predicted_diverges"] == (row["eta"] > 2 / lam)
  assert mlp_lam is not None
  # On the whole data set (the full run), the least-squares step sizes lie
  # on either side of 2 / lambda_max.
  runs = {r.name: r for r in config.resolve_runs(exp)}
  data, _ = build.dataset(runs["least_squares_below"])
  x = np.asarray(data.x_train, np.float64)
  a = np.hstack([x, np.ones((len(x), 1))])
  threshold = 2 / (2 * np.linalg.eigvalsh(a.T @ a / len(a))[-1])
  assert (runs["least_squares_below"].optimizer.learning_rate < threshold <
          runs["least_squares_above"].optimizer.learning_rate)
  assert _is_png(out / "plots" / "step_size_threshold.png")


def _check_landscape(exp, out: Path) -> None:
  payload = json.loads((out / "landscape.json").read_text())
  names = [r.name for r in config.resolve_runs(exp, smoke=True)]
  assert [r["run"] for r in payload["runs"]] == names
  for row in payload["runs"]:
    rec = results.load_run(out / "runs" / row["run"])
    cfg = analyses.run_config(rec)
    data, dataset = build.dataset(cfg, smoke=True)
    objective = build.objective(cfg, dataset)
    init = objective.model.init(loop.run_keys(jax.random.PRNGKey(cfg.seed))[0])
    final = results.final_params(out / "runs" / row["run"], init)
    value = jax.jit(objective.value)
    x, y = data.x_train, data.y_train
    # The interpolation's end points and the slice's centre, evaluated here.
    line = row["interpolation"]
    alphas = np.asarray(line["alphas"])
    for alpha, params in ((0.0, init), (1.0, final)):
      k = int(np.argmin(np.abs(alphas - alpha)))
      assert alphas[k] == alpha
      assert line["loss"][k] == pytest.approx(float(value(params, x, y)),
                                              rel=1e-5)
    curve = np.asarray(line["loss"])[(alphas >= 0) & (alphas <= 1)]
    bump = max(curve[k] - curve[:k + 1].min() for k in range(len(curve)))
    assert row["max_bump"] == pytest.approx(bump, abs=1e-7)
    grid = np.asarray(row["slice"]["loss"])
    middle = len(grid) // 2
    assert grid[middle, middle] == pytest.approx(float(value(final, x, y)),
                                                 rel=1e-5)
    # A corner of the slice from the stored directions, which keep each
    # filter's norm (columns of the weight matrices) and leave biases alone.
    flat, unravel = ravel_pytree(final)
    d1, d2 = (unravel(jnp.asarray(row["slice"][k], flat.dtype))
              for k in ("d1", "d2"))
    a, b = row["slice"]["alphas"][-1], row["slice"]["betas"][0]
    corner = jax.tree_util.tree_map(lambda p, u, v: p + a * u + b * v, final,
                                    d1, d2)
    assert grid[0, -1] == pytest.approx(float(value(corner, x, y)), rel=1e-4)
    for w, dw in zip(final["w"], d1["w"]):
      np.testing.assert_allclose(np.linalg.norm(dw, axis=0),
                                 np.linalg.norm(w, axis=0), rtol=1e-5)
    assert not np.any(ravel_pytree(d1["b"])[0])
    # The explained variance of the path, one iterate an epoch, by NumPy.
    rows = np.asarray(rec.trajectory)
    per_epoch = cfg.train.regime.steps_per_epoch(len(x))
    rows = rows[list(range(0, len(rows) - 1, per_epoch)) + [len(rows) - 1]]
    np.testing.assert_allclose(rows[-1], flat, rtol=1e-6)
    s = np.linalg.svd(rows[:-1] - rows[-1], compute_uv=False)
    np.testing.assert_allclose([row["pca_ratio_1"], row["pca_ratio_2"]],
                               s[:2] ** 2 / np.sum(s ** 2), atol=1e-4)
    assert len(row["pca"]["path"]) == len(rows)
  for name in ("interpolation", "slices", "pca", "between"):
    assert _is_png(out / "plots" / f"landscape_{name}.png")


def _logistic_pieces(params, x, y):
  """Per-record softmax cross-entropy and its gradients, in NumPy."""
  w = np.asarray(params["w"][0], np.float64)
  b = np.asarray(params["b"][0], np.float64)
  logits = x @ w + b
  logits -= logits.max(1, keepdims=True)
  p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  labels = y.ravel().astype(int)
  loss = -np.log(p[np.arange(len(x)), labels])
  err = p - np.eye(w.shape[1])[labels]
  grads = np.hstack([err, (x[:, :, None] * err[:, None, :]).reshape(len(x), -1)])
  return loss, grads  # grads: [b, w] per record, as ravel_pytree orders them


def _check_noise_scale(exp, out: Path) -> None:
  payload = json.loads((out / "noise_scale.json").read_text())
  by_name = {r["run"]: r for r in payload["runs"]}
  assert set(by_name) == {c.name for c in config.resolve_runs(exp, smoke=True)}
  target, n = payload["target"], payload["n"]
  for name in (payload["path_run"], payload["runs"][0]["run"]):
    cfg, x, y = _train_set(out / "runs" / name)
    assert cfg.model.kind == "logistic" and cfg.loss.penalty is None
    _, _, objective = analyses.common.problem(cfg, True)
    _, unravel = ravel_pytree(analyses.common.initial_params(cfg, objective))
    rows = results.load_run(out / "runs" / name).trajectory
    losses = [_logistic_pieces(unravel(jnp.asarray(r, jnp.float32)), x, y)[0]
              .mean() for r in rows]
    hit = [k for k, v in enumerate(losses) if v <= target]
    assert by_name[name]["steps"] == (hit[0] if hit else None), name
  # B_simple along the fastest large-batch path, by a loop over the records.
  path = results.load_run(out / "runs" / payload["path_run"]).trajectory
  for k, b_simple in enumerate(payload["b_simple_path"]):
    _, g = _logistic_pieces(unravel(jnp.asarray(path[k], jnp.float32)), x, y)
    trace = np.trace(np.cov(g.T, ddof=1))
    g_bar = g.mean(0)
    assert b_simple == pytest.approx(trace / (g_bar @ g_bar), rel=1e-4)
  b_bar = payload["b_simple_mean"]
  best = payload["best"]
  factor = np.array([1 + b_bar * (1 / r["batch_size"] - 1 / n) for r in best])
  s = np.array([r["steps"] for r in best], float)
  s_min = np.exp(np.mean(np.log(s / factor)))
  assert payload["s_min"] == pytest.approx(s_min, rel=1e-9)
  np.testing.assert_allclose([r["predicted"] for r in best], s_min * factor,
                             rtol=1e-9)
  assert best == sorted(best, key=lambda r: r["batch_size"])
  assert _is_png(out / "plots" / "noise_scale.png")


CHECKS = {
    "subgradient_bound": _check_subgradient_bound,
    "closed_form": _check_closed_form,
    "seed_spread": _check_seed_spread,
    "gradcheck": _check_gradcheck,
    "surface": _check_surface,
    "edge_of_stability": _check_edge_of_stability,
    "step_size": _check_step_size,
    "methods": _check_methods,
    "mnist1d": _check_mnist1d,
    "landscape": _check_landscape,
    "noise_scale": _check_noise_scale,
}


def test_every_analysis_is_checked():
  assert set(CHECKS) == set(analyses.MODULES) == set(config.ANALYSES)
  for name in analyses.MODULES:   # each module registers the analysis it is named for
    assert analyses.get(name) is analyses.ANALYSES[name]


# ----------------------------------------------------------------------------
# Each experiment end to end.

TIMINGS = ("compile_time", "run_time", "steps_per_second", "time")
# The test process runs with x64 on (conftest.py): a float32 experiment whose
# data pass through float64 on the way in (digits, diabetes) rounds
# differently there from `gdlab run`, so only these recorded experiments are
# compared here; test_notebooks compares `default`, which the quickstart
# notebook runs in a fresh process as `gdlab run` does.
COMPARED_HERE = ("batch_vs_stochastic", "closed_form", "subgradient_lasso")


# XLA compiles for the host's CPU (its vector width, its fused multiply-add),
# so a float32 run rounds differently in its last bits on another CPU model:
# float32 runs agree bit for bit with the record on the machine that made it
# (and with the code before the split on any one machine), and to these
# tolerances elsewhere.
RTOL = {"float32": 1e-5, "float64": 1e-10}


def check_recorded_summaries(name: str, out: Path) -> None:
  """The summaries match those recorded from the code before the split.

  ``out`` is the experiment's results folder.  Counts and stop reasons
  match exactly, final metrics to :data:`RTOL` of the run's dtype.
  """
  for run_name, want in RECORDED[name].items():
    rec = results.load_run(out / "runs" / run_name)
    got = rec.summary
    rtol = RTOL[analyses.run_config(rec).train.dtype]
    for key in ("stop_reason", "steps", "epochs", "grad_evals", "fun_evals"):
      assert got[key] == want[key], (run_name, key)
    final = {k: v for k, v in got["final"].items() if k not in TIMINGS}
    assert final.keys() == want["final"].keys(), run_name
    for key, value in want["final"].items():
      if isinstance(value, float):
        assert final[key] == pytest.approx(value, rel=rtol, abs=0), (
            run_name, key)
      else:
        assert final[key] == value, (run_name, key)


def test_the_record_is_of_experiments_that_exist():
  assert set(COMPARED_HERE) | {"default"} == set(RECORDED)
  assert set(RECORDED) <= set(NAMES)


def _analysis_without_training(exp, out: Path, runs, monkeypatch) -> None:
  """Runs the analysis again on the finished folders, with training off."""
  def no_training(*args, **kwargs):
    raise AssertionError("an analysis started training")
  for module, name in ((loop, "fit"), (loop, "drive"),
                       (sweep, "run_sweep"), (run_lib, "run")):
    monkeypatch.setattr(module, name, no_training)
  sections = analyses.run(exp, out, [out / "runs" / c.name for c in runs],
                          smoke=True)
  assert sections and all(isinstance(s, report.Section) or len(s) == 3
                          for s in sections)


@pytest.mark.parametrize("name", NAMES)
def test_experiment_runs_end_to_end(name, tmp_path, monkeypatch):
  exp = config.load(run_lib.find(name))
  out = run_lib.run_experiment(exp, tmp_path / name, smoke=True)
  runs = config.resolve_runs(exp, smoke=True)
  for cfg in runs:
    run_dir = out / "runs" / cfg.name
    for f in RUN_FILES:
      assert (run_dir / f).is_file(), f"{cfg.name}: no {f}"
    rec = results.load_run(run_dir)
    assert len(rec.steps["loss"]) > 0
    assert rec.summary["stop_reason"] in ("max_epochs", "diverged")
  report = (out / "report.md").read_text()
  for cfg in runs:
    assert cfg.name in report
  images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
  assert images
  for image in images:
    assert _is_png(out / image), image
  assert list((out / "plots").glob("*.png"))
  if exp.analysis is not None:
    CHECKS[exp.analysis](exp, out)
    _analysis_without_training(exp, out, runs, monkeypatch)
  if name in COMPARED_HERE:
    check_recorded_summaries(name, out)


# ----------------------------------------------------------------------------
# The analyses' own figures.


def _check_figure(path: Path) -> None:
  assert _is_png(path) and path.stat().st_size > 5_000, path


def test_fbest_gap(tmp_path):
  k = np.arange(1, 201)
  rng = np.random.default_rng(0)
  f = 1.0 + 1 / np.sqrt(k) * (1 + rng.uniform(size=k.size))
  out = subgradient.fbest_gap(
      {"constant": (f, 3 / np.sqrt(k)), "raw": f + 0.5, "exact": np.ones(5)},
      1.0, {"O(1/sqrt k)": 2 / np.sqrt(k)}, tmp_path / "gap.png", log_x=True)
  _check_figure(out)


def test_gradcheck_table(tmp_path):
  rows = [gradcheck.Row(a, l, b, d, "mean", e, 10 * e + 1e-9, True)
          for a in ("relu", "tanh", "sigmoid") for l in ("mse", "softmax_ce")
          for b in ("neuron", "none") for d in (0, 1)
          for e in (1e-14 if a != "relu" else 0.0,)]
  rows.append(gradcheck.Row("tanh", "mse", "none", 3, "mean", 1e-8, 1e-3,
                            False))
  _check_figure(engines.gradcheck_table(rows, tmp_path / "grad.png"))
  with pytest.raises(ValueError, match="rows"):
    engines.gradcheck_table([], tmp_path / "none.png")


def test_sweep_step_size_smoke_writes_the_sensitivity_plot(tmp_path):
  out = tmp_path / "sweep"
  assert cli.main(["sweep", "step_size", "--smoke", "--out", str(out)]) == 0
  exp = config.load(run_lib.find("step_size"))
  n_runs = np.prod([len(v) for v in exp.sweep.values()])
  assert len(list((out / "runs").iterdir())) == n_runs
  assert _is_png(out / "plots" / "sensitivity_optimizer.learning_rate.png")
  assert (out / "report.md").is_file()
