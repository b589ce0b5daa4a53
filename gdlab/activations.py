"""Activation functions and their derivatives, written out by hand.

Each activation is an :class:`Activation` with ``fn(a) -> z`` and
``deriv(a, z) -> dz/da``, both elementwise.  ``deriv`` receives the
pre-activation ``a`` and the output ``z = fn(a)`` so that derivatives such as
sigmoid's ``z (1 - z)`` reuse the cached forward value, as the classic
backpropagation does.

Conventions at kinks (the same as ``jax.grad`` of ``fn``, so that the
hand-written and automatic engines agree everywhere, zero included):

* ``relu``: derivative 0 at ``a = 0`` (``relu(a) = a if a > 0 else 0``).
* ``leaky_relu``: derivative 1 at ``a = 0`` (``a if a >= 0 else slope * a``).
* ``elu``: derivative 1 at ``a = 0`` (it is continuous there for alpha = 1).

``fn`` is written with ``jnp.where`` so that ``jax.grad`` follows exactly the
branch stated above.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from gdlab import _checks

Array = jax.Array


class Activation(NamedTuple):
  """An elementwise activation: ``fn(a)`` and its derivative ``deriv(a, z)``."""
  name: str
  fn: Callable[[Array], Array]
  deriv: Callable[[Array, Array], Array]


LEAKY_SLOPE = 0.01
ELU_ALPHA = 1.0
_GELU_C = math.sqrt(2.0 / math.pi)


def _identity(a):
  return a


def _identity_deriv(a, z):
  del z
  return jnp.ones_like(a)


def _sigmoid(a):
  return jax.nn.sigmoid(a)


def _sigmoid_deriv(a, z):
  del a
  return z * (1 - z)


def _tanh(a):
  return jnp.tanh(a)


def _tanh_deriv(a, z):
  del a
  return 1 - z * z


def _relu(a):
  return jnp.where(a > 0, a, jnp.zeros_like(a))


def _relu_deriv(a, z):
  del z
  return jnp.where(a > 0, 1.0, 0.0).astype(a.dtype)


def _leaky_relu(a):
  return jnp.where(a >= 0, a, LEAKY_SLOPE * a)


def _leaky_relu_deriv(a, z):
  del z
  return jnp.where(a >= 0, 1.0, LEAKY_SLOPE).astype(a.dtype)


def _softplus(a):
  # log(1 + e^a), computed without overflow.
  return jnp.logaddexp(a, 0.0)


def _softplus_deriv(a, z):
  del z
  return jax.nn.sigmoid(a)


def _negative_part(a):
  # a where a <= 0, else 0: keeps exp() of the unused branch finite, so the
  # gradient of the ``where`` never meets ``0 * inf`` (and, unlike
  # ``minimum``, has no tie to split at 0).
  return jnp.where(a > 0, jnp.zeros_like(a), a)


def _elu(a):
  return jnp.where(a > 0, a, ELU_ALPHA * jnp.expm1(_negative_part(a)))


def _elu_deriv(a, z):
  del z
  return jnp.where(a > 0, 1.0, ELU_ALPHA * jnp.exp(_negative_part(a))
                   ).astype(a.dtype)


def _gelu(a):
  # The tanh approximation of Hendrycks & Gimpel (2016), as jax.nn.gelu.
  return 0.5 * a * (1 + jnp.tanh(_GELU_C * (a + 0.044715 * a**3)))


def _gelu_deriv(a, z):
  del z
  t = jnp.tanh(_GELU_C * (a + 0.044715 * a**3))
  dt = (1 - t * t) * _GELU_C * (1 + 3 * 0.044715 * a * a)
  return 0.5 * (1 + t) + 0.5 * a * dt


def _swish(a):
  return a * jax.nn.sigmoid(a)


def _swish_deriv(a, z):
  del z
  s = jax.nn.sigmoid(a)
  return s + a * s * (1 - s)


ACTIVATIONS: dict[str, Activation] = {
    act.name: act for act in (
        Activation("identity", _identity, _identity_deriv),
        Activation("sigmoid", _sigmoid, _sigmoid_deriv),
        Activation("tanh", _tanh, _tanh_deriv),
        Activation("relu", _relu, _relu_deriv),
        Activation("leaky_relu", _leaky_relu, _leaky_relu_deriv),
        Activation("softplus", _softplus, _softplus_deriv),
        Activation("elu", _elu, _elu_deriv),
        Activation("gelu", _gelu, _gelu_deriv),
        Activation("swish", _swish, _swish_deriv),
    )
}


def names() -> tuple[str, ...]:
  """The names of the available activations."""
  return tuple(ACTIVATIONS)


def get(name: str, *, argname: str = "activation") -> Activation:
  """Looks an activation up by name; unknown names raise ``ValueError``."""
  _checks.check_choice(argname, name, ACTIVATIONS)
  return ACTIVATIONS[name]
