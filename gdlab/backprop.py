"""Backpropagation written by hand, for gdlab's :class:`~gdlab.models.MLP`.

No automatic differentiation is used here: every derivative comes from the
hand-written derivatives of the activations (``gdlab.activations``), of the
losses with respect to the prediction and of the penalties
(``gdlab.losses``), combined by the chain rule.

With ``a_l = z_{l-1} W_l + b_l`` and ``z_l = f_l(a_l)`` (row vectors, a batch
of ``n`` records; see ``gdlab.models``) and ``C`` the reduced loss, the error
of layer ``l`` is ``delta_l = dC/da_l`` (shape ``(n, n_l)``):

    delta_L     = dC/dz_L * f_L'(a_L)                       (output layer)
    delta_{l-1} = (delta_l W_l^T) * f_{l-1}'(a_{l-1})       (back one layer)
    dC/dW_l     = z_{l-1}^T delta_l
    dC/db_l     = sum over records of delta_l                (bias per neuron)
                = sum over records and neurons of delta_l    (bias per layer)
    dC/db       = sum over layers of the per-layer sums      (shared bias)

``dC/dz_L`` row ``i`` is ``s_i dl_i/dz_L``, where ``s_i`` is ``1/n`` for the
``"mean"`` reduction and ``1`` for ``"sum"`` (``w_i / sum w`` and ``w_i`` with
weights).  The subgradients at kinks are those of ``jax.grad`` (documented in
``gdlab.activations`` and ``gdlab.losses``), so this engine and the automatic
one agree everywhere.

The functions are pure and work under ``jit`` and ``vmap``.
:func:`value_and_grad` has the signature of a gradient engine (see
``gdlab.objective``): it returns the loss and a gradient with exactly the tree
structure of ``params``, as ``jax.grad`` does.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gdlab import losses as losses_lib
from gdlab import models

Array = jax.Array


class Cache(NamedTuple):
  """What the forward pass keeps for the backward pass.

  Attributes:
    a: pre-activations ``[a_1, ..., a_L]``.
    z: outputs ``[z_0 = x, z_1, ..., z_L]``.
  """
  a: list[Array]
  z: list[Array]


def _check_model(model) -> models.MLP:
  if not isinstance(model, models.MLP):
    raise TypeError(
        "model: the hand-written backpropagation needs a gdlab MLP "
        f"(gdlab.models.mlp); got {type(model).__name__}. Use "
        "engine='autodiff' for other models.")
  return model


def forward(model: models.MLP, params, x: Array) -> tuple[Array, Cache]:
  """The forward pass, keeping each layer's ``a_l`` and ``z_l``.

  Returns:
    ``(y_hat, cache)`` where ``y_hat = z_L`` has shape ``(n, n_out)``.
  """
  model = _check_model(model)
  z = model.check_input(x)
  cache_a, cache_z = [], [z]
  for l, w in enumerate(params["w"]):
    a = z @ w + model.layer_bias(params, l)
    z = model.layer_activation(l).fn(a)
    cache_a.append(a)
    cache_z.append(z)
  return z, Cache(cache_a, cache_z)


def backward(model: models.MLP, params, cache: Cache, d_out: Array):
  """The backward pass: from ``dC/dz_L`` to ``dC/dparams`` by the chain rule.

  Args:
    model: the MLP that made ``cache``.
    params: its parameters.
    cache: from :func:`forward`.
    d_out: ``dC/dz_L``, shape ``(n, n_out)``.

  Returns:
    The gradient, a tree with the structure of ``params``.
  """
  model = _check_model(model)
  num_layers = model.num_layers
  grad_w = [None] * num_layers
  grad_b = [None] * num_layers
  dz = d_out
  for l in reversed(range(num_layers)):
    act = model.layer_activation(l)
    delta = dz * act.deriv(cache.a[l], cache.z[l + 1])
    grad_w[l] = cache.z[l].T @ delta
    if model.bias == "per_neuron":
      grad_b[l] = jnp.sum(delta, axis=0)
    elif model.bias in ("per_layer", "shared"):
      grad_b[l] = jnp.sum(delta)
    if l > 0:
      dz = delta @ params["w"][l].T
  grads: dict[str, Any] = {"w": grad_w}
  if model.bias in ("per_neuron", "per_layer"):
    grads["b"] = grad_b
  elif model.bias == "shared":
    grads["b"] = sum(grad_b[1:], grad_b[0])
  return grads


def value_and_grad(model: models.MLP, params, x: Array, y: Array,
                   loss: str = "mse", reduction: str = "mean",
                   penalty: losses_lib.Penalty | None = None,
                   weights: Array | None = None):
  """The loss ``C`` and its gradient, by hand-written backpropagation.

  ``C = reduce_i l(y_hat_i, y_i) + R(params)``.

  Args:
    model: a gdlab MLP.
    params: its parameters.
    x: inputs, shape ``(n, n_in)``.
    y: labels, as ``loss`` expects (see ``gdlab.losses``).
    loss: a loss name.
    reduction: ``"mean"`` or ``"sum"`` over the records.
    penalty: an optional weight penalty.
    weights: optional per-record weights, shape ``(n,)``.

  Returns:
    ``(C, grads)`` with ``grads`` shaped like ``params``.
  """
  value, residuals = value_and_residuals(model, params, x, y, loss, reduction,
                                         penalty, weights)
  return value, grad_from_residuals(model, params, residuals, penalty)


class Residuals(NamedTuple):
  """What the backward pass needs from the forward pass."""
  cache: Cache
  d_out: Array  # dC/dz_L, the reduction's scale included


def value_and_residuals(model: models.MLP, params, x: Array, y: Array,
                        loss: str = "mse", reduction: str = "mean",
                        penalty: losses_lib.Penalty | None = None,
                        weights: Array | None = None
                        ) -> tuple[Array, Residuals]:
  """The forward half of :func:`value_and_grad`: ``(C, residuals)``.

  Arguments as for :func:`value_and_grad`; :func:`grad_from_residuals` runs
  the backward half.  Split so that a caller (a line search's trial) can
  run the forward pass alone and the backward pass only when it needs it.
  """
  loss_fn = losses_lib.get(loss)
  losses_lib.check_reduction(reduction)
  y_hat, cache = forward(model, params, x)
  y = losses_lib.check_labels(loss_fn, y_hat, y)
  per_example = loss_fn.per_example(y_hat, y)
  value = losses_lib.reduce(per_example, reduction, weights)
  scale = losses_lib.reduction_scale(y_hat.shape[0], reduction, y_hat.dtype,
                                     weights)
  d_out = scale[:, None] * loss_fn.deriv(y_hat, y)
  if penalty is not None:
    value = value + losses_lib.penalty_value(params, penalty)
  return value, Residuals(cache, d_out)


def grad_from_residuals(model: models.MLP, params, residuals: Residuals,
                        penalty: losses_lib.Penalty | None = None):
  """The backward half of :func:`value_and_grad`: ``dC/dparams``."""
  grads = backward(model, params, residuals.cache, residuals.d_out)
  if penalty is not None:
    grads = jax.tree_util.tree_map(jnp.add, grads,
                                   losses_lib.penalty_grad(params, penalty))
  return grads
