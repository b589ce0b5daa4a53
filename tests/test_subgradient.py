"""The subgradient method, against optimal values computed by linear programs.

Least absolute deviations ``min_x ||Ax - b||_1`` and an L1-regularized hinge
SVM are both linear programs, so ``scipy.optimize.linprog`` gives ``f*`` and
``x*`` independently of the code under test.  The subgradient method is then
checked against the classical bound (Boyd and Mutapcic, Subgradient Methods)

  f_best^(k) - f* <= (R^2 + G^2 sum_{i<=k} alpha_i^2) / (2 sum_{i<=k} alpha_i)

at every step, with ``R = ||x_0 - x*||`` and ``G`` a true bound on the
subgradient norms.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.optimize import linprog

from gdlab.optim import schedules
from gdlab.optim.subgradient import SubgradientState
from gdlab.optim.subgradient import best_params
from gdlab.optim.subgradient import best_value
from gdlab.optim.subgradient import subgradient_descent
from helpers import jit_once

# Standard promotion: under strict promotion the library's diminishing
# schedules add a Python float to the integer count
# (gdlab/optim/schedules.py, square_summable and nonsummable_diminishing).


class LAD:
  """Least absolute deviations on random 60 x 5 data with Laplace noise."""

  def __init__(self, m=60, n=5, seed=0):
    rng = np.random.default_rng(seed)
    self.a = rng.standard_normal((m, n))
    self.b = self.a @ rng.standard_normal(n) + rng.laplace(size=m)
    # LP in (x, t): min sum t  s.t.  Ax - b <= t,  -(Ax - b) <= t.
    eye = np.eye(m)
    res = linprog(
        np.r_[np.zeros(n), np.ones(m)],
        A_ub=np.block([[self.a, -eye], [-self.a, -eye]]),
        b_ub=np.r_[self.b, -self.b],
        bounds=[(None, None)] * n + [(0, None)] * m, method="highs")
    assert res.status == 0
    self.x_star, self.f_star = res.x[:n], res.fun
    self.x0 = jnp.zeros(n)
    self.r = np.linalg.norm(self.x0 - self.x_star)
    # Subgradients are A^T s with s in [-1, 1]^m, so ||g|| <= sum_i ||a_i||
    # and ||g|| <= ||A^T||_2 ||s||_2 <= sqrt(m) ||A||_2; both are true bounds.
    self.g = min(np.linalg.norm(self.a, axis=1).sum(),
                 np.sqrt(m) * np.linalg.norm(self.a, 2))

  def f(self, x):
    return jnp.sum(jnp.abs(self.a @ x - self.b))


@pytest.fixture(scope="module")
def lad():
  problem = LAD()
  # The LP optimum is an optimum: its value is f at x*, and nothing beats it.
  np.testing.assert_allclose(problem.f(problem.x_star), problem.f_star,
                             rtol=1e-10)
  return problem


def scan(step_rule, f, x0, num_steps):
  """The method in ``lax.scan``; returns the state and per-step traces."""
  opt = subgradient_descent(step_rule)

  def step(carry, _):
    x, state = carry
    value, grads = jax.value_and_grad(f)(x)
    updates, state = opt.update(grads, state, x, value=value)
    trace = {"f_best": state.f_best, "alpha": state.step_size,
             "value": value, "grad_norm": optax.tree.norm(grads)}
    return (optax.apply_updates(x, updates), state), trace

  (_, state), trace = jax.lax.scan(step, (x0, opt.init(x0)), None,
                                   length=num_steps)
  return state, trace


@functools.cache
def _compiled_scan(step_rule, f, num_steps):
  """:func:`scan` compiled once per rule, objective and length: tests that
  run the same rule on the same problem share the program."""
  return jit_once(lambda x: scan(step_rule, f, x, num_steps))


def run(step_rule, f, x0, num_steps):
  """:func:`scan` under ``jit``, traces as NumPy arrays."""
  state, trace = _compiled_scan(step_rule, f, num_steps)(x0)
  return state, jax.tree.map(np.asarray, trace)


def classical_bound(r, g, alphas):
  return (r ** 2 + g ** 2 * np.cumsum(alphas ** 2)) / (2 * np.cumsum(alphas))


DIMINISHING = {
    "square_summable": schedules.square_summable(0.1, 1.0),
    "nonsummable_diminishing": schedules.nonsummable_diminishing(0.05),
}


@pytest.mark.parametrize("name, rule", [("constant", 0.002),
                                        *DIMINISHING.items()])
def test_lad_classical_bound_every_step(lad, name, rule):
  num_steps = 2000
  state, trace = run(rule, lad.f, lad.x0, num_steps)
  gap = trace["f_best"] - lad.f_star
  bound = classical_bound(lad.r, lad.g, trace["alpha"])
  assert np.all(gap <= bound), f"{name}: first violation at step " \
      f"{np.argmax(gap > bound)}"
  assert np.all(trace["grad_norm"] <= lad.g)  # G is a bound indeed.
  # The step sizes are the rule's, at k = 0, 1, ...
  expected = (np.full(num_steps, rule) if name == "constant" else
              np.asarray(rule(jnp.arange(num_steps))))
  np.testing.assert_allclose(trace["alpha"], expected, rtol=1e-15)
  # f_best is the running minimum of the observed values (computed here).
  np.testing.assert_array_equal(trace["f_best"],
                                np.minimum.accumulate(trace["value"]))
  np.testing.assert_allclose(lad.f(best_params(state)), best_value(state),
                             rtol=1e-14)
  assert int(state.count) == int(state.num_fun_evals) == num_steps
  assert int(state.num_grad_evals) == num_steps


@pytest.mark.parametrize("name", DIMINISHING)
def test_lad_diminishing_steps_converge(lad, name):
  _, trace = run(DIMINISHING[name], lad.f, lad.x0, 2000)
  gap = trace["f_best"] - lad.f_star
  initial_gap = float(lad.f(lad.x0)) - lad.f_star  # about 156
  assert gap[-1] <= 1e-4 * initial_gap
  assert gap[-1] < 0.5 * gap[199]  # still improving: tends to zero


def test_lad_polyak_with_true_f_star(lad):
  _, trace = run(schedules.polyak(lad.f_star), lad.f, lad.x0, 2000)
  gap = trace["f_best"] - lad.f_star
  k = np.arange(gap.size)
  assert np.all(gap <= lad.g * lad.r / np.sqrt(k + 1))  # Polyak's bound
  assert gap[-1] <= 1e-6 * gap[0]


def test_lad_polyak_with_estimated_f_star(lad):
  rule = schedules.polyak_estimated(schedules.square_summable(100.0, 10.0))
  _, trace = run(rule, lad.f, lad.x0, 2000)
  gap = trace["f_best"] - lad.f_star
  bound = classical_bound(lad.r, lad.g, trace["alpha"])
  assert np.all(gap <= bound)
  assert gap[-1] <= 1e-4 * gap[0]


def test_lad_constant_step_length(lad):
  gamma = 0.05
  _, trace = run(schedules.constant_step_length(gamma), lad.f, lad.x0, 1000)
  gap = trace["f_best"] - lad.f_star
  np.testing.assert_allclose(trace["alpha"] * trace["grad_norm"], gamma,
                             rtol=1e-12)
  # The same basic inequality with the observed ||g_i||: each step has
  # alpha_i^2 ||g_i||^2 = gamma^2.
  bound = ((lad.r ** 2 + gamma ** 2 * np.arange(1, gap.size + 1)) /
           (2 * np.cumsum(trace["alpha"])))
  assert np.all(gap <= bound)
  assert gap[-1] <= lad.g * gamma / 2  # the limit of the bound


def test_hinge_svm_against_lp():
  """L1-regularized hinge loss on a pytree of params {w, c}."""
  rng = np.random.default_rng(7)
  m, d, lam = 80, 3, 0.05
  x = rng.standard_normal((m, d))
  y = np.sign(x @ np.array([1.0, -2.0, 0.5]) + 0.3 +
              0.5 * rng.standard_normal(m))

  def f(p):
    margins = y * (x @ p["w"] + p["c"])
    return jnp.mean(jnp.maximum(0.0, 1.0 - margins)) + lam * jnp.sum(
        jnp.abs(p["w"]))

  # LP in (w, c, xi, u): min mean(xi) + lam sum(u)
  #   s.t. 1 - y_i (x_i w + c) <= xi_i,  w <= u,  -w <= u,  xi >= 0.
  yx = y[:, None] * x
  zeros_md, eye_d = np.zeros((m, d)), np.eye(d)
  a_ub = np.block([
      [-yx, -y[:, None], -np.eye(m), zeros_md],
      [eye_d, np.zeros((d, 1)), np.zeros((d, m)), -eye_d],
      [-eye_d, np.zeros((d, 1)), np.zeros((d, m)), -eye_d],
  ])
  b_ub = np.r_[-np.ones(m), np.zeros(2 * d)]
  cost = np.r_[np.zeros(d + 1), np.full(m, 1.0 / m), np.full(d, lam)]
  bounds = [(None, None)] * (d + 1) + [(0, None)] * (m + d)
  res = linprog(cost, A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs")
  assert res.status == 0
  f_star = res.fun

  p0 = {"w": jnp.zeros(d), "c": jnp.zeros(())}
  state, trace = run(schedules.nonsummable_diminishing(0.5), f, p0, 3000)
  gap = trace["f_best"] - f_star
  assert np.all(gap >= -1e-9)  # f* is a lower bound
  assert gap[-1] <= 1e-3 * gap[0]
  np.testing.assert_allclose(f(best_params(state)), best_value(state),
                             rtol=1e-14)


# ----------------------------------------------------------------------------
# Best-iterate tracking, NaN safety, errors, composition.
# ----------------------------------------------------------------------------


def test_best_iterate_tracking_ignores_nan():
  opt = subgradient_descent(0.1)
  x0 = jnp.array([1.0, 2.0])
  state = opt.init(x0)
  assert isinstance(state, SubgradientState)
  assert state._fields == ("count", "step_size", "num_fun_evals",
                           "num_grad_evals", "f_best", "params_best")
  assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(state))
  g = jnp.array([0.0, 1.0])
  # First value NaN: nothing is recorded; params_best stays at x0.
  _, state = opt.update(g, state, jnp.array([9.0, 9.0]), value=jnp.nan)
  assert float(state.f_best) == np.inf
  np.testing.assert_array_equal(best_params(state), x0)
  values = [3.0, np.nan, 2.0, np.nan, np.inf, 5.0, -np.nan]
  expected = [3.0, 3.0, 2.0, 2.0, 2.0, 2.0, 2.0]
  update = jax.jit(opt.update)
  for i, (value, best) in enumerate(zip(values, expected)):
    params = jnp.array([float(i), -float(i)])
    _, state = update(g, state, params, value=jnp.asarray(value))
    assert float(state.f_best) == best
  np.testing.assert_array_equal(best_params(state), [2.0, -2.0])


def test_update_requires_value_and_params():
  opt = subgradient_descent(0.1)
  x = jnp.zeros(3)
  state = opt.init(x)
  with pytest.raises(ValueError, match=r"^value: .*value=f\(params\)"):
    opt.update(jnp.ones(3), state, x)
  with pytest.raises(ValueError, match=r"^params: "):
    opt.update(jnp.ones(3), state, value=1.0)
  with pytest.raises(ValueError, match=r"^value: expected a scalar"):
    opt.update(jnp.ones(3), state, x, value=jnp.ones(2))
  with pytest.raises(ValueError, match=r"^step_rule: .*got -1"):
    subgradient_descent(-1.0)


def test_zero_subgradient_takes_no_step_without_nan():
  """At a minimizer g = 0; rules that divide by ||g|| must not produce NaN."""
  for rule in (schedules.constant_step_length(0.1), schedules.polyak(0.0),
               schedules.polyak_estimated(0.1)):
    opt = subgradient_descent(rule)
    x = jnp.zeros(2)
    updates, state = opt.update(jnp.zeros(2), opt.init(x), x, value=0.0)
    np.testing.assert_array_equal(updates, [0.0, 0.0])
    assert float(state.step_size) == 0.0


def test_chain_passes_value_and_exposes_best(lad):
  rule = schedules.square_summable(0.1, 1.0)
  chained = optax.chain(optax.identity(), subgradient_descent(rule))
  plain = subgradient_descent(rule)
  x_c = x_p = lad.x0
  s_c, s_p = chained.init(x_c), plain.init(x_p)
  for _ in range(20):
    v, g = jax.value_and_grad(lad.f)(x_c)
    u, s_c = chained.update(g, s_c, x_c, value=v)
    x_c = optax.apply_updates(x_c, u)
    v, g = jax.value_and_grad(lad.f)(x_p)
    u, s_p = plain.update(g, s_p, x_p, value=v)
    x_p = optax.apply_updates(x_p, u)
  np.testing.assert_array_equal(x_c, x_p)
  np.testing.assert_array_equal(best_params(s_c), best_params(s_p))
  assert float(best_value(s_c)) == float(best_value(s_p))


def test_jit_equals_eager(lad):
  rule = schedules.polyak(lad.f_star)
  opt = subgradient_descent(rule)
  state_jit, trace = run(rule, lad.f, lad.x0, 50)
  x, state = lad.x0, opt.init(lad.x0)
  for _ in range(50):
    v, g = jax.value_and_grad(lad.f)(x)
    u, state = opt.update(g, state, x, value=v)
    x = optax.apply_updates(x, u)
  np.testing.assert_allclose(state.f_best, state_jit.f_best, rtol=1e-13)
  np.testing.assert_allclose(state.params_best, state_jit.params_best,
                             rtol=1e-12, atol=1e-14)
  np.testing.assert_allclose(trace["f_best"][-1], state.f_best, rtol=1e-13)


def test_traced_step_size_under_vmap(lad):
  def final_best(alpha):
    state, _ = scan(alpha, lad.f, lad.x0, 100)
    return state.f_best

  alphas = jnp.array([0.001, 0.004])
  swept = jit_once(jax.vmap(final_best))(alphas)
  for i in range(2):
    np.testing.assert_allclose(swept[i], final_best(float(alphas[i])),
                               rtol=1e-13)
