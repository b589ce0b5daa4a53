"""Data sets and 2-D test functions by name, as configs refer to them.

Contract: :func:`load` maps a name from :func:`names` to its loader and passes
``seed`` and the loader's own keyword options through; an unknown name or an
unknown option raises ``ValueError`` listing the allowed ones. ``smoke=True``
caps the number of records at :data:`SMOKE_RECORDS` (before the split), for
fast tests of a whole pipeline. :func:`get_function` does the same for the
functions of :mod:`gdlab.data.functions`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from gdlab import _checks
from gdlab.data import functions, real, synthetic
from gdlab.data import mnist1d
from gdlab.data.dataset import Dataset
from gdlab.data.functions import Function2D

SMOKE_RECORDS = 48

_DATASETS: dict[str, Callable[..., Dataset]] = {
    "linear": synthetic.linear,
    "sparse_linear": synthetic.sparse_linear,
    "xor": synthetic.xor,
    "moons": synthetic.moons,
    "spirals": synthetic.spirals,
    "blobs": synthetic.blobs,
    "digits": real.digits,
    "iris": real.iris,
    "breast_cancer": real.breast_cancer,
    "diabetes": real.diabetes,
    "mnist1d": mnist1d.load_mnist1d,
}

_FUNCTIONS: dict[str, Callable[..., Function2D]] = {
    "quadratic": functions.quadratic,
    "rosenbrock": functions.rosenbrock,
    "beale": functions.beale,
    "himmelblau": functions.himmelblau,
    "abs_sum": functions.abs_sum,
}


def names() -> list[str]:
  """Names accepted by :func:`load`."""
  return list(_DATASETS)


def function_names() -> list[str]:
  """Names accepted by :func:`get_function`."""
  return list(_FUNCTIONS)


def _options(loader: Callable[..., Any]) -> dict[str, inspect.Parameter]:
  return dict(inspect.signature(loader).parameters)


def _check_options(what: str, name: str, loader, options, reserved=()) -> None:
  allowed = [p for p in _options(loader) if p not in reserved]
  unknown = sorted(set(options) - set(allowed))
  if unknown:
    takes = ", ".join(map(repr, allowed)) or "no options"
    raise ValueError(f"options: {what} {name!r} takes {takes}; got unknown "
                     f"{', '.join(map(repr, unknown))}.")


def load(name: str, *, seed=0, smoke: bool = False, **options) -> Dataset:
  """Loads the data set ``name``.

  Args:
    name: one of :func:`names`.
    seed: ``int`` or ``jax.random`` key; the same seed gives the same arrays.
    smoke: cap the number of records at ``SMOKE_RECORDS`` for fast tests.
    **options: the loader's keyword options (``n``, ``noise``,
      ``test_fraction``, ``labels``, ...); see the functions in
      :mod:`gdlab.data.synthetic`, :mod:`gdlab.data.real` and
      :mod:`gdlab.data.mnist1d`.

  Returns:
    The :class:`~gdlab.data.Dataset`.

  Raises:
    ValueError: for an unknown name or option, or a bad option value.
  """
  _checks.check_choice("name", name, _DATASETS)
  loader = _DATASETS[name]
  _check_options("data set", name, loader, options, reserved=("seed",))
  if smoke:
    default = _options(loader)["n"].default
    n = options.get("n", default)
    if n is None:
      options["n"] = SMOKE_RECORDS
    elif isinstance(n, int) and n > SMOKE_RECORDS:
      options["n"] = SMOKE_RECORDS
  return loader(seed=seed, **options)


def get_function(name: str, **options) -> Function2D:
  """The 2-D test function ``name`` (one of :func:`function_names`).

  ``options`` go to its factory, e.g. ``get_function("quadratic", kappa=100)``.
  """
  _checks.check_choice("name", name, _FUNCTIONS)
  factory = _FUNCTIONS[name]
  _check_options("function", name, factory, options)
  return factory(**options)
