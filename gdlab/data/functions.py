"""Two-dimensional test functions for optimiser paths and loss-surface plots.

Contract: each factory returns a :class:`Function2D` whose ``fn`` maps a
parameter array of shape ``(2,)`` to a scalar and is pure and jit-compatible.
``minimizers`` is an ``(m, 2)`` array of the known global minimisers (all with
value ``f_min``), ``x0`` a customary starting point and ``xlim``/``ylim`` a
window that shows the interesting part of the surface. ``smooth`` is ``False``
for functions with kinks, where ``jax.grad`` returns a subgradient: here
``|t|`` has derivative ``sign(t)``, which is 0 at ``t = 0`` (the project's
convention; plain ``jnp.abs`` would give 1 there).

References: Rosenbrock (1960), Beale (1958), Himmelblau (1972); values as in
the standard optimisation test-function tables (e.g. Jamil and Yang, 2013).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gdlab import _checks


@dataclasses.dataclass(frozen=True)
class Function2D:
  """A scalar function of two variables with its known minimum.

  Attributes:
    name: registry name.
    fn: ``fn(params) -> scalar`` for ``params`` of shape ``(2,)``.
    minimizers: the global minimisers, shape ``(m, 2)``.
    f_min: the global minimum value.
    x0: default starting point, shape ``(2,)``.
    xlim: ``(low, high)`` of the plotting window along the first coordinate.
    ylim: ``(low, high)`` along the second coordinate.
    smooth: whether ``fn`` is differentiable everywhere.
    info: further known quantities (for the quadratic: its matrix and the
      smallest and largest curvature).
  """
  name: str
  fn: Callable[[jax.Array], jax.Array]
  minimizers: np.ndarray
  f_min: float
  x0: np.ndarray
  xlim: tuple[float, float]
  ylim: tuple[float, float]
  smooth: bool = True
  info: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __call__(self, params: jax.Array) -> jax.Array:
    return self.fn(params)

  def grid(self, num: int = 200) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Evaluates ``fn`` on a ``num x num`` grid over the plotting window.

    Returns:
      ``(xs, ys, zs)`` with ``xs, ys`` from ``jnp.meshgrid`` and
      ``zs[i, j] = fn([xs[i, j], ys[i, j]])``, ready for ``plt.contour``.
    """
    _checks.check_positive_int("num", num, minimum=2)
    xs, ys = jnp.meshgrid(jnp.linspace(*self.xlim, num),
                          jnp.linspace(*self.ylim, num))
    points = jnp.stack([xs.ravel(), ys.ravel()], axis=1)
    zs = jax.vmap(self.fn)(points).reshape(xs.shape)
    return xs, ys, zs


def _make(name, fn, minimizers, x0, xlim, ylim, *, f_min=0.0, smooth=True,
          info=None) -> Function2D:
  return Function2D(
      name=name, fn=fn, minimizers=np.asarray(minimizers, float).reshape(-1, 2),
      f_min=float(f_min), x0=np.asarray(x0, float), xlim=xlim, ylim=ylim,
      smooth=smooth, info=info or {})


def quadratic(kappa: float = 10.0, angle: float = 0.0) -> Function2D:
  """``f(x) = 0.5 x^T A x`` with eigenvalues ``1`` and ``kappa``.

  ``A = R diag(1, kappa) R^T`` where ``R`` rotates by ``angle`` radians, so the
  condition number is ``kappa``, the gradient is ``kappa``-Lipschitz and ``f``
  is 1-strongly convex. Gradient descent with step ``2 / (1 + kappa)``
  contracts by ``(kappa - 1) / (kappa + 1)`` per step. Minimiser ``0``,
  ``f* = 0``.

  Args:
    kappa: condition number, ``>= 1``.
    angle: rotation of the eigenbasis, in radians.
  """
  _checks.check_number("kappa", kappa, low=1, low_inclusive=True)
  _checks.check_number("angle", angle)
  c, s = math.cos(angle), math.sin(angle)
  r = np.array([[c, -s], [s, c]])
  a = r @ np.diag([1.0, float(kappa)]) @ r.T

  def fn(params):
    return 0.5 * params @ (jnp.asarray(a, params.dtype) @ params)

  return _make("quadratic", fn, [0.0, 0.0], [-2.5, 1.0], (-3.0, 3.0),
               (-3.0, 3.0), info={"A": a, "mu": 1.0, "L": float(kappa)})


def rosenbrock(a: float = 1.0, b: float = 100.0) -> Function2D:
  """Rosenbrock's valley ``(a - x)^2 + b (y - x^2)^2``.

  Minimiser ``(a, a^2)``, ``f* = 0``; the textbook start is ``(-1.2, 1)``.
  """
  _checks.check_number("a", a)
  _checks.check_number("b", b, low=0)

  def fn(params):
    x, y = params[0], params[1]
    return (a - x) ** 2 + b * (y - x ** 2) ** 2

  return _make("rosenbrock", fn, [a, a * a], [-1.2, 1.0], (-2.0, 2.0),
               (-1.0, 3.0))


def beale() -> Function2D:
  """Beale's function.

  ``(1.5 - x + x y)^2 + (2.25 - x + x y^2)^2 + (2.625 - x + x y^3)^2``;
  minimiser ``(3, 0.5)``, ``f* = 0``.
  """

  def fn(params):
    x, y = params[0], params[1]
    return ((1.5 - x + x * y) ** 2 + (2.25 - x + x * y ** 2) ** 2 +
            (2.625 - x + x * y ** 3) ** 2)

  return _make("beale", fn, [3.0, 0.5], [1.0, 1.0], (-4.5, 4.5), (-4.5, 4.5))


def himmelblau() -> Function2D:
  """Himmelblau's function ``(x^2 + y - 11)^2 + (x + y^2 - 7)^2``.

  Four global minimisers, all with ``f* = 0``: ``(3, 2)``, ``(-2.805118,
  3.131313)``, ``(-3.779310, -3.283186)`` and ``(3.584428, -1.848127)``.
  """

  def fn(params):
    x, y = params[0], params[1]
    return (x ** 2 + y - 11) ** 2 + (x + y ** 2 - 7) ** 2

  minimizers = [[3.0, 2.0],
                [-2.805118086952745, 3.131312518250573],
                [-3.7793102533777465, -3.2831859912861696],
                [3.5844283403304917, -1.8481265269644036]]
  return _make("himmelblau", fn, minimizers, [0.0, 0.0], (-5.0, 5.0),
               (-5.0, 5.0))


@jax.custom_jvp
def _abs(t):
  return jnp.abs(t)


@_abs.defjvp
def _abs_jvp(primals, tangents):
  (t,), (dt,) = primals, tangents
  return jnp.abs(t), jnp.sign(t) * dt


def abs_sum() -> Function2D:
  """The non-smooth ``|x| + 2 |y|``; minimiser ``(0, 0)``, ``f* = 0``.

  Kinks lie on both axes; a subgradient method zig-zags across them.
  ``jax.grad`` gives ``(sign(x), 2 sign(y))``, which is 0 at the minimiser.
  """

  def fn(params):
    return _abs(params[0]) + 2 * _abs(params[1])

  return _make("abs_sum", fn, [0.0, 0.0], [2.0, 1.5], (-3.0, 3.0), (-3.0, 3.0),
               smooth=False)
