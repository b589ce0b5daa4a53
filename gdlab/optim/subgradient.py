"""The subgradient method for convex, possibly non-smooth objectives.

Contract:

* :func:`subgradient_descent` returns an
  ``optax.GradientTransformationExtraArgs``.  Its update is

    ``updates, state = opt.update(g, state, params, value=f(params))``

  with ``g`` any subgradient of ``f`` at ``params`` (``jax.grad`` returns one
  for the usual kinks: ``|x|`` and relu at 0, hinge at the margin, each with
  the convention of the function that computes ``f``) and ``value = f(x_k)``
  evaluated at the *current* params, before the update.  ``value`` and
  ``params`` are required.  The update is ``-alpha_k g`` with ``alpha_k``
  from the step rule (see :mod:`gdlab.optim.schedules`).
* The method is not a descent method: ``f(x_k)`` may go up.  The state keeps
  the best iterate seen, ``f_best = min_{i <= k} f(x_i)`` and the params
  ``x_i`` where it was attained; read them with :func:`best_params` and
  :func:`best_value`.  The iterate produced by the last update has not been
  evaluated yet, so it is not a candidate until the next call.
* ``NaN`` values never become ``f_best`` (the comparison ``value < f_best`` is
  false for ``NaN``); before any finite value ``f_best = +inf`` and
  ``params_best`` holds the initial params.
* The state is a NamedTuple of arrays: ``count`` (int32), ``step_size``
  (``alpha_k`` of the last update, 0 before the first), ``num_fun_evals`` and
  ``num_grad_evals`` (int32, one each per update: the caller evaluates ``f``
  and a subgradient once per step), ``f_best`` and ``params_best``.

References:
  N. Z. Shor, *Minimization Methods for Non-Differentiable Functions*,
  Springer, 1985.
  S. Boyd and A. Mutapcic, *Subgradient Methods*, lecture notes for EE364b,
  Stanford University, 2008.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gdlab.optim.gd import _scalar_dtype
from gdlab.optim.schedules import as_step_rule
from gdlab.optim import accounting
from gdlab.optim.hyperparams import hyperparameters

__all__ = [
    "SubgradientState",
    "best_params",
    "best_value",
    "subgradient_descent",
]


class SubgradientState(NamedTuple):
  """State of :func:`subgradient_descent`.

  Attributes:
    count: int32 number of updates done.
    step_size: ``alpha_k`` used by the last update (0 before the first).
    num_fun_evals: int32 objective values consumed (one per update).
    num_grad_evals: int32 subgradients consumed (one per update).
    f_best: best value seen, ``min_{i <= k} f(x_i)`` (``+inf`` at first).
    params_best: the params at which ``f_best`` was seen.
  """
  count: jax.Array
  step_size: jax.Array
  num_fun_evals: jax.Array
  num_grad_evals: jax.Array
  f_best: jax.Array
  params_best: Any


@hyperparameters()
def subgradient_descent(
    step_rule: Any) -> optax.GradientTransformationExtraArgs:
  r"""The subgradient method, ``x_{k+1} = x_k - \alpha_k g_k``.

  ``g_k`` is any subgradient of the convex ``f`` at ``x_k`` and ``\alpha_k``
  comes from ``step_rule(k, f(x_k), ||g_k||, f_best^(k))``.  For any step
  sizes, with ``R = ||x_0 - x*||`` and ``||g_i|| <= G``,

  .. math::
     f_{best}^{(k)} - f^* \le
     \frac{R^2 + G^2 \sum_{i=0}^k \alpha_i^2}{2 \sum_{i=0}^k \alpha_i},

  so constant steps converge to within ``G^2 \alpha / 2``, and square
  summable or nonsummable diminishing steps converge to ``f*``.

  Args:
    step_rule: a positive number, an optax schedule ``count -> alpha``, or a
      step rule ``(count, value, grad_norm[, f_best]) -> alpha`` such as
      ``schedules.polyak(f_star)``.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose update takes
    ``params`` and the keyword ``value`` (both required), with
    :class:`SubgradientState`.

  Raises:
    ValueError: a concrete numeric ``step_rule`` that is not positive; at
      update time, a missing ``value`` or ``params`` or a non-scalar
      ``value``.

  References:
    S. Boyd and A. Mutapcic, Subgradient Methods, EE364b notes, 2008.
  """
  rule = as_step_rule(step_rule, name="step_rule")

  def init_fn(params):
    dtype = _scalar_dtype(params)
    zero = jnp.zeros([], jnp.int32)
    return SubgradientState(
        count=zero,
        step_size=jnp.zeros([], dtype),
        num_fun_evals=zero,
        num_grad_evals=zero,
        f_best=jnp.full([], jnp.inf, dtype),
        params_best=jax.tree.map(jnp.asarray, params),
    )

  def update_fn(updates, state, params=None, *, value=None, **extra_args):
    del extra_args
    if value is None:
      raise ValueError(
          "value: subgradient_descent needs the objective value at the "
          "current params; call update(grads, state, params, value=f(params)).")
    if params is None:
      raise ValueError(
          "params: subgradient_descent needs the current params to track the "
          "best iterate; call update(grads, state, params, value=f(params)).")
    if jnp.ndim(value) != 0:
      raise ValueError(f"value: expected a scalar objective value; got shape "
                       f"{jnp.shape(value)}.")
    value = jnp.asarray(value, state.f_best.dtype)
    better = value < state.f_best  # False for NaN.
    f_best = jnp.where(better, value, state.f_best)
    params_best = jax.tree.map(
        lambda p, b: jnp.where(better, jnp.asarray(p, b.dtype), b), params,
        state.params_best)
    grad_norm = optax.tree.norm(updates)
    alpha = rule(state.count, value, grad_norm, f_best)
    updates = jax.tree.map(lambda g: jnp.asarray(-alpha, g.dtype) * g, updates)
    return updates, SubgradientState(
        count=optax.safe_increment(state.count),
        step_size=jnp.asarray(alpha, state.step_size.dtype),
        num_fun_evals=optax.safe_increment(state.num_fun_evals),
        num_grad_evals=optax.safe_increment(state.num_grad_evals),
        f_best=f_best,
        params_best=params_best,
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def best_value(state: Any) -> jax.Array:
  """``f_best`` from a :class:`SubgradientState`, alone or inside a chain."""
  return _field(state, "f_best")


def best_params(state: Any) -> Any:
  """``params_best`` from a :class:`SubgradientState`, alone or in a chain.

  Args:
    state: the optimizer state, either a :class:`SubgradientState` or an optax
      state (``optax.chain``, ``inject_hyperparams``) holding exactly one.

  Returns:
    The params at which the best value ``best_value(state)`` was seen.
  """
  return _field(state, "params_best")


def _field(state, name):
  if isinstance(state, SubgradientState):
    return getattr(state, name)
  found = optax.tree.get(state, name)
  if found is None:
    raise ValueError(f"state: expected a SubgradientState or an optax state "
                     f"holding one (with a {name!r} field); got "
                     f"{type(state).__name__}.")
  return found


def _account(state: SubgradientState) -> accounting.Accounting:
  zero = jnp.int32(0)
  return accounting.Accounting(state.step_size, zero, zero)


accounting.register(SubgradientState, _account)
