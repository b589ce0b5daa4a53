"""The update step: one jit-compiled pure function per training set-up.

``make_step(objective, optimizer, engine)`` returns

    step(params, opt_state, batch) -> (params, opt_state, metrics)

which evaluates the objective and its gradient on the batch with the chosen
gradient engine (``"autodiff"`` or ``"manual"``), calls the optax optimizer
with the extra arguments a line search needs (``value``, ``grad`` and
``value_fn``, the objective on the same batch), applies the update, and
returns on-device metrics:

* ``loss``: ``f(x_k)`` on the batch, at the parameters *before* the update;
* ``grad_norm``: ``||g_k||`` (global 2-norm over the parameter tree,
  :func:`global_norm`);
* ``update_norm``: ``||x_{k+1} - x_k||``;
* ``step_size``: the step the optimizer's state records (the learning rate,
  or the step a line search accepted, gdlab's or optax's); for optimizers
  that record none (Adam, say), the effective step
  ``update_norm / grad_norm``;
* ``fun_evals`` and ``grad_evals``: the evaluations this step made: one of
  each for the objective and its gradient, plus those a line search made.
  A step that reuses the value and gradient a line search stored at the new
  point (``reuse_search_point``) counts 0 for them.

The step size and the line searches' evaluations are read from the
optimizer's state through ``gdlab.optim.accounting`` (one record per state
type, with an adapter for optax's own line searches).

A batch is ``(x, y)`` or ``(x, y, weights)`` (per-record weights, such as the
mask of a padded last batch).  Nothing in the step leaves the device.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from gdlab.objective import Engine, Objective, engine as make_engine
from gdlab.optim import accounting

Array = jax.Array


def split_batch(batch) -> tuple[Array, Array, Array | None]:
  if len(batch) == 2:
    return batch[0], batch[1], None
  if len(batch) == 3:
    return tuple(batch)
  raise ValueError("batch: expected (x, y) or (x, y, weights); got a "
                   f"sequence of {len(batch)} items.")


def _sum_of_squares(x) -> Array:
  """``sum(x ** 2)`` of one array, as one matrix-vector product.

  ``x`` as a matrix (its last axis the columns), squared and times a vector
  of ones, then the sum of the rows' sums.  On a CPU the backend's
  matrix-vector kernel reads the array once, with the square (and the
  scaling of an SGD update) fused into it, where ``jnp.sum(x ** 2)`` of a
  large array is a windowed reduction several times slower and an update
  is written out before it is reduced: for the MLP 784-512-512-10 of
  ``benchmarks/throughput.py`` at batch 128, the two norms of a step cost
  about 15% of it that way, a few percent this way.  ``HIGHEST``
  precision keeps float32 products in float32 on accelerators.  Other
  dtypes (narrower floats, complex) and empty arrays take
  ``optax.tree.norm``'s sum.
  """
  x = jnp.asarray(x)
  if x.dtype not in (jnp.float32, jnp.float64) or x.size == 0:
    return optax.tree.norm(x, squared=True)
  m = x.reshape(-1, x.shape[-1]) if x.ndim else x.reshape(1, 1)
  rows = jnp.dot(m * m, jnp.ones(m.shape[-1], m.dtype),
                 precision=jax.lax.Precision.HIGHEST)
  return jnp.sum(rows)


def global_norm(tree) -> Array:
  """The 2-norm of a tree of arrays (``optax.tree.norm``'s value, summed
  in another order: equal up to rounding), one pass over each leaf."""
  total = jax.tree.reduce(lambda a, b: a + b,
                          jax.tree.map(_sum_of_squares, tree), initializer=0)
  return jnp.sqrt(total)


def make_update(objective: Objective,
                optimizer: optax.GradientTransformation,
                engine: str | Engine = "autodiff",
                norms: bool = True,
                reuse_search_point: bool = False) -> Callable[..., Any]:
  """The step without its last line: ``(params, opt_state, batch,
  point=None) -> (updates, opt_state, metrics)``, for loops that apply the
  updates themselves (``gdlab.loop`` applies them only when the step did not
  diverge).  ``point``: ``(f, grad f)`` at ``params`` on the batch, when the
  caller has them (it is then the step's evaluation).  ``engine``: a name,
  or the :class:`~gdlab.objective.Engine` the caller already chose.  Other
  arguments as for :func:`make_step`."""
  fns = engine if isinstance(engine, Engine) else make_engine(objective,
                                                              engine)
  if not isinstance(optimizer, optax.GradientTransformation):
    raise TypeError("optimizer: expected an optax GradientTransformation; "
                    f"got {type(optimizer).__name__}.")
  if not isinstance(reuse_search_point, bool):
    raise TypeError("reuse_search_point: expected a bool; got "
                    f"{reuse_search_point!r}.")
  update = optax.with_extra_args_support(optimizer).update

  def evaluate(params, opt_state, x, y, weights):
    """``(value, grads, fresh)``: from the search's record when it knows
    them (``fresh`` 0), else from the engine (``fresh`` 1)."""
    stored = (accounting.stored_point(opt_state) if reuse_search_point
              else None)
    if stored is None:
      return (*fns.value_and_grad(params, x, y, weights), jnp.int32(1))
    known = jnp.isfinite(stored[0])
    dtype = stored[0].dtype  # the search's: the params' widest float

    def from_engine(_):
      value, grads = fns.value_and_grad(params, x, y, weights)
      return value.astype(dtype), optax.tree.cast_like(grads, params)

    def from_state(_):
      return stored[0], optax.tree.cast_like(stored[1], params)

    value, grads = jax.lax.cond(known, from_state, from_engine, None)
    return value, grads, jnp.where(known, 0, 1).astype(jnp.int32)

  def step(params, opt_state, batch, point=None):
    x, y, weights = split_batch(batch)
    if point is None:
      value, grads, fresh = evaluate(params, opt_state, x, y, weights)
    else:  # The caller evaluated f and its gradient at params on the batch.
      (value, grads), fresh = point, jnp.int32(1)
    updates, new_state = update(grads, opt_state, params, value=value,
                                grad=grads,
                                value_fn=fns.value_on(x, y, weights))
    search_fun, search_grad = accounting.step_evals(opt_state, new_state)
    if norms:
      grad_norm = global_norm(grads)
      update_norm = global_norm(updates)
    else:
      grad_norm = update_norm = jnp.full((), jnp.nan, value.dtype)
    step_size = accounting.step_size(new_state)
    if step_size is None:
      step_size = update_norm / jnp.where(grad_norm > 0, grad_norm, 1.0)
    metrics = {
        "loss": value,
        "grad_norm": grad_norm,
        "update_norm": update_norm,
        "step_size": jnp.asarray(step_size, value.dtype),
        "fun_evals": fresh + search_fun,
        "grad_evals": fresh + search_grad,
    }
    return updates, new_state, metrics

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
      parameters, :func:`global_norm`; a few percent of a small MLP's step
      on a CPU).  Without them both are NaN, and so is ``step_size`` for
      optimizers that keep none.
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
