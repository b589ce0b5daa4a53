"""gdlab.landscape against plain loops, NumPy and closed forms.

Every grid is compared with the objective evaluated point by point in a
Python loop (or with NumPy's SVD, or with the closed form of a quadratic);
the tiny problems keep each compiled program to a fraction of a second, and
the module-scoped fixtures compile each grid once.  The interpolation
test runs under standard dtype promotion: the accuracy of integer labels
compares them with an ``argmax``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import gdlab
import helpers
from gdlab import landscape
from gdlab.objective import FunctionObjective

@pytest.fixture(scope="module")
def problem():
  model = gdlab.mlp((3, 4, 3), activation="tanh")
  objective = gdlab.Objective(model, "softmax_cross_entropy", "mean")
  params_a, x, y = helpers.random_problem(model, "softmax_cross_entropy", 3,
                                          1, n=10)
  params_b, x_test, y_test = helpers.random_problem(
      model, "softmax_cross_entropy", 3, 2, n=6)
  return objective, params_a, params_b, x, y, x_test, y_test


def _combine(coeffs, *trees):
  return jax.tree_util.tree_map(
      lambda *leaves: sum(c * l for c, l in zip(coeffs, leaves)), *trees)


def test_interpolation_equals_a_loop(problem):
  objective, a, b, x, y, x_test, y_test = problem
  alphas = jnp.asarray([-0.5, 0.0, 0.3, 1.0, 1.5])
  got = landscape.interpolate(objective, a, b, x, y, alphas, x_test=x_test,
                              y_test=y_test)
  metrics = jax.jit(objective.metrics)
  for k, alpha in enumerate(np.asarray(alphas)):
    p = _combine((1 - alpha, alpha), a, b)
    loss, acc = metrics(p, x, y)
    test_loss, test_acc = metrics(p, x_test, y_test)
    np.testing.assert_allclose(got.loss[k], loss, rtol=1e-12)
    np.testing.assert_allclose(got.test_loss[k], test_loss, rtol=1e-12)
    assert got.accuracy[k] == acc and got.test_accuracy[k] == test_acc
  # In chunks of two points (lax.map with a remainder): the same numbers.
  chunked = landscape.interpolate(objective, a, b, x, y, alphas,
                                  chunk_size=2)
  np.testing.assert_allclose(chunked.loss, got.loss, rtol=1e-12)
  assert chunked.test_loss is None
  with pytest.raises(ValueError, match="x_test, y_test: expected both"):
    landscape.interpolate(objective, a, b, x, y, alphas, x_test=x_test)
  with pytest.raises(TypeError, match="params_b: expected a tree"):
    landscape.interpolate(objective, a, b["w"], x, y, alphas)


@pytest.mark.strict_promotion
def test_max_bump_against_a_loop():
  curve = np.array([3.0, 2.0, 2.5, 1.0, 1.8, 0.5, 0.7])
  want = max(curve[k] - curve[:k + 1].min() for k in range(len(curve)))
  assert float(landscape.max_bump(curve)) == pytest.approx(want)
  assert float(landscape.max_bump(np.sort(curve)[::-1])) == 0.0


@pytest.mark.strict_promotion
def test_slice_matches_a_loop(problem):
  objective, center, d1, x, y, _, _ = problem
  d2 = jax.tree_util.tree_map(lambda v: 0.5 * jnp.roll(v, 1), d1)
  s = landscape.slice_2d(objective, center, d1, d2, x, y, 0.6, 5,
                         chunk_size=7)
  assert s.loss.shape == (5, 5)
  np.testing.assert_allclose(s.alphas, np.linspace(-0.6, 0.6, 5))
  assert s.loss[2, 2] == pytest.approx(float(objective.value(center, x, y)),
                                       rel=1e-12)
  value = jax.jit(objective.value)
  for i, j in ((0, 0), (0, 4), (3, 1), (4, 2)):
    p = _combine((1.0, s.alphas[j], s.betas[i]), center, d1, d2)
    np.testing.assert_allclose(s.loss[i, j], value(p, x, y), rtol=1e-12)
  whole = landscape.slice_2d(objective, center, d1, d2, x, y, 0.6, 5)
  np.testing.assert_allclose(whole.loss, s.loss, rtol=1e-12)
  with pytest.raises(ValueError, match="span: expected"):
    landscape.slice_2d(objective, center, d1, d2, x, y, ((1, 0), (0, 1)), 5)


def _filters(leaf):
  """NumPy norms of each filter (the last axis) of a leaf of rank >= 2."""
  leaf = np.asarray(leaf)
  return np.linalg.norm(leaf.reshape(-1, leaf.shape[-1]), axis=0)


@pytest.mark.strict_promotion
@pytest.mark.parametrize("bias", ["per_neuron", "shared"])
def test_filter_normalization_keeps_each_filters_norm(bias):
  model = gdlab.mlp((4, 6, 5, 2), bias=bias)
  params = helpers.random_params(model, helpers.rng(5))
  d = landscape.filter_normalized_direction(jax.random.PRNGKey(1), params)
  for w, dw in zip(params["w"], d["w"]):
    np.testing.assert_allclose(_filters(dw), _filters(w), rtol=1e-12)
    # Random, not params rescaled: the directions of the filters differ.
    assert not np.allclose(dw / _filters(dw), w / _filters(w))
  for leaf in jax.tree_util.tree_leaves(d["b"]):
    assert not np.any(np.asarray(leaf))
  if bias != "shared":
    return
  whole = landscape.filter_normalized_direction(jax.random.PRNGKey(1), params,
                                                biases="whole")
  for b, db in zip(jax.tree_util.tree_leaves(params["b"]),
                   jax.tree_util.tree_leaves(whole["b"])):
    assert np.linalg.norm(db) == pytest.approx(np.linalg.norm(b), rel=1e-12)


@pytest.mark.strict_promotion
def test_filter_normalization_of_any_tree():
  """A convolution kernel (h, w, in, out): one filter per output channel;
  a filter of zeros stays zero."""
  kernel = np.asarray(helpers.rng(6).standard_normal((3, 3, 2, 4)))
  kernel[..., 2] = 0.0
  params = {"conv": {"kernel": jnp.asarray(kernel),
                     "bias": jnp.ones((4,))}, "scale": jnp.asarray(2.0)}
  d = landscape.filter_normalized_direction(jax.random.PRNGKey(0), params)
  np.testing.assert_allclose(_filters(d["conv"]["kernel"]), _filters(kernel),
                             rtol=1e-12, atol=0)
  assert float(d["scale"]) == 0.0 and not np.any(d["conv"]["bias"])
  with pytest.raises(ValueError, match="biases: expected one of 'zero'"):
    landscape.filter_normalized_direction(jax.random.PRNGKey(0), params,
                                          biases="keep")


@pytest.mark.strict_promotion
def test_pca_directions_against_numpy_svd():
  gen = helpers.rng(7)
  # A path that bends: mostly along two directions, plus a little noise.
  t = np.linspace(0, 1, 12)[:, None]
  u, v = gen.standard_normal((2, 9))
  rows = (t * u + np.sin(3 * t) * 0.3 * v +
          0.01 * gen.standard_normal((12, 9)))
  model = gdlab.mlp((2, 2, 1))  # 9 parameters
  template = helpers.random_params(model, gen)
  unravel = ravel_pytree(template)[1]
  stacked = jax.vmap(unravel)(jnp.asarray(rows))
  pca = landscape.pca_directions(stacked)
  m = rows[:-1] - rows[-1]
  _, s, vt = np.linalg.svd(m, full_matrices=False)
  got = np.stack([ravel_pytree(pca.d1)[0], ravel_pytree(pca.d2)[0]])
  np.testing.assert_allclose(got @ got.T, np.eye(2), atol=1e-12)
  for k in range(2):
    sign = np.sign(got[k] @ vt[k])
    np.testing.assert_allclose(sign * got[k], vt[k], atol=1e-10)
  np.testing.assert_allclose(pca.explained_variance_ratio,
                             s[:2] ** 2 / np.sum(s ** 2), rtol=1e-10)
  # The flat rows give the same directions; the first iterate projects to
  # non-negative coordinates equal to its dot products with them.
  flat = landscape.pca_directions(jnp.asarray(rows))
  np.testing.assert_allclose(flat.d1, got[0], atol=1e-12)
  xy = landscape.project(stacked, unravel(jnp.asarray(rows[-1])), pca.d1,
                         pca.d2)
  np.testing.assert_allclose(xy, (rows - rows[-1]) @ got.T, atol=1e-10)
  assert np.all(np.asarray(xy[0]) >= 0)
  with pytest.raises(ValueError, match="at least 3 iterates"):
    landscape.pca_directions(jnp.asarray(rows[:2]))


def _quadratic():
  gen = helpers.rng(8)
  q = gen.standard_normal((5, 5))
  a = q @ q.T + np.eye(5)
  b = gen.standard_normal(5)
  fn = lambda p: 0.5 * p @ jnp.asarray(a) @ p + jnp.asarray(b) @ p
  c, d1, d2 = gen.standard_normal((3, 5))
  return FunctionObjective(fn, (0.0,) * 5), a, b, c, d1, d2


@pytest.mark.strict_promotion
def test_quadratic_slice_in_closed_form():
  """``f(c + s d1 + t d2) = f(c) + s g.d1 + t g.d2 + (s^2 d1'Ad1 + 2 s t
  d1'Ad2 + t^2 d2'Ad2) / 2`` with ``g = A c + b``."""
  objective, a, b, c, d1, d2 = _quadratic()
  s = landscape.slice_2d(objective, jnp.asarray(c), jnp.asarray(d1),
                         jnp.asarray(d2), None, None, ((-1.0, 2.0),
                                                      (-0.5, 0.5)), 7)
  f_c = 0.5 * c @ a @ c + b @ c
  g = a @ c + b
  al, be = np.meshgrid(np.linspace(-1, 2, 7), np.linspace(-0.5, 0.5, 7))
  want = (f_c + al * (g @ d1) + be * (g @ d2) +
          0.5 * (al ** 2 * (d1 @ a @ d1) + 2 * al * be * (d1 @ a @ d2) +
                 be ** 2 * (d2 @ a @ d2)))
  np.testing.assert_allclose(s.loss, want, rtol=1e-12, atol=1e-12)
  # The rise at a radius: the closed form on the grid points of the ring.
  sq = landscape.slice_2d(objective, jnp.asarray(c), jnp.asarray(d1),
                          jnp.asarray(d2), None, None, 1.0, 9)
  al, be = np.meshgrid(np.linspace(-1, 1, 9), np.linspace(-1, 1, 9))
  ring = np.abs(np.hypot(al, be) - 0.5) <= 0.125
  rise = (al * (g @ d1) + be * (g @ d2) +
          0.5 * (al ** 2 * (d1 @ a @ d1) + 2 * al * be * (d1 @ a @ d2) +
                 be ** 2 * (d2 @ a @ d2)))
  flat = landscape.flatness(sq, 0.5)
  assert int(flat.points) == ring.sum() == 12
  assert float(flat.mean) == pytest.approx(rise[ring].mean(), rel=1e-12)
  assert float(flat.max) == pytest.approx(rise[ring].max(), rel=1e-12)
  even = landscape.Slice(jnp.linspace(-1.0, 1.0, 4), jnp.linspace(-1.0, 1.0, 4),
                         jnp.zeros((4, 4)))
  with pytest.raises(ValueError, match="axes contain 0"):
    landscape.flatness(even, 0.5)
  with pytest.raises(ValueError, match="radius: expected a distance"):
    landscape.flatness(sq, 2.0)
  # A path in the plane projects to the coefficients that made it.
  coeffs = np.array([[0.3, -0.2], [1.5, 0.7], [-1.0, 2.0]])
  path = c + coeffs @ np.stack([d1, d2])
  np.testing.assert_allclose(
      landscape.project(jnp.asarray(path), jnp.asarray(c), jnp.asarray(d1),
                        jnp.asarray(d2)), coeffs, atol=1e-12)


def test_stack_rows_gives_back_the_logged_trees():
  trees = [{"w": np.full((2, 3), float(i)), "b": np.arange(3.0) + i}
           for i in range(4)]
  rows = np.stack([np.asarray(ravel_pytree(t)[0]) for t in trees])
  stacked = landscape.stack_rows(rows, trees[0])
  for i, tree in enumerate(trees):
    np.testing.assert_array_equal(stacked["w"][i], tree["w"])
    np.testing.assert_array_equal(stacked["b"][i], tree["b"])
  with pytest.raises(ValueError, match=r"rows: expected shape \(T, 9\)"):
    landscape.stack_rows(rows[:, :5], trees[0])
