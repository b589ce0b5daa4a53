"""Step-size schedules and step rules.

Two kinds of step size live here.

*Schedules* depend on the update count only: ``schedule(count) -> step``.
They are optax schedules (``optax.Schedule``), so every optax schedule works
wherever gdlab takes one, and the common ones below are thin, validated
wrappers over optax rather than new code.  ``count`` starts at 0: the first
update uses ``schedule(0)``, as in ``optax.scale_by_schedule``.

*Step rules* may also depend on the objective value and the (sub)gradient:

  ``rule(count, value, grad_norm, f_best=None) -> alpha``

and the update they serve is ``x_{k+1} = x_k - alpha_k g_k``, where ``value``
is ``f(x_k)``, ``grad_norm`` is the global Euclidean norm ``||g_k||_2`` over the
whole parameter pytree, and ``f_best`` is the best value seen so far, the
current one included (``min_{i <= k} f(x_i)``; rules that do not need it ignore
it, and callers that do not track it may omit it).  :func:`as_step_rule` turns
a number, a schedule or a rule into a rule, so optimizers take any of them.

Contract of the rules defined here:

* They are pure ``jax.numpy`` functions, safe under ``jit`` and ``vmap``;
  their hyperparameters may be traced arrays (sweeps).  Concrete
  hyperparameters are validated when the rule is built.
* A zero gradient norm never produces ``inf`` or ``NaN``: rules that divide by
  ``||g||`` return ``alpha = 0`` there (the update ``-alpha g`` is zero anyway,
  and ``g = 0`` certifies optimality for a convex ``f``).
* Step sizes are returned, never negated: the sign lives in the optimizer.

References:
  S. Boyd and A. Mutapcic, *Subgradient Methods*, lecture notes for EE364b,
  Stanford University, 2008 (section "Step size rules" and the discussion of
  Polyak's step length, including the case of an estimated optimal value).
  B. T. Polyak, *Introduction to Optimization*, Optimization Software, 1987,
  chapter 5.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gdlab._checks import check_number
from gdlab._checks import check_positive_int
from gdlab.optim.hyperparams import hyperparameters

Schedule = optax.Schedule
StepRule = Callable[..., jax.Array]

__all__ = [
    "Schedule",
    "StepRule",
    "as_step_rule",
    "constant",
    "constant_step_length",
    "cosine_decay",
    "exponential_decay",
    "linear_warmup",
    "nonsummable_diminishing",
    "polyak",
    "polyak_estimated",
    "square_summable",
    "step_decay",
    "warmup_cosine_decay",
]


# ----------------------------------------------------------------------------
# Count-based schedules (optax).
# ----------------------------------------------------------------------------


@hyperparameters("learning_rate")
def constant(learning_rate: Any) -> Schedule:
  """Constant step size, ``alpha_k = learning_rate``.

  Args:
    learning_rate: positive step size.

  Returns:
    ``optax.constant_schedule(learning_rate)``.
  """
  check_number("learning_rate", learning_rate, low=0)
  return optax.constant_schedule(learning_rate)


@hyperparameters("init_value")
def exponential_decay(
    init_value: Any,
    transition_steps: int,
    decay_rate: Any,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: Any | None = None,
) -> Schedule:
  """Exponential decay, ``alpha_k = init_value * decay_rate^(k / T)``.

  With ``staircase=True`` the exponent is ``floor(k / T)``; ``k`` is counted
  from ``transition_begin``.  See ``optax.exponential_decay``.

  Args:
    init_value: positive step size at ``k = 0``.
    transition_steps: ``T``, a positive int.
    decay_rate: positive factor per ``T`` steps (below 1 to decay).
    transition_begin: steps to hold ``init_value`` before decaying.
    staircase: decay in discrete jumps.
    end_value: optional non-negative floor (or ceiling) of the step size.

  Returns:
    The optax schedule.
  """
  check_number("init_value", init_value, low=0)
  check_positive_int("transition_steps", transition_steps)
  check_number("decay_rate", decay_rate, low=0)
  check_positive_int("transition_begin", transition_begin, minimum=0)
  if end_value is not None:
    check_number("end_value", end_value, low=0, low_inclusive=True)
  return optax.exponential_decay(init_value, transition_steps, decay_rate,
                                 transition_begin, staircase, end_value)


@hyperparameters("init_value")
def step_decay(
    init_value: Any, boundaries_and_scales: Mapping[int, Any]) -> Schedule:
  """Step decay: multiply the step size by a factor at given counts.

  ``alpha_k = init_value * prod_{b <= k} scale_b`` over the boundaries ``b``
  already passed (a boundary ``b`` takes effect from update ``b``; see
  ``optax.piecewise_constant_schedule``).

  Args:
    init_value: positive initial step size.
    boundaries_and_scales: ``{count: factor}`` with non-negative int counts
      and positive factors, e.g. ``{1000: 0.1, 2000: 0.1}``.

  Returns:
    The optax schedule.
  """
  check_number("init_value", init_value, low=0)
  if not isinstance(boundaries_and_scales, Mapping):
    raise TypeError("boundaries_and_scales: expected a mapping {{count: "
                    f"factor}}; got {boundaries_and_scales!r}.")
  for step, scale in boundaries_and_scales.items():
    check_positive_int("boundaries_and_scales key", step, minimum=0)
    check_number(f"boundaries_and_scales[{step}]", scale, low=0)
  return optax.piecewise_constant_schedule(init_value,
                                           dict(boundaries_and_scales))


@hyperparameters("init_value")
def cosine_decay(
    init_value: Any, decay_steps: int, alpha: Any = 0.0,
    exponent: Any = 1.0) -> Schedule:
  """Cosine decay (Loshchilov and Hutter, 2017, without restarts).

  ``alpha_k = init_value * ((1 - a) * c_k^p + a)`` with
  ``c_k = (1 + cos(pi * min(k, K) / K)) / 2``, ``a = alpha``,
  ``p = exponent``, ``K = decay_steps``.

  Args:
    init_value: positive initial step size.
    decay_steps: ``K``, a positive int.
    alpha: final step size as a fraction of ``init_value``, in ``[0, 1]``.
    exponent: positive exponent ``p``.

  Returns:
    ``optax.cosine_decay_schedule(...)``.
  """
  check_number("init_value", init_value, low=0)
  check_positive_int("decay_steps", decay_steps)
  check_number("alpha", alpha, low=0, high=1, low_inclusive=True,
               high_inclusive=True)
  check_number("exponent", exponent, low=0)
  return optax.cosine_decay_schedule(init_value, decay_steps, alpha, exponent)


@hyperparameters("peak_value")
def warmup_cosine_decay(
    init_value: Any,
    peak_value: Any,
    warmup_steps: int,
    decay_steps: int,
    end_value: Any = 0.0,
    exponent: Any = 1.0,
) -> Schedule:
  """Linear warm-up from ``init_value`` to ``peak_value``, then cosine decay.

  ``decay_steps`` counts the warm-up too, as in
  ``optax.warmup_cosine_decay_schedule``: the step size reaches
  ``end_value`` at ``k = decay_steps``.

  Args:
    init_value: non-negative step size at ``k = 0``.
    peak_value: positive step size at ``k = warmup_steps``.
    warmup_steps: non-negative int.
    decay_steps: int larger than ``warmup_steps``.
    end_value: non-negative final step size.
    exponent: positive exponent of the cosine.

  Returns:
    The optax schedule.
  """
  check_number("init_value", init_value, low=0, low_inclusive=True)
  check_number("peak_value", peak_value, low=0)
  check_positive_int("warmup_steps", warmup_steps, minimum=0)
  check_positive_int("decay_steps", decay_steps, minimum=warmup_steps + 1)
  check_number("end_value", end_value, low=0, low_inclusive=True)
  check_number("exponent", exponent, low=0)
  # optax.warmup_cosine_decay_schedule, operation for operation, without
  # its Python test on peak_value, so that the step size can be a program
  # input (gdlab.optim.hyperparams).
  cosine_steps = decay_steps - warmup_steps

  def schedule(count):
    count = jnp.asarray(count)
    if warmup_steps:
      frac = 1 - jnp.clip(count, 0, warmup_steps) / warmup_steps
      warm = (init_value - peak_value) * frac + peak_value
    else:
      warm = peak_value
    alpha = jnp.where(peak_value == 0.0, 0.0,
                      end_value / jnp.where(peak_value == 0.0, 1.0,
                                            peak_value))
    k = jnp.minimum(jnp.maximum(count - warmup_steps, 0), cosine_steps)
    cos = 0.5 * (1 + jnp.cos(jnp.pi * k / cosine_steps))
    decayed = peak_value * ((1 - alpha) * cos ** exponent + alpha)
    return jnp.where(count < warmup_steps, warm, decayed)

  return schedule


def linear_warmup(
    init_value: Any, end_value: Any, transition_steps: int,
    transition_begin: int = 0) -> Schedule:
  """Linear ramp from ``init_value`` to ``end_value``, then constant.

  ``alpha_k = init_value + (end_value - init_value) * min(k, T) / T`` for
  ``k`` counted from ``transition_begin``; see ``optax.linear_schedule``.
  Combine with another schedule through ``optax.join_schedules``.

  Args:
    init_value: non-negative step size at the start (often 0).
    end_value: positive step size after the ramp.
    transition_steps: ``T``, a positive int.
    transition_begin: steps to hold ``init_value`` first.

  Returns:
    The optax schedule.
  """
  check_number("init_value", init_value, low=0, low_inclusive=True)
  check_number("end_value", end_value, low=0)
  check_positive_int("transition_steps", transition_steps)
  check_positive_int("transition_begin", transition_begin, minimum=0)
  return optax.linear_schedule(init_value, end_value, transition_steps,
                               transition_begin)


@hyperparameters("a", "b")
def square_summable(a: Any, b: Any) -> Schedule:
  """Square summable but not summable step sizes, ``alpha_k = a / (b + k)``.

  ``sum_k alpha_k = inf`` (the partial sums grow like ``a log(k)``) while
  ``sum_k alpha_k^2 <= a^2 (1/b^2 + 1/b) < inf``; with a subgradient method on
  a convex Lipschitz ``f`` this gives ``f_best - f* -> 0`` (Boyd and Mutapcic,
  "Step size rules").  The count ``k`` starts at 0 here (the notes start at
  1), which is why ``b`` must be positive: ``a / (b + k)`` with ``k >= 0``
  equals the notes' ``a / (b' + k')`` with ``k' = k + 1``, ``b' = b - 1``.

  Args:
    a: positive numerator.
    b: positive offset.

  Returns:
    A schedule ``count -> a / (b + count)``.
  """
  check_number("a", a, low=0)
  check_number("b", b, low=0)

  def schedule(count):
    return a / (b + count)

  return schedule


@hyperparameters("a")
def nonsummable_diminishing(a: Any) -> Schedule:
  """Nonsummable diminishing step sizes, ``alpha_k = a / sqrt(k + 1)``.

  ``alpha_k -> 0`` and ``sum_k alpha_k = inf`` (partial sums grow like
  ``2 a sqrt(k)``) but ``sum_k alpha_k^2 = inf`` too.  The count ``k`` starts
  at 0, so the first step is ``a`` (the notes' ``a / sqrt(k')`` with
  ``k' = k + 1``).

  Args:
    a: positive scale.

  Returns:
    A schedule ``count -> a / sqrt(count + 1)``.
  """
  check_number("a", a, low=0)

  def schedule(count):
    return a / jnp.sqrt(count + 1.0)

  return schedule


# ----------------------------------------------------------------------------
# Step rules ``rule(count, value, grad_norm, f_best=None) -> alpha``.
# ----------------------------------------------------------------------------


def _safe_divide(numerator, denominator):
  """``numerator / denominator`` where ``denominator > 0``, else 0 (no NaN)."""
  positive = denominator > 0
  quotient = numerator / jnp.where(positive, denominator, 1.0)
  return jnp.where(positive, quotient, jnp.zeros_like(quotient))


@hyperparameters("gamma")
def constant_step_length(gamma: Any) -> StepRule:
  """Constant step length, ``alpha_k = gamma / ||g_k||``.

  The step then has length ``||x_{k+1} - x_k|| = gamma``.  With a convex
  ``f`` whose subgradients are bounded by ``G``, ``f_best - f*`` ends within
  ``G gamma / 2`` of the optimum.  ``alpha = 0`` where ``g = 0``.

  Args:
    gamma: positive step length.

  Returns:
    A step rule.
  """
  check_number("gamma", gamma, low=0)

  def rule(count, value, grad_norm, f_best=None):
    del count, value, f_best
    return _safe_divide(gamma, jnp.asarray(grad_norm))

  return rule


@hyperparameters("f_star")
def polyak(f_star: Any = None) -> StepRule:
  """Polyak's step length, ``alpha_k = (f(x_k) - f*) / ||g_k||^2``.

  Needs the optimal value ``f*``.  With it, the subgradient method gives
  ``f_best^(k) - f* <= G R / sqrt(k + 1)`` (``R = ||x_0 - x*||``, ``G`` a
  bound on subgradient norms).  The numerator is clipped at 0, so a value
  below the supplied ``f*`` (a wrong ``f*``) yields no step rather than an
  ascent step; ``alpha = 0`` where ``g = 0``.

  Args:
    f_star: the optimal value ``f* = min f``, required.  When it is unknown,
      use :func:`polyak_estimated`.

  Returns:
    A step rule.

  Raises:
    ValueError: ``f_star`` is missing or not finite.
  """
  if f_star is None:
    raise ValueError(
        "f_star: Polyak's step length needs the optimal value f*; got None. "
        "Pass f_star=..., or use polyak_estimated(delta) when f* is unknown.")
  check_number("f_star", f_star)

  def rule(count, value, grad_norm, f_best=None):
    del count, f_best
    gap = jnp.maximum(jnp.asarray(value) - f_star, 0.0)
    return _safe_divide(gap, jnp.square(grad_norm))

  return rule


@hyperparameters("delta")
def polyak_estimated(delta: Any) -> StepRule:
  """Polyak's step length with ``f*`` estimated as ``f_best - delta_k``.

  ``alpha_k = (f(x_k) - f_best^(k) + delta_k) / ||g_k||^2`` where
  ``f_best^(k) = min_{i <= k} f(x_i)`` and ``delta_k > 0``.  With
  ``delta_k -> 0``, ``sum_k delta_k = inf`` and ``sum_k delta_k^2 < inf``
  (e.g. ``square_summable(10, 10)``, the notes' ``10 / (10 + k)``) the
  subgradient method converges, ``f_best^(k) -> f*`` (Boyd and Mutapcic,
  Polyak's step length with estimated optimal value).  ``delta_k`` is in the
  units of ``f``.  ``alpha = 0`` where ``g = 0``.  A caller that omits
  ``f_best`` gets ``f_best = f(x_k)``, i.e. ``alpha_k = delta_k / ||g_k||^2``.

  Args:
    delta: positive number or count schedule giving ``delta_k``.

  Returns:
    A step rule.
  """
  if callable(delta):
    delta_fn = delta
  else:
    check_number("delta", delta, low=0)
    delta_fn = lambda count: delta

  def rule(count, value, grad_norm, f_best=None):
    value = jnp.asarray(value)
    best = value if f_best is None else jnp.minimum(f_best, value)
    numerator = value - best + delta_fn(count)
    return _safe_divide(numerator, jnp.square(grad_norm))

  return rule


def _is_count_schedule(fn: Callable[..., Any]) -> bool:
  """True when ``fn`` takes one positional argument (an optax schedule)."""
  try:
    params = inspect.signature(fn).parameters.values()
  except (TypeError, ValueError):
    return True
  if any(p.kind == p.VAR_POSITIONAL for p in params):
    return False
  positional = [p for p in params
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
  return len(positional) < 3


def _accepts_f_best(fn: Callable[..., Any]) -> bool:
  try:
    params = list(inspect.signature(fn).parameters.values())
  except (TypeError, ValueError):
    return False
  if any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in params):
    return True
  return any(p.name == "f_best" for p in params) or len(params) >= 4


def as_step_rule(x: Any, *, name: str = "step_rule") -> StepRule:
  """Turns a number, an optax schedule or a step rule into a step rule.

  * a positive number ``c`` (Python or a scalar array, possibly traced):
    ``alpha_k = c``;
  * a callable with fewer than three positional parameters, taken as an
    optax schedule ``count -> alpha``;
  * a callable ``rule(count, value, grad_norm[, f_best])``; a three-argument
    rule is wrapped so that ``f_best`` may be passed and is ignored.

  Args:
    x: the number, schedule or rule.
    name: argument name used in error messages.

  Returns:
    A step rule ``rule(count, value, grad_norm, f_best=None) -> alpha``.

  Raises:
    ValueError: a concrete number that is not positive and finite.
    TypeError: anything else.
  """
  if callable(x):
    if _is_count_schedule(x):
      schedule = x

      def rule(count, value=None, grad_norm=None, f_best=None):
        del value, grad_norm, f_best
        return schedule(count)

      return rule
    if _accepts_f_best(x):
      return x
    three_arg = x

    def rule(count, value, grad_norm, f_best=None):
      del f_best
      return three_arg(count, value, grad_norm)

    return rule
  if isinstance(x, (numbers.Number, np.ndarray, np.generic, jax.Array)):
    check_number(name, x, low=0)
    step = x

    def rule(count, value=None, grad_norm=None, f_best=None):
      del count, value, grad_norm, f_best
      return jnp.asarray(step)

    return rule
  raise TypeError(
      f"{name}: expected a positive number, an optax schedule count -> step, "
      f"or a step rule (count, value, grad_norm[, f_best]) -> step; got "
      f"{x!r} of type {type(x).__name__}.")
