"""Figures of sweeps: a final metric against a swept value, or per seed.

:func:`sensitivity` draws a final metric against a swept hyperparameter
(repeats as a mean and a band, diverged points marked); :func:`strip` draws
values at categorical points, such as one value per seed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from gdlab.plots._figures import InlineFigure
from gdlab.plots._figures import _check_auto
from gdlab.plots._figures import _geometric
from gdlab.plots._figures import _wants_log
from gdlab.plots._figures import finish
from gdlab.plots._figures import mark_no_data
from gdlab.plots._figures import place_legend
from gdlab.plots._labels import run_colour

def sensitivity(values, finals, path=None, xlabel: str = "hyperparameter",
                ylabel: str = "final loss", log_x="auto",
                groups: Sequence[str] | None = None, log_y="auto", *,
                title: str | None = None) -> Figure | Path:
  """A final metric against a swept hyperparameter.

  Args:
    values: the swept values, shape ``(n,)``.
    finals: the final metric at each value: shape ``(n,)`` for one curve;
      ``(k, n)`` for ``k`` repeats (seeds), drawn as their mean over the
      finite ones with a min-max band, or as ``k`` curves when ``groups``
      names them; or a mapping ``group -> (n,)`` for one curve per group.
      NaN and infinities mean the run diverged: they are drawn as ``x``
      markers at the top edge, labelled "diverged" (with ``j/k`` where only
      ``j`` of ``k`` repeats diverged).
    path: the PNG to write, or None (see the package docstring).
    xlabel: the name of the swept hyperparameter.
    ylabel: the name of the metric.
    log_x: True, False or ``"auto"`` (also log for geometric grids).
    groups: names of the rows of a 2-D ``finals``.
    log_y: True, False or ``"auto"``.
    title: the figure title.

  Returns:
    The figure when ``path`` is None, else ``path``.
  """
  _check_auto("log_x", log_x)
  _check_auto("log_y", log_y)
  values = np.asarray(values, float).ravel()
  order = np.argsort(values)
  values = values[order]
  if isinstance(finals, Mapping):
    curves = {str(k): np.asarray(v, float).ravel() for k, v in finals.items()}
    band = False
  else:
    arr = np.asarray(finals, float)
    arr = arr[None] if arr.ndim == 1 else arr
    if groups is not None and len(groups) != arr.shape[0]:
      raise ValueError(f"groups: expected {arr.shape[0]} names, one per row "
                       f"of finals; got {len(groups)}.")
    band = groups is None and arr.shape[0] > 1
    names = groups if groups is not None else ["final"] * arr.shape[0]
    curves = dict(zip(map(str, names), arr)) if not band else {"all": arr}
  for name, c in curves.items():
    if c.shape[-1] != values.size:
      raise ValueError(f"finals: expected {values.size} values per curve, one "
                       f"per swept value; got {c.shape[-1]} for {name!r}.")
  fig = InlineFigure(figsize=(7, 4.5), layout="constrained")
  ax = fig.add_subplot()
  top = ax.get_xaxis_transform()
  drawn, marked = [], False

  def mark(xs, colour, counts=None):
    nonlocal marked
    ax.plot(xs, np.full(len(xs), 0.96), "x", transform=top, color=colour,
            ms=10, mew=2.5, clip_on=False,
            label=None if marked else "diverged")
    marked = True
    for xv, text in zip(xs, counts or ()):
      if text:
        ax.text(xv, 0.9, text, transform=top, color=colour, ha="center",
                va="top", fontsize="small")

  for i, (name, c) in enumerate(curves.items()):
    c = c[..., order]
    if band:
      finite = np.isfinite(c)
      count = finite.sum(axis=0)
      bad = c.shape[0] - count
      some = count > 0
      mean = np.where(some, np.where(finite, c, 0.0).sum(axis=0) /
                      np.maximum(count, 1), np.nan)
      lo = np.where(some, np.where(finite, c, np.inf).min(axis=0), np.nan)
      hi = np.where(some, np.where(finite, c, -np.inf).max(axis=0), np.nan)
      ax.fill_between(values, lo, hi, color=run_colour(0), alpha=0.25, lw=0,
                      label=f"min-max over {c.shape[0]}")
      ax.plot(values, mean, "o-", color=run_colour(0), ms=4,
              label=f"mean over {c.shape[0]} (finite runs)")
      drawn += [lo[np.isfinite(lo)], hi[np.isfinite(hi)]]
      if bad.any():
        counts = [f"{b}/{c.shape[0]}" if b < c.shape[0] else ""
                  for b in bad[bad > 0]]
        mark(values[bad > 0], "tab:red", counts)
    else:
      ok = np.isfinite(c)
      label = None if len(curves) == 1 and name == "final" else name
      ax.plot(values, np.where(ok, c, np.nan), "o-", color=run_colour(i), ms=4,
              label=label)
      drawn.append(c[ok])
      if (~ok).any():
        mark(values[~ok], run_colour(i) if len(curves) > 1 else "tab:red")
  if not any(d.size for d in drawn):
    mark_no_data(ax, ylabel)
  if log_x is True or (log_x == "auto" and (_wants_log([values], "auto") or
                                             _geometric(values))):
    ax.set_xscale("log")
  if _wants_log(drawn, log_y):
    ax.set_yscale("log")
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title or f"{ylabel} against {xlabel}")
  ax.grid(True, which="major", alpha=0.3)
  place_legend(ax)
  return finish(fig, path)


# The most categories strip() labels on one panel.
MAX_TICK_LABELS = 12
# About the width of a tick label's character, and the gap between labels,
# in points (the default 10-point font).
_CHAR_PT, _GAP_PT = 6.5, 8.0


def _thinned(labels: list[str], width: float) -> list[str]:
  """``labels`` with all but every ``k``-th blank, for a panel ``width``
  inches wide: at most :data:`MAX_TICK_LABELS`, and no more than fit side
  by side."""
  size = max((len(t) for t in labels), default=1) * _CHAR_PT + _GAP_PT
  fit = max(1, min(MAX_TICK_LABELS, int(width * 72 // size)))
  k = -(-len(labels) // fit)
  return [t if i % k == 0 else "" for i, t in enumerate(labels)]


def strip(values, categories, path=None, *, xlabel: str = "seed",
          ylabel: str = "final loss", min_span: float = 0.01,
          title: str | None = None) -> Figure | Path:
  """Values at categorical points (seeds), a panel per group, as dots.

  Each panel shows one group's values at its categories (integer ticks, no
  connecting lines) and its median dashed; past :data:`MAX_TICK_LABELS`
  categories, or more than the panel's width holds, only every ``k``-th
  tick is labelled (every tick is kept), so the labels never run together;
  its title gives the spread
  ``max - min``, absolute and relative to the median.  The y-range covers at
  least ``min_span`` times the median around it, so values equal to
  rounding sit on one line instead of their differences filling the panel.

  Args:
    values: mapping ``group -> (k,)`` values, one per category; NaN and
      infinities (diverged runs) are marked by an ``x`` at the top edge.
    categories: the ``k`` categories (seeds), shown as tick labels.
    path: the PNG to write, or None (see the package docstring).
    xlabel: what the categories are.
    ylabel: what the values are.
    min_span: the least y-range, relative to the median.
    title: the figure title.

  Returns:
    The figure when ``path`` is None, else ``path``.
  """
  groups = {str(k): np.asarray(v, float).ravel() for k, v in values.items()}
  categories = list(categories)
  for name, v in groups.items():
    if v.size != len(categories):
      raise ValueError(f"values: expected {len(categories)} values for "
                       f"{name!r}, one per category; got {v.size}.")
  n = max(len(groups), 1)
  fig = InlineFigure(figsize=(min(4.2 * n, 13), 4.2), layout="constrained")
  width = min(4.2 * n, 13) / n - 0.9  # a panel's inches, less its y axis
  axes = [fig.add_subplot(1, n, i + 1) for i in range(n)]
  pos = np.arange(len(categories))
  for i, (ax, (name, v)) in enumerate(zip(axes, groups.items())):
    ok = np.isfinite(v)
    colour = run_colour(i)
    ax.plot(pos[ok], v[ok], "o", ls="", color=colour, ms=7, mec="k",
            mew=0.6)
    if (~ok).any():
      ax.plot(pos[~ok], np.full((~ok).sum(), 0.97), "x", color="tab:red",
              ms=10, mew=2.5, transform=ax.get_xaxis_transform(),
              clip_on=False, gid="diverged")
    if ok.any():
      med = float(np.median(v[ok]))
      spread = float(v[ok].max() - v[ok].min())
      half = max(0.6 * spread, 0.5 * min_span * abs(med)) or 1.0
      centre = 0.5 * float(v[ok].max() + v[ok].min())
      ax.set_ylim(centre - half, centre + half)
      ax.axhline(med, color=colour, ls="--", lw=1, alpha=0.7)
      rel = (" (identical)" if spread == 0 else
             f" ({spread / abs(med):.2%} of the median)" if med else "")
      ax.set_title(f"{name}: spread {spread:.2g}{rel}", fontsize="medium")
    else:
      mark_no_data(ax, ylabel)
      ax.set_title(name, fontsize="medium")
    ax.set_xticks(pos, _thinned([str(c) for c in categories], width))
    ax.set_xlim(-0.6, len(categories) - 0.4)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.grid(True, axis="y", alpha=0.3)
  fig.suptitle(title or f"{ylabel} at each {xlabel}")
  return finish(fig, path)
