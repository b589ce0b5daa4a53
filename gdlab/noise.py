"""The gradient noise scale: how large a batch is worth its cost.

For an :class:`~gdlab.objective.Objective` with per-record losses
``l_i(params)`` on ``n`` records, reduction factor ``s`` (1 for ``"mean"``,
``n`` for ``"sum"``) and penalty ``R``, the objective is
``C = s (1/n) sum_i l_i + R``.  With the per-record gradients
``g_i = dl_i/dparams`` (flattened, ``P`` entries):

* ``G = (1/n) sum_i g_i + (1/s) dR/dparams = (1/s) dC/dparams``, the gradient
  of the mean per-record loss.  The penalty is the same for every record: it
  moves ``G`` but carries no noise, so it adds to ``G`` and not to ``Sigma``;
  it is divided by ``s`` so that ``G`` is the objective's own gradient on the
  mean scale (for ``"mean"``, ``G = dC/dparams``).
* ``Sigma = (1/(n - 1)) sum_i (g_i - gbar)(g_i - gbar)^T`` with
  ``gbar = (1/n) sum_i g_i``, the per-record covariance with the unbiased
  normalisation.  It is exact for mini-batches drawn without replacement from
  these ``n`` records (an epoch's shuffle): the mean gradient of a batch of
  ``B`` of them has ``E |g_B - gbar|^2 = tr(Sigma) (1/B - 1/n)``.  Only its
  trace is formed, never ``Sigma``.
* ``B_simple = tr(Sigma) / |G|^2``, the *simple noise scale* of McCandlish
  et al. (2018), their estimate of ``B_noise = tr(H Sigma) / (G^T H G)``
  when the Hessian ``H`` is close to a multiple of the identity.  Under
  their model, the steps ``S`` and records ``E`` that SGD at batch size
  ``B`` (with the best learning rate for that ``B``) needs to reach a given
  loss satisfy ``S = S_min (1 + B_noise / B)`` and
  ``E = E_min (1 + B / B_noise)``: batches well below ``B_noise`` are cheap
  per record and slow per step, batches well above it waste records.

:func:`simple_noise_scale` computes the three on the device from per-record
gradients, ``jax.vmap`` of the engine's gradient on one record
(``"autodiff"``: ``jax.grad``; ``"manual"``: the hand-written backpropagation
of ``gdlab.backprop``, vmapped).  :func:`two_batch_estimate` is the paper's
unbiased estimate from the squared norms of two mean gradients of batch
sizes ``B_small < B_big`` (their appendix A): with ``B_small = 1`` and
``B_big = n`` on the whole set it gives the same ``tr(Sigma)`` and
``|G|^2 - tr(Sigma)/n``, the unbiased estimate of ``|G|^2`` when the ``n``
records are themselves a sample.

Cost: one gradient evaluation per record (``n`` per-record backward passes,
vmapped ``chunk_size`` at a time) plus one for the penalty.  The records are
processed in chunks by ``lax.scan``, so memory holds ``chunk_size x P``
per-record gradients at a time; the chunks' means and centred sums of
squares are merged by Chan et al.'s pairwise update, so the trace is never
the difference of two large, nearly equal sums.  Everything compiles under
``jax.jit`` (``objective``, ``engine`` and ``chunk_size`` static) and no
value leaves the device.

References:
  S. McCandlish, J. Kaplan, D. Amodei and the OpenAI Dota Team, An empirical
  model of large-batch training, arXiv:1812.06162 (2018).
  T. F. Chan, G. H. Golub, R. J. LeVeque, Updating formulae and a pairwise
  algorithm for computing sample variances, COMPSTAT 1982.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from gdlab import _checks
from gdlab import losses as losses_lib
from gdlab import objective as objective_lib

Array = jax.Array


class NoiseScale(NamedTuple):
  """The simple noise scale and what it is made of (scalars, on device).

  Attributes:
    b_simple: ``tr(Sigma) / |G|^2``.
    trace_sigma: ``tr(Sigma)``, the per-record gradient covariance's trace
      (normalised by ``n - 1``).
    grad_sq_norm: ``|G|^2``, the mean gradient's squared norm, penalty
      included.
    n: the number of records, an int32 scalar.
  """
  b_simple: Array
  trace_sigma: Array
  grad_sq_norm: Array
  n: Array


class _Moments(NamedTuple):
  count: Array  # records merged so far
  mean: Array   # (P,): their mean gradient
  m2: Array     # sum over them of |g_i - mean|^2


def _check_objective(objective) -> objective_lib.Objective:
  if not isinstance(objective, objective_lib.Objective):
    raise TypeError(f"objective: expected a gdlab.Objective, whose loss is a "
                    f"sum of per-record losses; got "
                    f"{type(objective).__name__}.")
  return objective


def per_example_grads(objective, params, x: Array, y: Array, *,
                      engine: str = "autodiff"):
  """The gradients ``g_i = dl_i/dparams`` of each record's loss.

  The data loss alone (no penalty, no reduction factor), from the engine's
  gradient on a batch of one record, vmapped over the records.

  Args:
    objective: a ``gdlab.Objective``.
    params: where the gradients are taken.
    x, y: ``n`` records and their labels.
    engine: ``"autodiff"`` or ``"manual"`` (see ``gdlab.objective``).

  Returns:
    A tree shaped like ``params`` with a leading axis of length ``n``.
  """
  objective = _check_objective(objective)
  one = dataclasses.replace(objective, reduction="sum", penalty=None)
  value_and_grad = objective_lib.value_and_grad_fn(one, engine)

  def record_grad(xi, yi):
    return value_and_grad(params, xi[None], yi[None])[1]
  return jax.vmap(record_grad)(x, y)


def _chunk_moments(objective, params, x, y, mask, engine) -> _Moments:
  """Count, mean and centred sum of squares of one chunk's gradients."""
  grads = per_example_grads(objective, params, x, y, engine=engine)
  flat = jax.vmap(lambda g: ravel_pytree(g)[0])(grads)
  mask = mask.astype(flat.dtype)
  count = jnp.sum(mask)
  mean = mask @ flat / jnp.maximum(count, 1)
  m2 = jnp.sum(mask * jnp.sum((flat - mean) ** 2, axis=1))
  return _Moments(count, mean, m2)


def _merge(a: _Moments, b: _Moments) -> _Moments:
  """Chan et al.'s pairwise update of two groups' moments."""
  count = a.count + b.count
  delta = b.mean - a.mean
  share = b.count / jnp.maximum(count, 1)
  return _Moments(count, a.mean + share * delta,
                  a.m2 + b.m2 + jnp.sum(delta ** 2) * a.count * share)


def _chunks(a: Array, size: int, pad: int) -> Array:
  """``a`` with its first ``pad`` records repeated at the end, in chunks."""
  a = jnp.concatenate([a, a[:pad]]) if pad else a
  return a.reshape((-1, size) + a.shape[1:])


def _penalty_grad(objective, params, engine: str):
  """``dR/dparams``: hand-written for ``"manual"``, ``jax.grad`` otherwise."""
  penalty = objective.penalty
  if engine == "manual":
    return losses_lib.penalty_grad(params, penalty)
  return jax.grad(lambda p: losses_lib.penalty_value(p, penalty))(params)


def simple_noise_scale(objective, params, x: Array, y: Array, *,
                       engine: str = "autodiff",
                       chunk_size: int | None = None) -> NoiseScale:
  """The simple noise scale ``B_simple = tr(Sigma) / |G|^2`` at ``params``.

  ``G`` is the gradient of the mean per-record loss plus the penalty's
  gradient over the reduction factor, ``Sigma`` the per-record gradients'
  covariance normalised by ``n - 1`` (see the module docstring).

  Args:
    objective: a ``gdlab.Objective``.
    params: where the gradients are taken.
    x, y: the ``n >= 2`` records (typically the whole training set).
    engine: ``"autodiff"`` or ``"manual"`` (static).
    chunk_size: records whose gradients are held at once (static); ``None``
      for all of them.  The last chunk is padded with masked records.

  Returns:
    A :class:`NoiseScale` of scalars.

  Raises:
    TypeError: for an objective that is not a ``gdlab.Objective``, or a
      ``chunk_size`` that is not an integer.
    ValueError: for an unknown engine, fewer than 2 records, records and
      labels of different lengths, or ``chunk_size < 1``.
  """
  objective = _check_objective(objective)
  _checks.check_choice("engine", engine, objective_lib.ENGINES)
  n = x.shape[0] if x.ndim else 0
  if n < 2:
    raise ValueError(f"x: expected 2 or more records, the covariance of "
                     f"their gradients needs them; got shape {x.shape}.")
  if y.shape[:1] != (n,):
    raise ValueError(f"y: expected one label per record, a leading axis of "
                     f"{n}; got shape {y.shape}.")
  size = n if chunk_size is None else min(
      _checks.check_positive_int("chunk_size", chunk_size), n)
  pad = -n % size
  mask = (jnp.arange(n + pad) < n).reshape(-1, size)
  xs = (_chunks(jnp.asarray(x), size, pad), _chunks(jnp.asarray(y), size, pad),
        mask)

  def step(total: _Moments, chunk):
    return _merge(total, _chunk_moments(objective, params, *chunk,
                                        engine)), None

  flat_params = ravel_pytree(params)[0]
  dtype = flat_params.dtype
  zero = jnp.zeros((), dtype)
  total, _ = jax.lax.scan(
      step, _Moments(zero, jnp.zeros_like(flat_params), zero), xs)
  grad = total.mean
  if objective.penalty is not None:
    scale = 1.0 if objective.reduction == "mean" else float(n)
    penalty = ravel_pytree(_penalty_grad(objective, params, engine))[0]
    grad = grad + penalty.astype(dtype) / scale
  grad_sq_norm = jnp.sum(grad ** 2)
  trace_sigma = total.m2 / (n - 1)
  return NoiseScale(trace_sigma / grad_sq_norm, trace_sigma, grad_sq_norm,
                    jnp.int32(n))


def two_batch_estimate(sq_norm_small: Array, sq_norm_big: Array,
                       b_small: Any, b_big: Any) -> NoiseScale:
  """McCandlish et al.'s unbiased estimates from two batch sizes.

  For mean gradients ``G_B`` of independent batches of ``B`` records,
  ``E |G_B|^2 = |G|^2 + tr(Sigma) / B``; two batch sizes give (their
  appendix A)

      |G|^2     = (B_big |G_big|^2 - B_small |G_small|^2) / (B_big - B_small)
      tr(Sigma) = (|G_small|^2 - |G_big|^2) / (1/B_small - 1/B_big)

  each unbiased, their ratio the noise scale (biased, as a ratio is; the
  paper averages numerator and denominator over many steps before dividing).
  Cheap during data-parallel training: each worker's local gradient and
  the all-reduced one.

  Args:
    sq_norm_small, sq_norm_big: ``|G_small|^2`` and ``|G_big|^2``.
    b_small, b_big: their batch sizes, ``b_small < b_big`` (concrete values
      are checked; traced ones pass).

  Returns:
    A :class:`NoiseScale`; ``n`` is ``b_big``.
  """
  for name, value in (("b_small", b_small), ("b_big", b_big)):
    _checks.check_number(name, value, low=0)
  if (_checks.is_concrete(b_small) and _checks.is_concrete(b_big) and
      not float(b_small) < float(b_big)):
    raise ValueError(f"b_big: expected a batch size above b_small = "
                     f"{b_small!r}; got {b_big!r}.")
  grad_sq_norm = ((b_big * sq_norm_big - b_small * sq_norm_small) /
                  (b_big - b_small))
  trace_sigma = (sq_norm_small - sq_norm_big) / (1 / b_small - 1 / b_big)
  return NoiseScale(trace_sigma / grad_sq_norm, trace_sigma, grad_sq_norm,
                    jnp.asarray(b_big, jnp.int32))
