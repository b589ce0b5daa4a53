"""The figure itself: how it is shown and written, its legend and its axes.

Every figure of :mod:`gdlab.plots` is an :class:`InlineFigure` drawn by the
Agg canvas and handed to :func:`finish`: returned when no path is given,
else written by :func:`save_png`.  The helpers here place a legend outside
the axes, mark a diverged run or an empty panel, and pick log scales and
y-limits (the rules of the package docstring).
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np
from matplotlib import transforms
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from gdlab.plots import _cache

DPI = 120


@functools.cache
def _mathtext_parsers() -> dict:
  """The mathtext parser that each kind of renderer shares (see
  :class:`_Canvas`).  Behind a cached function, not a global: the figure
  cache's key reads the globals that a figure's code names, and must not
  depend on what this process has drawn before."""
  return {}


class _Canvas(FigureCanvasAgg):
  """The Agg canvas, with one mathtext parser for all figures.

  Agg gives every renderer a parser of its own, so the parser's cache of
  ``$...$`` strings starts empty with each figure, and a log axis labels its
  ticks in mathtext (``10^{-3}``), which pyparsing reads slowly.  Shared,
  each label is parsed once per process: a figure with a log axis is drawn
  about 15% faster, to the same pixels (the parser's cache is keyed by the
  string, resolution and font).
  """

  def get_renderer(self):
    renderer = super().get_renderer()
    parser = getattr(renderer, "mathtext_parser", None)
    if parser is not None:
      renderer.mathtext_parser = _mathtext_parsers().setdefault(
          type(renderer), parser)
    return renderer


class InlineFigure(Figure):
  """A figure that a notebook shows as the PNG :func:`save_png` would write.

  IPython shows a plain ``Figure`` as an image only once pyplot's inline
  backend is active; this one needs no pyplot.  It draws on the Agg canvas
  (:class:`_Canvas`).
  """

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    _Canvas(self)

  def _repr_png_(self) -> bytes:
    buffer = io.BytesIO()
    self.savefig(buffer, dpi=DPI, format="png")
    _keep_layout(self)
    return buffer.getvalue()


def _keep_layout(fig: Figure) -> None:
  """Keeps the layout of ``fig``'s first rendering (``savefig`` lays it out).

  The constrained layout moves a little at every rendering when a legend
  sits outside the axes; fixed after the first, every rendering (the file,
  the notebook's inline image) is the same picture.
  """
  if fig.get_layout_engine() is not None:
    fig.set_layout_engine("none")


def save_png(fig: Figure, path) -> Path:
  """Writes ``fig`` as a PNG to ``path`` (creating the folder); returns it."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=DPI, format="png")
  _cache.counts["drawn"] += 1
  _keep_layout(fig)
  return path


def finish(fig: Figure, path) -> Figure | Path:
  """``fig`` when ``path`` is None, else ``fig`` written to ``path``.

  For the figures gdlab draws itself (the figure functions, the reports and
  the analyses): a figure identical to one written before, here or by
  another process, is copied from the figure cache (:mod:`_cache`) rather
  than drawn.  ``GDLAB_FIGURE_CACHE=off`` draws every figure.
  """
  if path is None:
    return fig
  path = Path(path)
  entry = _cache.entry_for(fig, DPI)
  data = None if entry is None else _cache.read(entry)
  if data is None:
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=DPI, format="png")
    _cache.counts["drawn"] += 1
    _keep_layout(fig)
    data = buffer.getvalue()
    if entry is not None:
      _cache.write(entry, data)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(data)
  return path


def _wrap(label: str, width: int = 26) -> str:
  """A long legend label on several lines, broken before its parentheses.

  A label longer than ``width`` is broken before a parenthesis where the
  line so far and the parenthesis would not fit on one line of ``width``:
  ``name (learning_rate=0.7) (diverged, last 9e+06)`` on three lines.
  """
  if len(label) <= width or " (" not in label:
    return label
  head, *parts = label.split(" (")
  lines = [head]
  for part in parts:
    if len(lines[-1]) + len(part) + 2 <= width:
      lines[-1] += " (" + part
    else:
      lines.append("(" + part)
  return "\n".join(lines)


def place_legend(ax, *, below: bool = False, **kwargs) -> None:
  """A legend outside the axes, on their right, so it never covers data.

  With ``below``, under the axes instead (where a colour bar holds their
  right).

  Past 40 entries (a large sweep) a legend would crowd out the axes; the
  figure then says how many runs it overlays instead.  Labels longer than
  26 characters break before their parentheses (:func:`_wrap`).
  ``kwargs`` go to ``ax.legend`` (``handles``, ``labels``, ``title``, ...).
  """
  handles, labels = ax.get_legend_handles_labels()
  if kwargs.get("handles") is not None:
    handles = list(kwargs.pop("handles"))
    labels = [h.get_label() for h in handles]
  labels = [_wrap(t) for t in kwargs.pop("labels", None) or labels]
  if len(handles) > 40:
    ax.text(0.99, 0.99, f"{len(handles)} runs", ha="right", va="top",
            transform=ax.transAxes, fontsize="small", color="gray")
  elif handles:
    where = ({"loc": "upper center", "bbox_to_anchor": (0.5, -0.14),
              "ncols": min(len(handles), 3)} if below else
             {"loc": "upper left", "bbox_to_anchor": (1.02, 1.0),
              "ncols": 1 + len(handles) // 20})
    ax.legend(handles, labels, **{
        "fontsize": "x-small" if len(handles) > 16 else "small",
        "borderaxespad": 0, **where, **kwargs})


def mark_no_data(ax, what: str) -> None:
  """Says in the axes that ``what`` has no finite values to draw."""
  ax.text(0.5, 0.5, f"no finite values of {what}", ha="center", va="center",
          transform=ax.transAxes, color="gray")


def mark_diverged(ax, x: float, y: float, colour, text: bool = True,
                  row: int = 0) -> bool:
  """Marks where a diverged run left: an ``x`` at its last finite point.

  A point above the axes is marked by a triangle just inside their top edge
  (clear of the title), so the blow-up no longer sets the y-range.  With
  ``text``, the mark is labelled "diverged" (with the value, for a point
  above the axes) beside it; ``row`` moves that text down by rows, so the
  labels of several runs do not overwrite each other.  A figure with a
  legend says it there instead (``text=False``): a label inside the axes
  can cover other runs' data.

  Returns:
    True when the point was above the axes (marked by the triangle).
  """
  top = ax.get_ylim()[1]
  above = bool(y > top)
  if above:
    # Half the marker's height below the top edge: inside the axes.
    where = transforms.offset_copy(ax.get_xaxis_transform(), fig=ax.figure,
                                   y=-6, units="points")
    ax.plot(x, 1.0, "^", transform=where, color=colour, ms=9, mec="k",
            mew=0.8, clip_on=False, zorder=5, gid="diverged")
    if text:
      ax.annotate(f"diverged ({y:.2g})", (x, 1.0),
                  xycoords=ax.get_xaxis_transform(),
                  xytext=(8, -2 - 12 * row), textcoords="offset points",
                  ha="left", va="top", fontsize="small", color=colour)
  else:
    ax.plot(x, y, "x", color=colour, ms=11, mew=2.5, zorder=5,
            gid="diverged")
    if text:
      ax.annotate("diverged", (x, y), xytext=(6, 4),
                  textcoords="offset points", fontsize="small",
                  color=colour)
  return above


def _check_auto(name: str, value) -> None:
  if value not in (True, False, "auto"):
    raise ValueError(f"{name}: expected True, False or 'auto'; got {value!r}.")


def _wants_log(arrays, setting, decades: float = 1.0) -> bool:
  """The log-axis rule of the package docstring, or ``setting`` if a bool."""
  if setting != "auto":
    return bool(setting)
  vals = np.concatenate([np.ravel(np.asarray(a, float)) for a in arrays]
                        or [np.zeros(0)])
  vals = vals[np.isfinite(vals)]
  return bool(vals.size and vals.min() > 0 and
              vals.max() / vals.min() > 10 ** decades)


def _geometric(values: np.ndarray) -> bool:
  v = np.sort(values[np.isfinite(values)])
  if v.size < 3 or v[0] <= 0:
    return False
  ratios = v[1:] / v[:-1]
  return bool(ratios.min() > 1.5 and ratios.max() / ratios.min() < 1.5)


def _margin(lo: float, hi: float, log: bool) -> tuple[float, float]:
  if log:
    pad = (hi / lo) ** 0.06 if hi > lo else 2.0
    return lo / pad, hi * pad
  pad = 0.06 * (hi - lo) if hi > lo else 0.1 * abs(hi) or 1.0
  return lo - pad, hi + pad


def _finite(arrays, log: bool) -> np.ndarray:
  vals = np.concatenate([np.ravel(a) for a in arrays] or [np.zeros(0)])
  return vals[np.isfinite(vals) & ((vals > 0) if log else True)]


def _limits(kept, blown, log: bool) -> tuple[float, float] | None:
  """y-limits: the top from the ``kept`` arrays (all, if none), the bottom
  from every array, with a margin."""
  top = _finite(kept or blown, log)
  every = _finite(list(kept) + list(blown), log)
  if not top.size:
    return None
  return _margin(float(every.min()), float(top.max()), log)
