"""Checks the hand-written gradient against ``jax.grad`` and finite differences.

For one objective, parameters and batch, :func:`check_gradients` computes the
gradient three ways, the hand-written backpropagation (``"manual"``),
``jax.grad`` (``"autodiff"``) and central finite differences

    dC/dtheta_j ~ (C(theta + h e_j) - C(theta - h e_j)) / (2 h),

and reports, leaf by leaf, the relative error of the hand-written gradient
against each of the other two:

    err(a, b) = max_j |a_j - b_j| / max(max_j |a_j|, max_j |b_j|, floor),

where ``floor = 1e-4 * max |g|`` over the entries of the whole gradient.  The
floor keeps entries that vanish in exact arithmetic (the gradient of a bias
shared by all softmax logits, say, which is a sum of terms cancelling to
rounding error) from turning rounding error into a large relative error.

Against finite differences, the difference ``|a_j - b_j|`` is first reduced
by the rounding error of a central difference, ``noise = 10 eps |C| / h``
(``eps`` the machine epsilon): a central difference cannot resolve a
derivative more finely than that, which matters for networks whose gradient
is many orders of magnitude smaller than their loss.

:func:`grid` runs the check over activations x losses x bias arrangements x
depths, the table printed by ``gdlab check-grads``.  Both work in whatever
float precision JAX runs in; the documented tolerances (1e-10 against
``jax.grad``, 1e-5 against finite differences) are for float64.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from gdlab import activations
from gdlab import losses as losses_lib
from gdlab import models
from gdlab.objective import Objective, value_and_grad_fn

Array = jax.Array

AUTODIFF_TOL = 1e-10
FD_TOL = 1e-5
FD_STEP = 1e-6


class LeafError(NamedTuple):
  """Relative errors of the hand-written gradient for one parameter leaf."""
  path: str
  vs_autodiff: float
  vs_finite_diff: float


class GradCheck(NamedTuple):
  """The result of :func:`check_gradients`."""
  value: float
  leaves: list[LeafError]
  max_vs_autodiff: float
  max_vs_finite_diff: float
  passed: bool


def finite_difference_grad(fn, params, step: float = FD_STEP):
  """Central finite differences of a scalar ``fn(params)``, shaped like params."""
  theta, unravel = ravel_pytree(params)
  f = lambda t: fn(unravel(t))
  basis = step * jnp.eye(theta.size, dtype=theta.dtype)
  diffs = jax.vmap(lambda e: f(theta + e) - f(theta - e))(basis)
  return unravel(diffs / (2 * step))


def relative_errors(a, b, floor: float, noise: float = 0.0) -> list[float]:
  """Leafwise ``max(|a - b| - noise, 0) / max(max|a|, max|b|, floor)``."""
  out = []
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    num = max(float(jnp.max(jnp.abs(x - y))) - noise, 0.0)
    den = max(float(jnp.max(jnp.abs(x))), float(jnp.max(jnp.abs(y))), floor)
    out.append(num / den if den > 0 else num)
  return out


def check_gradients(objective: Objective, params, x: Array, y: Array,
                    weights: Array | None = None, *,
                    autodiff_tol: float = AUTODIFF_TOL,
                    fd_tol: float = FD_TOL,
                    fd_step: float = FD_STEP) -> GradCheck:
  """Compares the hand-written gradient with ``jax.grad`` and finite differences.

  Args:
    objective: an objective whose model is a gdlab MLP.
    params: the point at which to differentiate.
    x, y, weights: the batch.
    autodiff_tol: the largest relative error against ``jax.grad`` that passes.
    fd_tol: the largest relative error against finite differences that passes.
    fd_step: the finite-difference step ``h``.

  Returns:
    A :class:`GradCheck`.
  """
  value, manual = value_and_grad_fn(objective, "manual")(params, x, y, weights)
  _, auto = value_and_grad_fn(objective, "autodiff")(params, x, y, weights)
  fd = finite_difference_grad(
      lambda p: objective.value(p, x, y, weights), params, fd_step)
  scale = max(float(jnp.max(jnp.abs(g))) for g in
              jax.tree_util.tree_leaves(auto))
  floor = 1e-4 * scale
  e_auto = relative_errors(manual, auto, floor)
  eps = float(jnp.finfo(jnp.result_type(value)).eps)
  noise = 10 * eps * abs(float(value)) / fd_step
  e_fd = relative_errors(manual, fd, floor, noise)
  paths = [jax.tree_util.keystr(p) for p, _ in
           jax.tree_util.tree_leaves_with_path(manual)]
  leaves = [LeafError(p, a, f) for p, a, f in zip(paths, e_auto, e_fd)]
  max_auto, max_fd = max(e_auto), max(e_fd)
  return GradCheck(float(value), leaves, max_auto, max_fd,
                   max_auto <= autodiff_tol and max_fd <= fd_tol)


def random_labels(loss: str, key: Array, n: int, k: int, dtype=None) -> Array:
  """Labels of the kind ``loss`` takes, for ``n`` records and ``k`` outputs."""
  dtype = dtype or jnp.zeros(()).dtype
  kind = losses_lib.get(loss).labels
  if kind == "real":
    return jax.random.normal(key, (n, k), dtype)
  if kind == "binary":
    return jax.random.bernoulli(key, 0.5, (n, k)).astype(dtype)
  if kind == "sign":
    return jnp.where(jax.random.bernoulli(key, 0.5, (n, k)), 1.0,
                     -1.0).astype(dtype)
  return jax.random.randint(key, (n,), 0, k)


def random_problem(model: models.MLP, loss: str, key: Array, n: int = 8,
                   jitter: float = 0.5):
  """Random parameters (biases included), inputs and labels for a check.

  The initial parameters are perturbed by ``jitter`` times a standard normal
  so that biases are non-zero and no unit sits exactly at a kink.
  """
  k_init, k_jit, k_x, k_y = jax.random.split(key, 4)
  params = model.init(k_init)
  leaves, treedef = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(k_jit, len(leaves))
  leaves = [p + jitter * jax.random.normal(k, p.shape, p.dtype)
            for p, k in zip(leaves, keys)]
  params = jax.tree_util.tree_unflatten(treedef, leaves)
  dtype = leaves[0].dtype
  x = jax.random.normal(k_x, (n, model.sizes[0]), dtype)
  y = random_labels(loss, k_y, n, model.sizes[-1], dtype)
  return params, x, y


class Row(NamedTuple):
  """One row of :func:`grid`."""
  activation: str
  loss: str
  bias: str
  depth: int
  reduction: str
  vs_autodiff: float
  vs_finite_diff: float
  passed: bool


def grid_model(activation: str, loss: str, bias: str, depth: int,
               n_in: int = 3, width: int = 4, n_out: int = 3) -> models.MLP:
  """The MLP of one grid row.

  The activation is used in the hidden layers and, for the losses on real
  targets, in the output layer too, so that every activation's derivative is
  exercised at the output; the losses on logits get an identity output.
  """
  out_act = (activation if losses_lib.get(loss).labels == "real"
             else "identity")
  return models.mlp((n_in,) + (width,) * depth + (n_out,), activation,
                    out_act, bias)


def grid(activation_names: Sequence[str] | None = None,
         loss_names: Sequence[str] | None = None,
         biases: Sequence[str] | None = None,
         depths: Sequence[int] = (0, 1, 3),
         reductions: Sequence[str] = ("mean",),
         penalty: losses_lib.Penalty | None = None,
         seed: int = 0,
         n: int = 8) -> list[Row]:
  """Runs :func:`check_gradients` over a grid of networks and losses."""
  activation_names = activation_names or activations.names()
  loss_names = loss_names or losses_lib.names()
  biases = biases or models.BIAS_ARRANGEMENTS
  rows = []
  key = jax.random.PRNGKey(seed)
  for i, (act, loss, bias, depth, red) in enumerate(itertools.product(
      activation_names, loss_names, biases, depths, reductions)):
    model = grid_model(act, loss, bias, depth)
    params, x, y = random_problem(model, loss, jax.random.fold_in(key, i), n)
    result = check_gradients(Objective(model, loss, red, penalty), params, x,
                             y)
    rows.append(Row(act, loss, bias, depth, red, result.max_vs_autodiff,
                    result.max_vs_finite_diff, result.passed))
  return rows


def format_table(rows: Sequence[Row]) -> str:
  """A fixed-width text table of :func:`grid` rows."""
  head = (f"{'activation':<11} {'loss':<22} {'bias':<10} {'depth':>5} "
          f"{'reduction':<9} {'vs jax.grad':>11} {'vs fin.diff':>11}  result")
  lines = [head, "-" * len(head)]
  for r in rows:
    lines.append(
        f"{r.activation:<11} {r.loss:<22} {r.bias:<10} {r.depth:>5} "
        f"{r.reduction:<9} {r.vs_autodiff:>11.2e} {r.vs_finite_diff:>11.2e}  "
        f"{'pass' if r.passed else 'FAIL'}")
  failed = sum(not r.passed for r in rows)
  lines.append(f"{len(rows) - failed}/{len(rows)} rows pass"
               + (f" ({failed} FAIL)" if failed else ""))
  return "\n".join(lines)
