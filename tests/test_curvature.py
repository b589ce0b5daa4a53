"""gdlab.curvature against dense Hessians from ``jax.hessian``.

Tiny MLPs, so the dense Hessian of the flattened objective is cheap and
Lanczos with as many steps as parameters is exact: every estimate is
compared with ``numpy.linalg.eigvalsh`` or a closed form, for both gradient
engines.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import gdlab
import helpers
from gdlab import curvature
from gdlab.objective import FunctionObjective

pytestmark = pytest.mark.strict_promotion

ENGINES = ("autodiff", "manual")

# (sizes, activation, loss, reduction)
CASES = (
    ((3, 5, 2), "tanh", "mse", "mean"),
    ((2, 4, 1), "sigmoid", "sum_squares", "sum"),
    ((3, 4, 3), "softplus", "softmax_cross_entropy", "mean"),
)


@functools.lru_cache(maxsize=None)
def _problem(case_index: int):
  sizes, activation, loss, reduction = CASES[case_index]
  model = gdlab.mlp(sizes, activation=activation)
  params, x, y = helpers.random_problem(model, loss, 7, case_index, n=6)
  return gdlab.Objective(model, loss, reduction), params, x, y


def _dense_hessian(objective, params, x, y, weights=None) -> np.ndarray:
  flat, unravel = ravel_pytree(params)

  def hessian(flat, x, y, weights):
    return jax.hessian(
        lambda f: objective.value(unravel(f), x, y, weights))(flat)
  return np.asarray(helpers.jit_once(hessian)(flat, x, y, weights))


@functools.lru_cache(maxsize=None)
def _case_hessian(case_index: int, weighted: bool = False) -> np.ndarray:
  objective, params, x, y = _problem(case_index)
  return _dense_hessian(objective, params, x, y,
                        _weights(x) if weighted else None)


def _weights(x):
  return jnp.linspace(0.5, 2.0, x.shape[0], dtype=x.dtype)


def _jit(fn, *args, **kwargs):
  """``fn(*args, **kwargs)`` compiled whole (eager dispatch is slow)."""
  return helpers.jit_once(lambda *a: fn(*a, **kwargs))(*args)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case_index", range(len(CASES)))
def test_hvp_equals_dense_hessian_times_v(case_index, engine):
  objective, params, x, y = _problem(case_index)
  flat, unravel = ravel_pytree(params)
  v = jnp.asarray(helpers.rng(11).standard_normal(flat.shape), flat.dtype)
  dense = _case_hessian(case_index, weighted=True)
  got = _jit(functools.partial(curvature.hvp, objective), params, x, y,
             unravel(v), engine=engine, weights=_weights(x))
  want = dense @ np.asarray(v)
  np.testing.assert_allclose(ravel_pytree(got)[0], want, rtol=0,
                             atol=1e-10 * np.abs(want).max())


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case_index", range(len(CASES)))
def test_top_eigenvalues_match_numpy(case_index, engine):
  objective, params, x, y = _problem(case_index)
  dense = _case_hessian(case_index)
  want = np.linalg.eigvalsh(dense)[::-1][:3]
  size = dense.shape[0]

  def both(params, x, y):
    return (curvature.top_eigenvalues(objective, params, x, y, 3,
                                      num_iters=size, engine=engine),
            curvature.sharpness(objective, params, x, y, num_iters=size,
                                engine=engine))
  got, sharp = _jit(both, params, x, y)
  assert got.shape == (3,)
  np.testing.assert_allclose(got, want, rtol=1e-8)
  assert abs(sharp - want[0]) <= 1e-8 * abs(want[0])


def test_top_eigenpairs_are_eigenvectors():
  objective, params, x, y = _problem(0)
  dense = _case_hessian(0)
  pairs = _jit(functools.partial(curvature.top_eigenpairs, objective),
               params, x, y, k=2, num_iters=dense.shape[0])
  vectors = jax.vmap(lambda t: ravel_pytree(t)[0])(pairs.vectors)
  for value, u in zip(np.asarray(pairs.values), np.asarray(vectors)):
    assert abs(np.linalg.norm(u) - 1) < 1e-10
    np.testing.assert_allclose(dense @ u, value * u, rtol=0,
                               atol=1e-9 * abs(value))


def test_more_iterations_than_parameters_are_cut_to_the_parameters():
  objective, params, x, y = _problem(1)  # 17 parameters
  dense = _case_hessian(1)
  got = _jit(functools.partial(curvature.top_eigenvalues, objective),
             params, x, y, k=2, num_iters=40)
  np.testing.assert_allclose(got, np.linalg.eigvalsh(dense)[::-1][:2],
                             rtol=1e-8)


@pytest.mark.parametrize("engine", ENGINES)
def test_least_squares_hessian_is_the_closed_form(engine):
  # C = mean_i (x_i w + b - y_i)^2 (mse: mean over the one output, mean over
  # records), so H = (2 / n) X1^T X1 with X1 = [1, X] (ravel order: b, w).
  gen = helpers.rng(3)
  n, d = 9, 4
  x = jnp.asarray(gen.standard_normal((n, d)))
  y = jnp.asarray(gen.standard_normal((n, 1)))
  model = gdlab.linear_regression(d)
  params = helpers.random_params(model, gen)
  objective = gdlab.Objective(model, "mse", "mean")
  x1 = np.hstack([np.ones((n, 1)), np.asarray(x)])
  closed = 2.0 / n * x1.T @ x1
  np.testing.assert_allclose(_dense_hessian(objective, params, x, y), closed,
                             rtol=0, atol=1e-12)
  want = np.linalg.eigvalsh(closed)[::-1]

  def both(params, x, y):
    # With fewer steps than parameters the top Ritz value converges first.
    return (curvature.top_eigenvalues(objective, params, x, y, d + 1,
                                      num_iters=d + 1, engine=engine),
            curvature.sharpness(objective, params, x, y, num_iters=3,
                                engine=engine))
  got, top = _jit(both, params, x, y)
  np.testing.assert_allclose(got, want, rtol=1e-8)
  assert abs(top - want[0]) <= 1e-2 * want[0]


def test_lanczos_breakdown_keeps_the_spectrum():
  # H = diag(3, 3, 3, 1, 1): an invariant Krylov space of dimension 2.
  diag = jnp.asarray([3.0, 3.0, 3.0, 1.0, 1.0])
  objective = FunctionObjective(lambda p: 0.5 * jnp.sum(diag * p**2),
                                (0.0,) * 5)
  params = jnp.zeros(5)
  got = _jit(lambda p: curvature.top_eigenvalues(objective, p, None, None,
                                                 5, num_iters=5), params)
  np.testing.assert_allclose(got, [3, 3, 3, 1, 1], rtol=1e-12)


def test_hutchinson_is_exact_for_a_diagonal_hessian():
  diag = jnp.asarray([0.5, -1.0, 2.0, 4.0])
  objective = FunctionObjective(
      lambda p: 0.5 * jnp.sum(diag * p**2) + jnp.sum(p**3) / 6, (0.0,) * 4)
  params = jnp.asarray([0.1, 0.2, -0.3, 0.4])  # H = diag + diag(params)
  got = _jit(lambda p: curvature.hessian_trace(
      objective, p, None, None, num_samples=3, key=jax.random.PRNGKey(5)),
              params)
  assert abs(got - float(jnp.sum(diag + params))) < 1e-12


@pytest.mark.parametrize("engine", ENGINES)
def test_hutchinson_is_the_mean_of_its_quadratic_forms(engine):
  objective, params, x, y = _problem(0)
  dense = _case_hessian(0)
  key = jax.random.PRNGKey(2)
  num_samples = 4000
  got = _jit(functools.partial(curvature.hessian_trace, objective), params,
             x, y, num_samples=num_samples, key=key, engine=engine)
  probes = np.asarray(jax.random.rademacher(
      key, (num_samples, dense.shape[0]), jnp.float64))
  forms = np.einsum("si,ij,sj->s", probes, dense, probes)
  assert abs(got - forms.mean()) <= 1e-10 * np.abs(forms).mean()
  exact = np.trace(dense)
  assert abs(got - exact) <= 0.03 * abs(exact)


def test_under_jit_one_trace_and_equal_to_eager():
  objective, params, x, y = _problem(0)
  traces = []

  def measure(params, x, y, key):
    traces.append(None)
    return (curvature.top_eigenvalues(objective, params, x, y, 2,
                                      num_iters=10, engine="manual", key=key),
            curvature.hessian_trace(objective, params, x, y, num_samples=8,
                                    key=key, engine="manual"))

  jitted = helpers.jit_once(measure)
  key = jax.random.PRNGKey(1)
  first = jitted(params, x, y, key)
  moved = jax.tree.map(lambda p: p + 0.01, params)
  second = jitted(moved, x, y, key)
  assert len(traces) == 1
  eager = measure(moved, x, y, key)
  np.testing.assert_allclose(second[0], eager[0], rtol=1e-10)
  np.testing.assert_allclose(second[1], eager[1], rtol=1e-10)
  assert not np.allclose(first[0], second[0])


def test_errors_name_the_argument():
  objective, params, x, y = _problem(0)
  with pytest.raises(TypeError, match="^v: expected a tree"):
    curvature.hvp(objective, params, x, y, params["w"])
  with pytest.raises(ValueError, match="^k: expected at most"):
    curvature.top_eigenvalues(objective, params, x, y, 4, num_iters=3)
  with pytest.raises(ValueError, match="^engine"):
    curvature.sharpness(objective, params, x, y, engine="finite")
  flax_like = gdlab.Objective(FunctionObjective(jnp.sum, (0.0,)).model)
  with pytest.raises(TypeError, match="^model: the hand-written"):
    curvature.hvp(flax_like, params, x, y, params, engine="manual")
