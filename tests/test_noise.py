"""gdlab.noise against a plain loop over the records, in float64.

The reference takes ``jax.grad`` of each record's loss one record at a time
and forms the covariance with ``numpy.cov``; ``G`` is checked against the
gradient of the whole objective divided by the reduction factor, so the
penalty's treatment is checked too.  Both gradient engines, a tiny MLP and
logistic regression, chunked and whole, eager and jitted.
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import gdlab
import helpers
from gdlab import losses
from gdlab import noise
from gdlab.objective import FunctionObjective

pytestmark = pytest.mark.strict_promotion

ENGINES = ("autodiff", "manual")
N = 7

# (model, loss, reduction, penalty)
CASES = {
    "mlp": (gdlab.mlp((3, 4, 3), activation="tanh"), "softmax_cross_entropy",
            "mean", gdlab.Penalty("l2", 0.3)),
    "logistic": (gdlab.logistic_regression(3), "binary_cross_entropy", "sum",
                 gdlab.Penalty("l2", 0.5, include_bias=True)),
    "mlp_plain": (gdlab.mlp((2, 3, 1), activation="sigmoid"), "mse", "mean",
                  None),
}


@functools.lru_cache(maxsize=None)
def _problem(case: str):
  model, loss, reduction, penalty = CASES[case]
  params, x, y = helpers.random_problem(model, loss, 11, len(case), n=N)
  return gdlab.Objective(model, loss, reduction, penalty), params, x, y


@functools.lru_cache(maxsize=None)
def _reference(case: str) -> dict:
  """Per-record gradients by a Python loop, and the moments by NumPy."""
  objective, params, x, y = _problem(case)
  model = objective.model

  def record_loss(p, xi, yi):
    return losses.loss(model.apply(p, xi[None]), yi[None], objective.loss)

  grad = helpers.jit_once(jax.grad(record_loss))  # one record at a time
  rows = np.stack([np.asarray(ravel_pytree(grad(params, x[i], y[i]))[0])
                   for i in range(N)])
  scale = 1.0 if objective.reduction == "mean" else N
  full = np.asarray(ravel_pytree(jax.grad(objective.value)(params, x, y))[0])
  g = full / scale
  trace = float(np.trace(np.atleast_2d(np.cov(rows.T, ddof=1))))
  return {"rows": rows, "G": g, "trace": trace, "sq": float(g @ g)}


@functools.lru_cache(maxsize=None)
def _noise_fn(case: str, engine: str, chunk_size, jit: bool):
  fn = functools.partial(noise.simple_noise_scale, _problem(case)[0],
                         engine=engine, chunk_size=chunk_size)
  return helpers.jit_once(fn) if jit else fn


@functools.lru_cache(maxsize=None)
def _measured(case: str, engine: str, chunk_size, jit: bool):
  _, params, x, y = _problem(case)
  return _noise_fn(case, engine, chunk_size, jit)(params, x, y)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", CASES)
def test_against_a_loop_over_records(case, engine):
  ref = _reference(case)
  got = _measured(case, engine, None, False)
  assert int(got.n) == N
  np.testing.assert_allclose(got.trace_sigma, ref["trace"], rtol=1e-12)
  np.testing.assert_allclose(got.grad_sq_norm, ref["sq"], rtol=1e-12)
  np.testing.assert_allclose(got.b_simple, ref["trace"] / ref["sq"],
                             rtol=1e-12)


@pytest.mark.parametrize("engine", ENGINES)
def test_per_example_grads(engine):
  objective, params, x, y = _problem("mlp")
  grads = noise.per_example_grads(objective, params, x, y, engine=engine)
  flat = np.asarray(jax.vmap(lambda g: ravel_pytree(g)[0])(grads))
  np.testing.assert_allclose(flat, _reference("mlp")["rows"], rtol=1e-12,
                             atol=1e-14)


@pytest.mark.parametrize("chunk_size", (1, 3, N, 50))
def test_chunks_give_the_same(chunk_size):
  whole = _measured("mlp", "autodiff", None, False)
  got = _measured("mlp", "autodiff", chunk_size, False)
  for a, b in zip(got[:3], whole[:3]):
    np.testing.assert_allclose(a, b, rtol=1e-12)


@pytest.mark.parametrize("engine", ENGINES)
def test_jit_equals_eager(engine):
  eager = _measured("logistic", engine, 3, False)
  jitted = _measured("logistic", engine, 3, True)
  for a, b in zip(jitted, eager):
    np.testing.assert_allclose(a, b, rtol=1e-12)
  _, params, x, y = _problem("logistic")
  with jax.transfer_guard("disallow"):
    _noise_fn("logistic", engine, 3, True)(params, x, y)


def test_batch_variance_is_exact_without_replacement():
  """``E |g_B - gbar|^2 = tr(Sigma) (1/B - 1/n)`` over every batch of B."""
  rows = _reference("mlp_plain")["rows"]
  trace = float(_measured("mlp_plain", "manual", None, False).trace_sigma)
  gbar = rows.mean(0)
  for b in (1, 3, 5):
    dev = [np.sum((rows[list(idx)].mean(0) - gbar) ** 2)
           for idx in itertools.combinations(range(N), b)]
    assert np.mean(dev) == pytest.approx(trace * (1 / b - 1 / N), rel=1e-12)


def test_two_batch_estimate_with_one_and_all_records():
  rows = _reference("mlp_plain")["rows"]
  got = _measured("mlp_plain", "autodiff", None, False)
  gbar = rows.mean(0)
  est = noise.two_batch_estimate(jnp.mean(jnp.sum(rows ** 2, 1)),
                                 jnp.sum(gbar ** 2), 1, N)
  np.testing.assert_allclose(est.trace_sigma, got.trace_sigma, rtol=1e-12)
  np.testing.assert_allclose(est.grad_sq_norm,
                             got.grad_sq_norm - got.trace_sigma / N,
                             rtol=1e-12)
  assert int(est.n) == N


def test_bad_arguments():
  objective, params, x, y = _problem("mlp")
  with pytest.raises(ValueError, match="engine: expected one of"):
    noise.simple_noise_scale(objective, params, x, y, engine="forward")
  with pytest.raises(ValueError, match="chunk_size: expected an integer >= 1"):
    noise.simple_noise_scale(objective, params, x, y, chunk_size=0)
  with pytest.raises(TypeError, match="chunk_size: expected an integer"):
    noise.simple_noise_scale(objective, params, x, y, chunk_size=2.5)
  with pytest.raises(ValueError, match="x: expected 2 or more records"):
    noise.simple_noise_scale(objective, params, x[:1], y[:1])
  with pytest.raises(ValueError, match=r"y: expected one label per record"):
    noise.simple_noise_scale(objective, params, x, y[:3])
  fn = FunctionObjective(lambda p: jnp.sum(p ** 2), (1.0, 2.0))
  with pytest.raises(TypeError, match="objective: expected a gdlab.Objective"):
    noise.simple_noise_scale(fn, jnp.ones(2), x, y)
  with pytest.raises(ValueError, match="b_big: expected a batch size above"):
    noise.two_batch_estimate(1.0, 0.5, 8, 8)
