"""Synthetic data sets drawn from a seed.

Contract: every generator takes the total number of records ``n`` (before the
train/test split), a ``noise`` level, a ``seed`` (an ``int`` or a
``jax.random`` key) and a ``test_fraction`` in ``(0, 1)``, and returns a
:class:`~gdlab.data.Dataset`. Sampling follows :func:`gdlab.data.dataset.rng`:
NumPy draws on the host seeded from the key, then the arrays go to the device.
Classification sets have balanced classes (class sizes differ by at most one)
and a stratified split. The parameters that generated the data are in
``Dataset.truth``. Label shapes and dtypes follow :mod:`gdlab.data.dataset`.
"""

from __future__ import annotations

import math

import numpy as np

from gdlab import _checks
from gdlab.data.dataset import (BINARY_LABELS, Dataset, build, check_common,
                                rng)


def _classes(n: int, n_classes: int) -> np.ndarray:
  return np.arange(n) % n_classes


def _classification(gen, x, y, *, name, n_classes, test_fraction, labels,
                    truth=None) -> Dataset:
  task = "binary" if n_classes == 2 else "multiclass"
  return build(gen, x, y, name=name, task=task, n_classes=n_classes,
               test_fraction=test_fraction, labels=labels, truth=truth)


def linear(n: int = 200, d: int = 5, k: int = 1, *, noise: float = 0.1,
           bias: bool = True, seed=0, test_fraction: float = 0.2) -> Dataset:
  """Linear regression ``y = x w + b + noise * eps``.

  ``x ~ N(0, I_d)``, ``w ~ N(0, 1)`` entrywise, ``b ~ N(0, 1)`` (zero when
  ``bias=False``) and ``eps ~ N(0, I_k)``.

  Args:
    n: number of records.
    d: number of features.
    k: number of targets.
    noise: standard deviation of the additive Gaussian noise.
    bias: draw a nonzero intercept.
    seed: ``int`` or ``jax.random`` key.
    test_fraction: share of records held out for testing.

  Returns:
    A regression set with ``y`` of shape ``(n, k)`` and
    ``truth = {"w": (d, k), "b": (k,)}``.
  """
  check_common(n, noise, test_fraction)
  _checks.check_positive_int("d", d)
  _checks.check_positive_int("k", k)
  gen = rng(seed)
  x = gen.standard_normal((n, d))
  w = gen.standard_normal((d, k))
  b = gen.standard_normal(k) if bias else np.zeros(k)
  y = x @ w + b + noise * gen.standard_normal((n, k))
  return build(gen, x, y, name="linear", task="regression",
               test_fraction=test_fraction, truth={"w": w, "b": b})


def sparse_linear(n: int = 100, d: int = 50, n_nonzero: int = 5, *,
                  noise: float = 0.1, seed=0,
                  test_fraction: float = 0.2) -> Dataset:
  """Sparse regression for LASSO: ``y = x w + noise * eps``, no intercept.

  ``w`` has ``n_nonzero`` nonzero entries at random positions, with random
  signs and magnitudes uniform in ``[1, 2]``, so the support is well separated
  from zero. ``x ~ N(0, I_d)`` and ``eps ~ N(0, 1)``. ``d`` may exceed ``n``.

  Args:
    n: number of records.
    d: number of features.
    n_nonzero: size of the support of ``w``, in ``[1, d]``.
    noise: standard deviation of the additive Gaussian noise.
    seed: ``int`` or ``jax.random`` key.
    test_fraction: share of records held out for testing.

  Returns:
    A regression set with ``y`` of shape ``(n, 1)`` and
    ``truth = {"w": (d, 1), "b": (1,) zeros, "support": bool (d,)}``.
  """
  check_common(n, noise, test_fraction)
  _checks.check_positive_int("d", d)
  _checks.check_positive_int("n_nonzero", n_nonzero)
  if n_nonzero > d:
    raise ValueError(f"n_nonzero: expected an integer in [1, d={d}]; "
                     f"got {n_nonzero}.")
  gen = rng(seed)
  x = gen.standard_normal((n, d))
  support = np.zeros(d, bool)
  support[gen.permutation(d)[:n_nonzero]] = True
  magnitude = gen.uniform(1.0, 2.0, d)
  sign = np.where(gen.random(d) < 0.5, -1.0, 1.0)
  w = np.where(support, sign * magnitude, 0.0)[:, None]
  y = x @ w + noise * gen.standard_normal((n, 1))
  truth = {"w": w, "b": np.zeros(1), "support": support}
  return build(gen, x, y, name="sparse_linear", task="regression",
               test_fraction=test_fraction, truth=truth)


def xor(n: int = 200, *, noise: float = 0.25, seed=0,
        test_fraction: float = 0.2, labels: str = "01") -> Dataset:
  """XOR: four Gaussian clusters at ``(+-1, +-1)``.

  A record is of class 1 when its cluster's coordinates have different signs
  (``sign(x1) != sign(x2)`` at the centre), so no line separates the classes.

  Args:
    n: number of records.
    noise: standard deviation of each cluster.
    seed: ``int`` or ``jax.random`` key.
    test_fraction: share of records held out for testing.
    labels: ``"01"`` or ``"pm1"``.

  Returns:
    A binary set with ``x`` of shape ``(n, 2)``.
  """
  check_common(n, noise, test_fraction)
  _checks.check_choice("labels", labels, BINARY_LABELS)
  gen = rng(seed)
  corner = _classes(n, 4)
  centres = np.array([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]])
  x = centres[corner] + noise * gen.standard_normal((n, 2))
  y = (corner >= 2).astype(float)
  return _classification(gen, x, y, name="xor", n_classes=2, labels=labels,
                         test_fraction=test_fraction)


def moons(n: int = 200, *, noise: float = 0.1, seed=0,
          test_fraction: float = 0.2, labels: str = "01") -> Dataset:
  """Two interleaving half circles (as ``sklearn.datasets.make_moons``).

  Class 0 lies on ``(cos t, sin t)`` and class 1 on ``(1 - cos t,
  0.5 - sin t)``, ``t ~ U(0, pi)``, plus Gaussian noise of std ``noise``.

  Args:
    n: number of records.
    noise: standard deviation of the Gaussian noise added to the inputs.
    seed: ``int`` or ``jax.random`` key.
    test_fraction: share of records held out for testing.
    labels: ``"01"`` or ``"pm1"``.

  Returns:
    A binary set with ``x`` of shape ``(n, 2)``.
  """
  check_common(n, noise, test_fraction)
  _checks.check_choice("labels", labels, BINARY_LABELS)
  gen = rng(seed)
  y = _classes(n, 2)
  t = gen.uniform(0.0, math.pi, n)
  upper = np.stack([np.cos(t), np.sin(t)], axis=1)
  lower = np.stack([1 - np.cos(t), 0.5 - np.sin(t)], axis=1)
  x = np.where(y[:, None] == 0, upper, lower)
  x = x + noise * gen.standard_normal((n, 2))
  return _classification(gen, x, y.astype(float), name="moons",
                         n_classes=2, labels=labels,
                         test_fraction=test_fraction)


def spirals(n: int = 300, n_arms: int = 3, *, noise: float = 0.1,
            turns: float = 1.0, seed=0, test_fraction: float = 0.2,
            labels: str = "01") -> Dataset:
  """Interleaved spiral arms, one class per arm.

  Arm ``j`` holds ``r (cos a, sin a)`` with ``r ~ U(0, 1)`` and angle
  ``a = 2 pi (turns r + j / n_arms)``, plus Gaussian noise of std ``noise``.

  Args:
    n: number of records.
    n_arms: number of arms (classes), at least 2.
    noise: standard deviation of the Gaussian noise added to the inputs.
    turns: how many full turns each arm makes.
    seed: ``int`` or ``jax.random`` key.
    test_fraction: share of records held out for testing.
    labels: ``"01"`` or ``"pm1"``, used when ``n_arms == 2``.

  Returns:
    A binary set when ``n_arms == 2``, else a multiclass one; ``x`` is
    ``(n, 2)``.
  """
  check_common(n, noise, test_fraction)
  _checks.check_choice("labels", labels, BINARY_LABELS)
  _checks.check_positive_int("n_arms", n_arms, minimum=2)
  _checks.check_number("turns", turns, low=0)
  gen = rng(seed)
  y = _classes(n, n_arms)
  r = gen.random(n)
  a = 2 * math.pi * (turns * r + y / n_arms)
  x = r[:, None] * np.stack([np.cos(a), np.sin(a)], axis=1)
  x = x + noise * gen.standard_normal((n, 2))
  return _classification(gen, x, y, name="spirals", n_classes=n_arms,
                         labels=labels, test_fraction=test_fraction)


def blobs(n: int = 300, n_classes: int = 3, d: int = 2, *, noise: float = 1.0,
          spread: float = 5.0, seed=0, test_fraction: float = 0.2,
          labels: str = "01") -> Dataset:
  """Isotropic Gaussian clusters, one per class.

  Centres are drawn uniformly from ``[-spread, spread]^d``; each record is its
  class centre plus Gaussian noise of std ``noise``.

  Args:
    n: number of records.
    n_classes: number of clusters (classes), at least 2.
    d: number of features.
    noise: standard deviation of each cluster.
    spread: half-width of the box the centres are drawn from.
    seed: ``int`` or ``jax.random`` key.
    test_fraction: share of records held out for testing.
    labels: ``"01"`` or ``"pm1"``, used when ``n_classes == 2``.

  Returns:
    A binary set when ``n_classes == 2``, else a multiclass one, with
    ``truth = {"centers": (n_classes, d)}``.
  """
  check_common(n, noise, test_fraction)
  _checks.check_choice("labels", labels, BINARY_LABELS)
  _checks.check_positive_int("n_classes", n_classes, minimum=2)
  _checks.check_positive_int("d", d)
  _checks.check_number("spread", spread, low=0)
  gen = rng(seed)
  centers = gen.uniform(-spread, spread, (n_classes, d))
  y = _classes(n, n_classes)
  x = centers[y] + noise * gen.standard_normal((n, d))
  return _classification(gen, x, y, name="blobs", n_classes=n_classes,
                         labels=labels, test_fraction=test_fraction,
                         truth={"centers": centers})
