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
``jax.grad``, 1e-5 against finite differences) are for float64, and
:func:`precision` picks float64 where the backend has it and float32, with
the tolerances of :data:`FLOAT32`, on a TPU.

Compiled programs.  A check is one jitted program (the three gradients, the
``2 P`` finite-difference evaluations as one ``vmap``, the errors) that
returns one error per leaf; the host converts only those.  A program is
specialised to a *structure* and reused by every check of that structure:

* :func:`check_gradients`: the MLP's sizes and bias arrangement, the loss,
  the reduction, the penalty, the step ``h`` and the shapes and dtypes of
  the inputs;
* :func:`grid`: the same less the loss.

The activations are not part of either: the hidden and output activations
are traced indices into ``gdlab.activations.names()`` (the model is an MLP
whose ``layer_activation`` picks by index), and in :func:`grid` the loss is
a traced index into ``gdlab.losses.names()`` too.  An index picks among the
candidates' results with ``jnp.select``: every candidate is evaluated, each
with its own hand-written functions, and the picked one's result is passed
on unchanged.  So the default table (9 activations x 8 losses x 4 bias
arrangements x 3 depths) compiles one program per bias arrangement and
depth.  Each row's problem is drawn by :func:`random_problem` from
``fold_in(PRNGKey(seed), i)`` outside the program, the same to the last bit
whatever program checks it.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from gdlab import activations
from gdlab import backprop
from gdlab import losses as losses_lib
from gdlab import models
from gdlab.objective import Objective, value_and_grad_fn

Array = jax.Array

AUTODIFF_TOL = 1e-10
FD_TOL = 1e-5
FD_STEP = 1e-6


class Precision(NamedTuple):
  """The float precision of a check, its step ``h`` and its tolerances."""
  dtype: str
  autodiff_tol: float
  fd_tol: float
  fd_step: float
  why: str


FLOAT64 = Precision("float64", AUTODIFF_TOL, FD_TOL, FD_STEP,
                    "the backend computes in float64")
# Measured on the default table (864 rows) in float32 on a CPU: largest
# error 2.2e-3 against jax.grad and 0.10 against central differences with
# h = 1e-3 (their 99th percentiles 2.2e-4 and 5.5e-4).  In float32 the
# comparison with jax.grad is the sharp one; central differences only catch
# gross errors (a wrong sign, a missing term): a smaller h drowns them in
# rounding, a larger one in truncation.
FLOAT32 = Precision("float32", 1e-2, 0.25, 1e-3,
                    "the backend has no float64")


def precision(backend: str | None = None, dtype: str = "auto") -> Precision:
  """The precision of a check on ``backend`` (default: JAX's).

  ``dtype="auto"``: float64 where the backend computes in it (CPU, GPU), and
  float32 on a TPU, which has no float64; or ``"float64"``/``"float32"``.
  float64 needs ``jax_enable_x64`` on (``gdlab check-grads`` turns it on).
  """
  if dtype not in ("auto", "float64", "float32"):
    raise ValueError(f"dtype: expected 'auto', 'float64' or 'float32'; got "
                     f"{dtype!r}.")
  backend = backend or jax.default_backend()
  if dtype == "float64" or (dtype == "auto" and backend != "tpu"):
    return FLOAT64
  if dtype == "float32" and backend != "tpu":
    return FLOAT32._replace(why="asked for")
  return FLOAT32

# XLA options for the check programs on CPU.  Each program is small and runs
# a few hundred times at most, so its compile time is its cost; these trade
# the speed of the compiled kernels for the speed of compiling them.  Results
# agree with the default options to rounding error.
CPU_COMPILER_OPTIONS = {"xla_cpu_use_fusion_emitters": False,
                        "xla_backend_optimization_level": 0}


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


def _central_differences(f, theta: Array, step) -> Array:
  """``(f(theta + h e_j) - f(theta - h e_j)) / (2 h)`` for every ``j``.

  The ``2 P`` evaluations run as one ``vmap`` over the rows of
  ``[h I; -h I]``.
  """
  basis = step * jnp.eye(theta.size, dtype=theta.dtype)
  values = jax.vmap(f)(theta + jnp.concatenate([basis, -basis]))
  plus, minus = jnp.split(values, 2)
  return (plus - minus) / (2 * step)


def finite_difference_grad(fn, params, step: float = FD_STEP):
  """Central finite differences of a scalar ``fn(params)``, shaped like params."""
  theta, unravel = ravel_pytree(params)
  return unravel(_central_differences(lambda t: fn(unravel(t)), theta, step))


def _leaf_maxima(tree, rows: Sequence[Array]) -> Array:
  """``max_j rows[r][j]`` over the entries ``j`` of each leaf of ``tree``.

  ``rows`` are non-negative vectors laid out as ``ravel_pytree(tree)``.
  Returns shape ``(len(rows), num_leaves)``, from one gather and one
  reduction whatever the number of leaves.
  """
  sizes = [int(np.size(leaf)) for leaf in jax.tree_util.tree_leaves(tree)]
  starts = np.cumsum([0] + sizes[:-1])
  index = np.full((len(sizes), max(sizes)), sum(sizes))  # -> a padding 0.
  for l, (start, size) in enumerate(zip(starts, sizes)):
    index[l, :size] = np.arange(start, start + size)
  stacked = jnp.pad(jnp.stack(rows), ((0, 0), (0, 1)))
  return jnp.max(stacked[:, index], axis=-1)


def _ratio(num: Array, den: Array) -> Array:
  """``num / den``, or ``num`` where ``den`` is zero."""
  return jnp.where(den > 0, num / jnp.where(den > 0, den, 1), num)


def relative_errors(a, b, floor: float, noise: float = 0.0) -> list[float]:
  """Leafwise ``max(|a - b| - noise, 0) / max(max|a|, max|b|, floor)``.

  Args:
    a, b: trees of the same structure.
    floor: the smallest denominator.
    noise: subtracted from each leaf's largest difference.

  Returns:
    One error per leaf, in ``jax.tree_util.tree_leaves`` order; a zero
    denominator leaves the numerator as it is.
  """
  va, vb = ravel_pytree(a)[0], ravel_pytree(b)[0]
  diff, abs_a, abs_b = _leaf_maxima(a, [jnp.abs(va - vb), jnp.abs(va),
                                        jnp.abs(vb)])
  errors = _ratio(jnp.maximum(diff - noise, 0),
                  jnp.maximum(jnp.maximum(abs_a, abs_b), floor))
  return [float(e) for e in np.asarray(errors)]


def _errors(value_fn, manual_fn, params, fd_step
            ) -> tuple[Array, Array, Array]:
  """``(C, e_auto, e_fd)`` of ``value_fn(p) = C``, ``manual_fn(p) = (C, g)``."""
  return _error_parts(value_fn, manual_fn, params, fd_step)[:3]


def _error_parts(value_fn, manual_fn, params, fd_step
                 ) -> tuple[Array, Array, Array, Array, Array]:
  """:func:`_errors`, and per leaf the raw finite-difference error and noise.

  Returns ``(C, e_auto, e_fd, raw_fd, noise_fd)``: ``raw_fd`` is
  ``max_j |m_j - fd_j| / den`` and ``noise_fd`` is ``noise / den``, with the
  leaf's denominator ``den``; so ``e_fd = max(raw_fd - noise_fd, 0)`` where
  ``den > 0``.
  """
  value, manual = manual_fn(params)
  auto = jax.grad(value_fn)(params)
  theta, unravel = ravel_pytree(params)
  fd = _central_differences(lambda t: value_fn(unravel(t)), theta, fd_step)
  m, g = ravel_pytree(manual)[0], ravel_pytree(auto)[0]
  d_auto, d_fd, abs_m, abs_g, abs_f = _leaf_maxima(params, [
      jnp.abs(m - g), jnp.abs(m - fd), jnp.abs(m), jnp.abs(g), jnp.abs(fd)])
  floor = 1e-4 * jnp.max(abs_g)
  noise = 10 * jnp.finfo(value.dtype).eps * jnp.abs(value) / fd_step
  e_auto = _ratio(d_auto, jnp.maximum(jnp.maximum(abs_m, abs_g), floor))
  den_fd = jnp.maximum(jnp.maximum(abs_m, abs_f), floor)
  e_fd = _ratio(jnp.maximum(d_fd - noise, 0), den_fd)
  return (value, e_auto, e_fd, _ratio(d_fd, den_fd),
          _ratio(jnp.broadcast_to(noise, den_fd.shape), den_fd))


def gradient_errors(objective: Objective, params, x: Array, y: Array,
                    weights: Array | None = None, fd_step: float = FD_STEP
                    ) -> tuple[Array, Array, Array]:
  """The arrays behind :func:`check_gradients`; traceable.

  Returns:
    ``(C, e_auto, e_fd)``: the objective and, per parameter leaf (in
    ``jax.tree_util.tree_leaves`` order), the relative error of the
    hand-written gradient against ``jax.grad`` and against central finite
    differences, with the floor and noise of the module docstring.
  """
  manual = value_and_grad_fn(objective, "manual")
  return _errors(lambda p: objective.value(p, x, y, weights),
                 lambda p: manual(p, x, y, weights), params, fd_step)


def _pick(index: Array, options: Sequence[Array]) -> Array:
  """``options[index]`` for a traced ``index``, by ``jnp.select``."""
  return jnp.select([index == k for k in range(len(options))], options)


# Jitted so that each is traced once per shape: the engines call them in
# every layer of every pass, and the nine candidates of each add up.
@jax.jit
def _switch_fn(index: Array, a: Array) -> Array:
  return _pick(index, [activations.get(name).fn(a)
                       for name in activations.names()])


@jax.jit
def _switch_deriv(index: Array, a: Array, z: Array) -> Array:
  return _pick(index, [activations.get(name).deriv(a, z)
                       for name in activations.names()])


def _switched_activation(index: Array) -> activations.Activation:
  """The activation ``activations.names()[index]``, for a traced ``index``."""
  return activations.Activation("switched",
                                functools.partial(_switch_fn, index),
                                functools.partial(_switch_deriv, index))


@dataclasses.dataclass(frozen=True)
class _SwitchedMLP(models.MLP):
  """An MLP whose activations are traced indices into ``activations.names()``.

  Built inside a traced function (see :func:`_switched`); its
  ``activation`` and ``output_activation`` names are unused.  Being an MLP,
  the hand-written engine takes it as it is.
  """
  hidden_index: Any = 0
  output_index: Any = 0

  def layer_activation(self, l: int) -> activations.Activation:
    """The activation of weight layer ``l``, picked by the traced indices."""
    last = l == self.num_layers - 1
    return _switched_activation(self.output_index if last else
                                self.hidden_index)


def _skeleton(model: models.MLP) -> models.MLP:
  """``model`` with identity activations: the part a program depends on."""
  return dataclasses.replace(model, activation="identity",
                             output_activation="identity")


def _activation_indices(model: models.MLP) -> np.ndarray:
  """``[hidden, output]``: where the model's activations are in ``names()``."""
  names = activations.names()
  return np.array([names.index(model.activation),
                   names.index(model.output_activation)], np.int32)


def _switched(model: models.MLP, indices: Array) -> _SwitchedMLP:
  """``model`` with the activations ``indices = [hidden, output]``."""
  fields = {f.name: getattr(model, f.name)
            for f in dataclasses.fields(models.MLP)}
  return _SwitchedMLP(**fields, hidden_index=indices[0],
                      output_index=indices[1])


def _static_penalty(penalty: losses_lib.Penalty | None):
  """The penalty with a Python-float strength, so that it keys a program."""
  if penalty is None:
    return None
  return dataclasses.replace(penalty, strength=float(penalty.strength))


def _objective_errors(model: models.MLP, loss: str, reduction: str, penalty,
                      fd_step: float, indices: Array, params, x: Array,
                      y: Array, weights: Array | None):
  """:func:`gradient_errors` of one objective; ``model`` a skeleton."""
  objective = Objective(_switched(model, indices), loss, reduction, penalty)
  return gradient_errors(objective, params, x, y, weights, fd_step)


@functools.cache
def _program(fn: Callable, num_static: int) -> Callable:
  """``fn`` jitted, its first ``num_static`` arguments static (the structure).

  Built on first use, when the backend is known: on CPU with
  :data:`CPU_COMPILER_OPTIONS`.
  """
  options = CPU_COMPILER_OPTIONS if jax.default_backend() == "cpu" else None
  return jax.jit(fn, static_argnums=tuple(range(num_static)),
                 compiler_options=options)


def check_gradients(objective: Objective, params, x: Array, y: Array,
                    weights: Array | None = None, *,
                    autodiff_tol: float = AUTODIFF_TOL,
                    fd_tol: float = FD_TOL,
                    fd_step: float = FD_STEP) -> GradCheck:
  """Compares the hand-written gradient with ``jax.grad`` and finite differences.

  Runs one compiled program, shared by every objective of the same
  structure (see the module docstring).

  Args:
    objective: an objective whose model is a gdlab MLP.
    params: the point at which to differentiate.
    x, y, weights: the batch.
    autodiff_tol: the largest relative error against ``jax.grad`` that passes.
    fd_tol: the largest relative error against finite differences that passes.
    fd_step: the finite-difference step ``h``.

  Returns:
    A :class:`GradCheck`.

  Raises:
    TypeError: if the objective's model is not a gdlab MLP.
  """
  value_and_grad_fn(objective, "manual")  # Checks the model is a gdlab MLP.
  model = objective.model
  value, e_auto, e_fd = jax.device_get(_program(_objective_errors, 5)(
      _skeleton(model), objective.loss, objective.reduction,
      _static_penalty(objective.penalty), float(fd_step),
      _activation_indices(model), params, jnp.asarray(x), jnp.asarray(y),
      weights))
  paths = [jax.tree_util.keystr(p) for p, _ in
           jax.tree_util.tree_leaves_with_path(params)]
  leaves = [LeafError(p, float(a), float(f))
            for p, a, f in zip(paths, e_auto, e_fd)]
  max_auto, max_fd = float(np.max(e_auto)), float(np.max(e_fd))
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
  """One row of :func:`grid`.

  ``vs_autodiff`` and ``vs_finite_diff`` are the largest relative errors
  over the parameter leaves, the second after subtracting the noise of a
  central difference (the module docstring); ``passed`` compares them with
  the tolerances.  ``fd_raw`` is the largest relative error against finite
  differences before that subtraction, and ``fd_noise`` the noise relative
  to the same leaf's gradient (NaN where unknown).
  """
  activation: str
  loss: str
  bias: str
  depth: int
  reduction: str
  vs_autodiff: float
  vs_finite_diff: float
  passed: bool
  fd_raw: float = math.nan
  fd_noise: float = math.nan


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


def _class_labels(loss: str) -> bool:
  """Whether :func:`random_labels` gives ``loss`` integer class labels."""
  return losses_lib.get(loss).labels in ("class", "class_or_onehot")


def _grid_value(model, reduction, penalty, loss_index, params, x, y_float,
                y_int) -> Array:
  """The objective ``C`` with the loss ``losses.names()[loss_index]``.

  ``Objective(model, loss, reduction, penalty).value``, written out as
  :meth:`Objective.value_and_output` does it but with one model output for
  all the losses: ``jax.grad`` then runs one backward pass through the
  network instead of one per loss.
  """
  y_hat = model.apply(params, x)
  value = _pick(loss_index, [
      losses_lib.loss(y_hat, y_int if _class_labels(name) else y_float, name,
                      reduction) for name in losses_lib.names()])
  if penalty is not None:
    value = value + losses_lib.penalty_value(params, penalty)
  return value


def _grid_manual(model, reduction, penalty, loss_index, params, x, y_float,
                 y_int):
  """The hand-written ``(C, grads)`` of the loss ``losses.names()[loss_index]``.

  ``backprop.value_and_grad`` is ``value_and_residuals`` then
  ``grad_from_residuals``; here each loss's ``value_and_residuals`` runs
  (their forward passes are the same computation, which XLA merges), the
  picked loss's ``C`` and ``dC/dz_L`` are selected, and
  ``grad_from_residuals`` runs once.
  """
  outs = [backprop.value_and_residuals(
      model, params, x, y_int if _class_labels(name) else y_float, name,
      reduction, penalty) for name in losses_lib.names()]
  value = _pick(loss_index, [v for v, _ in outs])
  d_out = _pick(loss_index, [r.d_out for _, r in outs])
  residuals = backprop.Residuals(outs[0][1].cache, d_out)
  return value, backprop.grad_from_residuals(model, params, residuals,
                                             penalty)


def _grid_row_errors(model: models.MLP, reduction: str, penalty,
                     fd_step: float, indices: Array, loss_index: Array,
                     params, x: Array, y_float: Array,
                     y_int: Array) -> tuple[Array, Array, Array, Array]:
  """The largest errors of one grid row; ``model`` a skeleton.

  ``y_float`` holds the labels of the losses on float labels and ``y_int``
  those on class indices; the loss's own are real, the others stand-ins.

  Returns:
    ``(e_auto, e_fd, raw_fd, noise_fd)``: the largest of each leaf's
    errors (:func:`_error_parts`), and the relative noise of the leaf with
    the largest ``raw_fd``.
  """
  args = (_switched(model, indices), reduction, penalty, loss_index)
  _, e_auto, e_fd, raw_fd, noise_fd = _error_parts(
      lambda p: _grid_value(*args, p, x, y_float, y_int),
      lambda p: _grid_manual(*args, p, x, y_float, y_int), params, fd_step)
  worst = jnp.argmax(raw_fd)
  return jnp.max(e_auto), jnp.max(e_fd), raw_fd[worst], noise_fd[worst]


def grid_row(activation: str, loss: str, bias: str, depth: int,
             reduction: str, penalty: losses_lib.Penalty | None, key: Array,
             n: int = 8, precision: Precision = FLOAT64) -> Row:
  """One row of :func:`grid`: the check of one random problem.

  The problem is ``random_problem(grid_model(...), loss, key, n)``, in
  JAX's default float dtype; the check runs in the program shared by the
  rows of the same bias arrangement, depth, reduction and penalty, with the
  step and tolerances of ``precision``.
  """
  model = grid_model(activation, loss, bias, depth)
  params, x, y = random_problem(_skeleton(model), loss, key, n)
  if _class_labels(loss):
    y_float, y_int = np.zeros((n, model.sizes[-1]), x.dtype), y
  else:
    y_float, y_int = y, np.zeros((n,), jax.dtypes.canonicalize_dtype(int))
  errors = jax.device_get(_program(_grid_row_errors, 4)(
      _skeleton(model), reduction, _static_penalty(penalty),
      float(precision.fd_step), _activation_indices(model),
      np.int32(losses_lib.names().index(loss)), params, x, y_float, y_int))
  e_auto, e_fd, raw_fd, noise_fd = map(float, errors)
  return Row(activation, loss, bias, depth, reduction, e_auto, e_fd,
             e_auto <= precision.autodiff_tol and e_fd <= precision.fd_tol,
             raw_fd, noise_fd)


def grid(activation_names: Sequence[str] | None = None,
         loss_names: Sequence[str] | None = None,
         biases: Sequence[str] | None = None,
         depths: Sequence[int] = (0, 1, 3),
         reductions: Sequence[str] = ("mean",),
         penalty: losses_lib.Penalty | None = None,
         seed: int = 0,
         n: int = 8,
         on_row: Callable[[int, int, Row], Any] | None = None,
         precision: Precision = FLOAT64) -> list[Row]:
  """Runs the check over a grid of networks and losses.

  Row ``i`` of ``itertools.product(activations, losses, biases, depths,
  reductions)`` checks the problem ``random_problem(grid_model(...), loss,
  fold_in(PRNGKey(seed), i), n)``.

  Args:
    activation_names, loss_names, biases: the names to cover (default: all).
    depths: numbers of hidden layers.
    reductions: ``"mean"`` and/or ``"sum"``.
    penalty: an optional penalty for every row.
    seed: the seed of the problems.
    n: records per problem.
    on_row: called as ``on_row(i, total, row)`` after each row.
    precision: the step and tolerances (:func:`precision`); the problems
      are drawn in JAX's default float dtype, which should match it.

  Returns:
    The :class:`Row` of each grid point, in product order.
  """
  activation_names = activation_names or activations.names()
  loss_names = loss_names or losses_lib.names()
  biases = biases or models.BIAS_ARRANGEMENTS
  cases = list(itertools.product(activation_names, loss_names, biases,
                                 depths, reductions))
  key = jax.random.PRNGKey(seed)
  rows = []
  for i, case in enumerate(cases):
    rows.append(grid_row(*case, penalty, jax.random.fold_in(key, i), n,
                         precision))
    if on_row is not None:
      on_row(i, len(cases), rows[-1])
  return rows


def format_table(rows: Sequence[Row], precision: Precision | None = None
                 ) -> str:
  """A fixed-width text table of :func:`grid` rows, with a legend below.

  ``precision`` gives the tolerances the legend quotes (default: those of
  :data:`FLOAT64`).
  """
  precision = precision or FLOAT64
  head = (f"{'activation':<11} {'loss':<22} {'bias':<10} {'depth':>5} "
          f"{'reduction':<9} {'vs jax.grad':>11} {'vs fin.diff':>11} "
          f"{'FD noise':>9}  result")
  lines = [head, "-" * len(head)]
  for r in rows:
    lines.append(
        f"{r.activation:<11} {r.loss:<22} {r.bias:<10} {r.depth:>5} "
        f"{r.reduction:<9} {r.vs_autodiff:>11.2e} {r.fd_raw:>11.2e} "
        f"{r.fd_noise:>9.1e}  {'pass' if r.passed else 'FAIL'}")
  failed = sum(not r.passed for r in rows)
  lines.append(f"{len(rows) - failed}/{len(rows)} rows pass"
               + (f" ({failed} FAIL)" if failed else ""))
  lines += [
      "",
      "vs jax.grad  largest relative difference, over the parameter leaves, "
      "between the",
      "             hand-written gradient and jax.grad: max_j |a_j - b_j| / "
      "max(max|a|, max|b|, floor).",
      "vs fin.diff  the same against central finite differences, raw: "
      "rounding in C(theta +- h e_j)",
      "             limits it, and it is often well above the error of the "
      "hand-written gradient.",
      "FD noise     that rounding limit, 10 eps |C| / h, relative to the "
      "gradient of the leaf with the",
      "             largest 'vs fin.diff': differences up to it are "
      "unresolvable by finite differences.",
      f"result       pass: 'vs jax.grad' <= {precision.autodiff_tol:g} and, "
      f"in every leaf, 'vs fin.diff' less its",
      f"             'FD noise' <= {precision.fd_tol:g} (h = "
      f"{precision.fd_step:g}).",
  ]
  return "\n".join(lines)
