"""How a figure names, labels and colours its runs.

Runs come as a mapping ``name -> run`` or a sequence of records
(:func:`named_runs`); a legend names each run with the hyperparameters that
differ between them (:func:`run_labels`), and a sweep's runs are coloured by
their swept value with a colour bar (:func:`run_colours`,
:func:`colour_bar`).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from matplotlib import cm
from matplotlib import colormaps
from matplotlib import colors as mcolors

from gdlab import results
from gdlab.plots._figures import _geometric

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


def _label(key: str) -> str:
  return LABELS.get(key, key.replace("_", " "))


def run_colour(i: int):
  """The colour of the ``i``-th run of a figure."""
  return colormaps["tab10" if i < 10 else "tab20"](i % 20)


def named_runs(runs) -> dict[str, Any]:
  """``runs`` as a dict ``name -> run`` (see the package docstring)."""
  if isinstance(runs, Mapping):
    return dict(runs)
  if _is_run(runs):  # one run: a History or a run folder read back
    return {getattr(runs, "name", None) or "run": runs}
  if hasattr(runs, "history") and _is_run(runs.history):
    raise TypeError(f"runs: expected runs (a History, a RunRecord, a mapping "
                    f"or a sequence of them); got a "
                    f"{type(runs).__name__}: pass its .history.")
  if isinstance(runs, Sequence) and not isinstance(runs, str):
    bad = [type(r).__name__ for r in runs if not _is_run(r)]
    if bad:
      raise TypeError(f"runs: expected a sequence of runs (Histories or "
                      f"RunRecords); got items of type {bad[0]}.")
    return {getattr(r, "name", f"run {i}"): r for i, r in enumerate(runs)}
  raise TypeError(f"runs: expected a History, a RunRecord, a mapping name -> "
                  f"run or a sequence of runs; got {type(runs).__name__}.")


def _is_run(r) -> bool:
  """Whether ``r`` has a run's logs (``steps`` and ``epochs`` tables)."""
  return hasattr(r, "steps") and hasattr(r, "epochs")


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


# The words and units an axis gives a dotted config key (the swept key of a
# sweep's sensitivity figure); any other key is named by the last part of
# its dotted name.
AXIS_NAMES = {
    "data.n": "data set size",
    "data.kappa": "condition number",
    "loss.strength": "penalty strength",
    "model.scale": "initialisation scale",
}
AXIS_UNITS = {
    "optimizer.learning_rate": "step size",
    "optimizer.initial_step": "step size",
    "optimizer.b": "steps",
    "train.regime.batch_size": "records",
    "data.n": "records",
}


def axis_label(key: str) -> str:
  """The axis label of a swept dotted ``key``: its name in words, its unit.

  E.g. ``optimizer.learning_rate`` -> "learning rate (step size)",
  ``train.regime.batch_size`` -> "batch size (records)",
  ``optimizer.momentum`` -> "momentum"; a key of neither
  :data:`AXIS_NAMES` nor :data:`AXIS_UNITS` -> its last part, underscores
  as spaces.
  """
  name = AXIS_NAMES.get(key) or _label(_short(key))
  unit = AXIS_UNITS.get(key)
  return f"{name} ({unit})" if unit else name


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
