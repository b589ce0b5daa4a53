"""Gradient descent and step-size schedules, against independent computations.

Least squares is checked against ``numpy.linalg.lstsq``, the contraction rate
on a strongly convex quadratic against the textbook factor, the iterates
against ``optax.sgd``, and the schedules against their closed forms.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gdlab.optim import schedules
from gdlab.optim.gd import GradientDescentState
from gdlab.optim.gd import gradient_descent
from gdlab.optim.gd import heavy_ball
from helpers import jit_once
from helpers import problem
from helpers import run_eager
from helpers import run_scan
from helpers import scan_updates

# Standard promotion: under strict promotion the library's schedules add a
# Python float to the integer count (gdlab/optim/schedules.py,
# square_summable and nonsummable_diminishing) and a float64 constant
# learning rate multiplies float32 gradients (gdlab/optim/gd.py, _scaled).


def quadratic(kappa, dim, seed):
  """``f(x) = x^T Q x / 2 - c^T x`` with eigenvalues from 1 to ``kappa``."""
  rng = np.random.default_rng(seed)
  u, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
  eigs = np.logspace(0.0, np.log10(kappa), dim)
  q = (u * eigs) @ u.T
  c = rng.standard_normal(dim)
  x_star = np.linalg.solve(q, c)
  f = lambda x: 0.5 * x @ (q @ x) - c @ x
  return f, x_star, eigs[0], eigs[-1]


smooth_tree_objective, TREE_X0 = problem("smooth_tree")


# ----------------------------------------------------------------------------
# Gradient descent on problems with known solutions.
# ----------------------------------------------------------------------------


def test_least_squares_converges_to_lstsq():
  rng = np.random.default_rng(0)
  n, d = 100, 6
  a = rng.standard_normal((n, d))
  b = rng.standard_normal(n)
  f = lambda x: jnp.sum((a @ x - b) ** 2) / (2 * n)  # mean reduction
  x_lstsq = np.linalg.lstsq(a, b, rcond=None)[0]
  smooth = np.linalg.norm(a, 2) ** 2 / n  # L of f

  state, xs = run_scan(gradient_descent(1.0 / smooth), jax.grad(f),
                       jnp.zeros(d), 1000)
  np.testing.assert_allclose(xs[-1], x_lstsq, rtol=0, atol=1e-8)
  assert int(state.count) == 1000
  assert int(state.num_grad_evals) == 1000
  assert int(state.num_fun_evals) == 0


def test_reduction_is_the_losss_business():
  """A summed loss with step ``eta / n`` retraces the mean loss with ``eta``."""
  rng = np.random.default_rng(1)
  n, d = 40, 3
  a = rng.standard_normal((n, d))
  b = rng.standard_normal(n)
  mean_loss = lambda x: jnp.mean((a @ x - b) ** 2) / 2
  sum_loss = lambda x: jnp.sum((a @ x - b) ** 2) / 2
  _, xs_mean = run_scan(gradient_descent(0.1), jax.grad(mean_loss),
                        jnp.zeros(d), 50)
  _, xs_sum = run_scan(gradient_descent(0.1 / n), jax.grad(sum_loss),
                       jnp.zeros(d), 50)
  np.testing.assert_allclose(xs_sum, xs_mean, rtol=1e-12, atol=1e-14)


def test_strongly_convex_contraction_every_step():
  kappa = 100.0
  f, x_star, mu, smooth = quadratic(kappa, dim=10, seed=2)
  rate = (kappa - 1) / (kappa + 1)
  x0 = jnp.asarray(np.random.default_rng(3).standard_normal(10))

  _, xs = run_scan(gradient_descent(2.0 / (smooth + mu)), jax.grad(f), x0,
                   300)
  errors = np.linalg.norm(np.vstack([x0[None], xs]) - x_star, axis=1)
  ratios = errors[1:] / errors[:-1]
  assert np.all(ratios <= rate * (1 + 1e-12)), ratios.max()
  # The factor is attained: the error lives on the extreme eigenvectors.
  assert ratios[-1] >= rate - 1e-3


def test_heavy_ball_rate_on_quadratic():
  kappa = 100.0
  f, x_star, mu, smooth = quadratic(kappa, dim=10, seed=4)
  x0 = jnp.ones(10)
  e0 = np.linalg.norm(x0 - x_star)
  alpha = 4.0 / (np.sqrt(smooth) + np.sqrt(mu)) ** 2
  beta = ((np.sqrt(kappa) - 1) / (np.sqrt(kappa) + 1)) ** 2
  _, xs_hb = run_scan(heavy_ball(alpha, beta), jax.grad(f), x0, 150)
  _, xs_gd = run_scan(gradient_descent(2.0 / (smooth + mu)), jax.grad(f), x0,
                      150)
  # (sqrt(k)-1)/(sqrt(k)+1) = 9/11 per step against (k-1)/(k+1) = 99/101.
  assert np.linalg.norm(xs_hb[-1] - x_star) <= 1e-6 * e0
  assert np.linalg.norm(xs_gd[-1] - x_star) >= 1e-2 * e0


def test_heavy_ball_equals_momentum_form_for_constant_step():
  grad = jax.grad(smooth_tree_objective)
  _, xs_hb = run_scan(heavy_ball(0.05, 0.8), grad, TREE_X0, 60)
  _, xs_gd = run_scan(gradient_descent(0.05, momentum=0.8), grad, TREE_X0, 60)
  jax.tree.map(
      lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-14),
      xs_hb, xs_gd)


# ----------------------------------------------------------------------------
# Same iterates as optax.sgd; jit equals eager.
# ----------------------------------------------------------------------------

LEARNING_RATES = {
    "constant": 0.05,
    "schedule": optax.exponential_decay(0.1, 5, 0.8),
}
MOMENTA = {
    "plain": {},
    "zero": {"momentum": 0.0},
    "momentum": {"momentum": 0.9},
    "nesterov": {"momentum": 0.9, "nesterov": True},
}


@pytest.mark.parametrize("lr_name", LEARNING_RATES)
@pytest.mark.parametrize("mom_name", MOMENTA)
@pytest.mark.parametrize("jit", [False, True])
def test_same_iterates_as_optax_sgd(lr_name, mom_name, jit):
  lr, kwargs = LEARNING_RATES[lr_name], MOMENTA[mom_name]
  ours = gradient_descent(lr, **kwargs)
  # optax.sgd without momentum is the reference for momentum 0.
  reference = optax.sgd(lr, **kwargs) if kwargs.get("momentum") else (
      optax.sgd(lr))
  grad = jax.grad(smooth_tree_objective)
  run = run_scan if jit else run_eager
  _, xs_ours = run(ours, grad, TREE_X0, 25)
  _, xs_ref = run(reference, grad, TREE_X0, 25)
  jax.tree.map(np.testing.assert_array_equal, xs_ours, xs_ref)


@pytest.mark.parametrize("opt", [
    gradient_descent(0.05),
    gradient_descent(optax.cosine_decay_schedule(0.1, 20), momentum=0.9,
                     nesterov=True),
    heavy_ball(schedules.square_summable(0.5, 5.0), 0.7),
], ids=["gd", "nesterov-schedule", "heavy-ball-schedule"])
def test_jit_equals_eager(opt):
  grad = jax.grad(smooth_tree_objective)
  state_jit, xs_jit = run_scan(opt, grad, TREE_X0, 30)
  state_eager, xs_eager = run_eager(opt, grad, TREE_X0, 30)
  jax.tree.map(
      lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-13, atol=1e-15),
      jax.tree.map(lambda x: x[-1], xs_jit), xs_eager[-1])
  assert int(state_jit.count) == int(state_eager.count) == 30
  np.testing.assert_allclose(state_jit.step_size, state_eager.step_size,
                             rtol=1e-15)


def test_traced_hyperparameters_under_vmap():
  """A sweep vmaps over learning rate and momentum; no Python branching."""
  grad = jax.grad(smooth_tree_objective)
  lrs = jnp.array([0.01, 0.05, 0.1])
  mus = jnp.array([0.0, 0.5, 0.9])

  def final_w(lr, mu):
    _, xs = scan_updates(gradient_descent(lr, momentum=mu), grad, TREE_X0, 20)
    return xs["w"][-1]

  swept = jit_once(jax.vmap(final_w))(lrs, mus)
  for i in range(3):
    _, xs = run_scan(gradient_descent(float(lrs[i]), float(mus[i])), grad,
                     TREE_X0, 20)
    np.testing.assert_allclose(swept[i], xs["w"][-1], rtol=1e-13)


def test_state_fields():
  schedule = optax.exponential_decay(0.1, 1, 0.5)
  opt = gradient_descent(schedule, momentum=0.5)
  state = opt.init(TREE_X0)
  assert isinstance(state, GradientDescentState)
  assert state._fields == ("count", "step_size", "num_fun_evals",
                           "num_grad_evals", "trace")
  assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(state))
  assert state.count.dtype == jnp.int32
  assert float(state.step_size) == 0.0
  grads = jax.grad(smooth_tree_objective)(TREE_X0)
  for _ in range(3):
    _, state = opt.update(grads, state, TREE_X0, value=1.0)  # value ignored
  assert int(state.count) == 3 and int(state.num_grad_evals) == 3
  assert int(state.num_fun_evals) == 0
  np.testing.assert_allclose(state.step_size, 0.1 * 0.5 ** 2)  # lr at k = 2
  # No momentum buffer when the momentum is a concrete zero.
  assert gradient_descent(0.1).init(TREE_X0).trace == ()


def test_float32_params_keep_their_dtype_in_scan():
  x0 = jax.tree.map(lambda x: x.astype(jnp.float32), TREE_X0)
  grad = jax.grad(smooth_tree_objective)
  state, xs = run_scan(gradient_descent(jnp.float64(0.05), momentum=0.9),
                       grad, x0, 5)
  assert xs["w"].dtype == jnp.float32
  assert state.step_size.dtype == jnp.float32
  assert state.trace["w"].dtype == jnp.float32


# ----------------------------------------------------------------------------
# Schedules and step rules.
# ----------------------------------------------------------------------------


def _at(schedule, *counts):
  return np.array([float(schedule(jnp.asarray(k, jnp.int32))) for k in counts])


def test_count_schedules_textbook_values():
  np.testing.assert_allclose(_at(schedules.constant(0.1), 0, 7), [0.1, 0.1])
  np.testing.assert_allclose(
      _at(schedules.square_summable(2.0, 4.0), 0, 1, 6, 96),
      [2 / 4, 2 / 5, 2 / 10, 2 / 100])
  np.testing.assert_allclose(
      _at(schedules.nonsummable_diminishing(3.0), 0, 3, 8, 99),
      [3.0, 1.5, 1.0, 0.3])
  np.testing.assert_allclose(
      _at(schedules.exponential_decay(1.0, 10, 0.5), 5, 10, 20),
      [2 ** -0.5, 0.5, 0.25])
  np.testing.assert_allclose(
      _at(schedules.exponential_decay(1.0, 10, 0.5, staircase=True), 15),
      [0.5])
  np.testing.assert_allclose(
      _at(schedules.step_decay(1.0, {10: 0.1, 20: 0.5}), 9, 10, 19, 20),
      [1.0, 0.1, 0.1, 0.05], rtol=1e-7)
  np.testing.assert_allclose(
      _at(schedules.cosine_decay(1.0, 100, alpha=0.1), 0, 50, 100, 200),
      [1.0, 0.55, 0.1, 0.1], atol=1e-12)
  np.testing.assert_allclose(
      _at(schedules.warmup_cosine_decay(0.0, 1.0, 10, 110), 0, 5, 10, 60, 110),
      [0.0, 0.5, 1.0, 0.5, 0.0], atol=1e-12)
  np.testing.assert_allclose(
      _at(schedules.linear_warmup(0.0, 1.0, 10), 0, 3, 10, 20),
      [0.0, 0.3, 1.0, 1.0], atol=1e-12)


@pytest.mark.parametrize("args", [(0.0, 1.0, 10, 50, 0.0, 1.0),
                                  (0.1, 0.5, 0, 30, 0.01, 2.0),
                                  (0.2, 0.5, 5, 6, 0.1, 1.0)])
def test_warmup_cosine_matches_optax_and_takes_a_traced_peak(args):
  counts = np.arange(70)
  np.testing.assert_allclose(
      _at(schedules.warmup_cosine_decay(*args), *counts),
      _at(optax.warmup_cosine_decay_schedule(*args), *counts), atol=1e-12)
  # The peak as a program input (a sweep's learning rate): no Python test
  # on its value.
  at = jax.jit(lambda peak, k: schedules.warmup_cosine_decay(
      args[0], peak, *args[2:])(k))
  np.testing.assert_allclose(
      at(args[1], 7), optax.warmup_cosine_decay_schedule(*args)(7),
      atol=1e-12)


def test_square_summable_sums():
  """sum a/(b+k) diverges like a log N while sum (a/(b+k))^2 converges."""
  a, b = 2.0, 3.0
  alphas = np.asarray(schedules.square_summable(a, b)(jnp.arange(10 ** 6)))
  partial = np.cumsum(alphas)
  partial_sq = np.cumsum(alphas ** 2)
  for n in (10 ** 2, 10 ** 4, 10 ** 6):
    # Integral lower bound: sum_{k<N} a/(b+k) >= a log((b+N)/b) -> inf.
    assert partial[n - 1] >= a * np.log((b + n) / b)
  # Each factor 100 in N adds at least a log(100 - eps): no saturation.
  assert partial[-1] - partial[10 ** 4 - 1] >= a * np.log((b + 1e6) /
                                                           (b + 1e4))
  # Integral upper bound on the whole series: a^2 (1/b^2 + 1/b).
  assert partial_sq[-1] <= a ** 2 * (1 / b ** 2 + 1 / b)
  # Cauchy tail: sum_{k >= M} alpha_k^2 <= a^2 / (b + M - 1).
  m = 10 ** 4
  assert partial_sq[-1] - partial_sq[m - 1] <= a ** 2 / (b + m - 1)


def test_nonsummable_diminishing_sums():
  a = 0.5
  alphas = np.asarray(
      schedules.nonsummable_diminishing(a)(jnp.arange(10 ** 6)))
  assert np.all(np.diff(alphas) < 0) and alphas[-1] <= a * 1e-3
  partial = np.cumsum(alphas)
  for n in (10 ** 2, 10 ** 4, 10 ** 6):
    assert partial[n - 1] >= 2 * a * (np.sqrt(n + 1) - 1)


def test_step_rules_values_and_zero_gradient():
  k = jnp.asarray(3, jnp.int32)
  length = schedules.constant_step_length(0.5)
  np.testing.assert_allclose(length(k, 1.0, 4.0), 0.125)
  polyak = schedules.polyak(f_star=2.0)
  np.testing.assert_allclose(polyak(k, 5.0, 2.0), 0.75)
  np.testing.assert_allclose(polyak(k, 1.0, 2.0), 0.0)  # below f*: no step
  estimated = schedules.polyak_estimated(0.5)
  np.testing.assert_allclose(estimated(k, 5.0, 2.0, f_best=4.0), 1.5 / 4)
  np.testing.assert_allclose(estimated(k, 5.0, 2.0), 0.5 / 4)
  decaying = schedules.polyak_estimated(schedules.square_summable(1.0, 1.0))
  np.testing.assert_allclose(decaying(k, 5.0, 2.0, 4.0), (1 + 1 / 4) / 4)
  for rule in (length, polyak, estimated):
    alpha = jax.jit(rule)(k, 5.0, jnp.asarray(0.0), 4.0)
    assert float(alpha) == 0.0  # no inf, no NaN at g = 0


def test_as_step_rule():
  k = jnp.asarray(4, jnp.int32)
  np.testing.assert_allclose(schedules.as_step_rule(0.3)(k, 1.0, 2.0), 0.3)
  from_schedule = schedules.as_step_rule(schedules.square_summable(1.0, 1.0))
  np.testing.assert_allclose(from_schedule(k, 1.0, 2.0, 0.5), 0.2)
  three_arg = schedules.as_step_rule(lambda count, value, g: value / g)
  np.testing.assert_allclose(three_arg(k, 3.0, 2.0, f_best=1.0), 1.5)
  polyak = schedules.polyak(1.0)
  assert schedules.as_step_rule(polyak) is polyak
  with pytest.raises(ValueError, match="step_rule: expected .* got 0"):
    schedules.as_step_rule(0)
  with pytest.raises(TypeError, match="step_rule"):
    schedules.as_step_rule("0.1")


@pytest.mark.parametrize("make, pattern", [
    (lambda: gradient_descent(0.0), r"^learning_rate: expected .*got 0\.0"),
    (lambda: gradient_descent(-0.1), r"^learning_rate: .*got -0\.1"),
    (lambda: gradient_descent(float("nan")), r"^learning_rate:"),
    (lambda: gradient_descent(0.1, momentum=1.0), r"^momentum: .*\[0, 1\)"),
    (lambda: gradient_descent(0.1, momentum=-0.5), r"^momentum:"),
    (lambda: heavy_ball(0.1, beta=1.5), r"^beta:"),
    (lambda: heavy_ball(-1.0, beta=0.5), r"^learning_rate:"),
    (lambda: schedules.constant(0.0), r"^learning_rate:"),
    (lambda: schedules.square_summable(0.0, 1.0), r"^a: .*got 0\.0"),
    (lambda: schedules.square_summable(1.0, 0.0), r"^b: .*got 0\.0"),
    (lambda: schedules.nonsummable_diminishing(-1.0), r"^a:"),
    (lambda: schedules.constant_step_length(0.0), r"^gamma:"),
    (lambda: schedules.polyak(), r"^f_star: .*got None"),
    (lambda: schedules.polyak(float("inf")), r"^f_star:"),
    (lambda: schedules.polyak_estimated(0.0), r"^delta:"),
    (lambda: schedules.exponential_decay(1.0, 0, 0.5), r"^transition_steps:"),
    (lambda: schedules.exponential_decay(1.0, 10, -0.5), r"^decay_rate:"),
    (lambda: schedules.step_decay(1.0, {10: -0.1}),
     r"^boundaries_and_scales\[10\]:"),
    (lambda: schedules.cosine_decay(1.0, 10, alpha=2.0), r"^alpha:"),
    (lambda: schedules.warmup_cosine_decay(0.0, 1.0, 10, 10),
     r"^decay_steps: expected an integer >= 11"),
    (lambda: schedules.linear_warmup(0.0, 0.0, 10), r"^end_value:"),
])
def test_bad_values_raise_naming_the_argument(make, pattern):
  with pytest.raises(ValueError, match=pattern):
    make()


@pytest.mark.parametrize("make, pattern", [
    (lambda: gradient_descent("0.1"), r"^learning_rate: expected a real"),
    (lambda: gradient_descent(0.1, nesterov=1), r"^nesterov: expected a bool"),
    (lambda: schedules.cosine_decay(1.0, 10.5), r"^decay_steps:"),
    (lambda: schedules.step_decay(1.0, [(10, 0.1)]),
     r"^boundaries_and_scales:"),
])
def test_bad_types_raise_naming_the_argument(make, pattern):
  with pytest.raises(TypeError, match=pattern):
    make()
