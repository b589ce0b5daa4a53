"""The hand-written backpropagation against jax.grad, finite differences and a
network worked out by hand."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from gdlab import activations, backprop, gradcheck, losses, models
from gdlab.objective import Objective, value_and_grad_fn
from helpers import jit_once
from helpers import max_rel_error as _max_rel_error
from helpers import random_problem

pytestmark = pytest.mark.strict_promotion

ACTS = activations.names()
LOSSES = losses.names()
BIASES = models.BIAS_ARRANGEMENTS
DEPTHS = (0, 1, 3)
REDUCTIONS = losses.REDUCTIONS
# The activation x loss table; a case's seed is its index here.
TABLE = list(itertools.product(ACTS, LOSSES))


def _both(objective, params, x, y, weights=None):
  manual = value_and_grad_fn(objective, "manual")(params, x, y, weights)
  auto = value_and_grad_fn(objective, "autodiff")(params, x, y, weights)
  return manual, auto


def _both_compiled(objective, params, x, y, weights=None):
  """:func:`_both` as one compiled program, for a test whose every network
  has new shapes (op-by-op, each operation would compile for each shape)."""
  manual = value_and_grad_fn(objective, "manual")
  auto = value_and_grad_fn(objective, "autodiff")
  return jit_once(lambda *args: (manual(*args), auto(*args)))(params, x, y,
                                                              weights)


@pytest.mark.parametrize("seed,act,loss",
                         [(i, *case) for i, case in enumerate(TABLE)],
                         ids=[f"{act}-{loss}" for act, loss in TABLE])
def test_manual_equals_autodiff_over_the_table(seed, act, loss):
  """Every activation x loss x bias x depth x reduction, to 1e-10 in float64."""
  for i, (bias, depth, red) in enumerate(
      itertools.product(BIASES, DEPTHS, REDUCTIONS)):
    model = gradcheck.grid_model(act, loss, bias, depth)
    params, x, y = random_problem(model, loss, seed, i)
    (v1, g1), (v2, g2) = _both(Objective(model, loss, red), params, x, y)
    assert jax.tree.structure(g1) == jax.tree.structure(params)
    assert jax.tree.structure(g1) == jax.tree.structure(g2)
    assert abs(float(v1 - v2)) <= 1e-12 * max(1.0, abs(float(v2)))
    err = _max_rel_error(g1, g2)
    assert err <= 1e-10, (bias, depth, red, err)


@pytest.mark.parametrize("kind,include_bias",
                         list(itertools.product(("l2", "l1"), (False, True))))
@pytest.mark.parametrize("bias", BIASES)
def test_penalties(kind, include_bias, bias):
  model = models.mlp((3, 4, 3), "tanh", bias=bias)  # the grid's shapes
  params, x, y = random_problem(model, "mse", 1)
  objective = Objective(model, "mse", "sum",
                        losses.Penalty(kind, 0.3, include_bias))
  (v1, g1), (v2, g2) = _both(objective, params, x, y)
  np.testing.assert_allclose(v1, v2, rtol=1e-12)
  assert _max_rel_error(g1, g2) <= 1e-10
  # The penalty's own value, from its definition.
  leaves = params["w"] + ([] if not include_bias or bias == "none" else
                          jax.tree.leaves(params["b"]))
  expect = (0.15 * sum(float(jnp.sum(w**2)) for w in leaves) if kind == "l2"
            else 0.3 * sum(float(jnp.sum(jnp.abs(w))) for w in leaves))
  np.testing.assert_allclose(losses.penalty_value(params, objective.penalty),
                             expect, rtol=1e-12)


def test_weighted_batches_match_autodiff_and_the_unpadded_batch():
  model = models.mlp((3, 4, 2), "sigmoid")
  params, x, y = random_problem(model, "softmax_cross_entropy", 2, n=6)
  w = jnp.array([1.0, 1.0, 1.0, 1.0, 0.0, 0.0])
  for red in REDUCTIONS:
    objective = Objective(model, "softmax_cross_entropy", red)
    (v1, g1), (v2, g2) = _both_compiled(objective, params, x, y, w)
    assert _max_rel_error(g1, g2) <= 1e-10
    v3, g3 = jit_once(value_and_grad_fn(objective, "manual"))(params, x[:4],
                                                              y[:4])
    np.testing.assert_allclose(v1, v3, rtol=1e-12)
    assert _max_rel_error(g1, g3) <= 1e-10


def test_agrees_with_finite_differences():
  for act, loss in [("tanh", "mse"), ("softplus", "binary_cross_entropy"),
                    ("gelu", "softmax_cross_entropy"), ("swish", "huber")]:
    model = models.mlp((3, 4, 4, 2), act, bias="per_neuron")
    params, x, y = random_problem(model, loss, 3)
    result = gradcheck.check_gradients(Objective(model, loss), params, x, y)
    assert result.passed, result
    assert result.max_vs_finite_diff < 1e-6


def test_hand_worked_network():
  """2 inputs, 2 sigmoid hidden units, 1 sigmoid output, MSE, worked by hand.

  a1 = .15(.05) + .20(.10) + .35 = .3775     h1 = s(a1) = .593269992
  a2 = .25(.05) + .30(.10) + .35 = .3925     h2 = s(a2) = .596884378
  a3 = .40 h1 + .45 h2 + .60 = 1.105905967   o  = s(a3) = .751365070
  C  = (o - .01)^2 = .549622166
  delta3 = 2 (o - y) o (1 - o) = .276997123
  dC/dw5 = delta3 h1 = .164334081           dC/dw6 = delta3 h2 = .165335256
  delta1 = delta3 (.40) h1 (1 - h1) = .026735841
  delta2 = delta3 (.45) h2 (1 - h2) = .029992151
  dC/dw1 = delta1 x1 = .001336792            dC/dw2 = delta1 x2 = .002673584
  dC/dw3 = delta2 x1 = .001499608            dC/dw4 = delta2 x2 = .002999215
  dC/db1 = delta1 + delta2 = .056727992      dC/db2 = delta3
  (one bias per layer, b1 = .35 and b2 = .60)
  """
  s = lambda a: 1 / (1 + math.exp(-a))
  a1, a2 = 0.15 * 0.05 + 0.20 * 0.10 + 0.35, 0.25 * 0.05 + 0.30 * 0.10 + 0.35
  h1, h2 = s(a1), s(a2)
  o = s(0.40 * h1 + 0.45 * h2 + 0.60)
  assert abs(h1 - 0.593269992) < 1e-9 and abs(o - 0.751365070) < 1e-9
  d3 = 2 * (o - 0.01) * o * (1 - o)
  d1, d2 = d3 * 0.40 * h1 * (1 - h1), d3 * 0.45 * h2 * (1 - h2)
  assert abs(d3 - 0.276997123) < 1e-9
  assert abs(d1 - 0.026735841) < 1e-9 and abs(d2 - 0.029992151) < 1e-9

  model = models.mlp((2, 2, 1), "sigmoid", "sigmoid", bias="per_layer")
  params = {"w": [jnp.array([[0.15, 0.25], [0.20, 0.30]]),
                  jnp.array([[0.40], [0.45]])],
            "b": [jnp.array(0.35), jnp.array(0.60)]}
  x, y = jnp.array([[0.05, 0.10]]), jnp.array([[0.01]])
  y_hat, cache = backprop.forward(model, params, x)
  np.testing.assert_allclose(cache.a[0], [[a1, a2]], rtol=1e-14)
  np.testing.assert_allclose(cache.z[1], [[h1, h2]], rtol=1e-14)
  np.testing.assert_allclose(y_hat, [[o]], rtol=1e-14)
  expected = {"w": [np.array([[d1 * 0.05, d2 * 0.05], [d1 * 0.10, d2 * 0.10]]),
                    np.array([[d3 * h1], [d3 * h2]])],
              "b": [d1 + d2, d3]}
  np.testing.assert_allclose(expected["w"][1], [[0.164334081], [0.165335256]],
                             atol=1e-9)
  np.testing.assert_allclose(expected["b"][0], 0.056727992, atol=1e-9)
  for engine in ("manual", "autodiff"):
    value, grads = Objective(model, "mse").value_and_grad(params, x, y,
                                                          engine=engine)
    np.testing.assert_allclose(value, (o - 0.01)**2, rtol=1e-14)
    np.testing.assert_allclose(value, 0.549622166, atol=1e-9)
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(expected)):
      np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("bias", BIASES)
def test_jit_and_vmap(bias):
  model = models.mlp((3, 5, 5, 2), "relu", bias=bias)
  params, x, y = random_problem(model, "mse", 4)
  objective = Objective(model, "mse")
  manual = value_and_grad_fn(objective, "manual")
  auto = value_and_grad_fn(objective, "autodiff")
  eager = manual(params, x, y)
  jitted = jax.jit(manual)(params, x, y)
  for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted)):
    np.testing.assert_allclose(a, b, rtol=1e-12)
  # vmap over a stack of parameter sets and over per-record gradients (the
  # three vmaps compiled as one program).
  stacked = jax.tree.map(lambda *p: jnp.stack(p), params,
                         jax.tree.map(lambda p: 2 * p, params))

  @jit_once
  def vmapped(stacked, params, x, y):
    vm = jax.vmap(manual, in_axes=(0, None, None))(stacked, x, y)
    va = jax.vmap(auto, in_axes=(0, None, None))(stacked, x, y)
    per_record = jax.vmap(
        lambda xi, yi: manual(params, xi[None], yi[None])[1])(x, y)
    return vm, va, per_record

  vm, va, per_record = vmapped(stacked, params, x, y)
  assert _max_rel_error(vm[1], va[1]) <= 1e-10
  mean_grad = jax.tree.map(lambda g: jnp.mean(g, axis=0), per_record)
  assert _max_rel_error(mean_grad, eager[1]) <= 1e-10


def test_kinks_follow_jax():
  """At relu's, |r|'s and the hinge's kinks both engines pick the same value."""
  model = models.mlp((2, 2, 1), "relu", bias="per_neuron")
  params = {"w": [jnp.array([[1.0, -1.0], [1.0, 1.0]]), jnp.array([[1.0],
                                                                   [1.0]])],
            "b": [jnp.zeros(2), jnp.zeros(1)]}
  x = jnp.array([[1.0, -1.0], [0.5, 0.5]])  # a = 0 for unit 1 and unit 2.
  for loss, y in [("absolute", jnp.array([[0.0], [1.0]])),
                  ("hinge", jnp.array([[1.0], [1.0]])),
                  ("mse", jnp.array([[0.3], [0.2]]))]:
    (v1, g1), (v2, g2) = _both(Objective(model, loss), params, x, y)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
      np.testing.assert_array_equal(a, b)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(sizes=st.lists(st.integers(1, 6), min_size=2, max_size=5),
       n=st.integers(1, 9),
       act=st.sampled_from(ACTS),
       loss=st.sampled_from(("mse", "sum_squares", "binary_cross_entropy",
                             "softmax_cross_entropy", "huber")),
       bias=st.sampled_from(BIASES),
       seed=st.integers(0, 2**16))
def test_random_shapes(sizes, n, act, loss, bias, seed):
  model = models.mlp(sizes, act, bias=bias)
  params, x, y = random_problem(model, loss, seed, n=n)
  (v1, g1), (v2, g2) = _both_compiled(Objective(model, loss, "sum"), params,
                                      x, y)
  np.testing.assert_allclose(v1, v2, rtol=1e-12, atol=1e-300)
  assert _max_rel_error(g1, g2) <= 1e-10


def test_float32_agreement():
  """In float32 the engines agree to 1e-4 relative.

  Each engine does the same O(depth) matrix products in a different order of
  operations, so they differ by a few float32 roundings (eps = 1.2e-7)
  amplified by the condition of the products; 1e-4 leaves a margin of about
  100x over the largest difference seen across the table, and a wrong
  derivative shows as an O(1) error.
  """
  worst = 0.0
  for act, loss in itertools.product(("tanh", "relu", "sigmoid", "gelu"),
                                     ("mse", "softmax_cross_entropy")):
    model = models.mlp((5, 16, 16, 3), act, dtype=jnp.float32)
    params, x, y = random_problem(model, loss, 5, n=16)
    assert x.dtype == jnp.float32
    (_, g1), (_, g2) = _both_compiled(Objective(model, loss), params, x, y)
    assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(g1))
    worst = max(worst, _max_rel_error(g1, g2))
  assert worst <= 1e-4


def test_manual_engine_rejects_other_models():
  flax_model = models.from_flax(__import__("flax.linen").linen.Dense(2), (3,))
  with pytest.raises(TypeError, match="model.*autodiff"):
    value_and_grad_fn(Objective(flax_model, "mse"), "manual")
  with pytest.raises(ValueError, match="engine.*'autodiff', 'manual'"):
    value_and_grad_fn(Objective(models.mlp((2, 1)), "mse"), "symbolic")
