"""Generic figures of runs, sweeps and 2-D loss surfaces.

Contract: every figure function draws one figure and takes a ``path``:

* ``path=None`` (the default): nothing is written; the function returns the
  figure, an :class:`InlineFigure`, which a notebook shows inline as a PNG.
* ``path`` given: the figure is written as a PNG to ``path`` (creating the
  folder) and the function returns ``path`` as a ``pathlib.Path``, the link
  a report embeds.  The figure itself is dropped: reports write dozens of
  figures and none stays in memory.

To both show and keep a figure, draw it without a path and write it with
:func:`save_png`.  Figures are ``matplotlib.figure.Figure`` objects rendered
by the Agg canvas; pyplot is never imported.  So the module works headless
(no display, no GUI toolkit) and leaves the process's backend and pyplot's
figure registry as they were: importing it in a notebook does not change how
the notebook shows its own figures, a figure is never shown twice (once by
pyplot at the end of a cell, once as the value), and there is no figure to
close: one nobody holds is freed like any other object.

Figures that belong to one analysis live with it in ``gdlab.analyses``
(the subgradient method's ``f_best - f*``, the gradient-check table), follow
the same contract and use the helpers here (:class:`InlineFigure`,
:func:`run_colour`, :func:`named_runs`, :func:`place_legend`,
:func:`mark_no_data`, :func:`finish`, :func:`save_png`).

Inputs:

* A *run* is a :class:`gdlab.results.RunRecord` or anything with ``steps`` and
  ``epochs`` dicts of 1-D arrays (a :class:`gdlab.history.History` works) and,
  optionally, a ``summary`` dict.  ``runs`` is a mapping ``name -> run`` or a
  sequence of records (named by their ``name``).
* Per-step metrics are placed on the x axis by their ``step`` column (1-based;
  ``1..n`` when absent); ``x="grad_evals"`` is the cumulative sum of the
  per-step ``grad_evals`` (1 a step when absent); ``x="epoch"`` and
  ``x="time"`` place step ``k`` by linear interpolation of the epochs'
  ``(step, epoch)`` and ``(step, time)`` columns, so step ``k`` of epoch ``e``
  sits at ``e - 1 + (k - S_{e-1}) / (S_e - S_{e-1})``.  Per-epoch metrics use
  the epochs' own columns.
* Non-finite values are skipped, not drawn: NaN marks a metric that does not
  apply (no test set), an infinity a diverged step.  A run whose summary says
  ``stop_reason == "diverged"``, or whose series ends in an infinity, gets an
  ``x`` on its last finite point and "(diverged)" in its legend entry.
* ``log_y="auto"`` (and ``log_x``) picks a log axis when the finite values are
  all positive and span more than two decades.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib import colormaps
from matplotlib import colors as mcolors
from matplotlib import ticker
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from gdlab import data

X_AXES = ("step", "epoch", "grad_evals", "fun_evals", "time")
LABELS = {
    "step": "step",
    "epoch": "epoch",
    "grad_evals": "gradient evaluations",
    "fun_evals": "function evaluations",
    "time": "wall time (s)",
    "loss": "loss",
    "train_loss": "training loss",
    "test_loss": "test loss",
    "train_accuracy": "training accuracy",
    "test_accuracy": "test accuracy",
    "grad_norm": "gradient norm",
    "update_norm": "update norm",
    "step_size": "step size",
}
DPI = 120
_LINESTYLES = ("-", "--", ":", "-.")
# Colours that stay visible on the viridis surface map.
_PATH_COLOURS = ("tab:red", "white", "tab:orange", "magenta", "cyan",
                 "tab:pink", "black", "lime")


def _label(key: str) -> str:
  return LABELS.get(key, key.replace("_", " "))


def run_colour(i: int):
  """The colour of the ``i``-th run of a figure."""
  return colormaps["tab10" if i < 10 else "tab20"](i % 20)


def named_runs(runs) -> dict[str, Any]:
  """``runs`` as a dict ``name -> run`` (see the module docstring)."""
  if isinstance(runs, Mapping):
    return dict(runs)
  if isinstance(runs, Sequence) and not isinstance(runs, str):
    return {getattr(r, "name", f"run {i}"): r for i, r in enumerate(runs)}
  raise TypeError(f"runs: expected a mapping name -> run or a sequence of "
                  f"run records; got {type(runs).__name__}.")


def _check_auto(name: str, value) -> None:
  if value not in (True, False, "auto"):
    raise ValueError(f"{name}: expected True, False or 'auto'; got {value!r}.")


def _wants_log(arrays, setting, decades: float = 2.0) -> bool:
  """The log-axis rule of the module docstring, or ``setting`` if a bool."""
  if setting != "auto":
    return bool(setting)
  vals = np.concatenate([np.ravel(np.asarray(a, float)) for a in arrays]
                        or [np.zeros(0)])
  vals = vals[np.isfinite(vals)]
  return bool(vals.size and vals.min() > 0 and
              vals.max() / vals.min() > 10 ** decades)


class InlineFigure(Figure):
  """A figure that a notebook shows as the PNG :func:`save_png` would write.

  IPython shows a plain ``Figure`` as an image only once pyplot's inline
  backend is active; this one needs no pyplot.
  """

  def _repr_png_(self) -> bytes:
    buffer = io.BytesIO()
    self.savefig(buffer, dpi=DPI, format="png")
    return buffer.getvalue()


def save_png(fig: Figure, path) -> Path:
  """Writes ``fig`` as a PNG to ``path`` (creating the folder); returns it."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=DPI, format="png")
  return path


def finish(fig: Figure, path) -> Figure | Path:
  """``fig`` when ``path`` is None, else :func:`save_png` ``(fig, path)``."""
  return fig if path is None else save_png(fig, path)


def place_legend(ax) -> None:
  """A legend inside the axes, or to their right when it is long.

  Past 40 entries (a large sweep) a legend would crowd out the axes; the
  figure then says how many runs it overlays instead.
  """
  handles = ax.get_legend_handles_labels()[0]
  if len(handles) > 40:
    ax.text(0.99, 0.99, f"{len(handles)} runs", ha="right", va="top",
            transform=ax.transAxes, fontsize="small", color="gray")
  elif len(handles) > 8:
    ax.legend(fontsize="x-small" if len(handles) > 16 else "small",
              loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0,
              ncols=1 + len(handles) // 20)
  elif handles:
    ax.legend(fontsize="small")


def mark_no_data(ax, what: str) -> None:
  """Says in the axes that ``what`` has no finite values to draw."""
  ax.text(0.5, 0.5, f"no finite values of {what}", ha="center", va="center",
          transform=ax.transAxes, color="gray")


def _diverged(run) -> bool:
  summary = getattr(run, "summary", None) or {}
  return summary.get("stop_reason") == "diverged"


def series(run, x: str, y: str) -> tuple[np.ndarray, np.ndarray] | None:
  """``(xs, ys)`` of metric ``y`` against ``x`` for one run, or None.

  ``y`` is looked up in the run's per-step metrics first, then in its
  per-epoch ones; see the module docstring for how ``x`` is formed.  Returns
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


def loss_curves(runs, path=None, x: str = "step",
                y: str | Sequence[str] = "loss", log_y="auto", *,
                title: str | None = None,
                ylabel: str | None = None) -> Figure | Path:
  """Overlays a metric of several runs against steps, epochs, work or time.

  Args:
    runs: mapping ``name -> run`` (see the module docstring).
    path: the PNG to write, or None (see the module docstring).
    x: ``"step"``, ``"epoch"``, ``"grad_evals"``, ``"fun_evals"`` or
      ``"time"``.
    y: a per-step metric (``"loss"``, ``"grad_norm"``, ``"step_size"``, ...)
      or a per-epoch one (``"train_loss"``, ``"test_loss"``,
      ``"test_accuracy"``, ...); a sequence of them draws each run's metrics
      in its colour with different line styles.
    log_y: True, False or ``"auto"``.
    title: the figure title (default: ``"<y> against <x>"``).
    ylabel: the y-axis label (default: from ``y``).

  Returns:
    The figure when ``path`` is None, else ``path``.
  """
  _check_auto("log_y", log_y)
  names = (y,) if isinstance(y, str) else tuple(y)
  fig = InlineFigure(figsize=(7.5, 4.5), layout="constrained")
  ax = fig.add_subplot()
  drawn = []
  for i, (name, run) in enumerate(named_runs(runs).items()):
    for j, key in enumerate(names):
      s = series(run, x, key)
      if s is None:
        continue
      xs, ys = s
      ok = np.isfinite(xs) & np.isfinite(ys)
      if not ok.any():
        continue
      diverged = _diverged(run) or bool(len(ys) and np.isinf(ys[-1]))
      label = name if len(names) == 1 else f"{name}: {_label(key)}"
      label += " (diverged)" if diverged else ""
      few = ok.sum() <= 30
      ax.plot(*envelope(xs[ok], ys[ok]), _LINESTYLES[j % 4],
              color=run_colour(i), lw=1.5, label=label,
              marker="o" if few else None, ms=3)
      if diverged:
        ax.plot(xs[ok][-1], ys[ok][-1], "x", color=run_colour(i), ms=11, mew=2.5)
      drawn.append(ys[ok])
  if not drawn:
    mark_no_data(ax, ", ".join(names))
  if _wants_log(drawn, log_y):
    ax.set_yscale("log")
  ax.set_xlabel(_label(x))
  ax.set_ylabel(ylabel or (_label(names[0]) if len(names) == 1 else "value"))
  ax.set_title(title or f"{' and '.join(map(_label, names))} against "
               f"{_label(x)}")
  ax.grid(True, which="major", alpha=0.3)
  place_legend(ax)
  return finish(fig, path)


def step_sizes(runs, path=None, log_y="auto", *,
               title: str = "step size") -> Figure | Path:
  """The step size of every update against steps (log axis when it helps).

  Returns the figure when ``path`` is None, else ``path``.
  """
  return loss_curves(runs, path, x="step", y="step_size", log_y=log_y,
                     title=title)


def _geometric(values: np.ndarray) -> bool:
  v = np.sort(values[np.isfinite(values)])
  if v.size < 3 or v[0] <= 0:
    return False
  ratios = v[1:] / v[:-1]
  return bool(ratios.min() > 1.5 and ratios.max() / ratios.min() < 1.5)


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
    path: the PNG to write, or None (see the module docstring).
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


def _paths(trajectories) -> dict[str, np.ndarray]:
  if trajectories is None:
    return {}
  if isinstance(trajectories, Mapping):
    items = trajectories.items()
  else:
    items = [("path", trajectories)]
  out = {}
  for name, t in items:
    t = np.asarray(t, float)
    if t.ndim != 2 or t.shape[1] != 2:
      raise ValueError(f"trajectories: expected arrays of shape (T, 2); got "
                       f"shape {t.shape} for {name!r}.")
    out[str(name)] = t[np.all(np.isfinite(t), axis=1)]
  return out


def surface(function, trajectories=None, path=None,
            levels: int | Sequence[float] = 30, log_levels: bool = True, *,
            num: int = 200, three_d: bool = False,
            title: str | None = None) -> Figure | Path:
  """The surface ``z = f(x, y)`` of a 2-D test function with optimiser paths.

  A filled contour map over the function's window (``function.grid(num)``),
  each trajectory drawn as a line with a marker every few iterates, its start
  as a hollow circle and its end as a square, and the known minimisers as
  stars.  With ``three_d``, a 3-D view of the same surface and paths sits on
  the right.

  Args:
    function: a :class:`gdlab.data.functions.Function2D` or its registry name.
    trajectories: a mapping ``name -> (T, 2)`` array of iterates, one array,
      or None.  Non-finite iterates are dropped.
    path: the PNG to write, or None (see the module docstring).
    levels: the number of contour levels, or the levels themselves (values of
      the plotted quantity).
    log_levels: space the levels geometrically and colour on a log scale,
      plotting ``f - m`` with ``m = min(f*, min f on the grid)``; this shows
      the floor of narrow valleys such as Rosenbrock's.
    num: grid points per axis.
    three_d: add the 3-D view (of ``log10(f - m)`` when ``log_levels``).
    title: the figure title (default: the function's name).

  Returns:
    The figure when ``path`` is None, else ``path``.
  """
  if isinstance(function, str):
    function = data.get_function(function)
  xs, ys, zs = (np.asarray(a, float) for a in function.grid(num))
  paths = _paths(trajectories)
  finite = zs[np.isfinite(zs)]
  if not finite.size:
    raise ValueError(f"function: {function.name!r} has no finite value on "
                     f"its window {function.xlim} x {function.ylim}.")
  base = 0.0
  if log_levels:
    f_min = function.f_min if math.isfinite(function.f_min) else finite.min()
    base = min(f_min, float(finite.min()))
  zplot = zs - base
  top = float(np.nanmax(zplot[np.isfinite(zplot)]))
  norm = None
  if log_levels:
    positive = zplot[np.isfinite(zplot) & (zplot > 0)]
    low = max(float(positive.min()) if positive.size else top * 1e-8,
              top * 1e-8)
    lev = (np.geomspace(low, top, int(levels)) if np.isscalar(levels)
           else np.asarray(levels, float))
    zplot = np.clip(zplot, lev[0], lev[-1])
    norm = mcolors.LogNorm(lev[0], lev[-1])
  else:
    lev = levels if np.isscalar(levels) else np.asarray(levels, float)
  zlabel = ("f(x, y)" if base == 0 else "f(x, y) - f*"
            if base == function.f_min else "f(x, y) - min f")

  fig = InlineFigure(figsize=(13, 5.2) if three_d else (7, 5.6),
                     layout="constrained")
  ax = fig.add_subplot(1, 2 if three_d else 1, 1)
  cf = ax.contourf(xs, ys, zplot, levels=lev, norm=norm, cmap="viridis")
  ax.contour(xs, ys, zplot, levels=cf.levels[::3], norm=norm, colors="k",
             linewidths=0.4, alpha=0.35)
  fig.colorbar(cf, ax=ax, label=zlabel + (" (log scale)" if log_levels else ""),
               ticks=ticker.LogLocator() if log_levels else None,
               format=ticker.LogFormatterSciNotation() if log_levels else None)
  handles = []
  for i, (name, t) in enumerate(paths.items()):
    if not len(t):
      continue
    colour = _PATH_COLOURS[i % len(_PATH_COLOURS)]
    line, = ax.plot(t[:, 0], t[:, 1], "-", marker="o", ms=3.5, lw=1.6,
                    markevery=max(1, len(t) // 40), color=colour,
                    mec="k", mew=0.4, label=f"{name} ({len(t)} iterates)")
    ax.plot(*t[0], "o", ms=9, mfc="none", mec=colour, mew=2.2)
    ax.plot(*t[-1], "s", ms=8, mfc=colour, mec="k", mew=1.0)
    handles.append(line)
  m = np.asarray(function.minimizers, float).reshape(-1, 2)
  ax.plot(m[:, 0], m[:, 1], "*", ms=17, mfc="gold", mec="k", mew=1.0, ls="")
  handles += [
      Line2D([], [], marker="o", ls="", ms=8, mfc="none", mec="0.2", mew=2,
             label="start"),
      Line2D([], [], marker="s", ls="", ms=7, mfc="0.6", mec="k",
             label="end"),
      Line2D([], [], marker="*", ls="", ms=14, mfc="gold", mec="k",
             label="minimiser" if len(m) == 1 else "minimisers")]
  ax.set_xlim(*function.xlim)
  ax.set_ylim(*function.ylim)
  ax.set_xlabel("x")
  ax.set_ylabel("y")
  ax.legend(handles=handles, fontsize="small", loc="best", framealpha=0.9,
            facecolor="0.8")
  ax.set_title(title or f"{function.name}: contours of {zlabel}")
  if three_d:
    _surface_3d(fig, function, xs, ys, zplot, paths, base, log_levels, zlabel)
  return finish(fig, path)


def _surface_3d(fig, function, xs, ys, zplot, paths, base, log, zlabel):
  """The right-hand 3-D panel of :func:`surface`."""
  ax = fig.add_subplot(1, 2, 2, projection="3d")
  tf = np.log10 if log else (lambda z: z)
  low = float(np.nanmin(zplot))
  ax.plot_surface(xs, ys, tf(zplot), cmap="viridis", rcount=60, ccount=60,
                  linewidth=0, antialiased=True, alpha=0.75)
  fn = jax.vmap(function.fn)
  for i, (name, t) in enumerate(paths.items()):
    if not len(t):
      continue
    inside = ((t[:, 0] >= function.xlim[0]) & (t[:, 0] <= function.xlim[1]) &
              (t[:, 1] >= function.ylim[0]) & (t[:, 1] <= function.ylim[1]))
    t = t[inside]
    if not len(t):
      continue
    z = np.asarray(fn(jnp.asarray(t)), float) - base
    z = tf(np.maximum(z, low) if log else z)
    colour = _PATH_COLOURS[i % len(_PATH_COLOURS)]
    ax.plot(t[:, 0], t[:, 1], z, "-o", ms=2.5, color=colour, lw=1.6,
            markevery=max(1, len(t) // 40), zorder=10)
  ax.set_xlabel("x")
  ax.set_ylabel("y")
  ax.set_zlabel(f"log10({zlabel})" if log else zlabel)
  ax.view_init(elev=35, azim=-120)
  ax.set_title("surface z = f(x, y)")
