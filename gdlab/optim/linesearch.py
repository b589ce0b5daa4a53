r"""Line searches: step sizes along a given direction, as optax transforms.

Contract
--------
Each search is an ``optax.GradientTransformationExtraArgs`` that follows the
convention of ``optax.scale_by_backtracking_linesearch`` and
``optax.scale_by_zoom_linesearch``::

  updates, state = search.update(d, state, params,
                                 value=f(params), grad=grad_f(params),
                                 value_fn=f)

The incoming ``updates`` ``d`` are the search direction (``-grad`` for steepest
descent: put ``optax.scale(-1.0)`` before the search, or use
:func:`steepest_descent`); the output is ``alpha * d`` for the accepted step
``alpha >= 0``, so ``optax.apply_updates`` moves ``x`` to ``x + alpha d``.
Everything below concerns the restriction of ``f`` to the search line,

.. math::
  \phi(\alpha) = f(x + \alpha d), \quad \phi(0) = \text{value}, \quad
  \phi'(0) = \langle \text{grad}, d \rangle .

* ``d`` must be a descent direction, :math:`\phi'(0) < 0`.  Otherwise the step
  is 0 and ``conditions_met`` is false; no trial is made, except the single
  evaluation of the quadratic exact search.
* Extra keyword arguments of ``update`` are passed on to ``value_fn`` when its
  signature names them (or takes ``**kwargs``), as optax does; others raise a
  ``TypeError``.  ``value_fn`` must return a real scalar.
* ``params`` is any pytree of real floating arrays.  Step arithmetic runs in
  the widest floating dtype among the leaves; every leaf keeps its dtype.
  Values that are NaN count as :math:`+\infty` (the trial is rejected).
* ``update`` is traceable: trials run in ``lax.while_loop``, nothing leaves
  the device, and numeric hyperparameters may be JAX arrays (traced inside
  ``vmap`` for sweeps).  Concrete ones are validated at construction;
  ``max_steps`` and the choices of condition or method are Python values.
* On failure (``max_steps`` trials, or no progress possible) a search returns
  its safe step: the best trial that met sufficient decrease, else 0.  Only
  the quadratic exact search, which trusts its model of :math:`\phi`, can
  return a step with :math:`\phi(\alpha) > \phi(0)` (when ``f`` is not
  quadratic).

State
-----
Every search keeps a :class:`LineSearchState` with ``count``, ``step_size``,
``num_fun_evals``, ``num_grad_evals``, ``conditions_met``, ``num_trials``,
``value`` and ``grad``.
The evaluation counts are cumulative and count only what the search itself
evaluates: the caller's ``value`` and ``grad`` at ``x`` are not included, and a
Wolfe trial (one ``jax.value_and_grad`` call) counts once in each.

``value`` and ``grad`` are :math:`f` and :math:`\nabla f` at the accepted point
``x + alpha d``, kept as optax's searches keep them, so that the next
iteration need not evaluate them again when ``f`` stays the same (full-batch
training): ``optax.value_and_grad_from_state(f)`` reads them, and so does
``gdlab.train.make_update(..., reuse_search_point=True)``.  ``value`` is
:math:`+\infty` where the search does not know ``f`` there (the quadratic
exact search, which never evaluates its step; a search that failed at a step
it did not evaluate last), and the caller must evaluate; a zero step keeps the
caller's ``value`` and ``grad``.  ``grad`` is ``None`` for searches that do
not store it (``store_grad=False``, the exact searches).  The Wolfe search
stores it at no cost (its last trial computed it); backtracking with
``store_grad=True`` takes every trial's value with ``jax.vjp`` and runs the
backward pass once, at the accepted step, as optax's does with
``jax.linearize``.  Gradients come from differentiating ``value_fn``, so a
``value_fn`` with a custom VJP (the ``"manual"`` engine's) supplies its own.

Why gdlab has its own searches beside optax's
---------------------------------------------
gdlab studies the searches themselves, so its searches (i) expose in the state
the diagnostics a study plots: cumulative function and gradient evaluations,
the accepted step and whether the stated conditions hold (optax reports
per-search step counts and residual errors); (ii) enforce the textbook
conditions as stated, strong Wolfe of Nocedal & Wright without optax's switch
to the approximate Wolfe test of Hager & Zhang, and offer the Goldstein test;
(iii) include the exact line search of the classical steepest-descent
analysis.

References:
  Nocedal & Wright, Numerical Optimization, 2nd ed., Springer 2006,
  sections 3.1, 3.3 and 3.5 (Algorithms 3.1, 3.5, 3.6; equations 3.4, 3.7,
  3.11, 3.59).
  Kiefer, Sequential minimax search for a maximum, Proc. AMS 4, 1953.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gdlab import _checks
from gdlab.optim import accounting
from gdlab.optim.hyperparams import hyperparameters

_GOLDEN = (1.0 + 5.0**0.5) / 2.0  # G = 1.618..., with 1 / (1 + G) = 2 - G.


class LineSearchState(NamedTuple):
  """State shared by every gdlab line search (a pytree of scalar arrays).

  Attributes:
    count: int32, number of ``update`` calls so far.
    step_size: accepted step :math:`\\alpha` of the latest search (0 before
      the first), in the widest floating dtype of the params.
    num_fun_evals: int32, evaluations of ``f`` made by the search, cumulative.
    num_grad_evals: int32, evaluations of ``grad f`` made by the search,
      cumulative.
    conditions_met: bool, whether the latest accepted step satisfies the
      search's conditions (false after ``max_steps`` trials or a fallback).
    num_trials: int32, trial steps evaluated by the latest search.
    value: :math:`f` at the accepted point, or :math:`+\\infty` where the
      search does not know it (and before the first search).
    grad: :math:`\\nabla f` at the accepted point (a pytree like the params)
      where ``value`` is finite, for searches that store it; else ``None``.
  """

  count: jax.Array
  step_size: jax.Array
  num_fun_evals: jax.Array
  num_grad_evals: jax.Array
  conditions_met: jax.Array
  num_trials: jax.Array
  value: jax.Array
  grad: Any


def _work_dtype(params: Any) -> jnp.dtype:
  leaves = jax.tree.leaves(params)
  if not leaves:
    raise ValueError("params: expected a pytree with at least one array; "
                     "got an empty tree.")
  dtypes = [jnp.asarray(leaf).dtype for leaf in leaves]
  bad = [d for d in dtypes if not jnp.issubdtype(d, jnp.floating)]
  if bad:
    raise TypeError(
        f"params: expected real floating arrays; got dtype {bad[0]}.")
  return max(dtypes, key=lambda d: jnp.finfo(d).bits)


def _init_fn(store_grad: bool) -> Callable[[Any], LineSearchState]:
  def init(params: Any) -> LineSearchState:
    zero = jnp.zeros((), jnp.int32)
    dtype = _work_dtype(params)
    grad = jax.tree.map(jnp.zeros_like, params) if store_grad else None
    return LineSearchState(zero, jnp.zeros((), dtype), zero, zero,
                           jnp.asarray(False), zero,
                           jnp.asarray(jnp.inf, dtype), grad)
  return init


def _like_params(tree, params):
  """``tree`` (structured like ``params``) with each leaf in its dtype."""
  return jax.tree.map(lambda t, p: jnp.asarray(t).astype(jnp.asarray(p).dtype),
                      tree, params)


def _advance(state, step, met, trials, fun_evals, grad_evals, value,
             grad=None):
  """The new state; ``value``/``grad`` at the accepted point (see doc)."""
  trials = jnp.asarray(trials, jnp.int32)
  return LineSearchState(
      count=optax.safe_increment(state.count),
      step_size=jnp.asarray(step, state.step_size.dtype),
      num_fun_evals=state.num_fun_evals + jnp.asarray(fun_evals, jnp.int32),
      num_grad_evals=state.num_grad_evals + jnp.asarray(grad_evals, jnp.int32),
      conditions_met=jnp.asarray(met, bool),
      num_trials=trials,
      value=jnp.asarray(value, state.value.dtype),
      grad=None if state.grad is None else _like_params(grad, state.grad))


def _known(step, phi0, grad, value, new_grad, accepted):
  """``(value, grad)`` to store: the accepted trial's, the caller's for a
  zero step, else ``+inf`` (unknown) with any grad."""
  value = jnp.where(accepted, value,
                    jnp.where(step == 0, phi0, jnp.inf))
  if new_grad is None:
    return value, None
  grad = jax.tree.map(lambda a, b: jnp.where(accepted, a, b.astype(a.dtype)),
                      new_grad, grad)
  return value, grad


def _move(params, step, direction):
  """``params + step * direction``, leaf by leaf, keeping each leaf's dtype."""
  return jax.tree.map(
      lambda x, u: x + (step.astype(u.dtype) * u).astype(x.dtype),
      params, direction)


def _scale(step, updates):
  """``step * updates``, keeping each leaf's dtype."""
  return jax.tree.map(lambda u: step.astype(u.dtype) * u, updates)


def _slope(grad, direction, dtype):
  """``<grad, direction>`` summed in ``dtype``."""
  terms = jax.tree.leaves(jax.tree.map(
      lambda g, u: jnp.sum(g.astype(dtype) * u.astype(dtype)), grad, direction))
  return sum(terms, jnp.zeros((), dtype))


def _bind(value_fn: Callable[..., Any], extra_args: dict[str, Any]):
  """``value_fn`` with the extra keyword arguments its signature accepts."""
  if not extra_args:
    return value_fn
  parameters = inspect.signature(value_fn).parameters
  if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
    return lambda p: value_fn(p, **extra_args)
  unused = sorted(set(extra_args) - set(parameters))
  if unused:
    raise TypeError(f"update: keyword arguments {unused} are not parameters of "
                    f"value_fn {getattr(value_fn, '__name__', value_fn)!r}.")
  return lambda p: value_fn(p, **extra_args)


def _not_nan(v):
  return jnp.where(jnp.isnan(v), jnp.inf, v)


def _line(updates, params, value, grad, value_fn, extra_args, with_slope,
          with_pullback=False):
  """Returns ``(dtype, phi, phi(0), phi'(0))`` for the line ``params + a d``.

  ``phi(a)`` is the value; ``(value, slope, grad f)`` when ``with_slope``;
  ``(value, pullback)`` when ``with_pullback``, where ``pullback()`` is the
  gradient of ``f`` at the trial (its backward pass, run only when called).
  """
  if params is None:
    raise ValueError("params: line searches need the current params; got None.")
  dtype = _work_dtype(params)
  fn = _bind(value_fn, extra_args)
  if with_slope:
    value_and_grad = jax.value_and_grad(fn)

    def phi(a):
      v, g = value_and_grad(_move(params, a, updates))
      return _not_nan(jnp.asarray(v, dtype)), _slope(g, updates, dtype), g
  elif with_pullback:

    def phi(a):
      v, vjp = jax.vjp(fn, _move(params, a, updates))
      return (_not_nan(jnp.asarray(v, dtype)),
              lambda: vjp(jnp.ones_like(v))[0])
  else:

    def phi(a):
      return _not_nan(jnp.asarray(fn(_move(params, a, updates)), dtype))

  return dtype, phi, jnp.asarray(value, dtype), _slope(grad, updates, dtype)


def _first_trial(state, initial_step, reuse, factor, dtype):
  """The initial step, or ``factor`` times the last step that met the test."""
  initial = jnp.asarray(initial_step, dtype)
  if not reuse:
    return initial
  last_ok = state.conditions_met & (state.step_size > 0)
  return jnp.where(last_ok, jnp.asarray(factor, dtype) * state.step_size,
                   initial)


def _check_bool(name, value):
  if not isinstance(value, bool):
    raise TypeError(f"{name}: expected a bool; got {value!r}.")


def _check_common(initial_step, max_steps, reuse_last_step):
  _checks.check_number("initial_step", initial_step, low=0.0)
  _checks.check_positive_int("max_steps", max_steps)
  _check_bool("reuse_last_step", reuse_last_step)


@hyperparameters("initial_step", "shrink", "c1", "grow")
def backtracking_linesearch(
    initial_step: float = 1.0,
    shrink: float = 0.5,
    c1: float = 1e-4,
    max_steps: int = 50,
    reuse_last_step: bool = False,
    grow: float = 2.0,
    condition: str = "armijo",
    store_grad: bool = False,
) -> optax.GradientTransformationExtraArgs:
  r"""Backtracking line search for sufficient decrease (Armijo or Goldstein).

  Armijo (Nocedal & Wright eq. 3.4, Algorithm 3.1) accepts the first trial
  :math:`\alpha` with

  .. math:: \phi(\alpha) \le \phi(0) + c_1 \alpha \phi'(0),

  trying ``initial_step`` and then multiplying by ``shrink``.  Goldstein
  (eq. 3.11, needs :math:`0 < c_1 < 1/2`) also rejects steps that are too short,

  .. math:: \phi(0) + (1 - c_1)\alpha\phi'(0) \le \phi(\alpha)
            \le \phi(0) + c_1\alpha\phi'(0),

  by keeping a bracket :math:`[lo, hi]` (too short, too long): the next trial
  is ``lo + shrink * (hi - lo)``, or ``grow * alpha`` while no trial was too
  long.  With Armijo, ``lo`` stays 0 and this is plain backtracking.  On
  failure the step is ``lo`` (a step that met Armijo, or 0).

  Each trial costs one evaluation of ``f`` and none of its gradient; with
  ``store_grad`` the accepted trial's backward pass also runs (one gradient
  evaluation per search), and the state keeps the gradient for the next
  iteration (see the module docstring).

  Args:
    initial_step: first trial step, > 0.
    shrink: factor in (0, 1) by which a step that is too long shrinks.
    c1: sufficient-decrease constant, in (0, 1); in (0, 1/2) for Goldstein.
    max_steps: most trials per search.
    reuse_last_step: start each search at ``grow`` times the previous accepted
      step (as ``optax.scale_by_backtracking_linesearch`` does with its
      ``increase_factor``), falling back to ``initial_step`` on the first
      search and after a failed one.
    grow: factor >= 1 applied to a reused step, and (Goldstein, where it must
      be > 1) to a step that is too short.
    condition: ``"armijo"`` or ``"goldstein"``.
    store_grad: keep :math:`\nabla f` at the accepted point in the state
      (optax's ``store_grad``), for a caller whose ``f`` does not change
      between iterations.

  Returns:
    The transformation; its state is a :class:`LineSearchState`.
  """
  _check_common(initial_step, max_steps, reuse_last_step)
  _check_bool("store_grad", store_grad)
  _checks.check_number("shrink", shrink, low=0.0, high=1.0)
  goldstein = _checks.check_choice(
      "condition", condition, ("armijo", "goldstein")) == "goldstein"
  _checks.check_number("grow", grow, low=1.0, low_inclusive=not goldstein)
  _checks.check_number("c1", c1, low=0.0, high=0.5 if goldstein else 1.0)

  def update_fn(updates, state, params=None, *, value, grad, value_fn,
                **extra_args):
    dtype, phi, phi0, dphi0 = _line(updates, params, value, grad, value_fn,
                                    extra_args, with_slope=False,
                                    with_pullback=store_grad)
    c1_, shrink_, grow_ = (jnp.asarray(h, dtype) for h in (c1, shrink, grow))
    zero = jnp.zeros((), dtype)

    def body(carry):
      i, alpha, lo, hi, _, _, grad_a = carry
      if store_grad:
        value_a, pullback = phi(alpha)
      else:
        value_a = phi(alpha)
      decrease = value_a <= phi0 + c1_ * alpha * dphi0
      long_enough = (value_a >= phi0 + (1 - c1_) * alpha * dphi0
                     if goldstein else jnp.asarray(True))
      done = decrease & long_enough
      if store_grad:  # The backward pass runs for the accepted trial only.
        grad_a = jax.lax.cond(done, pullback, lambda: grad_a)
      lo = jnp.where(decrease & ~long_enough, alpha, lo)
      hi = jnp.where(decrease, hi, alpha)
      trial = jnp.where(jnp.isfinite(hi), lo + shrink_ * (hi - lo),
                        grow_ * alpha)
      return (i + 1, jnp.where(done, alpha, trial), lo, hi, done, value_a,
              grad_a)

    alpha0 = _first_trial(state, initial_step, reuse_last_step, grow, dtype)
    init = (jnp.zeros((), jnp.int32), alpha0, zero, jnp.asarray(jnp.inf, dtype),
            jnp.asarray(False), phi0, state.grad)
    i, alpha, lo, _, done, value_a, grad_a = jax.lax.while_loop(
        lambda c: ~c[4] & (c[0] < max_steps) & (dphi0 < 0), body, init)
    step = jnp.where(done, alpha, lo)
    new_value, new_grad = _known(step, phi0, grad, value_a, grad_a, done)
    new_state = _advance(state, step, done, i, i, jnp.where(done, 1, 0)
                         if store_grad else 0, new_value, new_grad)
    return _scale(step, updates), new_state

  return optax.GradientTransformationExtraArgs(_init_fn(store_grad), update_fn)


class _Zoom(NamedTuple):
  """Carry of the Wolfe search: the bracket ``lo``/``hi`` and the fallback."""

  i: jax.Array
  alpha: jax.Array  # next bracketing trial; the accepted step once done
  lo: jax.Array  # lowest-value trial that met sufficient decrease (or 0)
  lo_value: jax.Array
  lo_slope: jax.Array
  hi: jax.Array  # other end of the bracket; +inf while still bracketing
  hi_value: jax.Array
  hi_slope: jax.Array
  done: jax.Array
  stuck: jax.Array
  value: jax.Array  # f and grad f at the latest trial
  grad: Any


def _interpolate(lo, f_lo, d_lo, hi, f_hi, d_hi):
  """Safeguarded minimiser of a cubic (or quadratic) model between lo and hi.

  The cubic matches values and slopes at both ends (Nocedal & Wright
  eq. 3.59); the quadratic matches ``f_lo``, ``d_lo`` and ``f_hi``.  A point
  within 10% of the interval of either end, or NaN, is replaced by the next
  model, and finally by bisection.
  """
  width = hi - lo
  d1 = d_lo + d_hi - 3.0 * (f_lo - f_hi) / (lo - hi)
  d2 = jnp.sign(width) * jnp.sqrt(d1 * d1 - d_lo * d_hi)
  cubic = hi - width * (d_hi + d2 - d1) / (d_hi - d_lo + 2.0 * d2)
  quad = lo - 0.5 * d_lo * width * width / (f_hi - f_lo - d_lo * width)
  left, right = jnp.minimum(lo, hi), jnp.maximum(lo, hi)
  margin = 0.1 * jnp.abs(width)

  def inside(x):
    return (x >= left + margin) & (x <= right - margin)

  return jnp.where(inside(cubic), cubic,
                   jnp.where(inside(quad), quad, 0.5 * (lo + hi)))


@hyperparameters("c1", "c2", "initial_step", "grow")
def wolfe_linesearch(
    c1: float = 1e-4,
    c2: float = 0.9,
    initial_step: float = 1.0,
    max_steps: int = 30,
    grow: float = 2.0,
    max_step: float | None = None,
    reuse_last_step: bool = False,
    store_grad: bool = True,
) -> optax.GradientTransformationExtraArgs:
  r"""Line search for the strong Wolfe conditions, by bracketing and zoom.

  Accepts a step with (Nocedal & Wright eq. 3.7)

  .. math::
    \phi(\alpha) \le \phi(0) + c_1 \alpha \phi'(0), \qquad
    |\phi'(\alpha)| \le c_2 |\phi'(0)|, \qquad 0 < c_1 < c_2 < 1 .

  Bracketing (Algorithm 3.5) tries ``initial_step`` and multiplies by ``grow``
  (up to ``max_step``) until a trial fails sufficient decrease, fails to lower
  ``phi`` below the previous trial, or has :math:`\phi' \ge 0`; the bracket
  then holds a strong Wolfe step.  Zoom (Algorithm 3.6) shrinks it, each trial
  the minimiser of a cubic fitted to values and slopes at both ends, with
  quadratic and bisection safeguards (see ``_interpolate``).  ``lo`` is always
  the lowest trial that met sufficient decrease and is the fallback step.  The
  search stops without meeting the conditions after ``max_steps`` trials, when
  the bracket is a few ulps wide, or at ``max_step`` still descending.

  Each trial costs one ``jax.value_and_grad(value_fn)`` call, counted as one
  function and one gradient evaluation.

  Args:
    c1: sufficient-decrease constant, in (0, c2).
    c2: curvature constant, in (c1, 1); 0.9 suits quasi-Newton directions,
      0.1 a nonlinear conjugate gradient.
    initial_step: first trial step, > 0.
    max_steps: most trials per search.
    grow: factor > 1 between successive bracketing trials.
    max_step: largest step tried; ``None`` for no bound.
    reuse_last_step: start from the previous accepted step (optax's
      ``initial_guess_strategy="keep"``) instead of ``initial_step``, except on
      the first search and after a failed one.
    store_grad: keep :math:`\nabla f` at the accepted point in the state (the
      last trial computed it; keeping it costs a copy of the gradient), for
      a caller whose ``f`` does not change between iterations.

  Returns:
    The transformation; its state is a :class:`LineSearchState`.

  Raises:
    ValueError: if concrete ``c1`` and ``c2`` violate ``0 < c1 < c2 < 1``.
  """
  _check_common(initial_step, max_steps, reuse_last_step)
  _check_bool("store_grad", store_grad)
  _checks.check_number("c1", c1, low=0.0, high=1.0)
  _checks.check_number("c2", c2, low=0.0, high=1.0)
  if (_checks.is_concrete(c1) and _checks.is_concrete(c2)
      and not float(np.asarray(c1)) < float(np.asarray(c2))):
    raise ValueError(f"c1, c2: expected 0 < c1 < c2 < 1; got c1={c1!r}, "
                     f"c2={c2!r}.")
  _checks.check_number("grow", grow, low=1.0)
  if max_step is not None:
    _checks.check_number("max_step", max_step, low=0.0)

  def update_fn(updates, state, params=None, *, value, grad, value_fn,
                **extra_args):
    dtype, phi, phi0, dphi0 = _line(updates, params, value, grad, value_fn,
                                    extra_args, with_slope=True)
    c1_, c2_, grow_ = (jnp.asarray(h, dtype) for h in (c1, c2, grow))
    cap = jnp.asarray(jnp.inf if max_step is None else max_step, dtype)
    ulps = 4 * jnp.finfo(dtype).eps

    def body(c: _Zoom) -> _Zoom:
      zooming = jnp.isfinite(c.hi)
      trial = jnp.where(
          zooming,
          _interpolate(c.lo, c.lo_value, c.lo_slope, c.hi, c.hi_value,
                       c.hi_slope), c.alpha)
      value_t, slope_t, grad_t = phi(trial)
      too_high = (~(value_t <= phi0 + c1_ * trial * dphi0)
                  | (value_t >= c.lo_value))
      accept = ~too_high & (jnp.abs(slope_t) <= -c2_ * dphi0)
      # A new lo; the old lo becomes hi when the slope points back at it.
      new_lo = ~too_high & ~accept
      swap = new_lo & (slope_t * jnp.sign(c.hi - c.lo) >= 0)
      hi, hi_value, hi_slope = (
          jnp.where(too_high, t, jnp.where(swap, l, h))
          for t, l, h in ((trial, c.lo, c.hi), (value_t, c.lo_value,
                                                c.hi_value),
                          (slope_t, c.lo_slope, c.hi_slope)))
      lo, lo_value, lo_slope = (
          jnp.where(new_lo, t, l)
          for t, l in ((trial, c.lo), (value_t, c.lo_value),
                       (slope_t, c.lo_slope)))
      alpha = jnp.where(accept, trial, jnp.minimum(grow_ * trial, cap))
      stuck = jnp.where(
          jnp.isfinite(hi),
          jnp.abs(hi - lo) <= ulps * jnp.maximum(jnp.abs(hi), jnp.abs(lo)),
          new_lo & (trial >= cap))
      return _Zoom(c.i + 1, alpha, lo, lo_value, lo_slope, hi, hi_value,
                   hi_slope, accept, stuck, value_t,
                   grad_t if store_grad else None)

    zero = jnp.zeros((), dtype)
    alpha0 = jnp.minimum(
        _first_trial(state, initial_step, reuse_last_step, 1.0, dtype), cap)
    init = _Zoom(jnp.zeros((), jnp.int32), alpha0, zero, phi0, dphi0,
                 jnp.asarray(jnp.inf, dtype), jnp.asarray(jnp.inf, dtype),
                 zero, jnp.asarray(False), jnp.asarray(False), phi0,
                 state.grad)
    c = jax.lax.while_loop(
        lambda c: ~c.done & ~c.stuck & (c.i < max_steps) & (dphi0 < 0), body,
        init)
    step = jnp.where(c.done, c.alpha, c.lo)
    new_value, new_grad = _known(step, phi0, grad, c.value, c.grad, c.done)
    new_state = _advance(state, step, c.done, c.i, c.i, c.i, new_value,
                         new_grad)
    return _scale(step, updates), new_state

  return optax.GradientTransformationExtraArgs(_init_fn(store_grad), update_fn)


@hyperparameters("initial_step")
def exact_linesearch(
    method: str = "quadratic",
    tol: float = 1e-8,
    max_steps: int = 100,
    initial_step: float = 1.0,
) -> optax.GradientTransformationExtraArgs:
  r"""Exact line search: the minimiser of :math:`\phi` over steps >= 0.

  ``"quadratic"`` is exact for quadratic ``f`` (Nocedal & Wright sec. 3.1):
  :math:`\phi(\alpha) = \phi(0) + \alpha\phi'(0) + \tfrac{c}{2}\alpha^2`, so one
  evaluation at :math:`t` = ``initial_step`` gives the curvature and the step

  .. math::
    c = \frac{2\,(\phi(t) - \phi(0) - t\,\phi'(0))}{t^2}, \qquad
    \alpha^* = -\phi'(0) / c .

  For other ``f`` this is the minimiser of the interpolating parabola, and
  nothing checks that it lowers ``f``.  If
  :math:`c \le 0` (or is not finite) the line has no minimiser in the model:
  the step falls back to :math:`t` if :math:`\phi(t) < \phi(0)`, else 0, and
  ``conditions_met`` is false.  One evaluation of ``f`` per search.

  ``"golden"`` assumes :math:`\phi` unimodal on the ray.  It brackets a
  minimum by trying :math:`t`, then steps whose gaps grow by the golden ratio
  :math:`G` (or, if :math:`\phi(t) \ge \phi(0)`, shrink ``hi`` by
  :math:`1/(1+G)`), until ``lo < mid < hi`` with :math:`\phi(mid)` below both
  ends; then golden-section search (Kiefer 1953) shrinks the bracket by
  :math:`1/G` per evaluation.  It stops once ``hi - lo <= tol * (1 + lo)``,
  so the returned ``mid`` is within ``tol * (1 + alpha*)`` of the minimiser
  :math:`\alpha^*` in the bracket: ``tol`` is relative for steps above 1 and
  absolute below.  Comparisons of values resolve the minimiser only to about
  :math:`\sqrt{\varepsilon}` relative (~1e-8 in float64, ~3e-4 in float32);
  a smaller ``tol`` spends evaluations on rounding noise.
  ``conditions_met`` is false if ``max_steps`` evaluations (bracketing
  included) end before the tolerance; the step is then the best point found.

  Args:
    method: ``"quadratic"`` or ``"golden"``.
    tol: bracket tolerance of ``"golden"`` (see above), > 0.
    max_steps: most evaluations per search for ``"golden"``.
    initial_step: the trial step :math:`t` of either method, > 0.

  Returns:
    The transformation; its state is a :class:`LineSearchState`.
  """
  golden = _checks.check_choice("method", method,
                                ("quadratic", "golden")) == "golden"
  _check_common(initial_step, max_steps, False)
  _checks.check_number("tol", tol, low=0.0)

  def quadratic(phi, phi0, dphi0, t):
    value_t = phi(t)
    curvature = 2.0 * (value_t - phi0 - t * dphi0) / (t * t)
    met = jnp.isfinite(curvature) & (curvature > 0)
    fallback = jnp.where(value_t < phi0, t, 0.0)
    step = jnp.where(met, -dphi0 / curvature, fallback)
    descent = dphi0 < 0
    step = jnp.where(descent, step, 0.0)
    # The step is the model's minimiser, never evaluated: f there is unknown.
    return step, met & descent, 1, jnp.where(step == 0, phi0, jnp.inf)

  def golden_section(phi, phi0, dphi0, t, dtype):
    r = jnp.asarray(2.0 - _GOLDEN, dtype)  # 1 / G**2 = 0.381966...
    tol_ = jnp.asarray(tol, dtype)

    def bracket(c):
      i, lo, mid, mid_value, hi, x = c
      value_x = phi(x)
      better = value_x < mid_value
      lo, mid, mid_value, hi = (jnp.where(better, mid, lo),
                                jnp.where(better, x, mid),
                                jnp.where(better, value_x, mid_value),
                                jnp.where(better, hi, x))
      x = jnp.where(jnp.isfinite(hi), lo + r * (hi - lo),
                    mid + _GOLDEN * (mid - lo))
      return i + 1, lo, mid, mid_value, hi, x

    def bracketed(c):
      return jnp.isfinite(c[4]) & (c[3] < phi0)

    zero = jnp.zeros((), dtype)
    c = (jnp.zeros((), jnp.int32), zero, zero, phi0,
         jnp.asarray(jnp.inf, dtype), t)
    c = jax.lax.while_loop(
        lambda c: ~bracketed(c) & (c[0] < max_steps) & (dphi0 < 0), bracket, c)
    found = bracketed(c) & (dphi0 < 0)

    def section(c):
      i, lo, mid, mid_value, hi, _ = c
      right = hi - mid > mid - lo
      x = jnp.where(right, mid + r * (hi - mid), mid - r * (mid - lo))
      value_x = phi(x)
      better = value_x < mid_value
      lo = jnp.where(better == right, jnp.where(better, mid, x), lo)
      hi = jnp.where(better != right, jnp.where(better, mid, x), hi)
      return (i + 1, lo, jnp.where(better, x, mid),
              jnp.minimum(value_x, mid_value), hi, x)

    def wide(c):
      return c[4] - c[1] > tol_ * (1 + c[1])

    c = jax.lax.while_loop(lambda c: found & wide(c) & (c[0] < max_steps),
                           section, c)
    i, _, mid, mid_value, _, _ = c
    better = mid_value < phi0
    return (jnp.where(better, mid, 0.0), found & ~wide(c), i,
            jnp.where(better, mid_value, phi0))

  def update_fn(updates, state, params=None, *, value, grad, value_fn,
                **extra_args):
    dtype, phi, phi0, dphi0 = _line(updates, params, value, grad, value_fn,
                                    extra_args, with_slope=False)
    t = jnp.asarray(initial_step, dtype)
    if golden:
      step, met, evals, new_value = golden_section(phi, phi0, dphi0, t, dtype)
    else:
      step, met, evals, new_value = quadratic(phi, phi0, dphi0, t)
    step = jnp.asarray(step, dtype)
    new_state = _advance(state, step, met, evals, evals, 0, new_value)
    return _scale(step, updates), new_state

  return optax.GradientTransformationExtraArgs(_init_fn(False), update_fn)


@hyperparameters()
def steepest_descent(
    line_search: optax.GradientTransformationExtraArgs,
) -> optax.GradientTransformationExtraArgs:
  """Steepest descent: the direction ``-grad``, scaled by ``line_search``.

  ``optax.chain(optax.scale(-1.0), line_search)``; pass the gradient as
  ``updates`` and also as ``grad``.  The line search's state is the second
  element of the chained state (``optax.tree.get(state, "num_fun_evals")``
  finds its fields).
  """
  return optax.chain(optax.scale(-1.0), line_search)


def _account(state: LineSearchState) -> accounting.Accounting:
  """The accepted step, the search's cumulative evaluations and, where it
  stores them, ``f`` and ``grad f`` at the accepted point."""
  point = None if state.grad is None else (state.value, state.grad)
  return accounting.Accounting(state.step_size, state.num_fun_evals,
                               state.num_grad_evals, True, point)


accounting.register(LineSearchState, _account)
