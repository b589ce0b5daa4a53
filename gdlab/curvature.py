"""Curvature of the training objective: Hessian-vector products and spectra.

For an objective ``C(params; x, y)`` (``gdlab.objective``) with Hessian
``H = d^2 C / dparams^2`` at ``params``:

* :func:`hvp` is the product ``H v`` for a tangent ``v`` shaped like
  ``params``, by forward-over-reverse differentiation: ``jax.jvp`` of the
  gradient function of the chosen engine.  With ``engine="manual"`` the
  forward-mode derivative runs through the hand-written backpropagation of
  ``gdlab.backprop``, so the two engines give the same product to rounding
  error.  ``H`` is never formed.
* :func:`top_eigenvalues` (and :func:`top_eigenpairs`) are the ``k``
  algebraically largest eigenvalues of ``H`` by the Lanczos method with full
  reorthogonalisation, run on the flattened parameters
  (``jax.flatten_util.ravel_pytree``) for ``num_iters`` steps; the
  eigenvalues of the tridiagonal matrix ``T`` it builds (the Ritz values)
  approximate the extremes of the spectrum first.  With ``num_iters`` at
  least the number of parameters the result is exact up to rounding.  At an
  early breakdown (an invariant subspace found, ``beta_j ~ 0``) the next
  Lanczos vector is a fresh random one orthogonal to the basis and the
  off-diagonal entry is zero, so ``T`` stays a block matrix whose blocks'
  eigenvalues are all eigenvalues of ``H``.
* :func:`sharpness` is the top eigenvalue, ``lambda_max(H)``.  Gradient
  descent with step ``eta`` on a quadratic is stable only while
  ``lambda_max < 2 / eta``; Cohen et al. (2021) observe that in full-batch
  training the sharpness rises to about ``2 / eta`` and hovers there, the
  *edge of stability*.
* :func:`hessian_trace` is Hutchinson's estimator of ``tr H``: the mean of
  ``v^T H v`` over ``num_samples`` Rademacher vectors ``v`` (entries +-1),
  which is unbiased since ``E[v v^T] = I``, with variance
  ``2 sum_{i != j} H_ij^2 / num_samples``; it is exact for a diagonal ``H``.

Cost: one Hessian-vector product costs about two to three gradient
evaluations.  The functions linearise the gradient once
(``jax.linearize``) and apply the linear map ``num_iters`` or
``num_samples`` times; Lanczos keeps a ``(num_iters + 1, P)`` basis for
``P`` parameters.  Everything is pure and compiles under ``jax.jit``: the
loops are ``lax.fori_loop`` and ``vmap``, ``k``, ``num_iters``,
``num_samples`` and ``engine`` are static, and no value leaves the device.
The Hessian is that of the objective as written: at the kinks of relu, the
absolute loss or the hinge, the second derivative is that of the documented
subgradient convention (zero).

References:
  C. Lanczos, An iteration method for the solution of the eigenvalue problem
  of linear differential and integral operators, J. Res. Nat. Bur.
  Standards 45 (1950).
  M. F. Hutchinson, A stochastic estimator of the trace of the influence
  matrix for Laplacian smoothing splines, Comm. Statist. Simulation Comput.
  18 (1989).
  J. Cohen, S. Kaur, Y. Li, J. Z. Kolter, A. Talwalkar, Gradient descent on
  neural networks typically occurs at the edge of stability, ICLR 2021.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from gdlab import _checks
from gdlab import objective as objective_lib

Array = jax.Array

DEFAULT_NUM_ITERS = 20


def _grad_fn(objective, engine: str, x, y,
             weights) -> Callable[[Any], Any]:
  """``params -> dC/dparams`` from the engine's value-and-gradient."""
  value_and_grad = objective_lib.value_and_grad_fn(objective, engine)
  return lambda params: value_and_grad(params, x, y, weights)[1]


def _linear_hvp(objective, params, x, y, engine: str,
                weights) -> Callable[[Any], Any]:
  """``v -> H v`` at ``params``: the gradient linearised once."""
  _, hvp_fn = jax.linearize(_grad_fn(objective, engine, x, y, weights),
                            params)
  return hvp_fn


def hvp(objective, params, x: Array, y: Array, v, *,
        engine: str = "autodiff", weights: Array | None = None):
  """The Hessian-vector product ``H v = d/dt grad C(params + t v) |_{t=0}``.

  Forward-over-reverse: ``jax.jvp`` of the engine's gradient function.

  Args:
    objective: a ``gdlab.Objective`` (or a function objective, autodiff
      only).
    params: the point at which the Hessian is taken.
    x, y: the batch the objective is evaluated on.
    v: the tangent, a tree with the structure and dtypes of ``params``.
    engine: ``"autodiff"`` or ``"manual"`` (see ``gdlab.objective``).
    weights: optional per-record weights, shape ``(n,)``.

  Returns:
    ``H v``, shaped like ``params``.

  Raises:
    TypeError: when ``v`` does not have the tree structure of ``params``.
  """
  params_tree = jax.tree_util.tree_structure(params)
  v_tree = jax.tree_util.tree_structure(v)
  if params_tree != v_tree:
    raise TypeError(f"v: expected a tree with the structure of params, "
                    f"{params_tree}; got {v_tree}.")
  grad = _grad_fn(objective, engine, x, y, weights)
  return jax.jvp(grad, (params,), (v,))[1]


class Eigenpairs(NamedTuple):
  """The top of a Hessian's spectrum, largest first.

  Attributes:
    values: the ``k`` eigenvalues, shape ``(k,)``, descending.
    vectors: the unit Ritz vectors, a tree shaped like ``params`` with a
      leading axis of length ``k`` (vector ``i`` goes with ``values[i]``).
  """
  values: Array
  vectors: Any


class _LanczosCarry(NamedTuple):
  basis: Array   # (m + 1, P): q_0, ..., q_m as rows; rows not reached are 0
  alphas: Array  # (m,): the diagonal of T
  betas: Array   # (m,): the off-diagonal of T; betas[j] links q_j, q_{j+1}


def _orthogonalise(w: Array, basis: Array) -> Array:
  """``w`` less its projection on the rows of ``basis``, done twice."""
  w = w - basis.T @ (basis @ w)
  return w - basis.T @ (basis @ w)


def _lanczos(matvec: Callable[[Array], Array], start: Array, num_iters: int,
             key: Array) -> tuple[Array, Array]:
  """``num_iters`` Lanczos steps from ``start``: ``(T, basis)``.

  Full reorthogonalisation: every new vector is made orthogonal to the
  whole basis.  On breakdown (``beta_j`` under a rounding tolerance) the
  next vector is a random one orthogonal to the basis and ``beta_j = 0``.
  """
  size = start.shape[0]
  dtype = start.dtype
  eps = jnp.finfo(dtype).eps
  basis = jnp.zeros((num_iters + 1, size), dtype)
  basis = basis.at[0].set(start / jnp.linalg.norm(start))
  init = _LanczosCarry(basis, jnp.zeros((num_iters,), dtype),
                       jnp.zeros((num_iters,), dtype))

  def step(j, carry: _LanczosCarry) -> _LanczosCarry:
    q = carry.basis[j]
    hq = matvec(q)
    alpha = jnp.dot(q, hq)
    w = _orthogonalise(hq, carry.basis)
    beta = jnp.linalg.norm(w)
    tol = 10 * eps * jnp.sqrt(size) * jnp.maximum(
        jnp.linalg.norm(hq), jnp.finfo(dtype).tiny)
    restart = _orthogonalise(
        jax.random.normal(jax.random.fold_in(key, j), (size,), dtype),
        carry.basis)
    broke = beta <= tol
    q_next = jnp.where(broke, restart / jnp.linalg.norm(restart),
                       w / jnp.where(broke, 1, beta))
    return _LanczosCarry(carry.basis.at[j + 1].set(q_next),
                         carry.alphas.at[j].set(alpha),
                         carry.betas.at[j].set(jnp.where(broke, 0, beta)))

  out = jax.lax.fori_loop(0, num_iters, step, init)
  off = out.betas[:-1]
  tridiagonal = (jnp.diag(out.alphas) + jnp.diag(off, 1) + jnp.diag(off, -1))
  return tridiagonal, out.basis[:num_iters]


def _flat_lanczos(objective, params, x, y, k: int, num_iters: int,
                  engine: str, key, weights):
  """The Lanczos tridiagonal matrix and basis of ``H`` on flat parameters."""
  _checks.check_positive_int("k", k)
  _checks.check_positive_int("num_iters", num_iters)
  flat, unravel = ravel_pytree(params)
  size = flat.shape[0]
  steps = min(num_iters, size)  # more steps than parameters add nothing
  if k > steps:
    raise ValueError(f"k: expected at most min(num_iters, number of "
                     f"parameters) = {steps} eigenvalues; got {k}.")
  key = jax.random.PRNGKey(0) if key is None else key
  start_key, restart_key = jax.random.split(key)
  linear = _linear_hvp(objective, params, x, y, engine, weights)

  def matvec(u):
    return ravel_pytree(linear(unravel(u)))[0]

  start = jax.random.normal(start_key, (size,), flat.dtype)
  tridiagonal, basis = _lanczos(matvec, start, steps, restart_key)
  return tridiagonal, basis, unravel


def top_eigenvalues(objective, params, x: Array, y: Array, k: int = 1, *,
                    num_iters: int = DEFAULT_NUM_ITERS,
                    engine: str = "autodiff", key: Array | None = None,
                    weights: Array | None = None) -> Array:
  """The ``k`` largest eigenvalues of the Hessian, by Lanczos.

  ``num_iters`` Lanczos steps with full reorthogonalisation build a
  tridiagonal ``T = Q^T H Q`` on an orthonormal basis ``Q`` of a Krylov
  space of ``H``; the eigenvalues of ``T`` (``jnp.linalg.eigvalsh``) are the
  estimates.  With ``num_iters`` at least the number of parameters ``P``
  they are exact up to rounding; ``num_iters`` above ``P`` is cut to ``P``.

  Args:
    objective: a ``gdlab.Objective`` (or a function objective).
    params: the point at which the Hessian is taken.
    x, y: the batch.
    k: how many eigenvalues (static), at most ``min(num_iters, P)``.
    num_iters: Lanczos steps (static); each costs one Hessian-vector
      product.
    engine: ``"autodiff"`` or ``"manual"``.
    key: the random start vector's key; ``jax.random.PRNGKey(0)`` if None.
    weights: optional per-record weights, shape ``(n,)``.

  Returns:
    The eigenvalues, shape ``(k,)``, largest (algebraically) first.

  Raises:
    ValueError: for ``k`` above ``min(num_iters, P)``.
  """
  tridiagonal, _, _ = _flat_lanczos(objective, params, x, y, k, num_iters,
                                    engine, key, weights)
  return jnp.linalg.eigvalsh(tridiagonal)[::-1][:k]


def top_eigenpairs(objective, params, x: Array, y: Array, k: int = 1, *,
                   num_iters: int = DEFAULT_NUM_ITERS,
                   engine: str = "autodiff", key: Array | None = None,
                   weights: Array | None = None) -> Eigenpairs:
  """:func:`top_eigenvalues` with their Ritz vectors ``Q s_i``.

  Arguments as for :func:`top_eigenvalues`; the vectors come from
  ``jnp.linalg.eigh`` of ``T`` and cost one ``(k, m) x (m, P)`` product.
  """
  tridiagonal, basis, unravel = _flat_lanczos(objective, params, x, y, k,
                                              num_iters, engine, key, weights)
  values, vectors = jnp.linalg.eigh(tridiagonal)
  order = jnp.arange(values.shape[0] - 1, values.shape[0] - 1 - k, -1)
  ritz = vectors[:, order].T @ basis
  return Eigenpairs(values[order], jax.vmap(unravel)(ritz))


def sharpness(objective, params, x: Array, y: Array, *,
              num_iters: int = DEFAULT_NUM_ITERS, engine: str = "autodiff",
              key: Array | None = None,
              weights: Array | None = None) -> Array:
  """The sharpness ``lambda_max(H)``, a scalar; see :func:`top_eigenvalues`.

  Compare it with ``2 / eta`` for gradient descent with step ``eta`` (Cohen
  et al., 2021).
  """
  return top_eigenvalues(objective, params, x, y, 1, num_iters=num_iters,
                         engine=engine, key=key, weights=weights)[0]


def hessian_trace(objective, params, x: Array, y: Array, *,
                  num_samples: int, key: Array, engine: str = "autodiff",
                  weights: Array | None = None) -> Array:
  """Hutchinson's estimate of ``tr H``: the mean of ``v^T H v``.

  ``v`` has independent Rademacher entries (+-1 with probability 1/2), so
  ``E[v^T H v] = tr H``; the ``num_samples`` products are vmapped.

  Args:
    objective: a ``gdlab.Objective`` (or a function objective).
    params: the point at which the Hessian is taken.
    x, y: the batch.
    num_samples: the number of probe vectors (static).
    key: the probes' key.
    engine: ``"autodiff"`` or ``"manual"``.
    weights: optional per-record weights, shape ``(n,)``.

  Returns:
    The estimate, a scalar.
  """
  _checks.check_positive_int("num_samples", num_samples)
  flat, unravel = ravel_pytree(params)
  linear = _linear_hvp(objective, params, x, y, engine, weights)
  probes = jax.random.rademacher(key, (num_samples, flat.shape[0]),
                                 flat.dtype)

  def quadratic_form(v):
    return jnp.dot(v, ravel_pytree(linear(unravel(v)))[0])

  return jnp.mean(jax.vmap(quadratic_form)(probes))
