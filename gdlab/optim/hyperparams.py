"""Optimizers that know how they were made: hyperparameters as program inputs.

A gdlab optimizer factory (``gradient_descent``, the line searches, the step
rules, ...) is declared with :func:`hyperparameters`, which names its
numeric arguments.  The transformation it returns remembers its *recipe*:

* a :class:`Recipe`, hashable, which holds the factory and every argument
  that shapes the program (Python flags, names, nested recipes), with the
  numeric hyperparameters replaced by :class:`Input` slots;
* ``numbers``, a dict pytree of the hyperparameters' values.

``split(tx) -> (recipe, numbers)`` and ``assemble(recipe, numbers) -> tx``
are inverse: ``assemble`` calls the factories again with whatever
``numbers`` holds, Python floats or traced arrays.  ``gdlab.loop`` keys its
compiled programs on the recipe and passes the numbers as arguments, so a
second run that differs only in its learning rate, momentum, step-rule or
line-search constants compiles nothing; ``gdlab.sweep`` stacks the numbers of
many runs and ``vmap``-s over them.

A hyperparameter that is exactly 0 stays part of the recipe: zero switches
structure in several places (a momentum of 0 keeps no velocity buffer), so
``momentum=0.0`` and ``momentum=0.9`` are two programs.  Anything that is not
a gdlab transformation (``optax.adam(...)``, ``optax.chain(...)``) is its own
recipe: a program compiled for it is reused only for that same object (see
:func:`optax_factory` to give optax's factories a recipe).
"""

from __future__ import annotations

import functools
import inspect
import numbers as numbers_lib
from typing import Any, Callable, NamedTuple

import jax
import numpy as np
import optax

__all__ = [
    "Input",
    "Recipe",
    "assemble",
    "hyperparameters",
    "optax_factory",
    "split",
]


class Input(NamedTuple):
  """A slot in a :class:`Recipe` that a number fills in."""
  name: str


class Recipe(NamedTuple):
  """How a transformation (or step rule) was made, without its numbers.

  Attributes:
    factory: the undecorated factory function.
    arguments: ``((name, value), ...)`` where each value is a hashable
      Python value, an :class:`Input` or a nested ``Recipe``.
  """
  factory: Callable[..., Any]
  arguments: tuple[tuple[str, Any], ...]


class Opaque(NamedTuple):
  """A recipe for an object without one: itself, compared by identity."""
  ref: Any

  def __hash__(self):
    return id(self.ref)

  def __eq__(self, other):
    return isinstance(other, Opaque) and other.ref is self.ref


class Made(optax.GradientTransformationExtraArgs):
  """An optax transformation that carries its :class:`Recipe` and numbers."""
  # No __slots__: instances carry ``recipe`` and ``numbers`` attributes.


def _is_number(value: Any) -> bool:
  if isinstance(value, bool):
    return False
  if isinstance(value, numbers_lib.Real):
    return True
  return (isinstance(value, (np.ndarray, np.generic, jax.Array))
          and np.ndim(value) == 0 and not isinstance(value, jax.core.Tracer)
          and np.issubdtype(np.asarray(value).dtype, np.number))


def _is_zero(value: Any) -> bool:
  return float(np.asarray(value)) == 0.0


class Frozen(NamedTuple):
  """A dict argument in a recipe, as sorted ``(key, value)`` pairs."""
  items: tuple


def _hashable(value: Any) -> Any:
  if isinstance(value, dict):
    value = Frozen(tuple(sorted(value.items())))
  try:
    hash(value)
  except TypeError:
    return Opaque(value)
  return value


def _attach(made: Any, recipe: Recipe, numbers: dict) -> Any:
  if isinstance(made, optax.GradientTransformation):
    made = Made(made.init, made.update)
  made.recipe = recipe
  made.numbers = numbers
  return made


def hyperparameters(*names: str):
  """Declares the numeric hyperparameters of a factory.

  The decorated factory behaves as before; what it returns also carries
  ``recipe`` and ``numbers`` (see the module docstring).  Arguments that are
  themselves made by a declared factory (a line search passed to
  ``steepest_descent``, a step rule passed as a learning rate) nest.  When
  an argument is traced (the factory is being called again inside ``jit``),
  nothing is recorded.
  """
  def deco(factory):
    signature = inspect.signature(factory)

    @functools.wraps(factory)
    def make(*args, **kwargs):
      made = factory(*args, **kwargs)
      bound = signature.bind(*args, **kwargs)
      bound.apply_defaults()
      arguments, values = [], {}
      for name, value in bound.arguments.items():
        if isinstance(value, jax.core.Tracer):
          return made
        if getattr(value, "recipe", None) is not None:
          arguments.append((name, value.recipe))
          values[name] = value.numbers
        elif name in names and _is_number(value) and not _is_zero(value):
          arguments.append((name, Input(name)))
          values[name] = value
        else:
          arguments.append((name, _hashable(value)))
      return _attach(made, Recipe(factory, tuple(arguments)), values)

    make.hyperparameters = names
    return make
  return deco


def optax_factory(factory: Callable[..., Any], *names: str):
  """``factory`` (an optax optimizer such as ``optax.adam``) with a recipe.

  ``optax_factory(optax.adam, "learning_rate", "b1", "b2", "eps")(1e-3)`` is
  ``optax.adam(1e-3)``, and a second one with another learning rate reuses
  the first one's compiled program.
  """
  return hyperparameters(*names)(factory)


def split(tx: Any) -> tuple[Recipe | Opaque, dict]:
  """``(recipe, numbers)`` of a transformation; see the module docstring."""
  recipe = getattr(tx, "recipe", None)
  if recipe is None:
    return Opaque(tx), {}
  return recipe, tx.numbers


def assemble(recipe: Recipe | Opaque, numbers: dict) -> Any:
  """The transformation of ``recipe`` with ``numbers`` filled in."""
  if isinstance(recipe, Opaque):
    return recipe.ref
  kwargs = {}
  for name, value in recipe.arguments:
    if isinstance(value, Input):
      kwargs[name] = numbers[name]
    elif isinstance(value, (Recipe, Opaque)):
      kwargs[name] = assemble(value, numbers.get(name, {}))
    elif isinstance(value, Frozen):
      kwargs[name] = dict(value.items)
    else:
      kwargs[name] = value
  return recipe.factory(**kwargs)
