"""Gradient descent, with optional (Nesterov) momentum, as optax transforms.

Contract:

* ``gradient_descent`` and ``heavy_ball`` return
  ``optax.GradientTransformationExtraArgs``: ``update(grads, state, params=None,
  **extra_args)`` returns the *update* (``x_{k+1} - x_k``, already negated) and
  the new state; apply it with ``optax.apply_updates``.  Extra keyword
  arguments such as ``value=`` are accepted and ignored, so a training step can
  call every gdlab optimizer the same way, and any optax transform can be
  chained before or after these.
* ``grads`` is the gradient of whatever objective the caller differentiates.
  Whether that objective sums or averages the per-example losses is the
  loss's business, not the optimizer's: the same learning rate means a step
  ``n`` times larger on a summed loss than on the mean over ``n`` examples.
* The learning rate is a number (possibly a traced array, as in a ``vmap``
  sweep) or an optax schedule ``count -> step``; the ``k``-th update
  (``count = k``, from 0) uses ``schedule(k)``, as ``optax.sgd`` does.
* The state is a NamedTuple of arrays: ``count`` (int32, updates done),
  ``step_size`` (the learning rate used by the last update, 0 before the
  first), ``num_fun_evals`` (int32, always 0: no objective value is used),
  ``num_grad_evals`` (int32, one gradient consumed per update) and the
  momentum buffer.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gdlab._checks import check_number
from gdlab._checks import is_concrete
from gdlab.optim import accounting
from gdlab.optim.hyperparams import hyperparameters

__all__ = [
    "GradientDescentState",
    "HeavyBallState",
    "gradient_descent",
    "heavy_ball",
]


class GradientDescentState(NamedTuple):
  """State of :func:`gradient_descent`.

  Attributes:
    count: int32 number of updates done.
    step_size: learning rate used by the last update (0 before the first).
    num_fun_evals: int32 objective evaluations consumed (always 0).
    num_grad_evals: int32 gradients consumed (one per update).
    trace: momentum buffer ``v_k`` (a pytree like params), or ``()`` when the
      momentum is the concrete number 0 and no buffer is needed.
  """
  count: jax.Array
  step_size: jax.Array
  num_fun_evals: jax.Array
  num_grad_evals: jax.Array
  trace: Any


class HeavyBallState(NamedTuple):
  """State of :func:`heavy_ball`.

  Attributes:
    count: int32 number of updates done.
    step_size: learning rate used by the last update (0 before the first).
    num_fun_evals: int32 objective evaluations consumed (always 0).
    num_grad_evals: int32 gradients consumed (one per update).
    displacement: the last step ``x_k - x_{k-1}`` (zeros before the first).
  """
  count: jax.Array
  step_size: jax.Array
  num_fun_evals: jax.Array
  num_grad_evals: jax.Array
  displacement: Any


def _scalar_dtype(params: Any) -> jnp.dtype:
  """Floating dtype of scalar state fields: that of params, else default."""
  dtypes = [jnp.asarray(x).dtype for x in jax.tree.leaves(params)]
  dtypes = [d for d in dtypes if jnp.issubdtype(d, jnp.floating)]
  if not dtypes:
    return jnp.result_type(float)
  return jnp.result_type(*dtypes)


def _counters(params):
  zero = jnp.zeros([], jnp.int32)
  return zero, jnp.zeros([], _scalar_dtype(params)), zero, zero


def _cast_like(tree, like):
  """Casts ``tree`` leaf-wise to the dtypes of ``like`` (stable scan carry)."""
  return jax.tree.map(lambda x, y: jnp.asarray(x, jnp.asarray(y).dtype), tree,
                      like)


def _check_learning_rate(learning_rate):
  if callable(learning_rate):
    return learning_rate
  return check_number("learning_rate", learning_rate, low=0)


def _check_momentum(name, momentum):
  return check_number(name, momentum, low=0, high=1, low_inclusive=True)


def _scaled(learning_rate, count, updates):
  """``-learning_rate * updates``, with optax's ``scale_by_learning_rate`` ops.

  Returns the scaled tree and the learning rate used.
  """
  if callable(learning_rate):
    lr = learning_rate(count)
    step = -1 * lr
    return jax.tree.map(lambda g: jnp.array(step, dtype=g.dtype) * g,
                        updates), lr
  step = -1 * learning_rate
  return jax.tree.map(lambda g: step * g, updates), learning_rate


@hyperparameters("learning_rate", "momentum")
def gradient_descent(
    learning_rate: Any,
    momentum: Any = 0.0,
    nesterov: bool = False,
) -> optax.GradientTransformationExtraArgs:
  r"""Gradient descent, optionally with momentum or Nesterov momentum.

  With ``momentum = 0``:

  .. math:: x_{k+1} = x_k - \eta_k \nabla f(x_k).

  With momentum ``\mu`` (the form of Sutskever et al., used by ``optax.sgd``
  and PyTorch), ``v_0 = 0`` and

  .. math::
     v_{k+1} = \nabla f(x_k) + \mu v_k, \qquad
     x_{k+1} = x_k - \eta_k d_k,

  where ``d_k = v_{k+1}`` (heavy ball) or, with ``nesterov=True``,
  ``d_k = \nabla f(x_k) + \mu v_{k+1}``.  The iterates are exactly those of
  ``optax.sgd(learning_rate, momentum, nesterov)`` (bit for bit; with a
  concrete ``momentum = 0``, those of ``optax.sgd(learning_rate)``).  For a
  constant ``\eta`` this is Polyak's heavy-ball method with ``\beta = \mu``;
  see :func:`heavy_ball` for the form written in iterates.

  On an ``L``-smooth, ``mu``-strongly convex ``f`` with ``momentum = 0`` and
  ``\eta = 2 / (L + \mu)``, ``||x_{k+1} - x*|| <= (\kappa - 1) / (\kappa + 1)
  ||x_k - x*||`` with ``\kappa = L / \mu`` (Nesterov, 2004, Thm 2.1.15).

  Args:
    learning_rate: positive number (or traced array) ``\eta``, or an optax
      schedule ``count -> \eta_k``.
    momentum: ``\mu`` in ``[0, 1)``; may be a traced array.
    nesterov: use Nesterov's momentum (a Python bool).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with
    :class:`GradientDescentState`.

  Raises:
    ValueError: a concrete ``learning_rate`` that is not positive, or a
      concrete ``momentum`` outside ``[0, 1)``.
    TypeError: ``nesterov`` is not a bool.

  References:
    B. T. Polyak, Some methods of speeding up the convergence of iteration
    methods, USSR Comput. Math. Math. Phys. 4(5), 1964.
    Y. Nesterov, A method for solving the convex programming problem with
    convergence rate O(1/k^2), Soviet Math. Dokl. 27, 1983.
    I. Sutskever, J. Martens, G. Dahl, G. Hinton, On the importance of
    initialization and momentum in deep learning, ICML 2013.
  """
  _check_learning_rate(learning_rate)
  _check_momentum("momentum", momentum)
  if not isinstance(nesterov, bool):
    raise TypeError(f"nesterov: expected a bool; got {nesterov!r} of type "
                    f"{type(nesterov).__name__}.")
  # A concrete zero momentum needs no buffer (and matches optax.sgd without
  # momentum exactly); a traced one keeps it, whatever its value.
  use_trace = not (is_concrete(momentum) and jnp.ndim(momentum) == 0
                   and float(momentum) == 0.0)

  def init_fn(params):
    trace = optax.tree.zeros_like(params) if use_trace else ()
    return GradientDescentState(*_counters(params), trace=trace)

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    trace = state.trace
    if use_trace:
      f = lambda g, t: g + momentum * t
      trace = jax.tree.map(f, updates, state.trace)
      updates = jax.tree.map(f, updates, trace) if nesterov else trace
      trace = _cast_like(trace, state.trace)
    updates, lr = _scaled(learning_rate, state.count, updates)
    return updates, GradientDescentState(
        count=optax.safe_increment(state.count),
        step_size=jnp.asarray(lr, state.step_size.dtype),
        num_fun_evals=state.num_fun_evals,
        num_grad_evals=optax.safe_increment(state.num_grad_evals),
        trace=trace,
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


@hyperparameters("learning_rate", "beta")
def heavy_ball(
    learning_rate: Any, beta: Any) -> optax.GradientTransformationExtraArgs:
  r"""Polyak's heavy-ball method, written in iterates.

  .. math::
     x_{k+1} = x_k - \alpha_k \nabla f(x_k) + \beta (x_k - x_{k-1}),
     \qquad x_{-1} = x_0.

  For a constant ``\alpha`` this equals ``gradient_descent(\alpha,
  momentum=\beta)`` up to rounding (``x_{k+1} - x_k = -\alpha v_{k+1}``).
  With a schedule they differ: here ``\alpha_k`` scales only the new
  gradient, there ``\eta_k`` scales the whole velocity.  On a quadratic with
  eigenvalues in ``[\mu, L]``, ``\alpha = 4 / (\sqrt{L} + \sqrt{\mu})^2`` and
  ``\beta = ((\sqrt\kappa - 1) / (\sqrt\kappa + 1))^2`` give the asymptotic
  rate ``(\sqrt\kappa - 1) / (\sqrt\kappa + 1)`` per step.

  Args:
    learning_rate: positive number (or traced array) ``\alpha``, or an optax
      schedule ``count -> \alpha_k``.
    beta: momentum ``\beta`` in ``[0, 1)``; may be a traced array.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with :class:`HeavyBallState`.

  Raises:
    ValueError: a concrete ``learning_rate`` that is not positive, or a
      concrete ``beta`` outside ``[0, 1)``.

  References:
    B. T. Polyak, Some methods of speeding up the convergence of iteration
    methods, USSR Comput. Math. Math. Phys. 4(5), 1964.
  """
  _check_learning_rate(learning_rate)
  _check_momentum("beta", beta)

  def init_fn(params):
    return HeavyBallState(*_counters(params),
                          displacement=optax.tree.zeros_like(params))

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    step, lr = _scaled(learning_rate, state.count, updates)
    updates = jax.tree.map(lambda s, d: s + beta * d, step, state.displacement)
    return updates, HeavyBallState(
        count=optax.safe_increment(state.count),
        step_size=jnp.asarray(lr, state.step_size.dtype),
        num_fun_evals=state.num_fun_evals,
        num_grad_evals=optax.safe_increment(state.num_grad_evals),
        displacement=_cast_like(updates, state.displacement),
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _account(state) -> accounting.Accounting:
  """Plain steps: their step size; they evaluate nothing themselves."""
  zero = jnp.int32(0)
  return accounting.Accounting(state.step_size, zero, zero)


accounting.register(GradientDescentState, _account)
accounting.register(HeavyBallState, _account)
