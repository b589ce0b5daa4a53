"""Argument checks shared by gdlab's public functions.

Every check raises a ``ValueError`` (or ``TypeError``) whose message names the
argument, says what was expected and what was received, and lists the allowed
values where there is a finite set of them.  Checks on numbers apply only to
concrete values: a hyperparameter that is a traced JAX array (inside ``jit`` or
``vmap``, as in a sweep) cannot be inspected at trace time and is let through.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import Any

import jax
import numpy as np


def is_concrete(value: Any) -> bool:
  """True when ``value`` is a Python number or a concrete (untraced) array."""
  if isinstance(value, jax.core.Tracer):
    return False
  return isinstance(value, (numbers.Number, np.ndarray, np.generic, jax.Array))


def _scalar(value: Any) -> float | None:
  if not is_concrete(value):
    return None
  arr = np.asarray(value)
  if arr.ndim != 0:
    return None
  return float(arr)


def check_choice(name: str, value: Any, allowed: Iterable[str]) -> str:
  """Checks that ``value`` is one of the names in ``allowed``."""
  allowed = list(allowed)
  if not isinstance(value, str) or value not in allowed:
    raise ValueError(
        f"{name}: expected one of {', '.join(repr(a) for a in allowed)}; "
        f"got {value!r}.")
  return value


def check_number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = False,
    high_inclusive: bool = False,
) -> Any:
  """Checks that a concrete scalar lies in an interval; traced values pass.

  ``check_number("learning_rate", lr, low=0)`` requires ``lr > 0``.
  """
  if isinstance(value, bool) or not (
      isinstance(value, jax.core.Tracer) or is_concrete(value)):
    raise TypeError(f"{name}: expected a real number; got {value!r} "
                    f"of type {type(value).__name__}.")
  x = _scalar(value)
  if x is None:
    return value
  lo_ok = low is None or (x >= low if low_inclusive else x > low)
  hi_ok = high is None or (x <= high if high_inclusive else x < high)
  if not (lo_ok and hi_ok and np.isfinite(x)):
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    interval = (("[" if low_inclusive else "(") + f"{lo}, {hi}" +
                ("]" if high_inclusive else ")"))
    raise ValueError(f"{name}: expected a finite number in {interval}; "
                     f"got {value!r}.")
  return value


def check_positive_int(name: str, value: Any, *, minimum: int = 1) -> int:
  """Checks that ``value`` is a Python int no smaller than ``minimum``."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise TypeError(f"{name}: expected an integer >= {minimum}; got "
                    f"{value!r} of type {type(value).__name__}.")
  if value < minimum:
    raise ValueError(f"{name}: expected an integer >= {minimum}; "
                     f"got {value!r}.")
  return int(value)
