"""What an optimizer's state says about a step: one record, read one way.

Every optimizer state type that a training loop should account for has a
*reader* registered here, which turns the state into an :class:`Accounting`
record:

* ``step_size``: the step the latest update took (the learning rate, or the
  step a line search accepted);
* ``fun_evals``, ``grad_evals``: evaluations of ``f`` and ``grad f`` that
  the transform made itself (a line search's trials), on top of the one
  value and gradient the training step hands it;
* ``cumulative``: whether those counts run over the whole run (gdlab's
  searches) or cover the latest update only (optax's searches);
* ``point``: ``(f, grad f)`` at the point the transform moved to, where it
  stored them (line searches), else ``None``.

gdlab's states register themselves in their modules; optax's backtracking
and zoom line searches are registered below (the adapter).  The helpers
find records by *type* (``jax.tree_util`` with an ``is_leaf`` on the
registered types), in the order the states appear in the optimizer's state.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

Array = jax.Array

__all__ = ["Accounting", "records", "register", "step_evals", "step_size",
           "stored_point"]


class Accounting(NamedTuple):
  """One optimizer state's account of its latest update; see the module."""
  step_size: Array | None
  fun_evals: Array
  grad_evals: Array
  cumulative: bool = True
  point: tuple[Array, Any] | None = None


_READERS: dict[type, Callable[[Any], Accounting]] = {}


def register(state_type: type, reader: Callable[[Any], Accounting]) -> None:
  """Registers how to read a state type's :class:`Accounting`."""
  _READERS[state_type] = reader


def _registered(node: Any) -> bool:
  return type(node) in _READERS


def records(state: Any) -> list[Accounting]:
  """The records of every registered state inside ``state``, in order."""
  nodes = jax.tree_util.tree_leaves(state, is_leaf=_registered)
  return [_READERS[type(n)](n) for n in nodes if _registered(n)]


def step_size(state: Any) -> Array | None:
  """The step of the latest update: from the last record that has one."""
  sizes = [r.step_size for r in records(state) if r.step_size is not None]
  return sizes[-1] if sizes else None


def step_evals(before: Any, after: Any) -> tuple[Array, Array]:
  """``(f, grad f)`` evaluations the transforms made in one update."""
  fun = grad = jnp.int32(0)
  old = records(before)
  for i, r in enumerate(records(after)):
    f, g = (jnp.asarray(r.fun_evals, jnp.int32),
            jnp.asarray(r.grad_evals, jnp.int32))
    if r.cumulative:
      f = f - jnp.asarray(old[i].fun_evals, jnp.int32)
      g = g - jnp.asarray(old[i].grad_evals, jnp.int32)
    fun, grad = fun + f, grad + g
  return fun, grad


def _last_transform(state: Any) -> Any:
  """The state of the last transform of a chain (``optax.chain``'s state is
  a plain tuple of its transforms' states)."""
  while type(state) is tuple and state:  # pylint: disable=unidiomatic-typecheck
    state = state[-1]
  return state


def stored_point(state: Any) -> tuple[Array, Any] | None:
  """``(f, grad f)`` at the new parameters, from a line search's record.

  Only from the optimizer's *last* transform: a transform after the search
  (a scale, a clipping, weight decay) changes the step, and the stored point
  is then not the new parameters.  ``f`` is ``+inf`` or NaN where the search
  did not know it.
  """
  last = _last_transform(state)
  if not _registered(last):
    return None
  return _READERS[type(last)](last).point


# ----------------------------------------------------------------------------
# optax's own line searches (the adapter).


def _optax_backtracking(s) -> Accounting:
  n = jnp.asarray(s.info.num_linesearch_steps, jnp.int32)
  stored = s.grad is not None
  return Accounting(s.learning_rate, n, jnp.int32(1 if stored else 0),
                    cumulative=False,
                    point=(s.value, s.grad) if stored else None)


def _optax_zoom(s) -> Accounting:
  n = jnp.asarray(s.info.num_linesearch_steps, jnp.int32)
  return Accounting(s.learning_rate, n, n, cumulative=False,
                    point=(s.value, s.grad))


register(optax.ScaleByBacktrackingLinesearchState, _optax_backtracking)
register(optax.ScaleByZoomLinesearchState, _optax_zoom)
