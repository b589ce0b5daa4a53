"""Figures of runs: their metrics against steps, epochs, work or time.

:func:`loss_curves` overlays a metric of several runs (:func:`step_sizes`,
their step sizes); :func:`tracked` draws the training loss beside the
quantities tracked during training (:mod:`gdlab.tracking`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import ticker
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from gdlab import tracking
from gdlab.plots._figures import InlineFigure
from gdlab.plots._figures import _check_auto
from gdlab.plots._figures import _limits
from gdlab.plots._figures import _wants_log
from gdlab.plots._figures import finish
from gdlab.plots._figures import mark_diverged
from gdlab.plots._figures import mark_no_data
from gdlab.plots._figures import place_legend
from gdlab.plots._labels import _config
from gdlab.plots._labels import _label
from gdlab.plots._labels import _number
from gdlab.plots._labels import colour_bar
from gdlab.plots._labels import named_runs
from gdlab.plots._labels import run_colours
from gdlab.plots._labels import run_labels
from gdlab.plots._series import _diverged
from gdlab.plots._series import ema
from gdlab.plots._series import ema_span
from gdlab.plots._series import envelope
from gdlab.plots._series import series
from gdlab.plots._series import shares_program
from gdlab.plots._series import stochastic

_LINESTYLES = ("-", "--", ":", "-.")
# Past this many stochastic runs, loss_curves draws their EMAs alone.
MAX_RAW = 4


def _extent_ratio(xs_list) -> float:
  ends = [float(xs[-1]) for xs in xs_list if len(xs)]
  starts = [float(xs[0]) for xs in xs_list if len(xs)]
  if not ends or min(starts) <= 0:
    return 1.0
  return max(ends) / max(min(ends), 1e-300)


# The early-change rule of loss_curves' automatic log x (see its docstring).
EARLY_SETTLE = 0.1    # within this fraction of its range of its end value
EARLY_PARTS = 10      # ... in every part of the x range but the first
EARLY_DECADES = 2.0   # x spans at least this many decades


def _changes_early(xs_list, ys_list, log_y: bool) -> bool:
  """Whether every run's curve has settled in the first tenth of the x range.

  See ``log_x`` in :func:`loss_curves`.  Values are compared as the y axis
  draws them (their log10 on a log axis): a geometric decay, a line on a log
  y axis, keeps changing to its end.  Each later tenth is judged by its
  median, so an oscillation about a settled value (a subgradient method's
  loss) does not count as change.
  """
  pairs = [(np.asarray(x, float), np.asarray(y, float))
           for x, y in zip(xs_list, ys_list) if len(x)]
  if not pairs:
    return False
  lo = min(float(x.min()) for x, _ in pairs)
  hi = max(float(x.max()) for x, _ in pairs)
  if not lo > 0 or hi / lo < 10 ** EARLY_DECADES:
    return False
  part = np.minimum(((np.concatenate([x for x, _ in pairs]) - lo) /
                     (hi - lo) * EARLY_PARTS).astype(int), EARLY_PARTS - 1)
  changed, at = False, 0
  for xs, ys in pairs:
    parts, at = part[at:at + len(xs)], at + len(xs)
    if log_y:
      ok = ys > 0
      parts, ys = parts[ok], np.log10(ys[ok])
    spread = float(ys.max() - ys.min()) if len(ys) else 0.0
    if spread == 0:
      continue
    medians = [np.median(ys[parts == k]) for k in range(1, EARLY_PARTS)
               if (parts == k).any()]
    if not medians:  # the run ends in the first tenth
      continue
    if np.ptp(medians) > EARLY_SETTLE * spread or not (parts == 0).any():
      return False
    changed = True
  return changed


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
  * Stochastic per-step values (:func:`stochastic`) are drawn as their
    exponential moving average (:func:`ema`) over a faint raw trace.  The
    span (:func:`ema_span`) is the longest of one epoch (at most 1% of the
    steps), the span that brings the batch values' relative noise
    (:func:`noise_level`) down to :data:`NOISE_TARGET` (at most 10% of the
    steps) and 10: 400 steps of batch-1 SGD get 40.  Past
    :data:`MAX_RAW` stochastic runs, the raw traces are left out: seven
    overlapping bands would hide every trend.
  * A diverged run does not set the y-range: the limits come from the other
    runs, and :func:`mark_diverged` marks where it left (a triangle just
    inside the top edge when above the axes); its legend entry says
    "diverged" and the last finite value, so no text covers the data.
  * Log axes: ``log_y="auto"`` as in the package docstring.
    ``log_x="auto"`` picks a log x (never for ``x="time"``) when the runs
    (but the diverged) end more than 20-fold apart along x (40 full-batch
    steps beside 57,520 SGD steps), or when all the change happens early:
    x positive and spanning at least two decades, and every run's curve
    (as drawn: smoothed, and in log10 on a log y) has settled after the
    first tenth of the x range: the medians of its values in each later
    tenth lie within 10% of its range of each other.  So an exponential
    decay to a plateau over 2000 steps, or a test accuracy reached in 150
    of 2000 epochs, gets a log x; a linear decay, or a geometric one on a
    log y axis (a line there), keeps changing to the end and does not.
  * With ``x="time"``, runs that share one vmapped program
    (:func:`shares_program`) are left out: their wall time is the
    program's.

  Args:
    runs: mapping ``name -> run`` (see the package docstring).
    path: the PNG to write, or None (see the package docstring).
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
  # First the series and their spans: whether raw traces are drawn depends
  # on how many runs are smoothed.
  items = []
  for name, run in runs.items():
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
      items.append((name, j, key, xs, ys, diverged,
                    _smoothing(run, key, ys, smooth)))
  raw = len({it[0] for it in items if it[6]}) <= MAX_RAW
  kept, blown, xs_kept, ends, spans, lost = [], [], [], [], set(), set()
  entries, seen = {}, []
  for name, j, key, xs, ys, diverged, span in items:
    colour = colours.colours[name]
    style = {"ls": _LINESTYLES[j % 4], "lw": 1.5, "zorder": 2,
             **dict((styles or {}).get(key, {}))}
    same = _coincides(seen, key, xs, ys) if colours.key is None else None
    seen.append((name, key, xs, ys))
    if same is not None:  # drawn dashed, so the run beneath shows
      style.update(ls=(0, (4, 3)), lw=max(style["lw"], 2.0))
    last = ys[-1]
    if span:
      spans.add(span)
      if raw:
        ax.plot(*envelope(xs, ys), color=colour, lw=0.6, alpha=0.2,
                ls=style["ls"], zorder=1, gid="raw")
      ys = ema(ys, span)
      style["gid"] = "ema"
    elif len(ys) <= 30 and "marker" not in style:
      style.update(marker="o", ms=3)
    line, = ax.plot(*envelope(xs, ys), color=colour, **style)
    if colours.key is None and name not in entries:
      entries[name] = (line, f" (same as {same})" if same is not None else "")
    (blown if diverged else kept).append(ys)
    if not diverged:
      xs_kept.append(xs)
    elif name not in lost:  # one mark a run, at its first metric
      ends.append((xs[-1], last, colour, name))
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
  if log_x is True or (log_x == "auto" and x != "time" and (
      _extent_ratio(xs_kept) > 20 or _changes_early(xs_kept, kept, log))):
    ax.set_xscale("log")
  elif x != "time":  # counts: no tick at step 2.5
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
  marks, status = {"^": 0, "x": 0}, {}
  for xv, yv, colour, name in sorted(ends, key=lambda e: e[0]):
    above = mark_diverged(ax, xv, yv, colour, text=False)
    marks["^" if above else "x"] += 1
    status[name] = f" (diverged, last {yv:.2g})" if above else " (diverged)"
  for name, (line, same) in entries.items():
    line.set_label(labels[name] + status.get(name, "") + same)
  if floor is not None:
    ax.axhline(floor, color="0.4", ls=":", lw=1.2, zorder=0,
               label=f"rounding floor {floor:.1e}")
  _key_entries(ax, names if len(names) > 1 else (), styles, spans, raw,
               marks, counted=colours.key is not None)
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
    return ema_span(run, len(ys), ys)
  return None


def _key_entries(ax, names, styles, spans, raw: bool,
                 marks: Mapping[str, int], counted: bool) -> None:
  """Legend entries for what is not a run: metrics' line styles (as drawn,
  alpha included), the raw trace and its EMA, and the diverged runs'
  marks, ``marker -> number of runs`` (counted for a sweep coloured by
  value, which names no run)."""
  for j, key in enumerate(names):
    style = {"ls": _LINESTYLES[j % 4], "lw": 1.5,
             **dict((styles or {}).get(key, {}))}
    ax.plot([], [], color="0.25", label=_label(key), **{
        k: v for k, v in style.items() if k not in ("gid", "zorder")})
  if spans:
    if raw:
      ax.plot([], [], color="0.5", lw=0.6, alpha=0.4, label="per-step values")
    ax.plot([], [], color="0.25", lw=1.5, label=(
        "EMA" if raw else "EMA of the per-step values") +
        f", span {min(spans)}" + (f"-{max(spans)}" if len(spans) > 1 else "")
        + " steps")
  count = lambda n: f"{n} run{'s' if n > 1 else ''}; " if counted else ""
  if marks.get("^"):
    ax.plot([], [], "^", color="0.4", mec="k", label=(
        f"diverged ({count(marks['^'])}last finite value, above the axes)"))
  if marks.get("x"):
    ax.plot([], [], "x", color="0.4", mew=2.0, ls="",
            label=f"diverged ({count(marks['x'])}last finite value)")


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
    runs: mapping ``name -> run`` or a sequence of records (see the package
      docstring); the runs' epoch columns ``train_loss`` and the tracked
      ones are drawn.
    path: the PNG to write, or None (see the package docstring).
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
