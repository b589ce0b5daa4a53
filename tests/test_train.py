"""The update step and the compiled training loop."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.optimize

from gdlab import loop, models, stopping, train
from gdlab import optim as optim_lib
from gdlab.optim import accounting, hyperparams
from gdlab.losses import Penalty
from gdlab.objective import Objective
from gdlab.optim.gd import gradient_descent


def _regression(n=64, d=3, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d))
  y = x @ rng.normal(size=(d, 1)) + 0.5 + 0.1 * rng.normal(size=(n, 1))
  return jnp.asarray(x), jnp.asarray(y)


def _classification(n=120, d=2, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d))
  p = 1 / (1 + np.exp(-(x @ np.array([1.5, -2.0]) + 0.3)))
  y = (rng.uniform(size=n) < p).astype(float)[:, None]
  return jnp.asarray(x), jnp.asarray(y)


def test_step_metrics_and_optax_equivalence():
  x, y = _regression()
  obj = Objective(models.linear_regression(3), "mse")
  params = obj.model.init(jax.random.PRNGKey(0))
  ours = train.make_step(obj, gradient_descent(0.1))
  theirs = train.make_step(obj, optax.sgd(0.1))
  p1, s1, p2, s2 = params, gradient_descent(0.1).init(params), params, \
      optax.sgd(0.1).init(params)
  for _ in range(20):
    p1, s1, m1 = ours(p1, s1, (x, y))
    p2, s2, m2 = theirs(p2, s2, (x, y))
  for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)):
    np.testing.assert_array_equal(a, b)
  value, grads = obj.value_and_grad(p1, x, y)
  p3, _, m = ours(p1, s1, (x, y))
  np.testing.assert_allclose(m["loss"], value, rtol=1e-14)
  np.testing.assert_allclose(m["grad_norm"], optax.tree.norm(grads),
                             rtol=1e-14)
  np.testing.assert_allclose(m["step_size"], 0.1)
  np.testing.assert_allclose(m["update_norm"], 0.1 * m["grad_norm"],
                             rtol=1e-12)
  assert int(m["fun_evals"]) == 1 and int(m["grad_evals"]) == 1
  # optax's own transforms keep no step size: the effective one is reported.
  np.testing.assert_allclose(m2["step_size"], 0.1, rtol=1e-12)


def test_global_norm_matches_the_plain_sum_and_sees_non_finite():
  rng = np.random.default_rng(0)
  tree = {"matrix": rng.normal(size=(7, 5)), "cube": rng.normal(size=(2, 3, 4)),
          "vector": rng.normal(size=6), "scalar": np.float64(-1.5),
          "empty": np.zeros((0, 3))}
  tree = jax.tree.map(jnp.asarray, tree)

  def want(t):
    return np.sqrt(sum(np.sum(np.asarray(v, np.float64) ** 2)
                       for v in jax.tree.leaves(t)))
  norm = jax.jit(train.global_norm)
  np.testing.assert_allclose(norm(tree), want(tree), rtol=1e-14)
  f32 = jax.tree.map(lambda v: v.astype(jnp.float32), tree)
  assert norm(f32).dtype == jnp.float32
  np.testing.assert_allclose(norm(f32), want(f32), rtol=1e-6)
  # A float16 leaf takes optax's sum.
  half = dict(f32, half=jnp.asarray(rng.normal(size=5), jnp.float16))
  np.testing.assert_allclose(norm(half), want(half), rtol=1e-3)
  # The divergence check reads the update's norm: one inf or NaN shows.
  for bad in (np.inf, -np.inf, np.nan):
    broken = dict(tree, cube=tree["cube"].at[1, 2, 0].set(bad))
    assert not np.isfinite(norm(broken))


def test_step_jit_equals_eager_and_engines_agree():
  x, y = _regression()
  obj = Objective(models.mlp((3, 8, 1), "tanh"), "mse", "sum",
                  Penalty("l2", 1e-2))
  params = obj.model.init(jax.random.PRNGKey(0))
  opt = optax.chain(optax.clip_by_global_norm(1.0), gradient_descent(0.01,
                                                                     0.9))
  results = []
  for engine, jit in [("autodiff", True), ("autodiff", False),
                      ("manual", True), ("manual", False)]:
    step = train.make_step(obj, opt, engine, jit=jit)
    p, s = params, opt.init(params)
    for _ in range(10):
      p, s, _ = step(p, s, (x, y))
    results.append(p)
  for other in results[1:]:
    for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(other)):
      np.testing.assert_allclose(a, b, rtol=1e-10)


@pytest.mark.parametrize("regime", [
    loop.Regime("full_batch"), loop.Regime("sgd"),
    loop.Regime("minibatch", 10), loop.Regime("minibatch", 10, "pad")])
def test_fit_engines_give_the_same_trajectory(regime):
  x, y = _regression(n=45)
  obj = Objective(models.mlp((3, 6, 1), "sigmoid", bias="shared"), "mse")
  runs = [loop.fit(obj, gradient_descent(0.05), (x, y),
                   key=jax.random.PRNGKey(1), regime=regime,
                   criteria=stopping.Criteria(max_epochs=4), engine=engine)
          for engine in ("autodiff", "manual")]
  h1, h2 = runs[0].history, runs[1].history
  expected_steps = {"full_batch": 1, "sgd": 45}.get(
      regime.kind, 4 if regime.remainder == "drop" else 5) * 4
  assert h1.num_steps == h2.num_steps == expected_steps
  np.testing.assert_allclose(h1.steps["loss"], h2.steps["loss"], rtol=1e-10)
  for a, b in zip(jax.tree.leaves(runs[0].params),
                  jax.tree.leaves(runs[1].params)):
    np.testing.assert_allclose(a, b, rtol=1e-10)
  assert runs[0].stop_reason == "max_epochs"
  assert list(h1.epochs["epoch"]) == [1, 2, 3, 4]


@pytest.mark.parametrize("engine", ["autodiff", "manual"])
@pytest.mark.parametrize("chunk_epochs", [1, 3, 7])
def test_full_batch_fit_matches_a_plain_loop(engine, chunk_epochs):
  """A full-batch run's steps and per-epoch metrics against a Python loop of
  ``make_step`` and ``Objective.metrics``: the loop shares one evaluation
  between an epoch's metrics and the next step, over chunk boundaries."""
  x, y = _classification()
  obj = Objective(models.mlp((2, 5, 1), "tanh"), "binary_cross_entropy",
                  "mean", Penalty("l2", 1e-3))
  params = obj.model.init(jax.random.PRNGKey(3))
  opt = gradient_descent(0.5)
  run = loop.fit(obj, opt, (x, y, x[:30], y[:30]), key=jax.random.PRNGKey(0),
                 params=params, engine=engine, chunk_epochs=chunk_epochs,
                 criteria=stopping.Criteria(max_epochs=8), eval_every=1)
  step = train.make_step(obj, opt, engine)
  state, losses, train_metrics, test_metrics = opt.init(params), [], [], []
  for _ in range(8):
    params, state, m = step(params, state, (x, y))
    losses.append(m["loss"])
    train_metrics.append(obj.metrics(params, x, y))
    test_metrics.append(obj.metrics(params, x[:30], y[:30]))
  e = run.history.epochs
  np.testing.assert_allclose(run.history.steps["loss"], losses, rtol=1e-12)
  np.testing.assert_allclose(e["train_loss"], [m[0] for m in train_metrics],
                             rtol=1e-12)
  np.testing.assert_allclose(e["train_accuracy"],
                             [m[1] for m in train_metrics])
  np.testing.assert_allclose(e["test_loss"], [m[0] for m in test_metrics],
                             rtol=1e-12)
  np.testing.assert_array_equal(run.history.steps["fun_evals"], 1)
  chex.assert_trees_all_close(run.params, params, rtol=1e-12)


def test_full_batch_fit_with_mixed_dtype_params():
  """A float32 layer among float64 ones: both engines train (the manual
  engine's gradient comes out in the wider dtype) and agree."""
  x, y = _regression()
  obj = Objective(models.mlp((3, 4, 1), "tanh"), "mse")
  params = obj.model.init(jax.random.PRNGKey(0))
  params["w"][1] = params["w"][1].astype(jnp.float32)
  runs = [loop.fit(obj, gradient_descent(0.1), (x, y), params=params,
                   key=jax.random.PRNGKey(0), engine=engine, chunk_epochs=3,
                   criteria=stopping.Criteria(max_epochs=6))
          for engine in ("autodiff", "manual")]
  for run in runs:
    assert run.params["w"][1].dtype == jnp.float32
  np.testing.assert_allclose(runs[0].history.epochs["train_loss"],
                             runs[1].history.epochs["train_loss"], rtol=1e-6)


def test_padded_last_batch_is_the_mean_over_its_real_records():
  x, y = _regression(n=7)
  obj = Objective(models.linear_regression(3), "mse")
  run = loop.fit(obj, gradient_descent(0.1), (x, y), key=jax.random.PRNGKey(0),
                 regime=loop.Regime("minibatch", 3, "pad"),
                 criteria=stopping.Criteria(max_epochs=1))
  # Replay the epoch by hand: the same permutation, batches of 3, 3 and 1.
  k_init, k_data = jax.random.split(jax.random.PRNGKey(0))
  _, sub = jax.random.split(k_data)
  perm = np.asarray(jax.random.permutation(sub, 7))
  params = obj.model.init(k_init)
  for rows in (perm[:3], perm[3:6], perm[6:]):
    _, g = obj.value_and_grad(params, x[rows], y[rows])
    params = jax.tree.map(lambda p, g: p - 0.1 * g, params, g)
  for a, b in zip(jax.tree.leaves(run.params), jax.tree.leaves(params)):
    np.testing.assert_allclose(a, b, rtol=1e-12)


def test_sgd_with_diminishing_steps_approaches_the_full_batch_optimum():
  x, y = _classification()
  lam = 0.05
  obj = Objective(models.logistic_regression(2), "binary_cross_entropy",
                  penalty=Penalty("l2", lam))
  # The optimum from an independent solver on the same objective.
  xn, yn = np.asarray(x), np.asarray(y)[:, 0]

  def f(theta):
    z = xn @ theta[:2] + theta[2]
    return np.mean(np.logaddexp(0, z) - yn * z) + 0.5 * lam * theta[:2] @ \
        theta[:2]
  opt = scipy.optimize.minimize(f, np.zeros(3), method="BFGS", tol=1e-12)
  f_star = opt.fun
  schedule = lambda k: 2.0 / (10.0 + k / len(xn))
  run = loop.fit(obj, gradient_descent(schedule), (x, y),
                 key=jax.random.PRNGKey(0), regime="sgd",
                 criteria=stopping.Criteria(max_epochs=60))
  theta = np.concatenate([np.asarray(run.params["w"][0])[:, 0],
                          np.asarray(run.params["b"][0])])
  gap = f(theta) - f_star
  # f* is about 0.45: the gap is under 0.25% of it after 7200 updates.
  assert 0 <= gap < 1e-3, gap
  assert np.linalg.norm(theta - opt.x) < 0.05 * np.linalg.norm(opt.x)
  # Constant-step SGD stalls at a noise floor well above that.
  const = loop.fit(obj, gradient_descent(0.5), (x, y),
                   key=jax.random.PRNGKey(0), regime="sgd",
                   criteria=stopping.Criteria(max_epochs=60))
  theta_c = np.concatenate([np.asarray(const.params["w"][0])[:, 0],
                            np.asarray(const.params["b"][0])])
  assert f(theta_c) - f_star > 20 * gap


def test_divergent_step_size_stops_with_finite_parameters():
  x, y = _regression()
  obj = Objective(models.linear_regression(3), "mse")
  run = loop.fit(obj, gradient_descent(5.0), (x, y), key=jax.random.PRNGKey(0),
                 criteria=stopping.Criteria(max_epochs=5000))
  assert run.stop_reason == "diverged"
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(run.params))
  assert run.history.num_steps < 5000
  assert np.all(np.isfinite(run.history.steps["loss"][:-1]))
  # Without the growth test, the run goes on until the loss overflows.
  run = loop.fit(obj, gradient_descent(5.0), (x, y), key=jax.random.PRNGKey(0),
                 criteria=stopping.Criteria(max_epochs=5000,
                                            divergence_factor=None))
  assert run.stop_reason == "diverged"
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(run.params))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_all_finite_agrees_with_numpy(dtype):
  big = np.finfo(dtype).max
  tree = {"w": np.full((50, 40), big, dtype), "b": -np.full(7, big, dtype),
          "n": np.arange(5, dtype=np.int32)}  # no overflow from finite values
  check = jax.jit(stopping.all_finite)
  assert bool(check(tree)) and bool(stopping.all_finite(tree))
  for leaf in ("w", "b"):
    for bad in (np.nan, np.inf, -np.inf):
      broken = dict(tree, **{leaf: tree[leaf].copy()})
      broken[leaf].flat[3] = bad
      assert not bool(check(broken)) and not bool(stopping.all_finite(broken))


@pytest.mark.parametrize("criteria,reason", [
    (stopping.Criteria(max_epochs=10_000, grad_tol=1e-6), "grad_tol"),
    ("loss_tol at 1.001 f*", "loss_tol"),
    (stopping.Criteria(max_epochs=10_000, rel_tol=1e-9, patience=3),
     "rel_tol"),
    (stopping.Criteria(max_epochs=10_000, param_tol=1e-8), "param_tol"),
    (stopping.Criteria(max_epochs=10_000, max_steps=37), "max_steps"),
    (stopping.Criteria(max_epochs=10_000, max_grad_evals=41),
     "max_grad_evals"),
    (stopping.Criteria(max_epochs=12), "max_epochs"),
])
def test_stopping_criteria(criteria, reason):
  x, y = _regression()
  obj = Objective(models.linear_regression(3), "mse")
  xa = np.hstack([np.asarray(x), np.ones((len(x), 1))])
  residual = np.linalg.lstsq(xa, np.asarray(y), rcond=None)[1][0]
  f_star = residual / len(x)
  if isinstance(criteria, str):
    criteria = stopping.Criteria(max_epochs=10_000, loss_tol=1.001 * f_star)
  run = loop.fit(obj, gradient_descent(0.2), (x, y), key=jax.random.PRNGKey(0),
                 criteria=criteria)
  assert run.stop_reason == reason
  h = run.history.steps
  k = len(h["loss"])
  if reason == "grad_tol":
    assert h["grad_norm"][-1] <= 1e-6 < h["grad_norm"][-2]
  elif reason == "loss_tol":
    assert h["loss"][-1] <= 1.001 * f_star < h["loss"][-2]
  elif reason == "rel_tol":
    rel = np.abs(np.diff(h["loss"])) / np.abs(h["loss"][:-1])
    assert np.all(rel[-3:] <= 1e-9) and rel[-4] > 1e-9
  elif reason == "param_tol":
    assert h["update_norm"][-1] <= 1e-8 < h["update_norm"][-2]
  elif reason == "max_steps":
    assert k == 37
  elif reason == "max_grad_evals":
    assert k == 41
  else:
    assert k == 12


def test_interrupted_run_resumes_to_the_same_result():
  x, y = _regression()
  obj = Objective(models.mlp((3, 5, 1), "tanh"), "mse")
  kwargs = dict(key=jax.random.PRNGKey(3), regime=loop.Regime("minibatch", 16),
                criteria=stopping.Criteria(max_epochs=12), chunk_epochs=3)
  full = loop.fit(obj, gradient_descent(0.05, 0.9), (x, y), **kwargs)

  def interrupt(carry, history):
    if int(carry.epoch) >= 6:
      raise KeyboardInterrupt
  part = loop.fit(obj, gradient_descent(0.05, 0.9), (x, y), on_chunk=interrupt,
                  **kwargs)
  assert part.stop_reason == "interrupted"
  assert int(part.carry.epoch) == 6
  rest = loop.fit(obj, gradient_descent(0.05, 0.9), (x, y), carry=part.carry,
                  history=part.history, **kwargs)
  assert rest.stop_reason == "max_epochs"
  for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(rest.params)):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(full.history.steps["loss"],
                                rest.history.steps["loss"])


def test_bad_regimes():
  with pytest.raises(ValueError, match=r"regime: expected one of "
                     r"'full_batch', 'sgd', 'minibatch'; got 'batch'"):
    loop.Regime("batch")
  with pytest.raises(ValueError, match=r"batch_size: expected an integer "
                     r">= 1; got 0"):
    loop.Regime("minibatch", 0)
  with pytest.raises(ValueError, match=r"batch_size.*needs a batch size"):
    loop.Regime("minibatch")
  x, y = _regression(n=20)
  obj = Objective(models.linear_regression(3), "mse")
  with pytest.raises(ValueError, match=r"batch_size: expected an integer in "
                     r"\[1, n\] with n=20 training records; got 32"):
    loop.fit(obj, gradient_descent(0.1), (x, y), key=jax.random.PRNGKey(0),
             regime=loop.Regime("minibatch", 32))
  with pytest.raises(ValueError, match=r"max_epochs: expected an integer "
                     r">= 1; got 0"):
    stopping.Criteria(max_epochs=0)
  with pytest.raises(TypeError, match="optimizer: expected an optax"):
    train.make_step(obj, lambda g: g)


def test_line_search_inside_the_step_reports_its_evaluations():
  from gdlab import optim
  x, y = _regression()
  obj = Objective(models.mlp((3, 4, 1), "tanh"), "mse")
  opt = optim.steepest_descent(optim.backtracking_linesearch(initial_step=4.0))
  run = loop.fit(obj, opt, (x, y), key=jax.random.PRNGKey(0),
                 criteria=stopping.Criteria(max_epochs=30))
  h = run.history.steps
  # One evaluation for the step itself, plus the trials of the search.
  assert np.all(h["fun_evals"] >= 2) and np.any(h["fun_evals"] > 2)
  assert np.all(np.diff(h["loss"]) <= 0)  # Armijo: a descent method.
  assert np.all(h["step_size"] <= 4.0)
  assert run.history.epochs["fun_evals"][-1] == h["fun_evals"].sum()


def test_lighter_logging_gives_the_same_run():
  x, y = _regression()
  obj = Objective(models.mlp((3, 6, 1), "tanh"), "mse")
  kwargs = dict(key=jax.random.PRNGKey(0), regime=loop.Regime("minibatch", 16),
                criteria=stopping.Criteria(max_epochs=7))
  full = loop.fit(obj, gradient_descent(0.1), (x, y, x, y), eval_every=1,
                  **kwargs)
  light = loop.fit(obj, gradient_descent(0.1), (x, y, x, y), eval_every=3,
                   step_metrics="loss", **kwargs)
  # The same run; XLA may fuse the two programs differently, hence rounding.
  for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(light.params)):
    np.testing.assert_allclose(a, b, rtol=1e-12)
  np.testing.assert_allclose(full.history.steps["loss"],
                             light.history.steps["loss"], rtol=1e-12)
  assert np.all(np.isnan(light.history.steps["grad_norm"]))
  e_full, e_light = full.history.epochs, light.history.epochs
  # Evaluated at epochs 3 and 6, and at the last one (7).
  evaluated = ~np.isnan(e_light["train_loss"])
  np.testing.assert_array_equal(evaluated, [False, False, True, False, False,
                                            True, True])
  np.testing.assert_allclose(e_light["test_loss"][evaluated],
                             e_full["test_loss"][evaluated], rtol=1e-12)
  # The default evaluates as often as costs 5% of the training: here (mini-
  # batches, a test set as large as the training set) every 14th epoch, and
  # at the last one.
  assert loop.auto_eval_every(kwargs["regime"], len(x), len(x)) == 14
  auto = loop.fit(obj, gradient_descent(0.1), (x, y, x, y), **kwargs)
  np.testing.assert_array_equal(~np.isnan(auto.history.epochs["test_loss"]),
                                [False] * 6 + [True])
  # A criterion that reads a norm turns the norms back on.
  linear = Objective(models.linear_regression(3), "mse")
  tol = loop.fit(linear, gradient_descent(0.1), (x, y), step_metrics="loss",
                 key=jax.random.PRNGKey(0),
                 criteria=stopping.Criteria(max_epochs=10_000, grad_tol=1e-3))
  assert tol.stop_reason == "grad_tol"
  assert np.all(np.isfinite(tol.history.steps["grad_norm"]))
  with pytest.raises(ValueError, match="step_metrics: expected one of 'all', "
                     "'loss'; got 'none'"):
    loop.fit(obj, gradient_descent(0.1), (x, y), key=jax.random.PRNGKey(0),
             step_metrics="none")


def test_full_batch_steps_reuse_the_point_a_search_stored():
  """The same run with and without reuse, one engine evaluation in all."""
  from gdlab import optim
  x, y = _regression()
  obj = Objective(models.mlp((3, 6, 1), "tanh"), "mse", "mean",
                  Penalty("l2", 1e-3))
  params0 = obj.model.init(jax.random.PRNGKey(0))
  runs = {}
  for reuse in (False, True):
    for engine in ("autodiff", "manual"):
      opt = optim.steepest_descent(optim.wolfe_linesearch(
          reuse_last_step=True))
      step = train.make_step(obj, opt, engine, reuse_search_point=reuse)
      params, state, logs = params0, opt.init(params0), []
      for _ in range(15):
        params, state, m = step(params, state, (x, y))
        logs.append(m)
      runs[reuse, engine] = params, {k: np.array([m[k] for m in logs])
                                     for k in logs[0]}
  p_ref, m_ref = runs[False, "autodiff"]
  for (reuse, engine), (p, m) in runs.items():
    chex.assert_trees_all_close(p, p_ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(m["loss"], m_ref["loss"], rtol=1e-12)
    # One evaluation by the engine plus the trials; with reuse, the engine
    # evaluates at the first step only.
    expected = m_ref["fun_evals"] - (reuse & (np.arange(15) > 0))
    np.testing.assert_array_equal(m["fun_evals"], expected)
    np.testing.assert_array_equal(m["grad_evals"], expected)
  # In the loop, full-batch runs reuse; the same parameters come out.
  run = loop.fit(obj, optim.steepest_descent(optim.wolfe_linesearch(
      reuse_last_step=True)), (x, y), key=jax.random.PRNGKey(0),
                 params=params0, criteria=stopping.Criteria(max_epochs=15))
  chex.assert_trees_all_close(run.params, p_ref, rtol=1e-9, atol=1e-12)
  assert run.history.epochs["fun_evals"][-1] == \
      runs[True, "autodiff"][1]["fun_evals"].sum()


def _run_steps(step, opt, params, batch, n):
  state, logs = opt.init(params), []
  for _ in range(n):
    params, state, m = step(params, state, batch)
    logs.append(m)
  return params, {k: np.array([m[k] for m in logs]) for k in logs[0]}


def test_reuse_only_from_a_search_that_is_the_last_transform():
  """A transform after the search changes the step: nothing is reused, and
  the run is the run without reuse."""
  from gdlab import optim
  x, y = _regression()
  obj = Objective(models.mlp((3, 6, 1), "tanh"), "mse")
  params = obj.model.init(jax.random.PRNGKey(0))
  opt = optax.chain(optim.steepest_descent(optim.wolfe_linesearch()),
                    optax.scale(0.5))
  runs = [_run_steps(train.make_step(obj, opt, reuse_search_point=r), opt,
                     params, (x, y), 6) for r in (False, True)]
  chex.assert_trees_all_close(runs[0][0], runs[1][0], rtol=1e-12)
  np.testing.assert_array_equal(runs[0][1]["fun_evals"],
                                runs[1][1]["fun_evals"])
  assert accounting.stored_point(opt.init(params)) is None
  assert accounting.stored_point(
      optim.steepest_descent(optim.wolfe_linesearch()).init(params)) is not None


def test_optax_backtracking_with_stored_gradient_is_counted_and_reused():
  """optax's backtracking search with ``store_grad`` computes the gradient
  of its accepted step: one gradient evaluation per step, and with reuse
  none of the step's own after the first."""
  x, y = _regression()
  obj = Objective(models.mlp((3, 6, 1), "tanh"), "mse")
  params = obj.model.init(jax.random.PRNGKey(0))
  opt = optax.chain(optax.scale(-1.0), optax.scale_by_backtracking_linesearch(
      max_backtracking_steps=30, store_grad=True))
  (p0, m0), (p1, m1) = [
      _run_steps(train.make_step(obj, opt, reuse_search_point=r), opt, params,
                 (x, y), 6) for r in (False, True)]
  chex.assert_trees_all_close(p0, p1, rtol=1e-10)
  np.testing.assert_array_equal(m0["grad_evals"], 2)
  np.testing.assert_array_equal(m1["grad_evals"], [2, 1, 1, 1, 1, 1])
  np.testing.assert_array_equal(m1["fun_evals"][1:], m0["fun_evals"][1:] - 1)


@pytest.mark.parametrize("search", ["wolfe", "armijo_stored"])
def test_manual_engine_drives_the_line_search_gradients(monkeypatch, search):
  """With ``engine="manual"`` the searches' trials run the hand-written
  passes, not ``jax.grad``: every forward and backward pass is counted, and
  the counts are the step's ``fun_evals`` and ``grad_evals``."""
  from gdlab import backprop, optim
  x, y = _regression()
  obj = Objective(models.mlp((3, 5, 1), "tanh"), "mse")
  params = obj.model.init(jax.random.PRNGKey(1))
  calls = {"forward": 0, "backward": 0}
  for name in calls:
    real = getattr(backprop, name)

    def counted(*args, real=real, name=name, **kwargs):
      calls[name] += 1
      return real(*args, **kwargs)
    monkeypatch.setattr(backprop, name, counted)
  search = (optim.wolfe_linesearch(initial_step=50.0) if search == "wolfe"
            else optim.backtracking_linesearch(initial_step=50.0,
                                               store_grad=True))
  opt = optim.steepest_descent(search)
  step = train.make_step(obj, opt, "manual", jit=False)
  state = opt.init(params)
  with jax.disable_jit():
    for _ in range(2):
      params, state, m = step(params, state, (x, y))
      assert calls["backward"] == int(m["grad_evals"])
      assert calls["forward"] == int(m["fun_evals"])
      assert int(optax.tree.get(state, "num_trials")) > 1
      calls.update(forward=0, backward=0)


def test_optax_line_searches_are_counted():
  from gdlab.data import get_function
  from gdlab.objective import FunctionObjective
  fn = get_function("rosenbrock")
  obj = FunctionObjective(fn.fn, (-1.2, 1.0))
  opt = optax.lbfgs()
  step = train.make_step(obj, opt)
  params, state = obj.model.init(None), opt.init(obj.model.init(None))
  dummy = (jnp.zeros((1, 1)), jnp.zeros((1, 1)))
  for _ in range(3):
    params, state, m = step(params, state, dummy)
    n = int(optax.tree.get(state, "num_linesearch_steps"))
    assert int(m["fun_evals"]) == int(m["grad_evals"]) == 1 + n
    np.testing.assert_allclose(m["step_size"],
                               optax.tree.get(state, "learning_rate"))


def test_growth_from_a_zero_first_loss_is_not_divergence():
  state = stopping.init(jnp.float64)
  kw = dict(grad_norm=jnp.array(1.0), update_norm=jnp.array(1.0),
            new_params_finite=jnp.array(True), steps=jnp.int32(1),
            grad_evals=jnp.int32(1))
  diverged, state = stopping.check(stopping.Criteria(), state,
                                   loss=jnp.array(0.0), **kw)
  diverged, state = stopping.check(stopping.Criteria(), state,
                                   loss=jnp.array(1e-3), **kw)
  assert not bool(diverged) and int(state.reason) == stopping.RUNNING


# ----------------------------------------------------------------------------
# Compiled once: a second fit of the same structure compiles nothing.

_EVENTS: list[str] = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kw: _EVENTS.append(event))


def _compiles(fn) -> tuple[int, object]:
  """(XLA compilations and traces to jaxpr made by ``fn()``, its result)."""
  start = len(_EVENTS)
  out = fn()
  new = _EVENTS[start:]
  return sum(e in ("/jax/core/compile/backend_compile_duration",
                   "/jax/core/compile/jaxpr_trace_duration") for e in new), out


@pytest.mark.parametrize("make_opt", [
    lambda lr: gradient_descent(lr, momentum=0.9),
    lambda lr: optim_lib.subgradient_descent(optim_lib.square_summable(lr, 2.)),
    lambda lr: optim_lib.steepest_descent(
        optim_lib.backtracking_linesearch(initial_step=lr * 10, c1=lr / 10)),
    lambda lr: optim_lib.heavy_ball(optim_lib.exponential_decay(lr, 10, 0.5),
                                    0.5),
], ids=["momentum", "subgradient_rule", "armijo", "heavy_ball_schedule"])
def test_a_second_fit_compiles_nothing(make_opt):
  """Same structure, new hyperparameters, new data of the same shape: no
  compilation, and the numbers of a fresh process's first run."""
  x, y = _regression()
  obj = Objective(models.mlp((3, 6, 1), "tanh"), "mse")
  kwargs = dict(key=jax.random.PRNGKey(3), regime=loop.Regime("minibatch", 8),
                criteria=stopping.Criteria(max_epochs=3))
  loop.clear_programs()
  first = loop.fit(obj, make_opt(0.05), (x, y), **kwargs)
  assert first.history.compile_time > 0
  n, again = _compiles(lambda: loop.fit(obj, make_opt(0.05), (x, y),
                                        **kwargs))
  assert n == 0
  assert again.history.compile_time == 0
  np.testing.assert_array_equal(again.history.steps["loss"],
                                first.history.steps["loss"])
  x1 = x + 1
  n, other = _compiles(lambda: loop.fit(obj, make_opt(0.02), (x1, y),
                                        **kwargs))
  assert n == 0
  # The reused program gives what a program compiled for these numbers gives.
  loop.clear_programs()
  fresh = loop.fit(obj, make_opt(0.02), (x1, y), **kwargs)
  assert fresh.history.compile_time > 0
  np.testing.assert_array_equal(other.history.steps["loss"],
                                fresh.history.steps["loss"])


def test_a_new_structure_compiles_again():
  """What shapes the program is part of its key: another model, regime,
  criteria, dtype of data, or a momentum of 0 (no velocity buffer)."""
  x, y = _regression()
  obj = Objective(models.mlp((3, 6, 1), "tanh"), "mse")
  kwargs = dict(key=jax.random.PRNGKey(3),
                criteria=stopping.Criteria(max_epochs=2))
  loop.fit(obj, gradient_descent(0.1, momentum=0.5), (x, y), **kwargs)
  for change in [
      lambda: loop.fit(obj, gradient_descent(0.1), (x, y), **kwargs),
      lambda: loop.fit(Objective(models.mlp((3, 5, 1), "tanh"), "mse"),
                       gradient_descent(0.1, momentum=0.5), (x, y), **kwargs),
      lambda: loop.fit(obj, gradient_descent(0.1, momentum=0.5), (x, y),
                       regime="sgd", **kwargs),
      lambda: loop.fit(obj, gradient_descent(0.1, momentum=0.5),
                       (x[:-1], y[:-1]), **kwargs),
  ]:
    n, result = _compiles(change)
    assert n > 0 and result.history.compile_time > 0


def test_recipes_split_and_assemble():
  """A recipe is hashable, equal for equal structure, and rebuilds the
  transformation with the numbers it is given."""
  a = optim_lib.steepest_descent(optim_lib.wolfe_linesearch(c1=1e-3))
  b = optim_lib.steepest_descent(optim_lib.wolfe_linesearch(c1=1e-2))
  (ra, na), (rb, nb) = hyperparams.split(a), hyperparams.split(b)
  assert ra == rb and hash(ra) == hash(rb)
  assert na["line_search"]["c1"] == 1e-3 and nb["line_search"]["c1"] == 1e-2
  x, y = _regression()
  obj = Objective(models.mlp((3, 6, 1), "tanh"), "mse")
  params = obj.model.init(jax.random.PRNGKey(0))
  rebuilt = hyperparams.assemble(ra, nb)
  for opt in (b, rebuilt):
    step = train.make_step(obj, opt)
    out = step(params, opt.init(params), (x, y))
    if opt is b:
      want = out
  chex.assert_trees_all_equal(out, want)
  # Zero is structure; optax's own transformations are their own recipe.
  assert (hyperparams.split(gradient_descent(0.1))[0] !=
          hyperparams.split(gradient_descent(0.1, 0.5))[0])
  adam = optax.adam(1e-3)
  assert hyperparams.split(adam) == (hyperparams.Opaque(adam), {})
  made = hyperparams.optax_factory(optax.adam, "learning_rate")
  assert hyperparams.split(made(1e-3))[0] == hyperparams.split(made(1e-2))[0]


def test_accounting_reads_every_optimizer_family():
  """One record per state: the step size and the evaluations a search made,
  for gdlab's optimizers and optax's own line searches."""
  x, y = _regression()
  obj = Objective(models.mlp((3, 6, 1), "tanh"), "mse")
  params = obj.model.init(jax.random.PRNGKey(0))
  cases = {
      "gd": (gradient_descent(0.1), 0.1, False),
      "subgradient": (optim_lib.subgradient_descent(0.1), 0.1, False),
      "wolfe": (optim_lib.steepest_descent(optim_lib.wolfe_linesearch()),
                None, True),
      "optax_zoom": (optax.chain(optax.scale(-1.0),
                                 optax.scale_by_zoom_linesearch(20)),
                     None, True),
      "adam": (optax.adam(1e-3), None, False),
  }
  for name, (opt, lr, searches) in cases.items():
    state = opt.init(params)
    _, new_state, m = train.make_step(obj, opt)(params, state, (x, y))
    fun, grad = accounting.step_evals(state, new_state)
    size = accounting.step_size(new_state)
    if lr is not None:
      np.testing.assert_allclose(size, lr, err_msg=name)
    if name == "adam":
      assert size is None and accounting.records(new_state) == []
    assert (int(fun) > 0) == searches, name
    assert int(m["fun_evals"]) == 1 + int(fun), name
    assert int(m["grad_evals"]) == 1 + int(grad), name
