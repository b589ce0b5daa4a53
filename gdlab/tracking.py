"""Curvature (and other costly quantities) logged during training.

``gdlab.fit(..., track=...)`` computes the quantities of a :class:`Track`
at the parameters of the epochs ``every``, ``2 every``, ... (and of the
epoch where the run stops) and logs them as columns of the history's epoch
rows, named after the quantities (``sharpness``, ``hessian_trace``,
``noise_scale``); the other epochs log NaN.  The quantities are evaluated on device, by one jitted
function of ``(params, x, y)`` per structure (objective, track, engine),
kept like the loop's compiled programs, between the chunks of training: the
driver cuts the chunk size to a divisor of ``every``
(:func:`chunk_epochs`), so that every tracked epoch ends a chunk, and the
compiled training chunk is the same with or without tracking.  A run that
tracks nothing pays nothing.

The quantities are those of :data:`METRICS`, each a function
``fn(objective, params, x, y, *, engine, track, key) -> scalar``:

=================  ==========================================================
``sharpness``      ``lambda_max`` of the Hessian of the training objective,
                   by Lanczos with ``track.num_iters`` steps
                   (``gdlab.curvature.sharpness``)
``hessian_trace``  Hutchinson's estimate of ``tr H`` with
                   ``track.num_samples`` probes
                   (``gdlab.curvature.hessian_trace``)
``noise_scale``    the simple gradient noise scale ``tr(Sigma) / |G|^2``
                   of the per-record gradients
                   (``gdlab.noise.simple_noise_scale``)
=================  ==========================================================

Adding a quantity is one entry of :data:`METRICS`.  They are computed on the
whole training set, or on a fixed subset of ``track.subset`` records (the
same rows at every evaluation, drawn once from ``track.seed``), with the
run's gradient engine unless ``track.engine`` names another; the random
vectors (Lanczos's start, Hutchinson's probes) come from ``track.seed``, the
same at every evaluation.

Gradient descent with step ``eta`` on a quadratic is stable only while
``lambda_max < 2 / eta``; Cohen et al. (2021) observe that full-batch
training drives the sharpness up to about ``2 / eta`` and keeps it there,
the *edge of stability* (``experiments/edge_of_stability.yaml``).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdlab import _checks
from gdlab import curvature
from gdlab import noise
from gdlab import stopping

Array = jax.Array
ENGINES = ("autodiff", "manual")
DEFAULT_NUM_SAMPLES = 10


def _sharpness(objective, params, x, y, *, engine: str, track: "Track",
               key: Array) -> Array:
  return curvature.sharpness(objective, params, x, y,
                             num_iters=track.num_iters, engine=engine,
                             key=key)


def _hessian_trace(objective, params, x, y, *, engine: str, track: "Track",
                   key: Array) -> Array:
  return curvature.hessian_trace(objective, params, x, y,
                                 num_samples=track.num_samples, key=key,
                                 engine=engine)


def _noise_scale(objective, params, x, y, *, engine: str, track: "Track",
                 key: Array) -> Array:
  del track, key  # deterministic, no settings
  return noise.simple_noise_scale(objective, params, x, y,
                                  engine=engine).b_simple


# name -> fn(objective, params, x, y, *, engine, track, key) -> scalar.
METRICS: dict[str, Callable[..., Array]] = {
    "sharpness": _sharpness,
    "hessian_trace": _hessian_trace,
    "noise_scale": _noise_scale,
}


def _names() -> str:
  return ", ".join(map(repr, METRICS))


@dataclasses.dataclass(frozen=True)
class Track:
  """What to track during training, and how (hashable: a program's key).

  Attributes:
    metrics: names of :data:`METRICS`, logged as epoch columns.
    every: track every this many epochs (and where the run stops).  The
      run's chunk length is cut to a divisor of ``every``
      (:func:`chunk_epochs`): a multiple of the chunk keeps the untracked
      run's chunks, a prime ``every`` above it gives one-epoch chunks.
    subset: evaluate on a fixed subset of this many training records;
      ``None`` (or at least the training set's size) for all of them.
    num_iters: Lanczos steps of ``sharpness``.
    num_samples: Hutchinson probes of ``hessian_trace``.
    engine: ``"autodiff"`` or ``"manual"``; ``None`` for the run's engine.
    seed: draws the subset and the random vectors (a fixed integer).
  """
  metrics: tuple[str, ...] = ("sharpness",)
  every: int = 1
  subset: int | None = None
  num_iters: int = curvature.DEFAULT_NUM_ITERS
  num_samples: int = DEFAULT_NUM_SAMPLES
  engine: str | None = None
  seed: int = 0

  def __post_init__(self):
    metrics = self.metrics
    if isinstance(metrics, str) or not isinstance(metrics, (tuple, list)):
      raise ValueError(f"metrics: expected a list of names of "
                       f"gdlab.tracking.METRICS; got {metrics!r}; allowed: "
                       f"{_names()}.")
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
      raise ValueError(f"metrics: expected names of gdlab.tracking.METRICS; "
                       f"got unknown {', '.join(map(repr, unknown))}; "
                       f"allowed: {_names()}.")
    if not metrics or len(set(metrics)) != len(metrics):
      raise ValueError(f"metrics: expected one or more distinct names; got "
                       f"{list(metrics)!r}; allowed: {_names()}.")
    object.__setattr__(self, "metrics", tuple(metrics))
    for name in ("every", "num_iters", "num_samples"):
      _checks.check_positive_int(name, getattr(self, name))
    if self.subset is not None:
      _checks.check_positive_int("subset", self.subset)
    if self.engine is not None:
      _checks.check_choice("engine", self.engine, ENGINES)
    if (not isinstance(self.seed, int) or isinstance(self.seed, bool) or
        self.seed < 0):
      raise ValueError(f"seed: expected an integer >= 0; got "
                       f"{self.seed!r}.")


def as_track(track) -> Track | None:
  """A :class:`Track` from a ``Track``, a metric name or a list of them.

  ``None`` and an empty list track nothing (``None``).

  Raises:
    TypeError: for anything else; ValueError: for an unknown metric.
  """
  if track is None or isinstance(track, Track):
    return track
  if isinstance(track, str):
    return Track(metrics=(track,))
  if isinstance(track, (tuple, list)):
    return Track(metrics=tuple(track)) if track else None
  raise TypeError(f"track: expected a gdlab.tracking.Track, a metric name "
                  f"or a list of them ({_names()}), or None; got "
                  f"{type(track).__name__}.")


def chunk_epochs(chunk: int, every: int) -> int:
  """The largest chunk size at most ``chunk`` that divides ``every``.

  Chunks of that many epochs end at every multiple of ``every``.
  """
  return max(d for d in range(1, min(chunk, every) + 1) if every % d == 0)


def subset_rows(n: int, subset: int | None, seed: int) -> np.ndarray | None:
  """The fixed rows evaluated: ``subset`` of ``n``, sorted; ``None`` for all."""
  if subset is None or subset >= n:
    return None
  rows = np.random.default_rng(seed).choice(n, size=subset, replace=False)
  return np.sort(rows)


def measure(objective, track: Track, engine: str, params, x: Array,
            y: Array) -> dict[str, Array]:
  """The quantities of ``track`` at ``params`` on ``(x, y)``: pure, jittable.

  Each metric gets its own key, split from ``track.seed``; the values are
  scalars in the parameters' float dtype.
  """
  dtype = jax.tree_util.tree_leaves(params)[0].dtype
  keys = jax.random.split(jax.random.PRNGKey(track.seed), len(track.metrics))
  return {name: jnp.asarray(METRICS[name](objective, params, x, y,
                                          engine=engine, track=track,
                                          key=k), dtype)
          for name, k in zip(track.metrics, keys)}


_PROGRAMS: collections.OrderedDict = collections.OrderedDict()
MAX_PROGRAMS = 32


def program(objective, track: Track, engine: str) -> Callable[..., Any]:
  """``(params, x, y) -> {name: value}``, jitted once per structure and kept
  (``jax.jit`` compiles it once per argument shape)."""
  # How often and on which records do not change the computation: runs that
  # differ only in them share one program.
  track = dataclasses.replace(track, every=1, subset=None)
  key = (objective, track, engine)
  fn = _PROGRAMS.pop(key, None)
  if fn is None:
    fn = jax.jit(functools.partial(measure, objective, track, engine))
  _PROGRAMS[key] = fn
  while len(_PROGRAMS) > MAX_PROGRAMS:
    _PROGRAMS.popitem(last=False)
  return fn


def clear_programs() -> None:
  """Forgets the kept programs."""
  _PROGRAMS.clear()


class Tracker(NamedTuple):
  """A run's tracking: its :class:`Track`, program and evaluation set."""
  track: Track
  program: Callable[..., Any]
  x: Array
  y: Array


def tracker(track: Track, objective, x_train: Array, y_train: Array,
            engine: str) -> Tracker:
  """The :class:`Tracker` of a run trained with ``engine`` on the arrays."""
  rows = subset_rows(int(x_train.shape[0]), track.subset, track.seed)
  x, y = (x_train, y_train) if rows is None else (x_train[rows],
                                                  y_train[rows])
  return Tracker(track, program(objective, track, track.engine or engine),
                 x, y)


def record(t: Tracker, carry, epochs: dict) -> dict:
  """A chunk's epoch rows (host arrays) with the tracked columns added.

  The carry is the one after the chunk: its parameters are those of the
  chunk's last active epoch, which gets the values when its number is a
  multiple of ``every`` or the run stopped there; every other row is NaN.
  """
  active = np.asarray(epochs["active"], bool)
  columns = {name: np.full(active.shape, np.nan) for name in t.track.metrics}
  if active.any():
    last = int(np.flatnonzero(active)[-1])
    stopped = int(np.asarray(jax.device_get(carry.stop.reason))) != (
        stopping.RUNNING)
    if int(np.asarray(epochs["epoch"])[last]) % t.track.every == 0 or stopped:
      values = jax.device_get(t.program(carry.params, t.x, t.y))
      for name, value in values.items():
        columns[name][last] = float(value)
  return {**epochs, **columns}


def pad_history(history, track: Track) -> None:
  """Gives a history logged without some tracked column NaN rows for it
  (in place), so that later chunks append to equal-length columns."""
  rows = len(history.epochs.get("epoch", ()))
  for name in track.metrics:
    if name not in history.epochs:
      history.epochs[name] = np.full((rows,), np.nan)


__all__ = ["METRICS", "Track", "Tracker", "as_track", "chunk_epochs",
           "clear_programs", "measure", "pad_history", "program", "record",
           "subset_rows", "tracker"]
