"""Loss landscapes of networks: lines, planes and the path through them.

For an objective ``C(params; x, y)`` (``gdlab.objective``; the value the
optimizer minimised, its penalty included) and parameter trees ``a``,
``b``, ``c`` of one structure:

* :func:`interpolate` is ``C`` along the line ``(1 - alpha) a + alpha b``,
  for any ``alpha`` (values outside ``[0, 1]`` look past the end points),
  with the accuracy and, given a test set, the test loss and accuracy.
  From the initial to the final parameters of a run, Goodfellow, Vinyals
  and Saxe (2015) found it monotone for many networks: no barrier between
  the start and the solution.  :func:`max_bump` is the largest rise of
  such a curve above its running minimum, zero for a non-increasing one.
* :func:`filter_normalized_direction` is a Gaussian random direction ``d``
  rescaled filter by filter (Li et al., 2018): every leaf of rank >= 2 is
  a stack of filters along its last axis (for gdlab's MLP, ``W_l`` of shape
  ``(n_in, n_out)``: filter ``j`` is column ``W_l[:, j]``, the incoming
  weights of output unit ``j``; flax's dense and convolution kernels keep
  their output units last as well), and

      d_j <- d_j / ||d_j|| * ||params_j||.

  Leaves of rank <= 1 (the MLP's biases in every arrangement: per neuron,
  per layer, shared) are zeroed by default, as in the figures of Li et al.
  (their code's ``ignore='biasbn'``); ``biases="whole"`` draws them too and
  rescales each as a whole to its leaf's norm.  The rescaling removes the
  scale invariance of networks whose layers can be multiplied by ``c`` and
  the next divided by ``c`` (ReLU): distances along ``d`` are relative to
  the size of each filter, so the landscapes of two solutions compare.
* :func:`slice_2d` is ``C`` on the plane ``center + alpha d1 + beta d2``,
  on a ``resolution x resolution`` grid; :func:`flatness` reads off it the
  mean (and largest) rise of ``C`` over the grid points at a given distance
  from the centre, the flat-versus-sharp comparison of Li et al.
* :func:`pca_directions` are the top two principal directions of a
  trajectory ``theta_0, ..., theta_n`` about its last point: the top right
  singular vectors of ``M = [theta_0 - theta_n; ...; theta_{n-1} -
  theta_n]`` (Li et al., section 7), with the explained variance ratios
  ``s_i^2 / sum_k s_k^2``.  ``M`` is not centred: the plane is the best one
  through ``theta_n``, where it is drawn (the authors' code fits
  scikit-learn's PCA, which centres ``M``, so that its mean drops out).  :func:`project` gives the path's coordinates
  ``(alpha, beta)`` on a plane (least squares; for the orthonormal PCA
  directions, the dot products), so the path is drawn on the slice.

Cost: a grid of ``G`` points costs ``G`` forward passes over the data and
no gradient.  Each grid is one compiled program: the points are vmapped,
in chunks of ``chunk_size`` points run one after another by ``lax.map``
when the grid is larger (memory grows with ``chunk_size`` times the
records times the widest layer); the program is compiled once per
objective and shapes, so the grids of two runs of one model share it.
Nothing leaves the device until the caller reads the result.

References:
  I. J. Goodfellow, O. Vinyals, A. M. Saxe, Qualitatively characterizing
  neural network optimization problems, ICLR 2015.
  H. Li, Z. Xu, G. Taylor, C. Studer, T. Goldstein, Visualizing the loss
  landscape of neural nets, NeurIPS 2018.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from gdlab import _checks

Array = jax.Array

DEFAULT_CHUNK_SIZE = 256
BIASES = ("zero", "whole")


class Interpolation(NamedTuple):
  """The objective along a line; see :func:`interpolate`.

  Attributes:
    alphas: the coefficients, shape ``(m,)``.
    loss, accuracy: ``C`` and the accuracy (NaN for regression) on the
      training data at each ``alpha``, shape ``(m,)``.
    test_loss, test_accuracy: the same on the test data, or None.
  """
  alphas: Array
  loss: Array
  accuracy: Array
  test_loss: Array | None
  test_accuracy: Array | None


class Slice(NamedTuple):
  """The objective on a plane; see :func:`slice_2d`.

  ``loss[i, j]`` is ``C(center + alphas[j] d1 + betas[i] d2)``: rows follow
  ``d2``, columns ``d1`` (``matplotlib``'s ``contourf(alphas, betas,
  loss)``).
  """
  alphas: Array
  betas: Array
  loss: Array


class Principal(NamedTuple):
  """The top two principal directions of a trajectory.

  Attributes:
    d1, d2: unit directions (together orthonormal), trees shaped like one
      iterate; signed so that the first iterate has non-negative
      coordinates.
    explained_variance_ratio: ``s_i^2 / sum_k s_k^2`` of the two, shape
      ``(2,)``.
  """
  d1: Any
  d2: Any
  explained_variance_ratio: Array


class Flatness(NamedTuple):
  """The rise of a slice at a distance from its centre; see :func:`flatness`."""
  mean: Array
  max: Array
  points: int


def stack_rows(rows, template):
  """Flat iterates as a stacked tree: the parameters a run logged.

  ``gdlab.fit(record_params=True)`` logs every step's parameters flattened
  (``History.steps["params"]``, shape ``(T, P)``, in ``ravel_pytree``'s
  order); this gives them back as one tree of ``template``'s structure and
  dtypes whose leaves have a leading axis of ``T``, the trajectory that
  :func:`pca_directions` and :func:`project` take.

  Raises:
    ValueError: when ``rows`` is not two-dimensional with one column per
      parameter of ``template``.
  """
  rows = np.asarray(rows)
  leaves, treedef = jax.tree_util.tree_flatten(template)
  size = sum(int(np.size(leaf)) for leaf in leaves)
  if rows.ndim != 2 or rows.shape[1] != size:
    raise ValueError(f"rows: expected shape (T, {size}), one column per "
                     f"parameter of the template; got {rows.shape}.")
  out, start = [], 0
  for leaf in leaves:
    n = int(np.size(leaf))
    out.append(np.asarray(rows[:, start:start + n], np.asarray(leaf).dtype)
               .reshape((len(rows),) + np.shape(leaf)))
    start += n
  return jax.tree_util.tree_unflatten(treedef, out)


def _check_same_tree(name: str, tree, params) -> None:
  want = jax.tree_util.tree_structure(params)
  got = jax.tree_util.tree_structure(tree)
  if want != got:
    raise TypeError(f"{name}: expected a tree with the structure of the "
                    f"parameters, {want}; got {got}.")


def _point(center, directions, coeffs: Array):
  """``center + sum_k coeffs[k] directions[k]`` (directions stacked)."""
  return jax.tree_util.tree_map(
      lambda c, d: c + jnp.tensordot(coeffs.astype(c.dtype), d, axes=1),
      center, directions)


def _metrics_on_grid(objective, center, directions, coeffs: Array, data,
                     chunk_size: int, accuracy: bool):
  """``objective.metrics`` (or ``(objective.value,)`` without ``accuracy``)
  on every ``(x, y)`` of ``data`` at each point ``center + coeffs[g] .
  directions``: vmapped, in chunks (traced inside the programs below)."""
  def at(c):
    params = _point(center, directions, c)
    if accuracy:
      return tuple(objective.metrics(params, x, y) for x, y in data)
    return tuple((objective.value(params, x, y),) for x, y in data)

  if coeffs.shape[0] <= chunk_size:
    return jax.vmap(at)(coeffs)
  return jax.lax.map(at, coeffs, batch_size=chunk_size)


def _coefficients(name: str, values) -> Array:
  values = jnp.asarray(values)
  if values.ndim != 1 or values.shape[0] < 1:
    raise ValueError(f"{name}: expected a 1-D array of at least one "
                     f"coefficient; got shape {tuple(values.shape)}.")
  return values


def interpolate(objective, params_a, params_b, x: Array, y: Array, alphas,
                *, x_test: Array | None = None, y_test: Array | None = None,
                chunk_size: int = DEFAULT_CHUNK_SIZE) -> Interpolation:
  """``C((1 - alpha) a + alpha b)`` for each ``alpha`` (Goodfellow et al.).

  Args:
    objective: a ``gdlab.Objective`` (or a function objective); hashable,
      since it is a static argument of the compiled program.
    params_a, params_b: the end points (``alpha = 0`` and ``alpha = 1``),
      trees of one structure.
    x, y: the training data the loss is taken on.
    alphas: the coefficients, a 1-D array; any real values.
    x_test, y_test: optional test data, evaluated at the same points.
    chunk_size: points evaluated at once (see the module docstring).

  Returns:
    An :class:`Interpolation`.

  Raises:
    TypeError: when the two trees differ in structure.
    ValueError: for ``alphas`` that are not a non-empty 1-D array, or only
      one of ``x_test`` and ``y_test``.
  """
  _check_same_tree("params_b", params_b, params_a)
  alphas = _coefficients("alphas", alphas)
  _checks.check_positive_int("chunk_size", chunk_size)
  if (x_test is None) != (y_test is None):
    raise ValueError("x_test, y_test: expected both or neither; got "
                     f"{'x_test' if y_test is None else 'y_test'} alone.")
  data = ((x, y),) if x_test is None else ((x, y), (x_test, y_test))
  out = _interpolate(objective, params_a, params_b, alphas, data, chunk_size)
  test = out[1] if x_test is not None else (None, None)
  return Interpolation(alphas, out[0][0], out[0][1], *test)


@functools.partial(jax.jit, static_argnames=("objective", "chunk_size"))
def _interpolate(objective, params_a, params_b, alphas: Array, data,
                 chunk_size: int):
  """:func:`interpolate`'s one program: ``a + alpha (b - a)``."""
  direction = jax.tree_util.tree_map(lambda a, b: (b - a)[None], params_a,
                                     params_b)
  return _metrics_on_grid(objective, params_a, direction, alphas[:, None],
                          data, chunk_size, True)


def max_bump(losses) -> Array:
  """The largest rise of a curve above its running minimum.

  ``max_k (L_k - min_{j <= k} L_j)``: zero exactly when ``L`` never
  increases; for an interpolation restricted to ``0 <= alpha <= 1``, the
  height of the worst barrier met on the way from the start.
  """
  return _max_bump(jnp.asarray(losses))


@jax.jit
def _max_bump(losses: Array) -> Array:
  return jnp.max(losses - jax.lax.cummin(losses))


def _filter_normalize(d: Array, p: Array, biases: str) -> Array:
  """One leaf of :func:`filter_normalized_direction`."""
  if d.ndim <= 1:
    if biases == "zero":
      return jnp.zeros_like(d)
    axes = tuple(range(d.ndim))
  else:
    axes = tuple(range(d.ndim - 1))  # one filter per output unit (last axis)
  d_norm = jnp.sqrt(jnp.sum(d * d, axis=axes, keepdims=True))
  p_norm = jnp.sqrt(jnp.sum(p * p, axis=axes, keepdims=True))
  return d * jnp.where(d_norm > 0, p_norm / jnp.where(d_norm > 0, d_norm, 1),
                       0)


def filter_normalized_direction(key: Array, params, *,
                                biases: str = "zero"):
  """A Gaussian direction rescaled filter by filter to ``params`` (Li et al.).

  Each leaf draws ``N(0, 1)`` entries from its own key (``key`` split over
  the leaves in ``jax.tree_util`` order); a leaf of rank >= 2 is then
  rescaled per index of its last axis (per output unit) so that its filter
  ``j`` has the norm of ``params``' filter ``j``; a filter of ``params``
  that is zero gives a zero filter.

  Args:
    key: a ``jax.random`` key.
    params: the point the direction belongs to (a tree of float arrays).
    biases: what to do with leaves of rank <= 1: ``"zero"`` (the default,
      as Li et al. do for biases and batch-norm parameters) or ``"whole"``
      (random, rescaled as one filter to the leaf's norm).

  Returns:
    The direction, a tree shaped like ``params``.
  """
  _checks.check_choice("biases", biases, BIASES)
  return _filter_normalized(key, params, biases)


@functools.partial(jax.jit, static_argnames="biases")
def _filter_normalized(key: Array, params, biases: str):
  """:func:`filter_normalized_direction`, one compiled program a tree."""
  leaves, treedef = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(key, max(len(leaves), 1))
  out = [_filter_normalize(
      jax.random.normal(k, jnp.shape(p), jnp.result_type(p)), p, biases)
         for k, p in zip(keys, leaves)]
  return jax.tree_util.tree_unflatten(treedef, out)


def grid_axes(span, resolution: int) -> tuple[Array, Array]:
  """The coefficients along ``d1`` and ``d2`` of :func:`slice_2d`.

  ``span``: ``s`` for ``[-s, s]`` on both axes, or two ranges ``((a0, a1),
  (b0, b1))``; each axis is ``jnp.linspace`` of ``resolution`` points.
  """
  _checks.check_positive_int("resolution", resolution, minimum=2)
  try:
    if isinstance(span, Sequence):
      (a0, a1), (b0, b1) = ((float(lo), float(hi)) for lo, hi in span)
    else:
      s = float(_checks.check_number("span", span, low=0))
      (a0, a1), (b0, b1) = (-s, s), (-s, s)
  except (TypeError, ValueError) as e:
    raise ValueError(f"span: expected a positive number s (the square "
                     f"[-s, s]^2) or two ranges ((a0, a1), (b0, b1)) with "
                     f"a0 < a1 and b0 < b1; got {span!r}.") from e
  if not (a0 < a1 and b0 < b1):
    raise ValueError(f"span: expected ranges with a0 < a1 and b0 < b1; got "
                     f"{span!r}.")
  # NumPy's float64 linspace puts the middle point of a symmetric odd grid
  # at 0 exactly; JAX's float32 one does not.
  return (jnp.asarray(np.linspace(a0, a1, resolution)),
          jnp.asarray(np.linspace(b0, b1, resolution)))


def slice_2d(objective, center, d1, d2, x: Array, y: Array, span,
             resolution: int, *,
             chunk_size: int = DEFAULT_CHUNK_SIZE) -> Slice:
  """``C(center + alpha d1 + beta d2)`` on a grid (Li et al.).

  Args:
    objective: a ``gdlab.Objective`` (or a function objective), hashable.
    center: the point at ``(0, 0)``.
    d1, d2: the directions, trees shaped like ``center`` (for example
      :func:`filter_normalized_direction` or :func:`pca_directions`).
    x, y: the data the loss is taken on.
    span: the window, see :func:`grid_axes`.
    resolution: grid points per axis (>= 2).
    chunk_size: points evaluated at once (see the module docstring).

  Returns:
    A :class:`Slice` of ``resolution x resolution`` losses.

  Raises:
    TypeError: when ``d1`` or ``d2`` differ from ``center`` in structure.
  """
  _check_same_tree("d1", d1, center)
  _check_same_tree("d2", d2, center)
  _checks.check_positive_int("chunk_size", chunk_size)
  alphas, betas = grid_axes(span, resolution)
  return Slice(alphas, betas, _slice(objective, center, d1, d2, alphas,
                                     betas, (x, y), chunk_size))


@functools.partial(jax.jit, static_argnames=("objective", "chunk_size"))
def _slice(objective, center, d1, d2, alphas: Array, betas: Array, data,
           chunk_size: int) -> Array:
  """:func:`slice_2d`'s one program: the losses, shape ``(len(betas),
  len(alphas))``."""
  a, b = jnp.meshgrid(alphas, betas)  # a[i, j] = alphas[j], b[i, j] = betas[i]
  coeffs = jnp.stack([a.ravel(), b.ravel()], axis=1)
  directions = jax.tree_util.tree_map(lambda u, v: jnp.stack([u, v]), d1, d2)
  (loss,), = _metrics_on_grid(objective, center, directions, coeffs,
                              (data,), chunk_size, False)
  return loss.reshape(betas.shape[0], alphas.shape[0])


def flatness(s: Slice, radius: float) -> Flatness:
  """The rise of a slice's loss at distance ``radius`` from its centre.

  The grid points whose distance ``sqrt(alpha^2 + beta^2)`` from ``(0, 0)``
  lies within half a grid step of ``radius`` form a discrete circle; the
  result is the mean and the largest ``C - C(0, 0)`` over them.  On a
  filter-normalised slice this compares solutions of different scales:
  the flatter the minimum, the smaller the rise.

  Args:
    s: a :class:`Slice` whose axes both contain 0 (an odd resolution of a
      symmetric span).
    radius: the distance, larger than 0.

  Returns:
    A :class:`Flatness` (``points``: how many grid points were averaged).

  Raises:
    ValueError: when ``(0, 0)`` is not a grid point, or no grid point lies
      at ``radius``.
  """
  _checks.check_number("radius", radius, low=0)
  alphas, betas = np.asarray(s.alphas, float), np.asarray(s.betas, float)
  i0, j0 = int(np.argmin(np.abs(betas))), int(np.argmin(np.abs(alphas)))
  step = max(float(alphas[1] - alphas[0]), float(betas[1] - betas[0]))
  if max(abs(float(alphas[j0])), abs(float(betas[i0]))) > 1e-3 * step:
    raise ValueError(f"s: expected a slice whose axes contain 0; got alphas "
                     f"from {float(alphas[0]):g} to {float(alphas[-1]):g} and "
                     f"betas from {float(betas[0]):g} to {float(betas[-1]):g} "
                     f"in {len(alphas)} points.")
  distance = np.hypot(*np.meshgrid(alphas, betas))
  ring = np.abs(distance - radius) <= step / 2
  if not ring.any():
    raise ValueError(f"radius: expected a distance the grid reaches (at most "
                     f"{float(distance.max()):g}); got {radius!r}.")
  mean, top = _ring_rise(jnp.asarray(s.loss), jnp.asarray(ring), i0, j0)
  return Flatness(mean, top, int(ring.sum()))


@jax.jit
def _ring_rise(loss: Array, ring: Array, i0, j0) -> tuple[Array, Array]:
  rise = loss - loss[i0, j0]
  return (jnp.sum(jnp.where(ring, rise, 0)) / jnp.sum(ring, dtype=rise.dtype),
          jnp.max(jnp.where(ring, rise, -jnp.inf)))


def _num_iterates(trajectory) -> int:
  """The leading axis shared by the leaves of a stacked trajectory."""
  leaves = jax.tree_util.tree_leaves(trajectory)
  if not leaves or any(jnp.ndim(l) < 1 for l in leaves):
    raise ValueError("trajectory: expected a tree of arrays with a leading "
                     "axis of iterates (or a (T, P) array); got a leaf "
                     "without one.")
  lengths = {jnp.shape(l)[0] for l in leaves}
  if len(lengths) != 1:
    raise ValueError(f"trajectory: expected one number of iterates in every "
                     f"leaf; got {sorted(lengths)}.")
  return lengths.pop()


def _flat_rows(trajectory) -> tuple[Array, Any]:
  """``(T, P)`` rows of a stacked trajectory, and the unravel of one row
  (``ravel_pytree``'s order)."""
  n = jax.tree_util.tree_leaves(trajectory)[0].shape[0]
  rows = jnp.concatenate([jnp.reshape(l, (n, -1)) for l in
                          jax.tree_util.tree_leaves(trajectory)], axis=1)
  _, unravel = ravel_pytree(jax.tree_util.tree_map(lambda l: l[0],
                                                   trajectory))
  return rows, unravel


def pca_directions(trajectory) -> Principal:
  """The top two principal directions of a path about its last point.

  Args:
    trajectory: the iterates ``theta_0, ..., theta_n``, a tree whose leaves
      have a leading axis of ``n + 1 >= 3`` iterates (a ``(T, P)`` array of
      flat iterates is one such tree).

  Returns:
    A :class:`Principal`; see the module docstring for the definition.

  Raises:
    ValueError: for fewer than three iterates.
  """
  n = _num_iterates(trajectory)
  if n < 3:
    raise ValueError(f"trajectory: expected at least 3 iterates (two "
                     f"differences from the last); got {n}.")
  return Principal(*_principal(trajectory))


@jax.jit
def _principal(trajectory):
  rows, unravel = _flat_rows(trajectory)
  m = rows[:-1] - rows[-1]
  _, s, vt = jnp.linalg.svd(m, full_matrices=False)
  top = vt[:2]
  top = top * jnp.where(top @ m[0] < 0, -1, 1).astype(top.dtype)[:, None]
  energy = s * s
  return unravel(top[0]), unravel(top[1]), energy[:2] / jnp.sum(energy)


def project(trajectory, center, d1, d2) -> Array:
  """The path's coordinates on the plane ``center + alpha d1 + beta d2``.

  ``(alpha, beta)`` of each iterate minimises ``||theta - center - alpha d1
  - beta d2||`` (the normal equations of the 2 x 2 Gram matrix of ``d1,
  d2``); for orthonormal directions they are the dot products with ``theta
  - center``.

  Args:
    trajectory: iterates stacked along a leading axis, as for
      :func:`pca_directions`.
    center, d1, d2: the plane, trees shaped like one iterate.

  Returns:
    The coordinates, shape ``(T, 2)``.
  """
  _check_same_tree("d1", d1, center)
  _check_same_tree("d2", d2, center)
  _num_iterates(trajectory)
  size = sum(jnp.size(l) for l in jax.tree_util.tree_leaves(center))
  got = sum(jnp.size(l) // jnp.shape(l)[0]
            for l in jax.tree_util.tree_leaves(trajectory))
  if got != size:
    raise ValueError(f"trajectory: expected iterates of {size} parameters, "
                     f"those of center; got {got}.")
  return _project(trajectory, center, d1, d2)


@jax.jit
def _project(trajectory, center, d1, d2) -> Array:
  rows, _ = _flat_rows(trajectory)
  c = ravel_pytree(center)[0]
  basis = jnp.stack([ravel_pytree(d1)[0], ravel_pytree(d2)[0]], axis=1)
  gram = basis.T @ basis
  return jnp.linalg.solve(gram, basis.T @ (rows - c).T).T
