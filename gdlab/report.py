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

import math
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

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


def _figures(figs, report_dir: Path) -> list[str]:
  out = []
  for caption, path in figs:
    out += [f"### {caption}", "", _image(path, report_dir, caption), ""]
  return out


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
  ``accuracy.png``, ``step_size.png``, ``tracked.png`` (the quantities of
  ``train.track``: sharpness against ``2/eta``, Hessian trace, noise scale)
  and, for a run with a trajectory on a 2-D test function, ``surface.png``.

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
  if _has([rec], "step_size"):
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
  lines += _figures(figs, rec.path)
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
  where runs tracked curvature or noise (``train.track``).

  Args:
    run_dirs: run folders (or records already loaded).
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
  records = [r if isinstance(r, results.RunRecord) else results.load_run(r)
             for r in run_dirs]
  if not records:
    raise ValueError("run_dirs: expected at least one run folder; got none.")
  out_dir = Path(out_dir)
  out = out_dir / results.PLOTS
  runs = dict(zip(_labels(records), records))
  figs = [("Loss against steps", plots.loss_curves(
      runs, out / "loss_steps.png", x="step", y="loss"))]
  if _has(records, "train_loss"):
    y = ("train_loss", "test_loss") if _has(records, "test_loss") \
        else "train_loss"
    figs.append(("Loss against epochs", plots.loss_curves(
        runs, out / "loss_epochs.png", x="epoch", y=y, ylabel="loss")))
  # Against gradient evaluations, the loss on the whole training set (logged
  # per epoch) compares runs fairly; a stochastic run's per-step loss is the
  # loss of its batch alone.
  per_epoch = _has(records, "train_loss")
  figs.append((
      "Training loss against gradient evaluations" if per_epoch else
      "Loss against gradient evaluations",
      plots.loss_curves(runs, out / "loss_grad_evals.png", x="grad_evals",
                        y="train_loss" if per_epoch else "loss")))
  # Vmapped runs share their program's wall time: no figure against it.
  if _has(records, "time") and _has(records, "train_loss") and not all(
      plots.shares_program(r) for r in records):
    figs.append(("Training loss against wall time", plots.loss_curves(
        runs, out / "loss_time.png", x="time", y="train_loss")))
  if _has(records, "test_accuracy"):
    figs.append(("Test accuracy against epochs", plots.loss_curves(
        runs, out / "test_accuracy.png", x="epoch", y="test_accuracy",
        log_y=False)))
  if _has(records, "step_size"):
    figs.append(("Step sizes", plots.step_sizes(runs, out / "step_sizes.png")))
  tracked = {n: r for n, r in runs.items() if plots.has_tracked(r)}
  if tracked:
    figs.append(("Tracked during training: curvature and noise", plots.tracked(
        tracked, out / "tracked.png",
        title="tracked during training (2/eta dashed on the sharpness)")))

  configs = [results.flatten(r.config) for r in records]
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
  dirs = []
  for p in map(Path, paths):
    if (p / RUNS).is_dir():
      dirs += sorted(d for d in (p / RUNS).iterdir() if d.is_dir())
    else:
      results.load_run(p)  # Raises, naming the path, if it is not a run.
      dirs.append(p)
  if not dirs:
    raise ValueError(f"run_dirs: expected run folders or folders holding "
                     f"{RUNS}/; found no run in "
                     f"{[str(p) for p in paths]}.")
  return dirs


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
