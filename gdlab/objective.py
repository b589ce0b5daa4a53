"""The training objective and the two gradient engines.

An :class:`Objective` ties a model to a loss, a reduction over the records
and an optional penalty:

    C(params; x, y) = reduce_i l(apply(params, x)_i, y_i) + R(params).

Its gradient comes from one of two interchangeable engines:

* ``"autodiff"``: ``jax.value_and_grad`` of :meth:`Objective.value`; any
  model, flax ones included;
* ``"manual"``: the hand-written backpropagation of ``gdlab.backprop``;
  gdlab's MLP only.

Both return ``(C, grads)`` with ``grads`` shaped like ``params``, and agree to
rounding error (the tests check 1e-10 in float64).

Data meet the objective in :func:`check_data`, on the host and before
anything compiles: the model's output width comes from ``jax.eval_shape`` of
its ``apply`` (traced on shapes, not compiled) and the labels are checked
against the loss, shapes and values.  :func:`data_dtype` is the float dtype
the data are cast to: the parameters'.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdlab import _checks
from gdlab import backprop
from gdlab import losses as losses_lib

Array = jax.Array
ENGINES = ("autodiff", "manual")


@dataclasses.dataclass(frozen=True)
class Objective:
  """A model with its loss: what a gradient engine differentiates.

  Attributes:
    model: any gdlab model (``init``/``apply``).
    loss: a loss name (``gdlab.losses.names()``).
    reduction: ``"mean"`` or ``"sum"`` over the records of a batch.
    penalty: an optional ``gdlab.losses.Penalty``.
  """
  model: Any
  loss: str = "mse"
  reduction: str = "mean"
  penalty: losses_lib.Penalty | None = None

  def __post_init__(self):
    losses_lib.get(self.loss)
    losses_lib.check_reduction(self.reduction)
    if self.penalty is not None and not isinstance(self.penalty,
                                                   losses_lib.Penalty):
      raise TypeError("penalty: expected None or a gdlab.losses.Penalty; got "
                      f"{type(self.penalty).__name__}.")

  def value(self, params, x: Array, y: Array,
            weights: Array | None = None) -> Array:
    """The objective ``C`` on a batch."""
    return self.value_and_output(params, x, y, weights)[0]

  def value_and_output(self, params, x: Array, y: Array,
                       weights: Array | None = None) -> tuple[Array, Array]:
    """``(C, y_hat)``: the objective and the model's output on a batch."""
    y_hat = self.model.apply(params, x)
    value = losses_lib.loss(y_hat, y, self.loss, self.reduction, weights)
    if self.penalty is not None:
      value = value + losses_lib.penalty_value(params, self.penalty)
    return value, y_hat

  def value_and_grad(self, params, x: Array, y: Array,
                     weights: Array | None = None, engine: str = "autodiff"):
    """``(C, dC/dparams)`` from the named gradient engine."""
    return value_and_grad_fn(self, engine)(params, x, y, weights)


  def metrics(self, params, x: Array, y: Array) -> tuple[Array, Array]:
    """``(C, accuracy)`` on a data set (accuracy NaN for regression)."""
    value, y_hat = self.value_and_output(params, x, y)
    return value, self.accuracy(y_hat, y)

  def accuracy(self, y_hat: Array, y: Array) -> Array:
    """The fraction of records classified correctly (NaN for regression)."""
    return losses_lib.accuracy(y_hat, y, self.loss)


@dataclasses.dataclass(frozen=True)
class _Start:
  """A 'model' whose parameters are a point: ``init`` returns the start."""
  start: tuple[float, ...]

  def init(self, key: Array) -> Array:
    del key
    return jnp.asarray(self.start, dtype=jnp.zeros(()).dtype)


@dataclasses.dataclass(frozen=True)
class FunctionObjective:
  """A function of the parameters alone, such as a 2-D test function.

  The data arguments are ignored, so the same training loop and optimizers
  minimise ``fn(params)``; ``model.init`` returns ``start``.  Only the
  ``"autodiff"`` engine applies.
  """
  fn: Callable[[Array], Array]
  start: tuple[float, ...]
  loss: str = "function"

  @property
  def model(self):
    return _Start(tuple(float(v) for v in self.start))

  def value(self, params, x=None, y=None, weights=None) -> Array:
    del x, y, weights
    return self.fn(params)

  def value_and_output(self, params, x=None, y=None, weights=None):
    return self.value(params), None

  def metrics(self, params, x=None, y=None):
    value = self.value(params)
    return value, jnp.full((), jnp.nan, value.dtype)

  def accuracy(self, y_hat=None, y=None) -> Array:
    """NaN: a function has no records to classify."""
    del y_hat, y
    return jnp.full((), jnp.nan)


# ----------------------------------------------------------------------------
# Data against the objective, on the host.


_SHAPES: collections.OrderedDict = collections.OrderedDict()
_MAX_SHAPES = 64


def _spec(a: Any) -> jax.ShapeDtypeStruct:
  if isinstance(a, jax.ShapeDtypeStruct):
    return a
  dtype = a.dtype if hasattr(a, "dtype") else np.result_type(a)
  return jax.ShapeDtypeStruct(np.shape(a), jax.dtypes.canonicalize_dtype(
      dtype, allow_extended_dtype=True))


def abstract_call(model, method: str, *args) -> Any:
  """``jax.eval_shape(getattr(model, method), *args)``, kept by structure.

  The shapes and dtypes of the result, traced once per model and argument
  shapes (a second ``fit`` of the same structure traces nothing); nothing is
  compiled.  ``args`` may hold arrays or ``jax.ShapeDtypeStruct`` leaves.
  """
  leaves, treedef = jax.tree_util.tree_flatten(args)
  specs = tuple(_spec(a) for a in leaves)
  key = (model, method, treedef, specs)
  try:
    hash(key)
  except TypeError:  # an unhashable model: traced every time
    key = None
  if key is not None and key in _SHAPES:
    _SHAPES.move_to_end(key)
    return _SHAPES[key]
  out = jax.eval_shape(getattr(model, method),
                       *jax.tree_util.tree_unflatten(treedef, specs))
  if key is not None:
    _SHAPES[key] = out
    while len(_SHAPES) > _MAX_SHAPES:
      _SHAPES.popitem(last=False)
  return out


def uses_data(objective) -> bool:
  """False for a function objective, which ignores its data arguments."""
  return not isinstance(objective, FunctionObjective)


def data_dtype(params) -> np.dtype | None:
  """The float dtype data are cast to: the parameters' (promoted) float dtype.

  ``params`` are arrays or their ``jax.ShapeDtypeStruct`` shapes; ``None``
  when no leaf is a float.
  """
  floats = [leaf.dtype for leaf in jax.tree_util.tree_leaves(params)
            if jnp.issubdtype(leaf.dtype, jnp.floating)]
  return np.dtype(jnp.result_type(*floats)) if floats else None


def check_data(objective, params, x: Any, y: Any, *,
               part: str = "train") -> None:
  """Checks records and labels against the objective, before compiling.

  On the host: the model's output shape ``(n, k)`` on ``x`` comes from
  ``jax.eval_shape`` of ``apply`` (:func:`abstract_call`); then ``k`` must
  suit the loss (``gdlab.losses.check_outputs``: two or more outputs for the
  class losses), the labels' shape and dtype must suit the loss and the
  output (``gdlab.losses.check_label_shape``) and so must their values
  (``gdlab.losses.check_values``: class indices in ``[0, k)``, 0/1 labels
  for binary cross-entropy, -1/+1 labels for the hinge).  Only an
  :class:`Objective` is checked: a function objective takes no data.

  Args:
    objective: the objective.
    params: the parameters, or their shapes (``jax.ShapeDtypeStruct``
      leaves, as ``jax.eval_shape(model.init, key)`` gives them).
    x, y: the inputs and labels of one part of the data.
    part: ``"train"`` or ``"test"``: the arrays are named ``x_train``,
      ``y_train``, ... in messages.

  Raises:
    ValueError: naming the array and what the loss expects.
    TypeError: for labels of the wrong dtype for the loss.
  """
  if not isinstance(objective, Objective):
    return
  loss = losses_lib.get(objective.loss)
  out = abstract_call(objective.model, "apply", params, x)
  shape = getattr(out, "shape", None)
  if shape is None or len(shape) != 2:
    raise ValueError(f"y_hat: expected model outputs of shape (n, k); got "
                     f"{shape if shape is not None else type(out).__name__} "
                     f"for x_{part} of shape {_spec(x).shape}.")
  losses_lib.check_outputs(loss, shape[1])
  y_spec = _spec(y)
  losses_lib.check_label_shape(loss, shape, y_spec.shape, y_spec.dtype,
                               name=f"y_{part}")
  losses_lib.check_values(loss, y, shape[1], name=f"y_{part}")


class Engine(NamedTuple):
  """A gradient engine's functions for one objective (see :func:`engine`).

  Attributes:
    value_and_grad: ``(params, x, y, weights=None) -> (C, grads)``.
    value_grad_and_output: ``(params, x, y) -> (C, grads, y_hat)``.
    value_on: ``(x, y, weights=None) -> (params -> C)``, the objective on a
      batch, differentiated by the engine (what a line search evaluates).
  """
  value_and_grad: Callable[..., Any]
  value_grad_and_output: Callable[..., Any]
  value_on: Callable[..., Callable[[Any], Array]]


def engine(objective: Objective, name: str = "autodiff") -> Engine:
  """The functions of the gradient engine ``name`` for ``objective``.

  The one place a training step or loop chooses its engine: ``"autodiff"``
  (``jax.grad``) or ``"manual"`` (``gdlab.backprop``).
  """
  return Engine(value_and_grad_fn(objective, name),
                value_grad_and_output_fn(objective, name),
                functools.partial(value_fn, objective, name))


def value_and_grad_fn(objective: Objective,
                      engine: str = "autodiff") -> Callable[..., Any]:
  """The engine's ``(params, x, y, weights=None) -> (C, grads)`` function."""
  _checks.check_choice("engine", engine, ENGINES)
  if engine == "autodiff" or isinstance(objective, FunctionObjective):
    if engine == "manual":
      raise ValueError("engine: a function objective has no network to "
                       "backpropagate through; expected 'autodiff', got "
                       "'manual'.")
    return jax.value_and_grad(objective.value)

  def manual(params, x, y, weights=None):
    return backprop.value_and_grad(objective.model, params, x, y,
                                   objective.loss, objective.reduction,
                                   objective.penalty, weights)
  # Fail at construction, not at the first step, for models it cannot handle.
  backprop._check_model(objective.model)  # pylint: disable=protected-access
  return manual


def value_grad_and_output_fn(objective: Objective,
                             engine: str = "autodiff") -> Callable[..., Any]:
  """The engine's ``(params, x, y) -> (C, grads, y_hat)`` on unweighted data.

  One forward and one backward pass give the objective, its gradient and the
  model's output (for the accuracy); ``y_hat`` is ``None`` for a function
  objective.
  """
  value_and_grad_fn(objective, engine)  # Checks the engine and the model.
  if engine == "autodiff":
    def autodiff(params, x, y):
      (value, y_hat), grads = jax.value_and_grad(
          objective.value_and_output, has_aux=True)(params, x, y)
      return value, grads, y_hat
    return autodiff

  def manual(params, x, y):
    value, residuals = backprop.value_and_residuals(
        objective.model, params, x, y, objective.loss, objective.reduction,
        objective.penalty)
    grads = backprop.grad_from_residuals(objective.model, params, residuals,
                                         objective.penalty)
    return value, grads, residuals.cache.z[-1]
  return manual


def value_fn(objective: Objective, engine: str = "autodiff",
             x: Array | None = None, y: Array | None = None,
             weights: Array | None = None) -> Callable[[Any], Array]:
  """``params -> C(params; x, y)`` whose derivative comes from ``engine``.

  What a line search evaluates and differentiates along its line: with
  ``"autodiff"`` the objective itself; with ``"manual"`` a ``jax.custom_vjp``
  whose backward pass is the hand-written backpropagation, so that a search
  that differentiates its trials (Wolfe, or backtracking with
  ``store_grad``) uses the same engine as the step.  Called without
  differentiation, it runs the forward pass alone; under ``jax.vjp`` the
  hand-written forward pass runs at once and its backward pass only when
  the pullback is called.
  """
  value_and_grad_fn(objective, engine)  # Checks the engine and the model.

  def value(params):
    return objective.value(params, x, y, weights)

  if engine == "autodiff":
    return value

  manual = jax.custom_vjp(value)
  args = (objective.loss, objective.reduction, objective.penalty, weights)

  def forward(params):
    value, residuals = backprop.value_and_residuals(objective.model, params,
                                                    x, y, *args)
    return value, (params, residuals)

  def backward(saved, cotangent):
    params, residuals = saved
    grads = backprop.grad_from_residuals(objective.model, params, residuals,
                                         objective.penalty)
    return (jax.tree.map(lambda g: (cotangent * g).astype(g.dtype), grads),)

  manual.defvjp(forward, backward)
  return manual
