"""Markdown reports of run folders: one run, or several side by side.

Contract: :func:`run_report` and :func:`compare` read run folders
(:mod:`gdlab.results`), write their figures as PNG files (:mod:`gdlab.plots`)
into a ``plots/`` folder and a ``report.md`` beside it that embeds them by
relative links, so the folder can be moved, archived or browsed as it is.
Both return the path of ``report.md`` and rewrite it whole (atomically) on
every call.  :func:`compare` also writes ``report.html``, the same report as
one self-contained page (figures inlined as base64 PNG) that a browser opens
from the file system.

The final quantities of a run (:func:`final_quantities`) come from its
``summary.json``, looked up at the top level and one level down (so a
summary that groups them, e.g. under ``"final"``, works too), and otherwise
from its metrics: the last epoch's record, the number of per-step rows.
Tables are Markdown (:func:`markdown_table`): numbers to four significant
digits, integers in full, missing values (None, NaN) as "–".

:func:`runs_table` reads several runs into one table (``gdlab table``): a
row per run, with the config values that differ between the runs and the
final quantities; :func:`text_table` lays it out for a terminal.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from gdlab import config as config_lib
from gdlab import data
from gdlab import folders
from gdlab import plots
from gdlab import report_html
from gdlab import results

MISSING = "–"
REPORT = "report.md"
REPORT_HTML = "report.html"
RUNS = "runs"
SWEEP = "sweep.json"

RUN_COLUMNS = (
    ("name", "run"),
    ("stop_reason", "stop reason"),
    ("steps", "steps"),
    ("grad_evals", "grad evals"),
    ("train_loss", "final train loss"),
    ("test_loss", "test loss"),
    ("test_accuracy", "test accuracy"),
    ("run_time", "wall time (s)"),
    ("steps_per_second", "steps/s"),
)
SUMMARY_ROWS = (
    ("stop_reason", "stop reason"),
    ("steps", "steps"),
    ("epochs", "epochs"),
    ("grad_evals", "gradient evaluations"),
    ("fun_evals", "function evaluations"),
    ("train_loss", "final training loss"),
    ("test_loss", "final test loss"),
    ("train_accuracy", "final training accuracy"),
    ("test_accuracy", "final test accuracy"),
    ("compile_time", "compile time (s)"),
    ("run_time", "run time (s)"),
    ("steps_per_second", "steps/s"),
)
TABLE_QUANTITIES = ("train_loss", "test_loss", "train_accuracy",
                    "test_accuracy", "stop_reason", "steps", "epochs",
                    "compile_time", "run_time")
# The config values the setup line of a comparison names, where every run
# shares them (dotted keys, see flatten), with their labels.
SETUP_KEYS = (
    ("data.name", "data"),
    ("model.kind", "model"),
    ("model.hidden", "hidden"),
    ("model.activation", "activation"),
    ("loss.name", "loss"),
    ("train.regime.kind", "regime"),
    ("train.regime.batch_size", "batch size"),
    ("train.stop.max_epochs", "max epochs"),
)
VERSION_KEYS = ("gdlab", "jax", "jaxlib", "python", "backend", "device",
                "device_count", "git_commit")


class Section(NamedTuple):
  """An extra report section: a title, Markdown text and images to embed."""
  title: str
  markdown: str = ""
  images: Sequence[str | os.PathLike] = ()


def _missing(v: Any) -> bool:
  return v is None or (isinstance(v, numbers.Real) and not isinstance(
      v, (bool, np.bool_)) and math.isnan(float(v)))


def format_value(v: Any, digits: int = 4) -> str:
  """One table cell: see the module docstring."""
  if isinstance(v, np.generic):
    v = v.item()
  if _missing(v):
    return MISSING
  if isinstance(v, bool):
    return "yes" if v else "no"
  if isinstance(v, numbers.Integral):
    return str(int(v))
  if isinstance(v, numbers.Real):
    v = float(v)
    if math.isinf(v):
      return "inf" if v > 0 else "-inf"
    if v.is_integer() and abs(v) < 1e15 and abs(v) >= 1:
      return str(int(v))
    return f"{v:.{digits}g}"
  return str(v).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[Mapping[str, Any]],
                 columns: Sequence[str | tuple[str, str]] | Mapping[str, str]
                 | None = None, *, digits: int = 4) -> str:
  """A Markdown table, one row per dict.

  Args:
    rows: the rows; a key a row lacks is a missing value.
    columns: the keys to show, in order, as keys (the header is the key),
      ``(key, header)`` pairs or a mapping ``key -> header`` (default: the
      keys of the rows, in order of first appearance).
    digits: significant digits of non-integral numbers.

  Returns:
    The table, without a trailing newline.  Columns whose values are all
    numbers (or missing) are right-aligned.
  """
  if columns is None:
    columns = list(dict.fromkeys(k for r in rows for k in r))
  if isinstance(columns, Mapping):
    columns = list(columns.items())
  cols = [(c, c) if isinstance(c, str) else tuple(c) for c in columns]
  cells = [[format_value(r.get(k), digits) for k, _ in cols] for r in rows]

  def numeric(k):
    vals = [r.get(k) for r in rows if not _missing(r.get(k))]
    return bool(vals) and all(isinstance(v, numbers.Real) and not isinstance(
        v, (bool, np.bool_)) for v in vals)

  head = "| " + " | ".join(format_value(h) for _, h in cols) + " |"
  rule = "|" + "|".join("---:" if numeric(k) else ":---" for k, _ in cols) + "|"
  body = ["| " + " | ".join(c) + " |" for c in cells]
  return "\n".join([head, rule] + body)


def _lookup(summary: Mapping[str, Any], key: str) -> Any:
  if summary.get(key) is not None:
    return summary[key]
  for v in summary.values():
    if isinstance(v, Mapping) and v.get(key) is not None:
      return v[key]
  return None


def _last(d: Mapping[str, np.ndarray], key: str) -> float | None:
  if key in d and len(d[key]):
    return float(d[key][-1])
  return None


def final_quantities(record: results.RunRecord) -> dict[str, Any]:
  """A run's final quantities, by the keys of :data:`SUMMARY_ROWS`, + name."""
  s, steps, epochs = record.summary or {}, record.steps, record.epochs
  n = len(steps.get("loss", steps.get("step", ())))
  fallback = {
      "steps": n if n else None,
      "epochs": _last(epochs, "epoch"),
      "grad_evals": _last(epochs, "grad_evals") if "grad_evals" in epochs
                    else (float(np.nansum(steps["grad_evals"]))
                          if "grad_evals" in steps else None),
      "fun_evals": _last(epochs, "fun_evals"),
  }
  out = {"name": record.name}
  for key, _ in SUMMARY_ROWS:
    v = _lookup(s, key)
    if v is None and key == "epochs":
      v = _lookup(s, "epoch")
    out[key] = v if v is not None else fallback.get(key, _last(epochs, key))
  if out["steps_per_second"] is None and out["steps"] and out["run_time"]:
    out["steps_per_second"] = out["steps"] / out["run_time"]
  return out


def _has(records, y: str) -> bool:
  for r in records:
    for d in (r.steps, r.epochs):
      if y in d and np.isfinite(np.asarray(d[y], float)).any():
        return True
  return False


def _relative(path, start: Path) -> str:
  return Path(os.path.relpath(Path(path).resolve(),
                              Path(start).resolve())).as_posix()


def _image(path, report_dir: Path, alt: str) -> str:
  return f"![{alt}]({_relative(path, report_dir)})"


class _Figure(NamedTuple):
  """A figure of a report, under its caption, with a note above it; or, with
  no path, a one-line note that stands where a figure was left out."""
  caption: str
  path: Path | None
  note: str = ""


def _figures(figs: Sequence[_Figure], report_dir: Path) -> list[str]:
  out = []
  for fig in figs:
    if fig.path is None:
      out += [fig.note, ""]
      continue
    out += [f"### {fig.caption}", ""]
    out += [fig.note, ""] if fig.note else []
    out += [_image(fig.path, report_dir, fig.caption), ""]
  return out


def _drop(path: Path) -> None:
  """Removes a figure an earlier report wrote that this one leaves out."""
  path.unlink(missing_ok=True)


def logged_constant_step(record: results.RunRecord) -> float | None:
  """The step size of a run whose logged step sizes are all one value.

  Returns:
    That value, where the run logged finite step sizes and they are equal
    (to a relative 1e-6); None where they vary (a line search, a schedule)
    or the run logged none.
  """
  eta = np.asarray(record.steps.get("step_size", ()), float).ravel()
  eta = eta[np.isfinite(eta)]
  if not eta.size or not np.allclose(eta, eta[0], rtol=1e-6, atol=0.0):
    return None
  return float(eta[0])


def _constant_steps(runs: Mapping[str, results.RunRecord]) -> str | None:
  """The note that replaces the step-size figure, or None to draw it.

  None unless every run that logged step sizes kept one constant value.
  """
  drawn = {n: r for n, r in runs.items() if _has([r], "step_size")}
  etas = {n: logged_constant_step(r) for n, r in drawn.items()}
  if not etas or any(eta is None for eta in etas.values()):
    return None
  if len(etas) == 1:
    return (f"**Step size:** constant, {format_value(*etas.values())} "
            f"(no figure).")
  by_value: dict[str, list[str]] = {}
  for name, eta in etas.items():
    by_value.setdefault(format_value(eta), []).append(name)
  if len(by_value) == 1:
    return (f"**Step sizes:** constant, {next(iter(by_value))} in every run "
            f"(no figure).")
  return ("**Step sizes:** constant in every run (no figure): " + "; ".join(
      f"{eta} ({', '.join(names)})" for eta, names in by_value.items())
      + ".")


def _function(config: Mapping[str, Any], function):
  """The 2-D test function of a run: ``function``, or the one its config names.

  The config names it as ``function: <name>`` at the top level or in a
  section, whose other keys are taken as the function's options; a name or
  options that :func:`gdlab.data.get_function` rejects give None (no surface
  figure rather than the surface of another function).
  """
  if function is not None:
    return data.get_function(function) if isinstance(function, str) \
        else function
  sections = [({"function": config.get("function")}, {})] + [
      (v, {k: o for k, o in v.items() if k not in ("function", "name")})
      for v in config.values() if isinstance(v, Mapping)]
  for section, options in sections:
    name = section.get("function")
    if isinstance(name, str) and name in data.function_names():
      try:
        return data.get_function(name, **options)
      except (TypeError, ValueError):
        return None
  return None


def run_report(run_dir: str | os.PathLike, *, function=None) -> Path:
  """Writes the figures and ``report.md`` of one run folder.

  Figures (in ``plots/``): ``loss.png`` (loss per step), and where the run
  has them ``loss_epochs.png`` (training and test loss per epoch),
  ``accuracy.png``, ``step_size.png`` (a step size that stays one value,
  :func:`logged_constant_step`, is stated in a line instead),
  ``tracked.png`` (the quantities of ``train.track``: sharpness against
  ``2/eta``, Hessian trace, noise scale) and, for a run with a trajectory on
  a 2-D test function, ``surface.png``.  A figure left out is removed from
  ``plots/`` where an earlier report wrote it.

  Args:
    run_dir: the run folder.
    function: the 2-D test function of a trajectory (a ``Function2D`` or its
      name); by default the one the config names, if any.

  Returns:
    The path of ``report.md``.
  """
  rec = results.load_run(run_dir)
  out = rec.path / results.PLOTS
  runs = {rec.name: rec}
  figs = [("Loss per step", plots.loss_curves(
      runs, out / "loss.png", x="step", y="loss",
      title=f"{rec.name}: loss per step"))]
  losses = [y for y in ("train_loss", "test_loss") if _has([rec], y)]
  if losses:
    figs.append(("Loss per epoch", plots.loss_curves(
        runs, out / "loss_epochs.png", x="epoch", y=losses, ylabel="loss",
        title=f"{rec.name}: loss per epoch")))
  accuracies = [y for y in ("train_accuracy", "test_accuracy")
                if _has([rec], y)]
  if accuracies:
    figs.append(("Accuracy per epoch", plots.loss_curves(
        runs, out / "accuracy.png", x="epoch", y=accuracies, log_y=False,
        ylabel="accuracy", title=f"{rec.name}: accuracy per epoch")))
  constant = _constant_steps(runs)
  if constant:
    _drop(out / "step_size.png")
    figs.append(_Figure("Step size", None, constant))
  elif _has([rec], "step_size"):
    figs.append(("Step size", plots.step_sizes(
        runs, out / "step_size.png", title=f"{rec.name}: step size")))
  if plots.has_tracked(rec):
    figs.append(("Tracked during training: curvature and noise", plots.tracked(
        runs, out / "tracked.png", title=f"{rec.name}: tracked during training")))
  fn = _function(rec.config, function) if rec.trajectory is not None else None
  if fn is not None:
    figs.append(("Path on the surface", plots.surface(
        fn, {rec.name: rec.trajectory}, out / "surface.png")))

  final = final_quantities(rec)
  lines = [f"# Run report: {rec.name}", "",
           markdown_table([{"quantity": label, "value": final[key]}
                         for key, label in SUMMARY_ROWS],
                        ["quantity", "value"]), "", "## Figures", ""]
  lines += _figures([_Figure(*f) for f in figs], rec.path)
  versions = {k: _lookup(rec.summary, k) for k in VERSION_KEYS}
  if any(v is not None for v in versions.values()):
    lines += ["## Environment", "", markdown_table(
        [{"component": k, "version": v} for k, v in versions.items()
         if v is not None], ["component", "version"]), ""]
  config = rec.path / results.CONFIG
  if config.exists():
    lines += ["## Configuration", "", "```yaml",
              config.read_text().rstrip("\n"), "```", ""]
  report = rec.path / REPORT
  folders.atomic_write(report, "\n".join(lines))
  return report


def _unique(names: Sequence[str]) -> list[str]:
  seen: dict[str, int] = {}
  out = []
  for n in names:
    seen[n] = seen.get(n, 0) + 1
    out.append(n if seen[n] == 1 else f"{n} ({seen[n]})")
  return out


def _folder_name(folder: Path) -> str | None:
  """The name in an experiment's or sweep's ``gdlab.json``, if it has one."""
  try:
    marker = folders.read_marker(folder)
  except (OSError, ValueError):
    return None
  if isinstance(marker, Mapping) and marker.get("kind") != "run":
    name = marker.get("name")
    return name if isinstance(name, str) and name else None
  return None


def _setup(configs: Sequence[Mapping[str, Any]],
           differ: Sequence[str]) -> str | None:
  """The setup line: the :data:`SETUP_KEYS` values that every run shares."""
  parts = [f"{label} {format_value(configs[0].get(k))}"
           for k, label in SETUP_KEYS
           if k not in differ and not _missing(configs[0].get(k))]
  if not parts:
    return None
  return f"**Setup** (shared by every run): {', '.join(parts)}."


def compare(run_dirs: Sequence[str | os.PathLike | results.RunRecord],
            out_dir: str | os.PathLike, title: str | None = None, *,
            extra_sections: Sequence[Section | tuple] = (),
            question: str | None = None,
            description: str | None = None,
            points: Sequence[Mapping[str, Any]] | None = None) -> Path:
  """Writes overlaid figures and a comparison table of several runs.

  The report opens with the title, the question and description when given,
  and a setup line naming the config values (:data:`SETUP_KEYS`) that every
  run shares.  The table has a row per run: its final quantities
  (:data:`RUN_COLUMNS`), then a column per config key whose value differs
  between the runs (as in :func:`runs_table`); runs of the same name (from
  several folders) are labelled ``<folder>/<run>``.  With ``points`` (a
  sweep's), a table with a row per grid point (:func:`grid_point_rows`)
  comes before the row per run; without them, the points are those of
  :func:`grid_points` (the runs of a sweep folder, or runs that differ only
  by seed), and no such table where it finds none.  ``report.html`` beside
  ``report.md`` holds the same report as one self-contained page.

  Figures (in ``out_dir/plots/``): ``loss_steps.png``, ``loss_epochs.png``
  (training loss, and test loss dashed where present), ``loss_grad_evals.png``
  (the training-set loss logged per epoch, else the per-step loss),
  ``loss_time.png`` (training loss against wall time, unless every run
  shares a vmapped program's), ``test_accuracy.png``
  where a run has a test accuracy, ``step_sizes.png``, and ``tracked.png``
  where runs tracked curvature or noise (``train.track``).  Where a figure
  would mislead, a one-line note stands in its place (and an earlier
  report's file of that name is removed):

  * runs on different problems (``data`` keys but :data:`DRAW_KEYS`
    differ, e.g. several test functions): no loss figure (steps, epochs,
    gradient evaluations, wall time); the analyses draw them per problem;
  * runs whose losses are on different scales (a ``sum`` reduction adds
    the losses of the records: per step, of a batch of 1, ``b`` or
    ``n_train`` records; per epoch, of the training or test set): the
    losses are drawn per record, divided by those counts (``n_train`` and
    ``n_test`` from :func:`data_sizes`), and where a count is unknown the
    figure is left out;
  * runs whose gradient evaluations are on batches of different sizes:
    the loss is drawn against record-gradients (each evaluation counts
    the records of its batch), so that full-batch and stochastic runs
    compare per unit of work;
  * every run took under :data:`MIN_WALL_TIME` seconds in all: no figure
    against wall time (it times the dispatch, not the method);
  * every run that logged step sizes kept one value
    (:func:`logged_constant_step`): the values instead of ``step_sizes.png``.

  Args:
    run_dirs: a sequence of run folders, folders holding ``runs/`` (an
      experiment's or a sweep's: their runs, as :func:`run_folders`), or
      records already loaded.
    out_dir: where to write ``report.md`` and ``plots/``.
    title: the report's title (default: the name in ``out_dir``'s
      ``gdlab.json`` when it is an experiment or sweep folder, else
      "Comparison of N runs").
    extra_sections: :class:`Section` records, or ``(title, markdown, images)``
      tuples, appended after the standard figures; experiment-specific
      analyses add their own figures this way.  Images are paths (absolute
      or relative to the working directory), linked relative to ``out_dir``.
    question: the question the runs answer, shown under the title.
    description: Markdown text shown under the question.
    points: the grid point of each run (``{dotted key: value}``, as in a
      sweep's ``sweep.json``), in the order of ``run_dirs`` (default:
      :func:`grid_points`).

  Returns:
    The path of ``report.md``.
  """
  _check_paths("run_dirs", run_dirs)
  records = [r for r in run_dirs if isinstance(r, results.RunRecord)]
  paths = [r for r in run_dirs if not isinstance(r, results.RunRecord)]
  records += [results.load_run(d) for d in run_folders(paths)] if paths else []
  if not records:
    raise ValueError("run_dirs: expected at least one run folder; got none.")
  out_dir = Path(out_dir)
  out = out_dir / results.PLOTS
  runs = dict(zip(_labels(records), records))
  configs = [results.flatten(r.config) for r in records]
  figs = _comparison_figures(runs, configs, out)

  differ = _differing(configs)
  rows = [{**final_quantities(r), "name": n, **{k: c.get(k) for k in differ}}
          for (n, r), c in zip(runs.items(), configs)]
  title = title or _folder_name(out_dir) or \
      f"Comparison of {len(records)} runs"
  lines = [f"# {title}", ""]
  lines += [f"**Question:** {question.strip()}", ""] if question else []
  lines += [description.strip(), ""] if description else []
  setup = _setup(configs, differ)
  lines += [setup, ""] if setup else []
  if points is None:
    points = grid_points(records)
  if points is not None:
    keys, grouped = grid_point_rows(records, points)
    # Test metrics where some run has them.
    shown = [(k, h) for k, h in GRID_COLUMNS if not k.startswith("test_")
             or any(not _missing(r[k]) for r in grouped)]
    lines += ["## Per grid point", "", GRID_NOTE, "",
              markdown_table(grouped, [(k, k) for k in keys] + shown), "",
              "## Per run", ""]
  lines += [markdown_table(rows, list(RUN_COLUMNS) + [(k, k) for k in differ]),
            "", "## Figures", ""]
  lines += _figures(figs, out_dir)
  for sec in extra_sections:
    sec = Section(*sec)
    images = [sec.images] if isinstance(sec.images, (str, os.PathLike)) \
        else sec.images
    lines += [f"## {sec.title}", ""]
    lines += [sec.markdown.rstrip("\n"), ""] if sec.markdown else []
    lines += [x for p in images
              for x in (_image(p, out_dir, Path(p).stem), "")]
  lines += ["## Runs", ""] + [f"- {n}: `{_relative(r.path, out_dir)}`"
                               for n, r in runs.items()] + [""]
  report = out_dir / REPORT
  folders.atomic_write(report, "\n".join(lines))
  folders.atomic_write(out_dir / REPORT_HTML,
                       report_html.html_page(title, "\n".join(lines), out_dir))
  return report


# Wall times below this (seconds, a whole run) time the dispatch of a
# compiled program rather than the method: no figure against wall time.
MIN_WALL_TIME = 0.1
# The data keys that draw or size a problem's data set rather than choose
# the problem: runs that differ only in them are on one problem.
DRAW_KEYS = ("data.seed", "data.n", "data.noise", "data.test_fraction")


def _problems(configs: Sequence[Mapping[str, Any]]) -> list[str]:
  """The ``data`` keys (but :data:`DRAW_KEYS`) whose values differ: the
  runs are on different problems (data sets, test functions) where any."""
  return [k for k in _differing(configs)
          if k.startswith("data.") and k not in DRAW_KEYS]


def data_sizes(record: results.RunRecord) -> tuple[int, int] | None:
  """``(n_train, n_test)`` of the data set a run trained on, as its
  ``summary.json`` records them (``results.data_counts``); None for a
  folder of an earlier version, which does not."""
  sizes = tuple(record.summary.get(k) for k in ("n_train", "n_test"))
  if all(isinstance(v, numbers.Integral) for v in sizes):
    return sizes
  return None


class _Counts(NamedTuple):
  """A run's record counts (None where unknown).

  ``grad``: records per gradient evaluation; ``step``, ``train``, ``test``:
  what the logged per-step, training-set and test-set losses are divided
  by to give a loss per record (1 where they already are one: a ``mean``
  reduction, a test function).
  """
  grad: int | None
  step: int | None
  train: int | None
  test: int | None


def _counts(record: results.RunRecord, flat: Mapping[str, Any]) -> _Counts:
  if flat.get("model.kind") == "function":  # a point, not records
    return _Counts(1, 1, 1, 1)
  n_train, n_test = data_sizes(record) or (None, None)
  kind = flat.get("train.regime.kind", "full_batch")
  grad = {"sgd": 1, "minibatch": flat.get("train.regime.batch_size")}.get(
      kind, n_train)
  if flat.get("loss.reduction", "mean") != "sum":
    return _Counts(grad, 1, 1, 1)
  return _Counts(grad, grad, n_train, n_test)


def _divisors(records: Sequence[results.RunRecord],
              counts: Sequence[_Counts], field: str):
  """The ``field`` counts of the runs where they differ.

  Returns:
    None where every run has the same count (nothing to divide by); a
    list of ints, one per run; or the names of the runs whose count is
    unknown (a folder of an earlier version), as a string.
  """
  values = [getattr(c, field) for c in counts]
  if all(v == values[0] for v in values):
    return None
  unknown = [rec.name for rec, v in zip(records, values)
             if not isinstance(v, numbers.Integral) or v < 1]
  return ", ".join(unknown) if unknown else [int(v) for v in values]


def _divided(record: results.RunRecord, *, step: int = 1, train: int = 1,
             test: int = 1, grad: int = 1) -> results.RunRecord:
  """A copy of a run with its losses per record and its gradient
  evaluations in record-gradients (the divisors and factor given)."""
  def scaled(d, key, by):
    if key in d and by != 1:
      d[key] = np.asarray(d[key], float) * by
  steps, epochs = dict(record.steps), dict(record.epochs)
  scaled(steps, "loss", 1 / step)
  scaled(epochs, "train_loss", 1 / train)
  scaled(epochs, "test_loss", 1 / test)
  scaled(steps, "grad_evals", grad)
  scaled(epochs, "grad_evals", grad)
  return dataclasses.replace(record, steps=steps, epochs=epochs)


def _by_run(runs: Mapping[str, Any], values: Sequence[int]) -> str:
  """``"a, b: 160; c: 1"``: the runs grouped by value."""
  groups: dict[int, list[str]] = {}
  for name, v in zip(runs, values):
    groups.setdefault(v, []).append(name)
  return "; ".join(f"{', '.join(names)}: {v}" for v, names in groups.items())


def _wall_time(record: results.RunRecord) -> float | None:
  t = final_quantities(record)["run_time"]
  if _missing(t) and "time" in record.epochs and len(record.epochs["time"]):
    t = record.epochs["time"][-1]
  return None if _missing(t) else float(t)


def _comparison_figures(runs: Mapping[str, results.RunRecord],
                        configs: Sequence[Mapping[str, Any]],
                        out: Path) -> list[_Figure]:
  """The standard figures of :func:`compare`, with the notes that stand in
  for those left out (see its docstring)."""
  records = list(runs.values())
  figs: list[_Figure] = []
  problems = _problems(configs)
  losses = ("loss_steps.png", "loss_epochs.png", "loss_grad_evals.png",
            "loss_time.png")
  if problems:
    for name in losses:
      _drop(out / name)
    figs.append(_Figure("Loss", None, (
        "**Loss figures:** none, runs on different problems; see the "
        f"analysis figures (the runs differ in "
        f"{', '.join(f'`{k}`' for k in problems)}: their losses are not on "
        f"one scale).")))
  else:
    figs += _loss_figures(runs, configs, out)
  if _has(records, "test_accuracy"):
    figs.append(_Figure("Test accuracy against epochs", plots.loss_curves(
        runs, out / "test_accuracy.png", x="epoch", y="test_accuracy",
        log_y=False)))
  constant = _constant_steps(runs)
  if constant:
    _drop(out / "step_sizes.png")
    figs.append(_Figure("Step sizes", None, constant))
  elif _has(records, "step_size"):
    figs.append(_Figure("Step sizes", plots.step_sizes(
        runs, out / "step_sizes.png")))
  tracked = {n: r for n, r in runs.items() if plots.has_tracked(r)}
  if tracked:
    figs.append(_Figure(
        "Tracked during training: curvature and noise", plots.tracked(
            tracked, out / "tracked.png",
            title="tracked during training")))
  return figs


def _loss_figures(runs: Mapping[str, results.RunRecord],
                  configs: Sequence[Mapping[str, Any]],
                  out: Path) -> list[_Figure]:
  """The loss against steps, epochs, work and wall time of runs on one
  problem, per record where the runs' losses are not on one scale."""
  records = list(runs.values())
  counts = [_counts(r, c) for r, c in zip(records, configs)]
  figs = []
  # Per step: a sum over the step's records, or their mean.
  per_step = _divisors(records, counts, "step")
  by_step = dict(runs) if not isinstance(per_step, list) else {
      n: _divided(r, step=d) for (n, r), d in zip(runs.items(), per_step)}
  if isinstance(per_step, str):
    _drop(out / "loss_steps.png")
    figs.append(_Figure("Loss against steps", None, (
        f"**Loss against steps:** no figure: the runs' per-step losses are "
        f"on different scales (a `sum` reduction adds up the losses of the "
        f"step's records), and the training set of {per_step} is unknown "
        f"(a folder of an earlier version records no data sizes), so they "
        f"cannot be put per record.")))
  elif per_step:
    figs.append(_Figure("Loss per record against steps", plots.loss_curves(
        by_step, out / "loss_steps.png", x="step", y="loss",
        ylabel="loss per record", title="loss per record against step"), (
            "The runs' per-step losses are on different scales (a `sum` "
            "reduction adds up the losses of the step's records): each is "
            "divided by the records in its step (" + _by_run(runs, per_step)
            + ").")))
  else:
    figs.append(_Figure("Loss against steps", plots.loss_curves(
        runs, out / "loss_steps.png", x="step", y="loss")))

  # Per epoch: the loss over the whole training (test) set, summed or mean.
  per_epoch = has_epochs = _has(records, "train_loss")
  if has_epochs:
    per_epoch = _divisors(records, counts, "train")
    per_test = _divisors(records, counts, "test") or [1] * len(records)
    if isinstance(per_test, str):
      per_epoch = per_test
  by_epoch = dict(runs) if not isinstance(per_epoch, list) else {
      n: _divided(r, train=a, test=b) for (n, r), a, b in zip(
          runs.items(), per_epoch, per_test)}
  if isinstance(per_epoch, str):
    for name in ("loss_epochs.png", "loss_grad_evals.png", "loss_time.png"):
      _drop(out / name)
    figs.append(_Figure("Loss against epochs", None, (
        f"**Loss against epochs, work and wall time:** no figures: the "
        f"runs' loss reductions differ (`sum`, `mean`), and the training "
        f"set of {per_epoch} is unknown (a folder of an earlier version "
        f"records no data sizes), so their losses cannot be put per "
        f"record.")))
    return figs
  if has_epochs:
    y = ("train_loss", "test_loss") if _has(records, "test_loss") \
        else "train_loss"
    figs.append(_Figure("Loss against epochs", plots.loss_curves(
        by_epoch, out / "loss_epochs.png", x="epoch", y=y,
        ylabel="loss per record" if per_epoch else "loss"),
        "" if not per_epoch else (
            "Losses per record: the runs' loss reductions differ, so a `sum` "
            "run's training and test losses are divided by its training and "
            "test records (training: " + _by_run(runs, per_epoch) + ").")))
  # Against gradient evaluations, the loss on the whole training set (logged
  # per epoch) compares runs fairly; a stochastic run's per-step loss is the
  # loss of its batch alone.
  if has_epochs or not isinstance(per_step, str):
    figs.append(_work_figure(
        by_epoch if has_epochs else by_step,
        _divisors(records, counts, "grad"), out,
        y="train_loss" if has_epochs else "loss",
        per_record=bool(per_epoch if has_epochs else per_step)))
  times = [_wall_time(r) for r in records]
  if all(t is not None and t < MIN_WALL_TIME for t in times):
    _drop(out / "loss_time.png")
    figs.append(_Figure("Training loss against wall time", None, (
        f"**Wall time:** no figure: every run took under {MIN_WALL_TIME:g} s "
        f"in all (at most {format_value(max(times), 3)} s), which times the "
        f"dispatch of its compiled program rather than the method.")))
  # Vmapped runs share their program's wall time: no figure against it.
  elif _has(records, "time") and has_epochs and not all(
      plots.shares_program(r) for r in records):
    figs.append(_Figure("Training loss against wall time", plots.loss_curves(
        by_epoch, out / "loss_time.png", x="time", y="train_loss",
        ylabel="training loss per record" if per_epoch else None)))
  return figs


def _work_figure(runs: Mapping[str, results.RunRecord], grad, out: Path, *,
                 y: str, per_record: bool) -> _Figure:
  """The loss ``y`` against gradient evaluations; in record-gradients where
  the runs' batches differ (``grad``, see :func:`_divisors`)."""
  what = "Training loss" if y == "train_loss" else "Loss"
  ylabel = f"{what.lower()} per record" if per_record else None
  path = out / "loss_grad_evals.png"
  if isinstance(grad, str):
    _drop(path)
    return _Figure(f"{what} against gradient evaluations", None, (
        f"**{what} against gradient evaluations:** no figure: the runs' "
        f"gradient evaluations are on batches of different sizes, and the "
        f"training set of {grad} is unknown (a folder of an earlier version "
        f"records no data sizes), so they cannot be counted in "
        f"record-gradients."))
  if grad is None:
    return _Figure(f"{what} against gradient evaluations", plots.loss_curves(
        runs, path, x="grad_evals", y=y, ylabel=ylabel))
  work = {n: _divided(r, grad=g) for (n, r), g in zip(runs.items(), grad)}
  fig = plots.loss_curves(
      work, x="grad_evals", y=y, ylabel=ylabel,
      title=f"{what.lower()} against the work spent (record-gradients)")
  fig.axes[0].set_xlabel(
      "record-gradients (gradient evaluations x records in each)")
  return _Figure(f"{what} against record-gradients", plots.finish(
      fig, path), (
          "Work in record-gradients: a gradient evaluation on b records "
          "counts b, so that full-batch and stochastic runs compare per unit "
          "of work (records per evaluation: " + _by_run(runs, grad) + ")."))


GRID_COLUMNS = (
    ("seeds", "seeds"),
    ("diverged", "diverged"),
    ("train_loss", "final train loss (mean)"),
    ("train_loss_min", "min"),
    ("train_loss_max", "max"),
    ("test_loss", "test loss (mean)"),
    ("test_accuracy", "test accuracy (mean)"),
    ("steps", "steps (mean)"),
    ("run_time", "wall time (s, mean)"),
)
GRID_NOTE = ("One row per grid point (the swept values but the seed): the "
             "number of seeds, how many diverged (stop reason `diverged` or "
             "a final training loss that is not finite), over the runs "
             "that did not diverge the mean final training loss with its "
             "min and max and the mean test loss and accuracy, and over "
             "every run the mean steps and wall time.")


def _diverged(final: Mapping[str, Any]) -> bool:
  loss = final.get("train_loss")
  return final.get("stop_reason") == "diverged" or (
      isinstance(loss, numbers.Real) and not math.isfinite(loss))


def _mean(values: Sequence[Any]) -> float | None:
  vals = [float(v) for v in values if not _missing(v)]
  return float(np.mean(vals)) if vals else None


def grid_point_rows(records: Sequence[results.RunRecord],
                    points: Sequence[Mapping[str, Any]]
                    ) -> tuple[list[str], list[dict[str, Any]]]:
  """Runs aggregated per grid point: the seeds of a point in one row.

  Args:
    records: the runs.
    points: each run's grid point, ``{dotted key: value}``; the runs with
      the same values of every key but ``seed`` form one row, in order of
      first appearance.

  Returns:
    ``(keys, rows)``: the grid keys but ``seed``, and a dict per point with
    those keys' values and :data:`GRID_COLUMNS` (see :data:`GRID_NOTE`;
    the loss and accuracy columns are None where every run of the point
    diverged).

  Raises:
    ValueError: ``points`` and ``records`` differ in length.
  """
  if len(points) != len(records):
    raise ValueError(f"points: expected one grid point per run "
                     f"({len(records)}); got {len(points)}.")
  keys = [k for k in dict.fromkeys(k for p in points for k in p)
          if k != "seed"]
  groups: dict[tuple, list[dict[str, Any]]] = {}
  for rec, point in zip(records, points):
    label = tuple(repr(point.get(k)) for k in keys)
    groups.setdefault(label, []).append(
        {"point": point, **final_quantities(rec)})
  rows = []
  for finals in groups.values():
    kept = [f for f in finals if not _diverged(f)]
    losses = [f["train_loss"] for f in kept if not _missing(f["train_loss"])]
    rows.append({
        **{k: finals[0]["point"].get(k) for k in keys},
        "seeds": len(finals),
        "diverged": len(finals) - len(kept),
        "train_loss": _mean(losses),
        "train_loss_min": min(losses) if losses else None,
        "train_loss_max": max(losses) if losses else None,
        **{k: _mean([f.get(k) for f in kept])
           for k in ("test_loss", "test_accuracy")},
        **{k: _mean([f.get(k) for f in finals])
           for k in ("steps", "run_time")}})
  return keys, rows


def read_sweep(folder: str | os.PathLike) -> dict[str, Any] | None:
  """A sweep folder's ``sweep.json``, or None when the folder has none.

  Returns:
    ``{"experiment": name, "grid": {dotted key: values}, "runs": [{"name":
    run folder name, "point": {dotted key: value}}]}``, as the sweep wrote
    it (:mod:`gdlab.sweep`).

  Raises:
    folders.FolderError: the file is not JSON, or not of that shape.
  """
  path = Path(folder) / SWEEP
  if not path.is_file():
    return None
  sweep = folders.read_json(path)
  runs = sweep.get("runs") if isinstance(sweep, dict) else None
  if not (isinstance(sweep, dict) and isinstance(sweep.get("grid"), dict)
          and isinstance(runs, list) and all(
              isinstance(r, dict) and isinstance(r.get("name"), str)
              and isinstance(r.get("point"), dict) for r in runs)):
    raise folders.FolderError(
        f"{path}: expected a JSON object with 'grid' (a mapping) and 'runs' "
        f"(a list of {{'name', 'point'}}); got {str(sweep)[:80]!r}: the file "
        f"is damaged.")
  return sweep


def _sweep_point(record: results.RunRecord,
                 sweeps: dict[Path, dict[str, dict]]) -> dict | None:
  """The point that the ``sweep.json`` of a run's sweep folder records."""
  parent = record.path.resolve().parent
  if parent.name != RUNS:
    return None
  if parent.parent not in sweeps:
    sweep = read_sweep(parent.parent)
    sweeps[parent.parent] = {r["name"]: r["point"]
                             for r in (sweep or {}).get("runs", ())}
  return sweeps[parent.parent].get(record.path.name)


def grid_points(records: Sequence[results.RunRecord]
                ) -> list[dict[str, Any]] | None:
  """Each run's grid point, for :func:`grid_point_rows`, where there is a grid.

  A run of a sweep folder (``<sweep>/runs/<name>`` beside the sweep's
  ``sweep.json``) has the keys of the point that ``sweep.json`` records for
  it; every point also has the dotted config keys (:func:`results.flatten`)
  whose values differ between the runs.  The values are the run's config
  values (the sweep's where the config has no such key).

  Args:
    records: the runs.

  Returns:
    A point per run, in order; None (no grid) unless some run comes from a
    sweep folder or two runs differ in nothing but ``seed``.

  Raises:
    folders.FolderError: a sweep folder's ``sweep.json`` is damaged.
  """
  configs = [results.flatten(r.config) for r in records]
  sweeps: dict[Path, dict[str, dict]] = {}
  recorded = [_sweep_point(r, sweeps) for r in records]
  keys = list(dict.fromkeys([k for p in recorded if p for k in p]
                            + _differing(configs)))
  points = [{k: c[k] if k in c else (p or {}).get(k) for k in keys}
            for c, p in zip(configs, recorded)]
  if not any(recorded):
    rest = [tuple(repr(p[k]) for k in keys if k != "seed") for p in points]
    if "seed" not in keys or len(set(rest)) == len(rest):
      return None
  return points


def run_folders(paths: Sequence[str | os.PathLike]) -> list[Path]:
  """The run folders named by ``paths``.

  A path holding a ``runs/`` folder (an experiment or sweep folder) stands
  for every folder in it, sorted by name; any other path must be a run
  folder.

  Raises:
    ValueError: if a path is not a run folder, or no run is found.
  """
  _check_paths("paths", paths)
  dirs = []
  for p in map(Path, paths):
    if (p / RUNS).is_dir():
      dirs += sorted(d for d in (p / RUNS).iterdir() if d.is_dir())
    else:
      results.load_run(p)  # Raises, naming the path, if it is not a run.
      dirs.append(p)
  if not dirs:
    raise ValueError(f"paths: expected run folders or folders holding "
                     f"{RUNS}/; found no run in "
                     f"{[str(p) for p in paths]}.")
  return dirs


def _check_paths(name: str, paths) -> None:
  """Refuses one path where a sequence of them is expected (a string would
  otherwise be read one character at a time)."""
  if isinstance(paths, (str, bytes, os.PathLike)):
    raise TypeError(f"{name}: expected a sequence of folders; got one "
                    f"{type(paths).__name__}, {str(paths)!r}: pass "
                    f"[{str(paths)!r}].")


def _differing(configs: Sequence[Mapping[str, Any]]) -> list[str]:
  """The keys (but ``name``) whose values are not the same in every config.

  A key a config lacks counts as None; keys keep their first-seen order.
  """
  keys = [k for k in dict.fromkeys(k for c in configs for k in c)
          if k != "name"]
  return [k for k in keys
          if any(c.get(k) != configs[0].get(k) for c in configs)]


def _labels(records: Sequence[results.RunRecord]) -> list[str]:
  """Run names; a name several runs share becomes ``<parent>/<folder>``.

  ``<parent>`` is the experiment folder (the one holding ``runs/``) or else
  the run folder's parent.
  """
  names = [r.name for r in records]
  out = []
  for r in records:
    if names.count(r.name) == 1:
      out.append(r.name)
      continue
    parent = r.path.resolve().parent
    if parent.name == RUNS:
      parent = parent.parent
    out.append(f"{parent.name}/{r.path.name}")
  return _unique(out)


def runs_table(run_dirs: Sequence[str | os.PathLike]
               ) -> tuple[list[str], list[dict[str, Any]]]:
  """One row per run: its name, the config values that differ, its results.

  Args:
    run_dirs: run folders, or folders holding ``runs/`` (see
      :func:`run_folders`).

  Returns:
    ``(columns, rows)``: the column keys in order, ``"run"`` first, then the
    dotted config keys (:func:`flatten`) whose values are not the same in
    every run (a key a run lacks counts as None), then those of
    :data:`TABLE_QUANTITIES` that some run has; and a dict per run, by
    column key, holding the values as read (numbers, strings, None).

  Raises:
    ValueError: if a path is not a run folder, or no run is found.
  """
  records = [results.load_run(d) for d in run_folders(run_dirs)]
  configs = [results.flatten(r.config) for r in records]
  differ = _differing(configs)
  finals = [final_quantities(r) for r in records]
  quantities = [k for k in TABLE_QUANTITIES
                if any(not _missing(f.get(k)) for f in finals)]
  rows = []
  for label, c, f in zip(_labels(records), configs, finals):
    rows.append({"run": label, **{k: c.get(k) for k in differ},
                 **{k: f.get(k) for k in quantities}})
  return ["run"] + differ + quantities, rows


def text_table(columns: Sequence[str], rows: Sequence[Mapping[str, Any]], *,
               digits: int = 4) -> str:
  """A fixed-width text table: headers, a rule, a line per row.

  Cells are :func:`format_value` (``digits`` significant digits, missing
  values as "–"); columns of numbers are right-aligned, others left.
  """
  cells = [[format_value(r.get(k), digits) for k in columns] for r in rows]
  widths = [max([len(k)] + [len(line[i]) for line in cells])
            for i, k in enumerate(columns)]
  right = [all(_missing(r.get(k)) or (isinstance(r.get(k), numbers.Real)
                                      and not isinstance(r.get(k), bool))
               for r in rows) for k in columns]

  def line(values):
    return "  ".join(v.rjust(w) if r else v.ljust(w)
                     for v, w, r in zip(values, widths, right)).rstrip()

  head = line(list(columns))
  return "\n".join([head, "-" * len(head)] + [line(c) for c in cells])
