"""Checks on data where they enter gdlab, on the host, before anything compiles.

Contract: every check here reads arrays with NumPy (a JAX array is copied to
the host; nothing is traced or compiled) and raises a one-line
``ValueError`` of the form ``<array>: expected <what>; got <what>.``, naming
the array (``x_train``, ``y_test``, ...). Values are checked only on concrete
arrays: a traced array (inside ``jit``) or one spread over other processes'
devices has its shape checked and its values let through.

* :func:`check_arrays`: a training set of at least one record, labels with
  one row per record, a test set absent (both arrays ``None``) or non-empty
  with records shaped like the training ones, and finite values everywhere
  unless ``check_finite=False``.
* :func:`require_finite`: no NaN or inf in a float array; the message gives the
  number of such entries and the index of the first.
* :func:`check_values_in`: every entry in an allowed set or interval, for the
  label checks of :mod:`gdlab.data.dataset` and :mod:`gdlab.losses`.
* :func:`cast_floats`: the dtype rule. A run computes in the float dtype of
  the model's parameters: float data of another dtype are cast to it on the
  host, and one ``UserWarning`` names the arrays, their dtype and the
  parameters' (float64 NumPy data into a float32 model, the default with
  ``jax_enable_x64`` off; float32 data into a float64 model). Data given in
  the parameters' dtype are not cast and nothing is said.

Whether labels suit a loss is checked where the loss is known:
``gdlab.objective.check_data``.
"""

from __future__ import annotations

import warnings
from typing import Any

import jax
import numpy as np

NAMES = ("x_train", "y_train", "x_test", "y_test")
OPT_OUT = "Clean the data, or pass check_finite=False."


def host(a: Any) -> np.ndarray | None:
  """``a`` as a NumPy array, or ``None`` where its values cannot be read here
  (a tracer, or a JAX array spread over other processes' devices)."""
  if isinstance(a, jax.core.Tracer):
    return None
  if isinstance(a, jax.Array) and not a.is_fully_addressable:
    return None
  return np.asarray(a)


def _index(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
  return tuple(int(i) for i in np.unravel_index(flat, shape))


def first_failure(ok: np.ndarray) -> tuple[int, tuple[int, ...]] | None:
  """``(number of False entries, index of the first)``, or ``None``."""
  if ok.all():
    return None
  bad = ~ok
  return int(bad.sum()), _index(int(np.argmax(bad)), ok.shape)


def require_finite(name: str, a: Any, *, hint: str = OPT_OUT) -> None:
  """Checks that a float (or complex) array holds no NaN or inf."""
  a = host(a)
  if a is None or a.dtype.kind not in "fc":
    return
  failure = first_failure(np.isfinite(a))
  if failure is not None:
    count, first = failure
    got = (f"1 NaN/inf entry, at index {first}" if count == 1 else
           f"{count} NaN/inf entries, the first at index {first}")
    raise ValueError(f"{name}: expected finite values; got {got}. {hint}")


def check_values_in(name: str, a: Any, allowed: tuple | None, *,
                    interval: tuple[float, float] | None = None,
                    expected: str, hint: str = "") -> None:
  """Checks that every entry of ``a`` is in ``allowed`` (or ``interval``).

  Args:
    name: the array's name in the message.
    a: the array.
    allowed: the allowed values, or ``None`` to check ``interval`` only.
    interval: ``(low, high)``, closed, the allowed range when ``allowed`` is
      ``None``.
    expected: what the message says was expected (``"labels in {0, 1}"``).
    hint: a sentence appended to the message (how to fix it).
  """
  a = host(a)
  if a is None or a.size == 0:
    return
  if allowed is not None:
    ok = np.isin(a, np.asarray(allowed, dtype=a.dtype))
  else:
    ok = (a >= interval[0]) & (a <= interval[1])
  failure = first_failure(ok)
  if failure is None:
    return
  count, first = failure
  got = (f"1 entry that is not: {a[first].item()!r}" if count == 1 else
         f"{count} entries that are not, the first {a[first].item()!r}")
  raise ValueError(f"{name}: expected {expected}; got {got} at index "
                   f"{first}.{' ' + hint if hint else ''}")


def _shape(a: Any) -> tuple[int, ...]:
  return tuple(np.shape(a))


def check_arrays(x_train: Any, y_train: Any, x_test: Any = None,
                 y_test: Any = None, *, check_finite: bool = True) -> None:
  """Checks a training set and an optional test set before any training.

  Args:
    x_train, y_train: the training inputs and labels; at least one record,
      records along the first axis.
    x_test, y_test: the test inputs and labels, both ``None`` for no test
      set; otherwise at least one record, each shaped like a training record.
    check_finite: also check that the float arrays hold no NaN or inf.

  Raises:
    ValueError: naming the first array that fails, with what was expected.
  """
  arrays = dict(zip(NAMES, (x_train, y_train, x_test, y_test)))
  if (x_test is None) != (y_test is None):
    given = "x_test" if y_test is None else "y_test"
    raise ValueError(f"x_test, y_test: expected both (a test set) or neither; "
                     f"got only {given}.")
  for name, a in arrays.items():
    if a is None:
      continue
    if not hasattr(a, "shape"):
      a = arrays[name] = np.asarray(a)
    if a.ndim == 0:
      raise ValueError(f"{name}: expected an array with one record per row "
                       f"(records along the first axis); got a scalar.")
  x_shape = _shape(x_train)
  if x_shape[0] == 0:
    raise ValueError(f"x_train: expected at least one training record; got "
                     f"shape {x_shape}.")
  for part in ("train", "test"):
    x, y = arrays[f"x_{part}"], arrays[f"y_{part}"]
    if x is None:
      continue
    if part == "test":
      if _shape(x)[0] == 0:
        raise ValueError(f"x_test: expected at least one test record, or no "
                         f"test set (x_test and y_test None); got shape "
                         f"{_shape(x)}.")
      if _shape(x)[1:] != x_shape[1:]:
        raise ValueError(f"x_test: expected records of shape {x_shape[1:]}, "
                         f"as in x_train; got shape {_shape(x)}.")
    if _shape(y)[0] != _shape(x)[0]:
      raise ValueError(f"y_{part}: expected one label per record of x_{part} "
                       f"({_shape(x)[0]} rows); got shape {_shape(y)}.")
  if check_finite:
    for name, a in arrays.items():
      if a is not None:
        require_finite(name, a)


def cast_floats(arrays: dict[str, Any], dtype: Any, *,
                stacklevel: int = 2) -> dict[str, Any]:
  """``arrays`` with every float array cast to ``dtype``, on the host.

  The rule for data meeting a model: floats take the dtype of the model's
  parameters, so a run computes in one precision.  Arrays of another float
  dtype are cast with NumPy and put on the default device (nothing
  compiles), and one ``UserWarning`` names them, their dtype and ``dtype``;
  integer and boolean arrays, ``None`` and arrays whose values are not on
  this host are returned as they are.

  Args:
    arrays: named arrays (``{"x_train": ..., ...}``).
    dtype: the float dtype to cast to.
    stacklevel: as for ``warnings.warn``, counted from this function.
  """
  dtype = np.dtype(dtype)
  out, cast = dict(arrays), {}
  for name, a in arrays.items():
    if a is None or not np.issubdtype(a.dtype, np.floating) or (
        np.dtype(a.dtype) == dtype):
      continue
    values = host(a)
    if values is None:
      continue
    out[name] = jax.device_put(values.astype(dtype))
    cast.setdefault(np.dtype(a.dtype).name, []).append(name)
  if cast:
    were = "; ".join(
        f"{' and '.join(names)} {'is' if len(names) == 1 else 'are'} {src}"
        for src, names in cast.items())
    other = next(iter(cast))
    x64 = (" (with jax_enable_x64 on)" if other == "float64" and
           not jax.config.jax_enable_x64 else "")
    warnings.warn(
        f"data: {were} but the model's parameters are {dtype.name}; the data "
        f"were cast to {dtype.name}. Cast them yourself, or use {other} "
        f"parameters{x64}, to avoid this warning.", UserWarning,
        stacklevel=stacklevel)
  return out
