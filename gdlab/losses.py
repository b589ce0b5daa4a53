"""Losses, their derivatives with respect to the prediction, and penalties.

Contract.  A model's output ``y_hat`` has shape ``(n, k)``: ``n`` records,
``k`` output units.  Each loss is defined per record, ``l_i = l(y_hat_i, y_i)``,
and reduced over the records of a batch by a named reduction:

* ``"mean"``: ``C = (1/n) sum_i l_i`` (most code's convention);
* ``"sum"``:  ``C = sum_i l_i`` (the summed update of classic batch gradient
  descent, where the batch gradient is the sum of per-record gradients).

Optional per-record ``weights`` (a 0/1 mask for padded batches, or any
non-negative weights) give ``sum_i w_i l_i / sum_i w_i`` and
``sum_i w_i l_i``.

The losses (``o`` is the output, ``y`` the label, ``j`` runs over units):

=========================  ==============================================  ====================
name                       per-record loss                                 labels
=========================  ==============================================  ====================
``mse``                    ``(1/k) sum_j (o_j - y_j)^2``                   float ``(n, k)``
``sum_squares``            ``(1/2) sum_j (o_j - y_j)^2``                   float ``(n, k)``
``absolute``               ``(1/k) sum_j |o_j - y_j|``                     float ``(n, k)``
``huber``                  ``(1/k) sum_j h(o_j - y_j)``, delta = 1         float ``(n, k)``
``binary_cross_entropy``   ``sum_j softplus(o_j) - y_j o_j`` (o: logits)   0/1 ``(n, k)``
``softmax_cross_entropy``  ``logsumexp(o) - sum_j y_j o_j`` (o: logits)    int ``(n,)`` or one-hot float ``(n, k)``
``hinge``                  ``sum_j max(0, 1 - y_j o_j)``                   -1/+1 ``(n, k)``
``multiclass_hinge``       ``sum_{j != y} max(0, 1 + o_j - o_y)``          int ``(n,)``
=========================  ==============================================  ====================

``mse`` is the classic formulation's mean squared error of one record: the
mean over output units of ``(o - y)^2``.  ``multiclass_hinge`` is the
Weston-Watkins form.  For a single-output model, labels of shape ``(n,)`` are
accepted for the ``(n, 1)`` losses and reshaped.

Labels are checked twice: their shape and dtype at trace time
(:func:`check_labels`), and their values on the host before training
(:func:`check_values`, with :func:`check_outputs` for the model's width):
class indices in ``[0, k)``, 0/1 labels (or probabilities) for
``binary_cross_entropy``, -1/+1 labels for ``hinge``, and at least two
outputs for the class losses, which are 0 on a single output.

Subgradients at kinks (identical to ``jax.grad`` of the loss as written here):
``|r|`` has derivative +1 at ``r = 0`` (JAX's choice for ``jnp.abs``, and a
valid subgradient, since ``[-1, 1]`` is the subdifferential); the hinge has derivative
0 at the margin (``y o = 1``), as does each term of the multiclass hinge at
``1 + o_j - o_y = 0``.

Penalties are added once to the reduced loss, whatever the reduction:
``l2``: ``(lambda/2) sum w^2`` (gradient ``lambda w``); ``l1``:
``lambda sum |w|`` (subgradient ``lambda sign(w)``, +1 at 0 as for ``|r|``).  Biases are left
out unless ``include_bias=True``; a leaf is a bias when its path in the
parameter tree has a key named ``"b"`` or ``"bias"``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdlab import _checks
from gdlab.data import validation

Array = jax.Array

HUBER_DELTA = 1.0
REDUCTIONS = ("mean", "sum")


class Loss(NamedTuple):
  """A per-record loss and its derivative with respect to the output.

  Attributes:
    name: the registry name.
    per_example: ``(y_hat (n, k), y) -> (n,)`` loss of each record.
    deriv: ``(y_hat, y) -> (n, k)``; row ``i`` is ``d l_i / d y_hat_i``.
    labels: which labels the loss takes: ``"real"``, ``"binary"``,
      ``"sign"``, ``"class_or_onehot"`` or ``"class"``.
  """
  name: str
  per_example: Callable[[Array, Array], Array]
  deriv: Callable[[Array, Array], Array]
  labels: str


def _mse(o, y):
  return jnp.mean((o - y) ** 2, axis=-1)


def _mse_deriv(o, y):
  return 2 * (o - y) / o.shape[-1]


def _sum_squares(o, y):
  return 0.5 * jnp.sum((o - y) ** 2, axis=-1)


def _sum_squares_deriv(o, y):
  return o - y


def _absolute(o, y):
  return jnp.mean(jnp.abs(o - y), axis=-1)


def abs_deriv(r):
  """The derivative of ``|r|``, with JAX's choice of +1 at ``r = 0``."""
  return jnp.where(r >= 0, 1.0, -1.0).astype(r.dtype)


def _absolute_deriv(o, y):
  return abs_deriv(o - y) / o.shape[-1]


def _huber(o, y):
  r = o - y
  quad = 0.5 * r * r
  lin = HUBER_DELTA * (jnp.abs(r) - 0.5 * HUBER_DELTA)
  return jnp.mean(jnp.where(jnp.abs(r) <= HUBER_DELTA, quad, lin), axis=-1)


def _huber_deriv(o, y):
  return jnp.clip(o - y, -HUBER_DELTA, HUBER_DELTA) / o.shape[-1]


def _bce(o, y):
  return jnp.sum(jnp.logaddexp(o, 0.0) - y * o, axis=-1)


def _bce_deriv(o, y):
  return jax.nn.sigmoid(o) - y


def _as_target(o, y):
  """Integer labels become one-hot rows; float rows are used as they are."""
  if jnp.issubdtype(y.dtype, jnp.integer):
    return jax.nn.one_hot(y, o.shape[-1], dtype=o.dtype)
  return y


def _softmax_ce(o, y):
  t = _as_target(o, y)
  lse = jax.nn.logsumexp(o, axis=-1)
  return lse * jnp.sum(t, axis=-1) - jnp.sum(t * o, axis=-1)


def _softmax_ce_deriv(o, y):
  t = _as_target(o, y)
  return jax.nn.softmax(o, axis=-1) * jnp.sum(t, axis=-1, keepdims=True) - t


def _hinge(o, y):
  m = y * o
  return jnp.sum(jnp.where(m < 1, 1 - m, jnp.zeros_like(m)), axis=-1)


def _hinge_deriv(o, y):
  return jnp.where(y * o < 1, -y, jnp.zeros_like(o))


def _mc_hinge_active(o, y):
  t = jax.nn.one_hot(y, o.shape[-1], dtype=o.dtype)
  margins = o - jnp.sum(t * o, axis=-1, keepdims=True) + 1
  active = (margins > 0) & (t == 0)
  return margins, active, t


def _mc_hinge(o, y):
  margins, active, _ = _mc_hinge_active(o, y)
  return jnp.sum(jnp.where(active, margins, jnp.zeros_like(margins)), axis=-1)


def _mc_hinge_deriv(o, y):
  _, active, t = _mc_hinge_active(o, y)
  a = active.astype(o.dtype)
  return a - t * jnp.sum(a, axis=-1, keepdims=True)


LOSSES: dict[str, Loss] = {
    loss.name: loss for loss in (
        Loss("mse", _mse, _mse_deriv, "real"),
        Loss("sum_squares", _sum_squares, _sum_squares_deriv, "real"),
        Loss("absolute", _absolute, _absolute_deriv, "real"),
        Loss("huber", _huber, _huber_deriv, "real"),
        Loss("binary_cross_entropy", _bce, _bce_deriv, "binary"),
        Loss("softmax_cross_entropy", _softmax_ce, _softmax_ce_deriv,
             "class_or_onehot"),
        Loss("hinge", _hinge, _hinge_deriv, "sign"),
        Loss("multiclass_hinge", _mc_hinge, _mc_hinge_deriv, "class"),
    )
}


def names() -> tuple[str, ...]:
  """The names of the available losses."""
  return tuple(LOSSES)


def get(name: str) -> Loss:
  """Looks a loss up by name; unknown names raise ``ValueError``."""
  _checks.check_choice("loss", name, LOSSES)
  return LOSSES[name]


def check_labels(loss: Loss, y_hat: Array, y: Any,
                 name: str = "y") -> Array:
  """Checks labels against a loss and the model output; returns them ready.

  Runs at trace time on shapes and dtypes only (label *values*, such as a 2
  among 0/1 labels, cannot be checked inside ``jit``: :func:`check_values`
  checks them on the host).  ``name`` names the labels in messages.

  Raises:
    ValueError: if ``y`` has the wrong shape or rank for ``loss``.
    TypeError: if ``y`` has the wrong dtype for ``loss``.
  """
  y = jnp.asarray(y)
  shape = check_label_shape(loss, y_hat.shape, y.shape, y.dtype, name)
  if jnp.issubdtype(y.dtype, jnp.integer) and loss.labels in (
      "class", "class_or_onehot"):
    return y
  return y.reshape(shape).astype(y_hat.dtype)


def check_label_shape(loss: Loss, out_shape: tuple[int, ...],
                      y_shape: tuple[int, ...], y_dtype: Any,
                      name: str = "y") -> tuple[int, ...]:
  """:func:`check_labels` on shapes and dtypes alone (no arrays, no tracing).

  Args:
    loss: the loss.
    out_shape: the model output's shape, ``(n, k)``.
    y_shape, y_dtype: the labels' shape and dtype.
    name: the labels' name in messages.

  Returns:
    The shape the labels take in the loss (``(n,)`` labels of a
    single-output model become ``(n, 1)``).
  """
  y_shape, y_dtype = tuple(y_shape), jnp.dtype(y_dtype)
  if len(out_shape) != 2:
    raise ValueError(f"y_hat: expected model outputs of shape (n, k); got "
                     f"shape {tuple(out_shape)}.")
  n, k = out_shape
  where = f"for loss {loss.name!r} and model output of shape {(n, k)}"
  if loss.labels in ("class", "class_or_onehot"):
    if jnp.issubdtype(y_dtype, jnp.integer):
      if y_shape != (n,):
        raise ValueError(f"{name}: expected integer class labels of shape "
                         f"{(n,)} {where}; got shape {y_shape}.")
      return y_shape
    if loss.labels == "class":
      raise TypeError(f"{name}: expected integer class labels of shape "
                      f"{(n,)} {where}; got dtype {y_dtype}.")
    if not jnp.issubdtype(y_dtype, jnp.floating):
      raise TypeError(f"{name}: expected integer class labels of shape {(n,)} "
                      f"or one-hot float labels of shape {(n, k)} {where}; "
                      f"got dtype {y_dtype}.")
    if y_shape != (n, k):
      raise ValueError(f"{name}: expected integer class labels of shape "
                       f"{(n,)} or one-hot float labels of shape {(n, k)} "
                       f"{where}; got shape {y_shape}.")
    return y_shape
  # Real-valued, 0/1 or -1/+1 targets, one per output unit.
  allowed = ("floating" if loss.labels == "real"
             else "floating, integer or boolean")
  if not (jnp.issubdtype(y_dtype, jnp.floating) or (
      loss.labels != "real" and (jnp.issubdtype(y_dtype, jnp.integer) or
                                 y_dtype == jnp.bool_))):
    raise TypeError(f"{name}: expected {allowed} labels {where}; got dtype "
                    f"{y_dtype}.")
  if y_shape == (n,) and k == 1:
    y_shape = (n, 1)
  if y_shape != (n, k):
    alt = f" (or {(n,)} since k = 1)" if k == 1 else ""
    raise ValueError(f"{name}: expected labels of shape {(n, k)}{alt} "
                     f"{where}; got shape {y_shape}.")
  return y_shape


def check_outputs(loss: Loss, k: int) -> None:
  """Checks that a model with ``k`` output units suits ``loss``.

  The class losses need one output per class, so at least two: on one
  output, the softmax of a single logit is 1 and both losses are 0 whatever
  the parameters.

  Raises:
    ValueError: for a class loss on a single-output model.
  """
  if loss.labels in ("class", "class_or_onehot") and k < 2:
    other = ("binary_cross_entropy' with 0/1 labels" if loss.name ==
             "softmax_cross_entropy" else "hinge' with -1/+1 labels")
    raise ValueError(
        f"y_hat: expected at least 2 model outputs (one per class) for loss "
        f"{loss.name!r}; got {k}, on which the loss is 0 whatever the "
        f"parameters. Give the model one output per class, or use loss "
        f"'{other}.")


def check_values(loss: Loss, y: Any, k: int, name: str = "y") -> None:
  """Checks label values against a loss, on the host with NumPy.

  What :func:`check_labels` cannot see inside ``jit``: integer class labels
  in ``[0, k)`` for the class losses (``k`` outputs); labels in ``[0, 1]``
  for ``binary_cross_entropy`` (0/1, or probabilities as soft targets);
  labels in ``{-1, +1}`` for ``hinge``, whose message names the map
  ``y = 2*y - 1`` when it is given 0/1 labels.  Real-valued targets and
  one-hot rows are not checked here.  A traced ``y`` is let through.

  Raises:
    ValueError: naming ``name``, the expected values and the first entry
      that is not one of them.
  """
  a = validation.host(y)
  if a is None:
    return
  where = f"for loss {loss.name!r}"
  if loss.labels in ("class", "class_or_onehot"):
    if np.issubdtype(a.dtype, np.integer):
      validation.check_values_in(
          name, a, None, interval=(0, k - 1),
          expected=f"class indices in [0, {k}) {where} on a model with {k} "
          f"outputs")
  elif loss.labels == "binary":
    validation.check_values_in(
        name, a, None, interval=(0, 1),
        expected=f"labels in {{0, 1}} (or probabilities in [0, 1]) {where}")
  elif loss.labels == "sign":
    zeros = int(np.count_nonzero(a == 0))
    if zeros and np.isin(a, (0, 1)).all():
      raise ValueError(
          f"{name}: expected labels in {{-1, +1}} {where}; got 0/1 labels "
          f"({zeros} zeros, on which the hinge loss is constant). Map them "
          f"with y = 2*y - 1 (gdlab.data.to_pm1), or load the data set with "
          f"labels='pm1'.")
    validation.check_values_in(name, a, (-1, 1),
                               expected=f"labels in {{-1, +1}} {where}")


def check_reduction(reduction: str) -> str:
  return _checks.check_choice("reduction", reduction, REDUCTIONS)


def reduce(per_example: Array, reduction: str,
           weights: Array | None = None) -> Array:
  """Reduces per-record values over the batch: ``"mean"`` or ``"sum"``."""
  check_reduction(reduction)
  if weights is None:
    return jnp.mean(per_example) if reduction == "mean" else jnp.sum(
        per_example)
  total = jnp.sum(weights * per_example)
  if reduction == "sum":
    return total
  return total / jnp.maximum(jnp.sum(weights), jnp.finfo(total.dtype).tiny)


def reduction_scale(n: int, reduction: str, dtype,
                    weights: Array | None = None) -> Array:
  """Per-record factor ``dC/dl_i`` of a reduction (shape ``(n,)``)."""
  check_reduction(reduction)
  if weights is None:
    w = jnp.ones((n,), dtype)
    return w / n if reduction == "mean" else w
  w = weights.astype(dtype)
  if reduction == "sum":
    return w
  return w / jnp.maximum(jnp.sum(w), jnp.finfo(dtype).tiny)


def loss(y_hat: Array, y: Array, name: str = "mse", reduction: str = "mean",
         weights: Array | None = None) -> Array:
  """The reduced loss ``C`` of a batch of predictions.

  Args:
    y_hat: model outputs, shape ``(n, k)``.
    y: labels; see the module docstring for each loss's labels.
    name: one of :func:`names`.
    reduction: ``"mean"`` or ``"sum"`` over the records.
    weights: optional per-record weights of shape ``(n,)``.

  Returns:
    A scalar.
  """
  fn = get(name)
  check_reduction(reduction)
  y = check_labels(fn, y_hat, y)
  return reduce(fn.per_example(y_hat, y), reduction, weights)


def accuracy(y_hat: Array, y: Array, name: str) -> Array:
  """The fraction of records classified correctly; NaN for regression losses.

  The prediction is ``o > 0`` for ``binary_cross_entropy`` (labels 0/1),
  ``sign(o)`` for ``hinge`` (labels -1/+1), and ``argmax(o)`` for the
  multiclass losses (against the class index or the one-hot row's argmax).
  Multi-output binary tasks count each output unit separately.
  """
  fn = get(name)
  y = check_labels(fn, y_hat, y)
  if fn.labels == "real":
    return jnp.full((), jnp.nan, y_hat.dtype)
  if fn.labels == "binary":
    correct = (y_hat > 0) == (y > 0.5)
  elif fn.labels == "sign":
    correct = (y_hat > 0) == (y > 0)
  else:
    target = y if jnp.issubdtype(y.dtype, jnp.integer) else jnp.argmax(y, -1)
    correct = jnp.argmax(y_hat, axis=-1) == target
  return jnp.mean(correct.astype(y_hat.dtype))


# ----------------------------------------------------------------------------
# Penalties.

PENALTIES = ("l2", "l1")


@dataclasses.dataclass(frozen=True)
class Penalty:
  """A weight penalty added once to the reduced loss.

  Attributes:
    kind: ``"l2"`` for ``(strength/2) ||w||^2`` or ``"l1"`` for
      ``strength ||w||_1``.
    strength: ``lambda >= 0``; may be a JAX array (swept under ``vmap``).
    include_bias: penalise bias leaves too.
  """
  kind: str = "l2"
  strength: Any = 0.0
  include_bias: bool = False

  def __post_init__(self):
    _checks.check_choice("penalty.kind", self.kind, PENALTIES)
    _checks.check_number("penalty.strength", self.strength, low=0,
                         low_inclusive=True)


def is_bias_path(path) -> bool:
  """True when a parameter's tree path names a bias (``"b"`` or ``"bias"``)."""
  for entry in path:
    key = getattr(entry, "key", getattr(entry, "name", None))
    if key in ("b", "bias"):
      return True
  return False


def _penalised_leaves(params, penalty: Penalty):
  """Per leaf: the leaf, or ``None`` where the penalty does not apply."""
  return jax.tree_util.tree_map_with_path(
      lambda path, p: p if (penalty.include_bias or not is_bias_path(path))
      else None, params)


def penalty_value(params, penalty: Penalty | None) -> Array:
  """The penalty ``R(params)``; 0 when ``penalty`` is ``None``."""
  if penalty is None:
    return jnp.zeros(())
  leaves = jax.tree_util.tree_leaves(_penalised_leaves(params, penalty))
  if penalty.kind == "l2":
    total = sum(jnp.sum(p * p) for p in leaves)
    return 0.5 * penalty.strength * total
  total = sum(jnp.sum(jnp.abs(p)) for p in leaves)
  return penalty.strength * total


def penalty_grad(params, penalty: Penalty | None):
  """The (sub)gradient of :func:`penalty_value`, written by hand."""
  def leaf_grad(path, p):
    if penalty is None or not (penalty.include_bias or
                               not is_bias_path(path)):
      return jnp.zeros_like(p)
    if penalty.kind == "l2":
      return penalty.strength * p
    return penalty.strength * abs_deriv(p)
  return jax.tree_util.tree_map_with_path(leaf_grad, params)
