"""The update step: one jit-compiled pure function per training set-up.

``make_step(objective, optimizer, engine)`` returns

    step(params, opt_state, batch) -> (params, opt_state, metrics)

which evaluates the objective and its gradient on the batch with the chosen
gradient engine (``"autodiff"`` or ``"manual"``), calls the optax optimizer
with the extra arguments a line search needs (``value``, ``grad`` and
``value_fn``, the objective on the same batch), applies the update, and
returns on-device metrics:

* ``loss``: ``f(x_k)`` on the batch, at the parameters *before* the update;
* ``grad_norm``: ``||g_k||`` (global 2-norm over the parameter tree);
* ``update_norm``: ``||x_{k+1} - x_k||``;
* ``step_size``: the ``step_size`` field of the optimizer's state (the
  learning rate, or the step a line search accepted), or the
  ``learning_rate`` an optax line search accepted; for optimizers that keep
  none (Adam, say), the effective step ``update_norm / grad_norm``;
* ``fun_evals`` and ``grad_evals``: the evaluations this step made: one of
  each for the objective and its gradient, plus those a line search made
  (read from the ``num_fun_evals`` / ``num_grad_evals`` fields of a gdlab
  search's state, or the ``num_linesearch_steps`` of optax's backtracking
  and zoom searches).  A step that reuses the value and gradient a line
  search stored at the new point (``reuse_search_point``) counts 0 for them.

A batch is ``(x, y)`` or ``(x, y, weights)`` (per-record weights, such as the
mask of a padded last batch).  Nothing in the step leaves the device.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from gdlab.objective import Objective, value_and_grad_fn, value_fn

Array = jax.Array


def _named_states(state: Any):
  """Every NamedTuple inside a (nested) optax state, outermost first."""
  if hasattr(state, "_fields"):
    yield state
    children = tuple(state)
  elif isinstance(state, (tuple, list)):
    children = state
  elif isinstance(state, dict):
    children = state.values()
  else:
    return
  for child in children:
    yield from _named_states(child)


def find_fields(state: Any, name: str) -> list[Any]:
  """Values of the field ``name`` in (possibly nested) optax states."""
  return [getattr(s, name) for s in _named_states(state) if name in s._fields]


def search_evals(state: Any) -> tuple[Array, Array]:
  """Cumulative (function, gradient) evaluations made by line searches."""
  searches = [s for s in _named_states(state)
              if "conditions_met" in s._fields]
  fun = sum((jnp.asarray(s.num_fun_evals, jnp.int32) for s in searches),
            jnp.int32(0))
  grad = sum((jnp.asarray(s.num_grad_evals, jnp.int32) for s in searches),
             jnp.int32(0))
  return fun, grad


def _optax_searches(state: Any) -> list[Any]:
  """The states of optax's own line searches (backtracking, zoom) in a tree."""
  return [s for s in _named_states(state)
          if "learning_rate" in s._fields
          and hasattr(getattr(s, "info", None), "num_linesearch_steps")]


def optax_search_evals(state: Any) -> tuple[Array, Array]:
  """(function, gradient) evaluations of optax's line searches in the latest
  update: their state counts the steps of the latest search only.  A zoom
  step evaluates the value and the gradient, a backtracking step the value;
  a backtracking search with ``store_grad`` also takes the gradient of its
  accepted step."""
  fun = grad = jnp.int32(0)
  for s in _optax_searches(state):
    n = jnp.asarray(s.info.num_linesearch_steps, jnp.int32)
    fun = fun + n
    if "curvature_error" in s.info._fields:
      grad = grad + n
    elif getattr(s, "grad", None) is not None:
      grad = grad + 1
  return fun, grad


def stored_point(state: Any) -> tuple[Array, Any] | None:
  """``(value, grad)`` a line search stored at the point it moved to.

  From the state of a search that keeps both fields (gdlab's searches,
  optax's zoom search, and its backtracking search with ``store_grad``) and
  is the optimizer's last transform: a transform after it (a scale, a
  clipping, weight decay) changes the step, and the stored point is no
  longer the new parameters.  ``None`` when there is no such search;
  ``value`` is ``+inf`` or NaN where the search did not know ``f`` there.
  """
  states = list(_named_states(state))
  for i in reversed(range(len(states))):
    s = states[i]
    if "value" in s._fields and "grad" in s._fields and s.grad is not None:
      own = {id(t) for t in _named_states(s)}
      if all(id(t) in own for t in states[i:]):
        return s.value, s.grad
      return None
  return None


def split_batch(batch) -> tuple[Array, Array, Array | None]:
  if len(batch) == 2:
    return batch[0], batch[1], None
  if len(batch) == 3:
    return tuple(batch)
  raise ValueError("batch: expected (x, y) or (x, y, weights); got a "
                   f"sequence of {len(batch)} items.")


def make_update(objective: Objective,
                optimizer: optax.GradientTransformation,
                engine: str = "autodiff",
                norms: bool = True,
                reuse_search_point: bool = False) -> Callable[..., Any]:
  """The step without its last line: ``(params, opt_state, batch,
  point=None) -> (updates, opt_state, metrics)``, for loops that apply the
  updates themselves (``gdlab.loop`` applies them only when the step did not
  diverge).  ``point``: ``(f, grad f)`` at ``params`` on the batch, when the
  caller has them (it is then the step's evaluation).  Arguments as for
  :func:`make_step`."""
  value_and_grad = value_and_grad_fn(objective, engine)
  if not isinstance(optimizer, optax.GradientTransformation):
    raise TypeError("optimizer: expected an optax GradientTransformation; "
                    f"got {type(optimizer).__name__}.")
  if not isinstance(reuse_search_point, bool):
    raise TypeError("reuse_search_point: expected a bool; got "
                    f"{reuse_search_point!r}.")
  update = optax.with_extra_args_support(optimizer).update

  def evaluate(params, opt_state, x, y, weights):
    """``(value, grads, fresh)``: from the search's state when it knows
    them (``fresh`` 0), else from the engine (``fresh`` 1)."""
    stored = stored_point(opt_state) if reuse_search_point else None
    if stored is None:
      return (*value_and_grad(params, x, y, weights), jnp.int32(1))
    known = jnp.isfinite(stored[0])
    dtype = stored[0].dtype  # the search's: the params' widest float

    def engine(_):
      value, grads = value_and_grad(params, x, y, weights)
      return value.astype(dtype), optax.tree.cast_like(grads, params)

    def from_state(_):
      return stored[0], optax.tree.cast_like(stored[1], params)

    value, grads = jax.lax.cond(known, from_state, engine, None)
    return value, grads, jnp.where(known, 0, 1).astype(jnp.int32)

  def step(params, opt_state, batch, point=None):
    x, y, weights = split_batch(batch)
    if point is None:
      value, grads, fresh = evaluate(params, opt_state, x, y, weights)
    else:  # The caller evaluated f and its gradient at params on the batch.
      (value, grads), fresh = point, jnp.int32(1)
    fun_before, grad_before = search_evals(opt_state)
    updates, opt_state = update(
        grads, opt_state, params, value=value, grad=grads,
        value_fn=value_fn(objective, engine, x, y, weights))
    fun_after, grad_after = search_evals(opt_state)
    fun_optax, grad_optax = optax_search_evals(opt_state)
    if norms:
      grad_norm = optax.tree.norm(grads)
      update_norm = optax.tree.norm(updates)
    else:
      grad_norm = update_norm = jnp.full((), jnp.nan, value.dtype)
    sizes = (find_fields(opt_state, "step_size") or
             [s.learning_rate for s in _optax_searches(opt_state)])
    if sizes:
      step_size = jnp.asarray(sizes[-1], value.dtype)
    else:
      step_size = update_norm / jnp.where(grad_norm > 0, grad_norm, 1.0)
    metrics = {
        "loss": value,
        "grad_norm": grad_norm,
        "update_norm": update_norm,
        "step_size": step_size,
        "fun_evals": fresh + fun_after - fun_before + fun_optax,
        "grad_evals": fresh + grad_after - grad_before + grad_optax,
    }
    return updates, opt_state, metrics

  return step


def make_step(objective: Objective,
              optimizer: optax.GradientTransformation,
              engine: str = "autodiff",
              jit: bool = True,
              norms: bool = True,
              reuse_search_point: bool = False) -> Callable[..., Any]:
  """Builds the update step ``(params, opt_state, batch) -> (params, opt_state, metrics)``.

  Args:
    objective: the model, loss, reduction and penalty.
    optimizer: any optax transformation (gdlab's or optax's).
    engine: ``"autodiff"`` (``jax.grad``) or ``"manual"`` (hand-written
      backpropagation); both give the same trajectory.
    jit: compile the step with ``jax.jit`` (eager is handy for debugging).
    norms: compute ``grad_norm`` and ``update_norm`` (each a pass over the
      parameters; about a fifth of a small MLP's step on a CPU).  Without
      them both are NaN, and so is ``step_size`` for optimizers that keep
      none.
    reuse_search_point: take ``f`` and its gradient at ``params`` from the
      line search's state when the previous step's search stored them there
      (see ``gdlab.optim.linesearch``), instead of evaluating them again;
      only from a search that is the optimizer's last transform (see
      :func:`stored_point`).  Right only when every step sees the same batch
      (full-batch training): the stored values belong to the previous
      step's batch.  Under ``vmap`` (sweeps) the choice becomes a select
      and both are computed, so there it saves nothing.

  Returns:
    The step function; see the module docstring for its metrics.
  """
  update = make_update(objective, optimizer, engine, norms,
                       reuse_search_point)

  def step(params, opt_state, batch):
    updates, opt_state, metrics = update(params, opt_state, batch)
    return optax.apply_updates(params, updates), opt_state, metrics

  return jax.jit(step) if jit else step
