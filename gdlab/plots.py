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
:func:`run_colour`, :func:`run_colours` and :func:`colour_bar`,
:func:`run_labels`, :func:`named_runs`, :func:`place_legend`,
:func:`mark_diverged`, :func:`mark_no_data`, :func:`ema`, :func:`finish`,
:func:`save_png`).

Figures read at a glance: every axes has a title and labelled axes; legends
sit outside the data; a sweep is coloured by its swept value with a colour
bar; a diverged run is marked where it left instead of setting the
y-range; stochastic per-step losses are an EMA over a faint raw trace;
categories (seeds) are categorical axes (:func:`strip`).

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
  ``x`` on its last finite point (a triangle on the top edge when that point
  is above the y-range the other runs set) and "(diverged)" in its legend
  entry.
* Legends sit outside the axes, on their right (:func:`place_legend`).
* The quantities tracked during training (``gdlab.tracking``: ``sharpness``,
  ``hessian_trace``, ``noise_scale``) are epoch columns, NaN on the epochs
  not tracked; :func:`tracked` draws them beside the training loss.
* ``log_y="auto"`` (and ``log_x``) picks a log axis when the finite values are
  all positive and span more than a decade.
"""

from __future__ import annotations

import io
import math
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib import cm
from matplotlib import colormaps
from matplotlib import colors as mcolors
from matplotlib import ticker
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from gdlab import data
from gdlab import results
from gdlab import tracking

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


def _wants_log(arrays, setting, decades: float = 1.0) -> bool:
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
    _settle(self)
    self.savefig(buffer, dpi=DPI, format="png")
    return buffer.getvalue()


def _settle(fig: Figure) -> None:
  """Lays ``fig`` out once and keeps that layout.

  The constrained layout moves a little at every rendering when a legend
  sits outside the axes; fixed after the first, every rendering (the file,
  the notebook's inline image) is the same picture.
  """
  if fig.get_layout_engine() is not None:
    fig.canvas.draw()
    fig.set_layout_engine("none")


def save_png(fig: Figure, path) -> Path:
  """Writes ``fig`` as a PNG to ``path`` (creating the folder); returns it."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=DPI, format="png")
  # The file is the first rendering: its layout is kept (as by _settle)
  # without drawing the figure a second time.
  if fig.get_layout_engine() is not None:
    fig.set_layout_engine("none")
  return path


def finish(fig: Figure, path) -> Figure | Path:
  """``fig`` when ``path`` is None, else :func:`save_png` ``(fig, path)``."""
  return fig if path is None else save_png(fig, path)


def _wrap(label: str, width: int = 26) -> str:
  """A long legend label on two lines, broken before its parenthesis."""
  head, sep, tail = label.partition(" (")
  return f"{head}\n({tail}" if sep and len(label) > width else label


def place_legend(ax, *, below: bool = False, **kwargs) -> None:
  """A legend outside the axes, on their right, so it never covers data.

  With ``below``, under the axes instead (where a colour bar holds their
  right).

  Past 40 entries (a large sweep) a legend would crowd out the axes; the
  figure then says how many runs it overlays instead.  Labels longer than
  26 characters break before their parenthesis.  ``kwargs`` go to
  ``ax.legend`` (``handles``, ``labels``, ``title``, ...).
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


def _number(v) -> bool:
  return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


def _config(run) -> dict[str, Any]:
  config = getattr(run, "config", None)
  return results.flatten(config) if isinstance(config, Mapping) else {}


def differing(runs) -> list[str]:
  """Dotted config keys (but ``name``) whose values differ between ``runs``.

  As in a report's comparison table: a run without a ``config`` dict, or
  a key its config lacks, counts as None.  Keys of the optimizer come
  first, then the others in first-seen order.
  """
  configs = [_config(r) for r in named_runs(runs).values()]
  if len(configs) < 2:
    return []
  keys = [k for k in dict.fromkeys(k for c in configs for k in c)
          if k != "name" and any(c.get(k) != configs[0].get(k)
                                 for c in configs)]
  return sorted(keys, key=lambda k: not k.startswith("optimizer."))


def _short(key: str) -> str:
  return key.rsplit(".", 1)[-1]


def _fmt(v) -> str:
  return f"{v:g}" if isinstance(v, float) else str(v)


# The config sections whose numbers are hyperparameters worth a label.
HYPERPARAMETERS = ("optimizer.", "loss.", "model.", "train.regime.", "seed")


def _shown(values: list) -> list[bool]:
  """Which runs' values of one key a label shows.

  All of them where the values are all distinct or take three or more
  values; else only those that differ from the most common value (a line
  search's ``initial_step`` beside the runs that ignore it).
  """
  reprs = [repr(v) for v in values]
  counts = {r: reprs.count(r) for r in reprs}
  if len(counts) >= 3 or max(counts.values()) == 1:
    return [True] * len(values)
  mode = max(counts, key=counts.get)
  return [r != mode for r in reprs]


def run_labels(runs, max_keys: int = 3) -> dict[str, str]:
  """Legend labels: each run's name and the hyperparameters that differ.

  The numeric config values of :data:`HYPERPARAMETERS` that differ
  (:func:`differing`, at most ``max_keys`` keys, see :func:`_shown`) are
  added as ``name (learning_rate=0.2, batch_size=32)``, except those the
  name already spells (a sweep's ``run[learning_rate=0.2]``).
  """
  runs = named_runs(runs)
  configs = {n: _config(r) for n, r in runs.items()}
  keys = [k for k in differing(runs) if k.startswith(HYPERPARAMETERS) and
          any(_number(c.get(k)) for c in configs.values())][:max_keys]
  parts = {n: [] for n in configs}
  for k in keys:
    values = [c.get(k) for c in configs.values()]
    for (name, c), show in zip(configs.items(), _shown(values)):
      text = f"{_short(k)}={_fmt(c.get(k))}"
      if show and _number(c.get(k)) and text not in name:
        parts[name].append(text)
  return {n: f"{n} ({', '.join(p)})" if p else n for n, p in parts.items()}


class Colours(NamedTuple):
  """How a figure colours its runs: by run, or by a swept value.

  ``colours`` maps each run's name to its colour; ``key`` is the swept
  config key (None for colours by run) and ``mappable`` the
  ``ScalarMappable`` of its colour bar.
  """
  colours: dict[str, Any]
  key: str | None = None
  mappable: cm.ScalarMappable | None = None
  values: np.ndarray | None = None


# A sequential map, without viridis' palest yellows (they vanish on white).
_SWEEP_MAP = mcolors.ListedColormap(colormaps["viridis"](
    np.linspace(0.0, 0.88, 256)), name="viridis_dark")


def run_colours(runs, max_legend: int = 8) -> Colours:
  """Colours by run (:func:`run_colour`), or by the swept value of a sweep.

  Past ``max_legend`` runs, when a numeric config key (not the seed)
  differs and every run has a number there, runs are coloured by that value
  on a sequential map, on a log scale for a geometric grid or one spanning
  more than two decades, with a colour bar instead of a legend; the runs of
  one value (its seeds) share its colour.
  """
  runs = named_runs(runs)
  if len(runs) > max_legend:
    configs = {n: _config(r) for n, r in runs.items()}
    for key in differing(runs):
      vals = [c.get(key) for c in configs.values()]
      if _short(key) == "seed" or not all(_number(v) for v in vals):
        continue
      v = np.asarray(vals, float)
      uniq = np.unique(v)
      log = bool(uniq[0] > 0 and (_geometric(uniq) or
                                  uniq[-1] / uniq[0] > 100))
      norm = (mcolors.LogNorm if log else mcolors.Normalize)(uniq[0],
                                                            uniq[-1])
      mappable = cm.ScalarMappable(norm=norm, cmap=_SWEEP_MAP)
      return Colours({n: mappable.to_rgba(x) for n, x in zip(runs, v)},
                     key, mappable, uniq)
  return Colours({n: run_colour(i) for i, n in enumerate(runs)})


def colour_bar(fig, ax, colours: Colours) -> None:
  """The colour bar of a figure coloured by a swept value (else nothing)."""
  if colours.mappable is None:
    return
  bar = fig.colorbar(colours.mappable, ax=ax, pad=0.02,
                     label=_label(_short(colours.key)))
  if len(colours.values) <= 12:
    bar.set_ticks(colours.values, labels=[f"{v:g}" for v in colours.values])
    bar.minorticks_off()


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


def ema(ys: np.ndarray, span: int) -> np.ndarray:
  """The bias-corrected exponential moving average of ``ys``.

  ``m_k = (1 - a) m_{k-1} + a y_k`` with ``m_0 = 0`` and ``a = 2 / (span +
  1)``, returned as ``m_k / (1 - (1 - a)^k)`` (Adam's correction), so the
  first values are the mean of the values so far rather than pulled to 0.
  """
  # Imported here: scipy.signal takes longer to import than a run's figures
  # take to draw, and only smoothed curves need it.
  from scipy import signal  # pylint: disable=import-outside-toplevel
  ys = np.asarray(ys, float)
  a = 2.0 / (max(int(span), 1) + 1.0)
  m = signal.lfilter([a], [1.0, a - 1.0], ys)
  return m / -np.expm1(np.arange(1, len(ys) + 1) * np.log1p(-a))


MIN_SPAN = 10


def ema_span(run, n: int) -> int:
  """The EMA span of a run's per-step series of ``n`` values.

  One epoch's steps (the average of an epoch's batch losses estimates the
  training loss), at most ``n // 100`` (a short run keeps its shape) and
  at least :data:`MIN_SPAN`.
  """
  epochs = dict(getattr(run, "epochs", None) or {})
  per_epoch = n
  if "step" in epochs and len(epochs["step"]):
    per_epoch = float(np.asarray(epochs["step"], float)[-1]) / len(
        epochs["step"])
  return int(max(MIN_SPAN, min(per_epoch, n // 100)))


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


def mark_diverged(ax, x: float, y: float, colour, text: bool = True,
                  row: int = 0) -> None:
  """Marks where a diverged run left: an ``x`` at its last finite point.

  A point above the axes is marked by a triangle on the top edge, with its
  value, so the blow-up no longer sets the y-range; ``row`` moves the text
  down by rows, so the marks of several runs do not overwrite each other.
  """
  top = ax.get_ylim()[1]
  if y > top:
    ax.plot(x, 1.0, "^", transform=ax.get_xaxis_transform(), color=colour,
            ms=9, mec="k", mew=0.8, clip_on=False, zorder=5, gid="diverged")
    if text:
      ax.annotate(f"diverged ({y:.2g})", (x, 1.0),
                  xycoords=ax.get_xaxis_transform(),
                  xytext=(6, -4 - 12 * row), textcoords="offset points",
                  ha="left", va="top", fontsize="small", color=colour)
  else:
    ax.plot(x, y, "x", color=colour, ms=11, mew=2.5, zorder=5,
            gid="diverged")
    if text:
      ax.annotate("diverged", (x, y), xytext=(6, 4),
                  textcoords="offset points", fontsize="small",
                  color=colour)


def _extent_ratio(xs_list) -> float:
  ends = [float(xs[-1]) for xs in xs_list if len(xs)]
  starts = [float(xs[0]) for xs in xs_list if len(xs)]
  if not ends or min(starts) <= 0:
    return 1.0
  return max(ends) / max(min(ends), 1e-300)


def loss_curves(runs, path=None, x: str = "step",
                y: str | Sequence[str] = "loss", log_y="auto", *,
                title: str | None = None, ylabel: str | None = None,
                log_x="auto", smooth="auto", floor: float | None = None,
                styles: Mapping[str, Mapping[str, Any]] | None = None
                ) -> Figure | Path:
  """Overlays a metric of several runs against steps, epochs, work or time.

  What the figure does to stay readable:

  * Colours: by run, with the legend (outside the axes) naming each run and
    the hyperparameters that differ (:func:`run_labels`); past 8 runs of a
    sweep, by the swept value with a colour bar (:func:`run_colours`).
  * Stochastic per-step values (:func:`stochastic`) are drawn as a faint raw
    trace under their exponential moving average (:func:`ema`, span
    :func:`ema_span`: one epoch, at most 1% of the steps, at least 10).
  * A diverged run does not set the y-range: the limits come from the other
    runs, and :func:`mark_diverged` marks where it left.
  * Log axes: ``log_y="auto"`` as in the module docstring; ``log_x="auto"``
    picks a log x when the runs (but the diverged) end more than 20-fold
    apart along x (40 full-batch steps beside 57,520 SGD steps).
  * With ``x="time"``, runs that share one vmapped program
    (:func:`shares_program`) are left out: their wall time is the
    program's.

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
    log_x: True, False or ``"auto"``.
    smooth: True, False or ``"auto"`` (per-step values of stochastic runs;
      never the step size).
    floor: values below it (the rounding level of a loss gap, say) are
      drawn at it, and a dotted line marks it.
    styles: keyword arguments of ``Axes.plot`` per metric of ``y``, over the
      defaults (solid, then dashed, dotted, ...).

  Returns:
    The figure when ``path`` is None, else ``path``.
  """
  _check_auto("log_y", log_y)
  _check_auto("log_x", log_x)
  _check_auto("smooth", smooth)
  names = (y,) if isinstance(y, str) else tuple(y)
  runs = named_runs(runs)
  left_out = [n for n, r in runs.items() if x == "time" and shares_program(r)]
  runs = {n: r for n, r in runs.items() if n not in left_out}
  colours = run_colours(runs)
  labels = run_labels(runs)
  fig = InlineFigure(figsize=(8.5, 4.5), layout="constrained")
  ax = fig.add_subplot()
  kept, blown, xs_kept, ends, spans, lost = [], [], [], [], set(), set()
  labelled, seen = set(), []
  for name, run in runs.items():
    colour = colours.colours[name]
    for j, key in enumerate(names):
      s = series(run, x, key)
      if s is None:
        continue
      xs, ys = s
      diverged = _diverged(run) or bool(len(ys) and np.isinf(ys[-1]))
      ok = np.isfinite(xs) & np.isfinite(ys)
      if not ok.any():
        continue
      xs, ys = xs[ok], ys[ok]
      if floor is not None:
        ys = np.maximum(ys, floor)
      style = {"ls": _LINESTYLES[j % 4], "lw": 1.5, "zorder": 2,
               **dict((styles or {}).get(key, {}))}
      same = _coincides(seen, key, xs, ys) if colours.key is None else None
      seen.append((name, key, xs, ys))
      if same is not None:  # drawn dashed, so the run beneath shows
        style.update(ls=(0, (4, 3)), lw=max(style["lw"], 2.0))
      label = None
      if colours.key is None and name not in labelled:
        label = labels[name] + (" (diverged)" if diverged else "") + (
            f" (same as {same})" if same is not None else "")
        labelled.add(name)
      last = ys[-1]
      span = _smoothing(run, key, ys, smooth)
      if span:
        spans.add(span)
        ax.plot(*envelope(xs, ys), color=colour, lw=0.6, alpha=0.2,
                ls=style["ls"], zorder=1, gid="raw")
        ys = ema(ys, span)
        style["gid"] = "ema"
      elif len(ys) <= 30 and "marker" not in style:
        style.update(marker="o", ms=3)
      ax.plot(*envelope(xs, ys), color=colour, label=label, **style)
      (blown if diverged else kept).append(ys)
      if not diverged:
        xs_kept.append(xs)
      elif name not in lost:  # one mark a run, at its first metric
        ends.append((xs[-1], last, colour))
        lost.add(name)
  drawn = kept or blown
  if left_out and not runs:
    ax.text(0.5, 0.5, "every run shares its program's wall time (vmapped "
            "runs):\nsee the figures against epochs", ha="center",
            va="center", transform=ax.transAxes, color="gray")
  elif not drawn:
    mark_no_data(ax, ", ".join(names))
  log = _wants_log(drawn, log_y)
  if log:
    ax.set_yscale("log")
  if drawn and ((kept and blown) or spans):
    lim = _limits(kept, blown, log)
    if lim:
      ax.set_ylim(*lim)
  if log_x is True or (log_x == "auto" and x != "time" and
                       _extent_ratio(xs_kept) > 20):
    ax.set_xscale("log")
  elif x != "time":  # counts: no tick at step 2.5
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
  for row, (xv, yv, colour) in enumerate(sorted(ends, key=lambda e: e[0])):
    mark_diverged(ax, xv, yv, colour, text=len(ends) <= 4, row=row)
  if floor is not None:
    ax.axhline(floor, color="0.4", ls=":", lw=1.2, zorder=0,
               label=f"rounding floor {floor:.1e}")
  _key_entries(ax, names if len(names) > 1 else (), styles, spans,
               len(lost) if colours.key is not None else 0)
  ax.set_xlabel(_label(x))
  ax.set_ylabel(ylabel or (_label(names[0]) if len(names) == 1 else "value"))
  text = title or (f"{' and '.join(map(_label, names))} against {_label(x)}"
                   + (f", {len(runs)} runs" if colours.key else ""))
  if left_out:
    text += (f"\n({len(left_out)} vmapped runs left out: they share their "
             f"program's wall time)")
  ax.set_title(text)
  ax.grid(True, which="major", alpha=0.3)
  colour_bar(fig, ax, colours)
  place_legend(ax, below=colours.key is not None)
  return finish(fig, path)


def _coincides(seen, key: str, xs: np.ndarray, ys: np.ndarray,
               rtol: float = 1e-5) -> str | None:
  """The name of a run drawn before whose ``key`` series equals this one
  (to ``rtol``): its line would hide under this one's."""
  for name, k, xv, yv in seen:
    if (k == key and len(yv) == len(ys) and np.array_equal(xv, xs) and
        np.allclose(yv, ys, rtol=rtol, atol=0)):
      return name
  return None


def _smoothing(run, key: str, ys: np.ndarray, smooth) -> int | None:
  """The EMA span for a run's series of metric ``key``, or None (raw)."""
  per_step = key in (getattr(run, "steps", None) or {})
  if not per_step or key == "step_size" or len(ys) < 50:
    return None
  if smooth is True or (smooth == "auto" and stochastic(run, ys)):
    return ema_span(run, len(ys))
  return None


def _key_entries(ax, names, styles, spans, diverged: int) -> None:
  """Legend entries for what is not a run: metrics' line styles, the raw
  trace and its EMA, and (coloured by value) the diverged runs' marks."""
  for j, key in enumerate(names):
    style = {"ls": _LINESTYLES[j % 4], **dict((styles or {}).get(key, {}))}
    ax.plot([], [], color="0.25", label=_label(key), **{
        k: v for k, v in style.items() if k not in ("alpha", "gid")})
  if spans:
    ax.plot([], [], color="0.5", lw=0.6, alpha=0.4, label="per-step values")
    ax.plot([], [], color="0.25", lw=1.5, label=f"EMA, span {min(spans)}"
            + (f"-{max(spans)}" if len(spans) > 1 else "") + " steps")
  if diverged:
    ax.plot([], [], "^", color="0.4", mec="k",
            label=f"diverged ({diverged} runs; last finite value)")


def step_sizes(runs, path=None, log_y="auto", *,
               title: str = "step size of each update",
               **kwargs) -> Figure | Path:
  """The step size of every update against steps (log axes when they help).

  ``kwargs`` go to :func:`loss_curves`.  Returns the figure when ``path``
  is None, else ``path``.
  """
  return loss_curves(runs, path, **{"x": "step", "y": "step_size",
                                    "log_y": log_y, "title": title,
                                    **kwargs})


# The panels of the tracked quantities (gdlab.tracking): title, y label.
TRACKED = {
    "sharpness": ("sharpness (top Hessian eigenvalue)",
                  "lambda_max of the Hessian"),
    "hessian_trace": ("Hessian trace (Hutchinson's estimate)",
                      "tr H (Hutchinson)"),
    "noise_scale": ("simple gradient noise scale", "B_simple (records)"),
}


def _tracked_names() -> tuple[str, ...]:
  """The quantities :mod:`gdlab.tracking` logs, in the order of its table."""
  return tuple(dict.fromkeys((*TRACKED, *tracking.METRICS)))


def has_tracked(run) -> tuple[str, ...]:
  """The tracked epoch columns of ``run`` with at least one finite value.

  In the order of :data:`gdlab.tracking.METRICS` (``sharpness``,
  ``hessian_trace``, ``noise_scale``); empty when the run tracked nothing.
  """
  epochs = getattr(run, "epochs", None) or {}
  return tuple(n for n in _tracked_names() if n in epochs and
               np.isfinite(np.asarray(epochs[n], float)).any())


def constant_step(run) -> float | None:
  """The step size ``eta`` of a run of gradient descent with a constant step.

  Read from the run's config (a :class:`gdlab.results.RunRecord`'s, or any
  ``config`` mapping): ``optimizer.learning_rate`` of ``gd`` without
  momentum, line search or schedule (``schedule: constant``).  None for
  any other run, whose stability threshold is not ``2 / eta``.
  """
  c = _config(run)
  eta = c.get("optimizer.learning_rate")
  if not _number(eta) or not eta > 0:
    return None
  if (c.get("optimizer.name", "gd") != "gd" or c.get("optimizer.momentum") or
      c.get("optimizer.line_search") is not None or
      c.get("optimizer.schedule") not in (None, "constant")):
    return None
  return float(eta)


def _thresholds(runs: dict[str, Any], step_sizes) -> dict[str, float]:
  """``name -> 2 / eta`` of the runs with a step size (see :func:`tracked`)."""
  if step_sizes is None:
    etas = {n: constant_step(r) for n, r in runs.items()}
  else:
    if not isinstance(step_sizes, Mapping):
      raise TypeError(f"step_sizes: expected a mapping run name -> step "
                      f"size; got {type(step_sizes).__name__}.")
    unknown = [n for n in step_sizes if n not in runs]
    if unknown:
      raise ValueError(f"step_sizes: expected names of the runs drawn "
                       f"({', '.join(map(repr, runs)) or 'none'}); got "
                       f"{', '.join(map(repr, unknown))}.")
    etas = dict(step_sizes)
    for n, eta in etas.items():
      if eta is not None and not (_number(eta) and eta > 0):
        raise ValueError(f"step_sizes: expected a positive number (or None) "
                         f"for {n!r}; got {eta!r}.")
  return {n: 2.0 / float(eta) for n, eta in etas.items() if eta is not None}


def _with_threshold(label: str, threshold: float) -> str:
  text = f"2/eta = {threshold:.3g}"
  if label.endswith(")") and " (" in label:
    return f"{label[:-1]}, {text})"
  return f"{label} ({text})"


def tracked(runs, path=None, *, step_sizes: Mapping[str, float] | None = None,
            title: str | None = None) -> Figure | Path:
  """The training loss and the quantities tracked during training, by epoch.

  One panel for each run's training loss per epoch (log y where it spans
  more than a decade), then one panel per quantity of
  :mod:`gdlab.tracking` that any run logged (:func:`has_tracked`):
  ``sharpness``, ``hessian_trace``, ``noise_scale``, in that order.  A
  tracked quantity is logged every few epochs and NaN between them: only
  the tracked epochs are drawn, as markers joined by lines
  (``hessian_trace`` and ``noise_scale`` on a log y where they span more
  than a decade, the sharpness on a linear one).  On the
  sharpness panel a dashed line in the run's colour marks the stability
  threshold ``2 / eta`` of gradient descent with step ``eta`` (Cohen et al.,
  2021), for each run with a step size.  One legend, beside the top-right
  panel, names the runs (past 8 runs of a sweep, a colour bar instead; see
  :func:`run_colours`).  With nothing tracked, the second panel says so.

  Args:
    runs: mapping ``name -> run`` or a sequence of records (see the module
      docstring); the runs' epoch columns ``train_loss`` and the tracked
      ones are drawn.
    path: the PNG to write, or None (see the module docstring).
    step_sizes: ``name -> eta`` of the runs to draw ``2 / eta`` for (None
      for no line); when not given, each run's constant step
      (:func:`constant_step`) where it has one.
    title: the figure title.

  Returns:
    The figure when ``path`` is None, else ``path``.

  Raises:
    TypeError: when ``step_sizes`` is not a mapping.
    ValueError: when ``step_sizes`` names a run not drawn or holds a step
      size that is not a positive number.
  """
  runs = named_runs(runs)
  thresholds = _thresholds(runs, step_sizes)
  names = tuple(n for n in _tracked_names()
                if any(n in has_tracked(r) for r in runs.values()))
  panels = ("train_loss",) + (names or ("",))
  ncols = len(panels) if len(panels) <= 3 else 2
  nrows = -(-len(panels) // ncols)
  fig = InlineFigure(figsize=(4.3 * ncols + 2.6, 3.9 * nrows),
                     layout="constrained")
  grid = fig.subplots(nrows, ncols, squeeze=False)
  axes = dict(zip(panels, grid.ravel()))
  for ax in grid.ravel()[len(panels):]:
    ax.remove()
  for ax in list(axes.values())[1:]:  # the loss's epochs, on every panel
    ax.sharex(axes["train_loss"])
  colours = run_colours(runs)
  labels = run_labels(runs)
  drawn = {p: [] for p in panels}
  handles = []
  for name, run in runs.items():
    colour = colours.colours[name]
    style = {"color": colour, "marker": "o", "ms": 3.5, "lw": 1.3}
    s = series(run, "epoch", "train_loss")
    diverged = _diverged(run)
    if s is not None:
      xs, ys = s
      diverged = diverged or bool(len(ys) and np.isinf(ys[-1]))
      ok = np.isfinite(xs) & np.isfinite(ys)
      if ok.any():
        axes["train_loss"].plot(xs[ok], ys[ok], markevery=max(
            1, int(ok.sum()) // 50), **style)
        drawn["train_loss"].append(ys[ok])
        if diverged:
          axes["train_loss"].plot(xs[ok][-1], ys[ok][-1], "x", color=colour,
                                  ms=10, mew=2.5, zorder=5, gid="diverged")
    for key in has_tracked(run):
      epochs = run.epochs
      ys = np.asarray(epochs[key], float)
      xs = (np.asarray(epochs["epoch"], float) if "epoch" in epochs else
            np.arange(1.0, len(ys) + 1))
      ok = np.isfinite(xs) & np.isfinite(ys)
      axes[key].plot(xs[ok], ys[ok], markevery=max(1, int(ok.sum()) // 50),
                     gid=key, **style)
      drawn[key].append(ys[ok])
    label = labels[name]
    if name in thresholds and "sharpness" in axes:
      axes["sharpness"].axhline(thresholds[name], color=colour, ls="--",
                                lw=1.2, zorder=1, gid="threshold")
      label = _with_threshold(label, thresholds[name])
    handles.append(Line2D([], [], label=label + (
        " (diverged)" if diverged else ""), **style))
  if not drawn["train_loss"]:
    mark_no_data(axes["train_loss"], "train_loss")
  if _wants_log(drawn["train_loss"], "auto"):
    axes["train_loss"].set_yscale("log")
  axes["train_loss"].set(title="training loss per epoch",
                         ylabel=_label("train_loss"))
  if not names:
    mark_no_data(axes[""], "sharpness, hessian_trace or noise_scale")
    axes[""].set(title="tracked quantities (none tracked)", ylabel="value")
  for key in names:
    ax = axes[key]
    if key != "sharpness" and _wants_log(drawn[key], "auto"):
      ax.set_yscale("log")
    head, ylabel = TRACKED.get(key, (_label(key), _label(key)))
    if key == "sharpness" and any(n in thresholds for n in runs):
      head += ",\n2/eta dashed in the run's colour"
    ax.set(title=head, ylabel=ylabel)
  for ax in axes.values():
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.grid(True, which="major", alpha=0.3)
  key = ([Line2D([], [], color="0.3", ls="--", lw=1.2, label="2/eta")]
         if "sharpness" in axes and thresholds else [])
  if colours.key is None:
    place_legend(grid[0, -1], handles=handles + key)
  else:  # a sweep: a colour bar instead of a legend
    colour_bar(fig, list(axes.values()), colours)
  fig.suptitle(title or "training loss and quantities tracked during training")
  return finish(fig, path)


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


def strip(values, categories, path=None, *, xlabel: str = "seed",
          ylabel: str = "final loss", min_span: float = 0.01,
          title: str | None = None) -> Figure | Path:
  """Values at categorical points (seeds), a panel per group, as dots.

  Each panel shows one group's values at its categories (integer ticks, no
  connecting lines) and its median dashed; its title gives the spread
  ``max - min``, absolute and relative to the median.  The y-range covers at
  least ``min_span`` times the median around it, so values equal to
  rounding sit on one line instead of their differences filling the panel.

  Args:
    values: mapping ``group -> (k,)`` values, one per category; NaN and
      infinities (diverged runs) are marked by an ``x`` at the top edge.
    categories: the ``k`` categories (seeds), shown as tick labels.
    path: the PNG to write, or None (see the module docstring).
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
    ax.set_xticks(pos, [str(c) for c in categories])
    ax.set_xlim(-0.6, len(categories) - 0.4)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.grid(True, axis="y", alpha=0.3)
  fig.suptitle(title or f"{ylabel} at each {xlabel}")
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
