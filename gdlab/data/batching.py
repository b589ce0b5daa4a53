"""Minibatch indices for one epoch, built on device.

Contract: :func:`epoch_batches` draws a fresh ``jax.random.permutation`` of
``range(n)`` and cuts it into rows of ``batch_size`` indices. ``n``,
``batch_size`` and ``remainder`` are static (Python values fixed at trace
time), so the result has a fixed shape and the function can be called inside
``jax.jit``, ``lax.scan`` or ``vmap`` over keys. When ``batch_size`` does not
divide ``n``, the last partial batch is handled by the ``remainder`` rule:

* ``"drop"``: it is dropped, giving ``n // batch_size`` full batches. Some
  records are skipped in each epoch, but with a fresh permutation every epoch
  each record is used ``n // batch_size * batch_size / n`` times per epoch in
  expectation and every batch has the same size.
* ``"pad"``: it is filled up to ``batch_size`` and a mask marks the padding,
  giving ``ceil(n / batch_size)`` batches in which every record appears
  exactly once. Padding slots hold valid indices (the first records of the
  permutation again), so gathering ``x[indices]`` is always safe; weight
  per-record losses by the mask, e.g. ``sum(mask * loss) / sum(mask)``.

The mask has the default float dtype and is all ones under ``"drop"``.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from gdlab import _checks

REMAINDERS = ("drop", "pad")
REGIMES = ("full_batch", "sgd", "minibatch")


@dataclasses.dataclass(frozen=True)
class Regime:
  """How records are grouped into updates.

  * ``"full_batch"``: one update per epoch on all ``n`` records (the gradient
    is their mean or sum, as the objective's reduction says);
  * ``"sgd"``: one record per update, ``n`` updates per epoch, records
    reshuffled every epoch;
  * ``"minibatch"``: ``batch_size`` records per update, reshuffled every
    epoch; the last partial batch is dropped (``remainder="drop"``) or padded
    and masked out (``remainder="pad"``; see the module docstring).
  """
  kind: str = "full_batch"
  batch_size: int | None = None
  remainder: str = "drop"

  def __post_init__(self):
    _checks.check_choice("regime", self.kind, REGIMES)
    _checks.check_choice("remainder", self.remainder, REMAINDERS)
    if self.kind == "minibatch":
      if self.batch_size is None:
        raise ValueError("batch_size: the 'minibatch' regime needs a batch "
                         "size (an integer >= 1); got None.")
      _checks.check_positive_int("batch_size", self.batch_size)

  def size(self, n: int) -> int:
    """Records per update for a training set of ``n`` records."""
    if self.kind == "full_batch":
      return n
    if self.kind == "sgd":
      return 1
    if self.batch_size > n:
      raise ValueError(f"batch_size: expected an integer in [1, n] with "
                       f"n={n} training records; got {self.batch_size}.")
    return self.batch_size

  def steps_per_epoch(self, n: int) -> int:
    """Updates per epoch for a training set of ``n`` records."""
    if self.kind == "full_batch":
      return 1
    return num_batches(n, self.size(n), self.remainder)

  @property
  def padded(self) -> bool:
    """Whether batches carry a mask (mini-batches with ``remainder="pad"``)."""
    return self.kind == "minibatch" and self.remainder == "pad"


def num_batches(n: int, batch_size: int, remainder: str = "drop") -> int:
  """Number of batches per epoch under the ``remainder`` rule."""
  _check(n, batch_size, remainder)
  if remainder == "drop":
    return n // batch_size
  return -(-n // batch_size)


def _check(n, batch_size, remainder) -> None:
  _checks.check_positive_int("n", n)
  _checks.check_positive_int("batch_size", batch_size)
  if batch_size > n:
    raise ValueError(f"batch_size: expected an integer in [1, n] with n={n}; "
                     f"got {batch_size}.")
  _checks.check_choice("remainder", remainder, REMAINDERS)


@functools.partial(jax.jit, static_argnames=("n", "batch_size", "remainder"))
def epoch_batches(key: jax.Array, n: int, batch_size: int,
                  remainder: str = "drop") -> tuple[jax.Array, jax.Array]:
  """Shuffled minibatch indices and a validity mask for one epoch.

  Args:
    key: ``jax.random`` key; use a fresh one every epoch.
    n: number of records (static).
    batch_size: records per batch, in ``[1, n]`` (static).
    remainder: ``"drop"`` or ``"pad"``, see the module docstring (static).

  Returns:
    ``(indices, mask)``: ``indices`` is ``int32`` of shape
    ``(num_batches, batch_size)`` with values in ``[0, n)``; ``mask`` has the
    same shape, 1 for a real record and 0 for padding.
  """
  num = num_batches(n, batch_size, remainder)
  perm = jax.random.permutation(key, n).astype(jnp.int32)
  size = num * batch_size
  if size <= n:
    indices = perm[:size]
    mask = jnp.ones((size,))
  else:
    indices = jnp.concatenate([perm, perm[:size - n]])
    mask = (jnp.arange(size) < n).astype(jnp.result_type(float))
  return indices.reshape(num, batch_size), mask.reshape(num, batch_size)
