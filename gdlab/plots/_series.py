"""A run's series as a figure draws it: placed on an x axis, thinned, smoothed.

:func:`series` places a metric on the x axes of the package docstring;
:func:`envelope` thins a long series without changing its picture;
:func:`ema` smooths the noisy per-step values of a stochastic run
(:func:`stochastic`) over :func:`ema_span` steps, longer the noisier it
is (:func:`noise_level`).
"""

from __future__ import annotations

import itertools

import numpy as np

from gdlab.plots._labels import _config

X_AXES = ("step", "epoch", "grad_evals", "fun_evals", "time")


def _diverged(run) -> bool:
  summary = getattr(run, "summary", None) or {}
  return summary.get("stop_reason") == "diverged"


def shares_program(run) -> bool:
  """Whether ``run`` ran as one of several vmapped runs of one program.

  Such runs (a sweep's groups, ``sweep_group_size`` in their summary) share
  one wall time: a time axis says nothing about any one of them.
  """
  summary = getattr(run, "summary", None) or {}
  return int(summary.get("sweep_group_size") or 1) > 1


def series(run, x: str, y: str) -> tuple[np.ndarray, np.ndarray] | None:
  """``(xs, ys)`` of metric ``y`` against ``x`` for one run, or None.

  ``y`` is looked up in the run's per-step metrics first, then in its
  per-epoch ones; see the package docstring for how ``x`` is formed.  Returns
  None when the run lacks ``y`` or what ``x`` needs.
  """
  if x not in X_AXES:
    raise ValueError(f"x: expected one of {', '.join(map(repr, X_AXES))}; "
                     f"got {x!r}.")
  steps = dict(getattr(run, "steps", None) or {})
  epochs = dict(getattr(run, "epochs", None) or {})
  col = lambda d, k: np.asarray(d[k], float)
  if y in steps and y != "step":
    ys = col(steps, y)
    k = col(steps, "step") if "step" in steps else np.arange(1.0, len(ys) + 1)
    if x == "step":
      return k, ys
    if x in ("grad_evals", "fun_evals"):
      per = col(steps, x) if x in steps else np.ones_like(ys)
      return np.cumsum(np.nan_to_num(per)), ys
    if x in epochs and "step" in epochs and len(epochs["step"]):
      return np.interp(k, np.r_[0.0, col(epochs, "step")],
                       np.r_[0.0, col(epochs, x)]), ys
    return None
  if y in epochs:
    ys = col(epochs, y)
    if x in epochs:
      return col(epochs, x), ys
    if x == "epoch":
      return np.arange(1.0, len(ys) + 1), ys
  return None


MAX_POINTS = 4000


def envelope(xs: np.ndarray, ys: np.ndarray,
             max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
  """At most about ``max_points`` points of a long series, drawn alike.

  The series is cut into ``max_points // 2`` runs of consecutive points and
  each keeps its lowest and its highest point (in their order), with the
  first and last points of the series: at a figure's resolution the line
  covers the same pixels (a 57,520-step SGD loss is a band either way), at a
  fraction of the drawing time.  Shorter series come back unchanged.
  """
  n = len(ys)
  if n <= max_points:
    return xs, ys
  size = -(-n // (max_points // 2))
  buckets = -(-n // size)  # every bucket holds at least one point
  padded = np.full(buckets * size, np.nan)
  padded[:n] = ys
  rows = padded.reshape(buckets, size)
  base = np.arange(buckets) * size
  keep = np.unique(np.concatenate([[0, n - 1],
                                   base + np.nanargmin(rows, axis=1),
                                   base + np.nanargmax(rows, axis=1)]))
  return xs[keep], ys[keep]


def ema(ys: np.ndarray, span: int) -> np.ndarray:
  """The bias-corrected exponential moving average of ``ys``.

  ``m_k = (1 - a) m_{k-1} + a y_k`` with ``m_0 = 0`` and ``a = 2 / (span +
  1)``, returned as ``m_k / (1 - (1 - a)^k)`` (Adam's correction), so the
  first values are the mean of the values so far rather than pulled to 0.
  """
  ys = np.asarray(ys, float)
  a = 2.0 / (max(int(span), 1) + 1.0)
  b = 1.0 - a
  # The recurrence itself, one value at a time: exact, and about 20 ms for
  # 10^5 steps (scipy.signal.lfilter is faster, but importing scipy.signal
  # takes about 1 s, longer than a run's figures take to draw).
  m = np.fromiter(itertools.accumulate(a * ys, lambda m, v: b * m + v),
                  float, len(ys))
  return m / -np.expm1(np.arange(1, len(ys) + 1) * np.log1p(-a))


MIN_SPAN = 10
# The relative noise an EMA leaves on a stochastic series: its span is
# chosen so that the spread of the batch values about their mean, shrunk by
# about sqrt(span), is at most this fraction of the mean.
NOISE_TARGET = 0.1


def noise_level(ys: np.ndarray, block: int = 20) -> float:
  """The spread of a noisy series about its local mean, relative to it.

  The median, over blocks of ``block`` consecutive finite values, of their
  standard deviation over the magnitude of their mean: a batch loss's
  coefficient of variation (0 for a smooth series, about 1.3 for losses
  scattered by a factor ``e`` either way, 3 for batch-1 losses).  The
  blocks are short, so a trend adds little; non-finite values are skipped.
  """
  ys = np.asarray(ys, float)
  ys = ys[np.isfinite(ys)]
  if ys.size < 2:
    return 0.0
  block = min(block, ys.size)
  rows = ys[:ys.size // block * block].reshape(-1, block)
  mean = np.abs(rows.mean(axis=1))
  spread = rows.std(axis=1)
  with np.errstate(divide="ignore", invalid="ignore"):
    rel = np.where(mean > 0, spread / mean, np.where(spread > 0, np.inf, 0.0))
  return float(np.median(rel))


def ema_span(run, n: int, ys: np.ndarray | None = None) -> int:
  """The EMA span of a run's per-step series of ``n`` values.

  The largest of three lengths:

  * one epoch's steps (the average of an epoch's batch losses estimates the
    training loss), at most ``n // 100`` (a long run keeps its shape);
  * with the values ``ys``, the span that leaves a relative noise of
    :data:`NOISE_TARGET`: ``(c / NOISE_TARGET) ** 2`` for the noise level
    ``c`` (:func:`noise_level`; an EMA of span ``s`` shrinks white noise
    by about ``sqrt(s)``), at most ``n // 10`` so the curve keeps its
    shape: a 400-step run of batch-1 SGD (``c`` about 3) gets 40, one of
    16,000 steps with ``c`` about 1.5, 225;
  * :data:`MIN_SPAN`.
  """
  epochs = dict(getattr(run, "epochs", None) or {})
  per_epoch = n
  if "step" in epochs and len(epochs["step"]):
    per_epoch = float(np.asarray(epochs["step"], float)[-1]) / len(
        epochs["step"])
  span = int(max(MIN_SPAN, min(per_epoch, n // 100)))
  if ys is not None:
    c = noise_level(ys)
    noisy = (c / NOISE_TARGET) ** 2 if np.isfinite(c) else np.inf
    span = max(span, int(np.ceil(min(noisy, n // 10))))
  return span


STOCHASTIC = ("sgd", "minibatch")


def stochastic(run, ys: np.ndarray) -> bool:
  """Whether a run's per-step values are noisy batch estimates.

  A run whose config names its regime (``train.regime.kind``) is
  stochastic for ``sgd`` and ``minibatch``; otherwise a series of 200 or
  more values whose consecutive changes switch sign at more than 40% of the
  steps is taken for one.
  """
  kind = _config(run).get("train.regime.kind", _config(run).get(
      "train.regime"))
  if isinstance(kind, str):
    return kind in STOCHASTIC
  d = np.diff(ys[np.isfinite(ys)])
  return bool(d.size >= 200 and np.mean(np.sign(d[1:]) * np.sign(d[:-1]) < 0)
              > 0.4)
