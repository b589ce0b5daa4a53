"""The surface of a 2-D test function, with optimiser paths over it."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib import colors as mcolors
from matplotlib import ticker
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from gdlab import data
from gdlab.plots._figures import InlineFigure
from gdlab.plots._figures import finish

# Colours that stay visible on the viridis surface map.
_PATH_COLOURS = ("tab:red", "white", "tab:orange", "magenta", "cyan",
                 "tab:pink", "black", "lime")


# The paths' zorder (over the contours' 1 and 2); the minimisers' stars sit
# just under them.
_PATH_Z = 4
_STAR = {"marker": "*", "ms": 13, "mfc": "none", "mec": "gold", "mew": 1.8}


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
  hollow gold stars under the paths (a path ending on a minimiser, or
  zig-zagging around it, stays in view).  With ``three_d``, a 3-D view of
  the same surface and paths sits on the right.

  Args:
    function: a :class:`gdlab.data.functions.Function2D` or its registry name.
    trajectories: a mapping ``name -> (T, 2)`` array of iterates, one array,
      or None.  Non-finite iterates are dropped.
    path: the PNG to write, or None (see the package docstring).
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
                    mec="k", mew=0.4, zorder=_PATH_Z,
                    label=f"{name} ({len(t)} iterates)")
    ax.plot(*t[0], "o", ms=9, mfc="none", mec=colour, mew=2.2,
            zorder=_PATH_Z + 1, gid="start")
    ax.plot(*t[-1], "s", ms=8, mfc=colour, mec="k", mew=1.0,
            zorder=_PATH_Z + 1, gid="end")
    handles.append(line)
  # Under the paths, hollow: a path that ends on a minimiser, or zig-zags
  # around it, shows through the star.
  m = np.asarray(function.minimizers, float).reshape(-1, 2)
  ax.plot(m[:, 0], m[:, 1], **_STAR, ls="", zorder=_PATH_Z - 1,
          gid="minimiser")
  handles += [
      Line2D([], [], marker="o", ls="", ms=8, mfc="none", mec="0.2", mew=2,
             label="start"),
      Line2D([], [], marker="s", ls="", ms=7, mfc="0.6", mec="k",
             label="end"),
      Line2D([], [], **_STAR, ls="",
             label="minimiser" if len(m) == 1 else "minimisers")]
  ax.set_xlim(*function.xlim)
  ax.set_ylim(*function.ylim)
  ax.set_xlabel("x")
  ax.set_ylabel("y")
  # Below the map (the colour bar holds its right): paths are light on a
  # grey ground, as on the map.
  ax.legend(handles=handles, fontsize="small", loc="upper center",
            bbox_to_anchor=(0.5, -0.12), ncols=min(len(handles), 3),
            facecolor="0.8", framealpha=1.0)
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
