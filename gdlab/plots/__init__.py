"""Generic figures of runs, sweeps and 2-D loss surfaces.

Contract: every figure function draws one figure and takes a ``path``:

* ``path=None`` (the default): nothing is written; the function returns the
  figure, an :class:`InlineFigure`, which a notebook shows inline as a PNG.
* ``path`` given: the figure is written as a PNG to ``path`` (creating the
  folder) and the function returns ``path`` as a ``pathlib.Path``, the link
  a report embeds.  The figure itself is dropped: reports write dozens of
  figures and none stays in memory.  A figure identical to one written
  before (in this process or another) is copied from the figure cache
  instead of drawn again (``_cache``; ``GDLAB_FIGURE_CACHE=off`` draws every
  figure).

To both show and keep a figure, draw it without a path and write it with
:func:`save_png` (which always draws: the figure may hold the user's own
additions).  Figures are ``matplotlib.figure.Figure`` objects rendered
by the Agg canvas; pyplot is never imported.  So the package works headless
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
y-range; stochastic per-step losses are an EMA (its span longer the noisier
they are) over a faint raw trace, the EMA alone past four stochastic runs;
categories (seeds) are categorical axes (:func:`strip`), every ``k``-th
labelled when there are many.

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
  ``x`` on its last finite point (a triangle just inside the top edge when
  that point is above the y-range the other runs set) and "(diverged)" in
  its legend entry, with that point's value when it is above.
* Legends sit outside the axes, on their right (:func:`place_legend`).
* The quantities tracked during training (``gdlab.tracking``: ``sharpness``,
  ``hessian_trace``, ``noise_scale``) are epoch columns, NaN on the epochs
  not tracked; :func:`tracked` draws them beside the training loss.
* ``log_y="auto"`` (and ``log_x``) picks a log axis when the finite values are
  all positive and span more than a decade.

The modules, one concern each: ``_figures`` (the figure, its output, legend,
marks and axes), ``_labels`` (naming, labelling and colouring runs),
``_series`` (a run's series on an x axis, thinned and smoothed), ``_cache``
(the figure cache: a figure written again is copied, not drawn), ``runs``
(:func:`loss_curves`, :func:`step_sizes`, :func:`tracked`), ``sweeps``
(:func:`sensitivity`, :func:`strip`) and ``surfaces`` (:func:`surface`).
Every name is reached from the package:
``from gdlab import plots; plots.surface(...)``.
"""

from gdlab.plots._figures import DPI
from gdlab.plots._figures import InlineFigure
from gdlab.plots._figures import finish
from gdlab.plots._figures import mark_diverged
from gdlab.plots._figures import mark_no_data
from gdlab.plots._figures import place_legend
from gdlab.plots._figures import save_png
from gdlab.plots._labels import HYPERPARAMETERS
from gdlab.plots._labels import LABELS
from gdlab.plots._labels import AXIS_NAMES
from gdlab.plots._labels import AXIS_UNITS
from gdlab.plots._labels import Colours
from gdlab.plots._labels import axis_label
from gdlab.plots._labels import colour_bar
from gdlab.plots._labels import differing
from gdlab.plots._labels import named_runs
from gdlab.plots._labels import run_colour
from gdlab.plots._labels import run_colours
from gdlab.plots._labels import run_labels
from gdlab.plots._series import MAX_POINTS
from gdlab.plots._series import MIN_SPAN
from gdlab.plots._series import NOISE_TARGET
from gdlab.plots._series import STOCHASTIC
from gdlab.plots._series import X_AXES
from gdlab.plots._series import ema
from gdlab.plots._series import ema_span
from gdlab.plots._series import envelope
from gdlab.plots._series import noise_level
from gdlab.plots._series import series
from gdlab.plots._series import shares_program
from gdlab.plots._series import stochastic
from gdlab.plots.runs import MAX_RAW
from gdlab.plots.runs import TRACKED
from gdlab.plots.runs import constant_step
from gdlab.plots.runs import has_tracked
from gdlab.plots.runs import loss_curves
from gdlab.plots.runs import step_sizes
from gdlab.plots.runs import tracked
from gdlab.plots.sweeps import MAX_TICK_LABELS
from gdlab.plots.sweeps import sensitivity
from gdlab.plots.sweeps import strip
from gdlab.plots.surfaces import surface

# Private, but used beyond the package: the log-axis rule in the tests.
from gdlab.plots._figures import _wants_log

__all__ = [
    "AXIS_NAMES",
    "AXIS_UNITS",
    "Colours",
    "DPI",
    "HYPERPARAMETERS",
    "InlineFigure",
    "axis_label",
    "LABELS",
    "MAX_POINTS",
    "MAX_RAW",
    "MAX_TICK_LABELS",
    "MIN_SPAN",
    "NOISE_TARGET",
    "STOCHASTIC",
    "TRACKED",
    "X_AXES",
    "colour_bar",
    "constant_step",
    "differing",
    "ema",
    "ema_span",
    "envelope",
    "finish",
    "has_tracked",
    "loss_curves",
    "mark_diverged",
    "mark_no_data",
    "named_runs",
    "noise_level",
    "place_legend",
    "run_colour",
    "run_colours",
    "run_labels",
    "save_png",
    "sensitivity",
    "series",
    "shares_program",
    "step_sizes",
    "stochastic",
    "strip",
    "surface",
    "tracked",
]
