"""The ``gdlab`` command: a thin layer over the library.

Every subcommand calls a public function of gdlab, so the same work can be done
from a script or a notebook.  Bad input ends with exit code 2 and one line on
standard error that says what is wrong and what is allowed (``GDLAB_DEBUG=1``
shows the traceback instead).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import jax

from gdlab import _checks
from gdlab import activations
from gdlab import analyses
from gdlab import build
from gdlab import compilation_cache
from gdlab import config as config_lib
from gdlab import data as data_lib
from gdlab import distributed
from gdlab import folders
from gdlab import gradcheck
from gdlab import interrupts
from gdlab import loop
from gdlab import losses
from gdlab import models
from gdlab import objective
from gdlab import progress as progress_lib
from gdlab import report
from gdlab import results
from gdlab import run as run_lib
from gdlab import sweep
from gdlab import tensorboard
from gdlab.config import ConfigError


def _use_all_cores() -> None:
  """On CPU, one XLA host device per core, so sweeps shard across cores.

  Must run before JAX initialises its backends (its first computation or
  device query; importing gdlab does neither); it changes nothing on GPU or
  TPU, and is left alone when XLA_FLAGS already sets the count.
  """
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_force_host_platform_device_count" not in flags:
    os.environ["XLA_FLAGS"] = (
        f"{flags} --xla_force_host_platform_device_count="
        f"{os.cpu_count() or 1}").strip()


class UsageError(Exception):
  """Bad input from the command line: reported in one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
  """argparse's parser, reporting bad usage in one line, exit status 2.

  ``gdlab run: error: unrecognized arguments: --foo (see gdlab run --help)``
  on standard error, instead of the usage text and the message.
  """

  def error(self, message: str):
    self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see "
              f"{self.prog} --help)\n")


class _CommandParser(_Parser):
  """A subcommand's parser: reports the arguments it does not know itself.

  argparse leaves them to the top-level parser, whose message would name
  ``gdlab`` rather than ``gdlab run``.
  """

  def parse_known_args(self, args=None, namespace=None):
    namespace, extras = super().parse_known_args(args, namespace)
    if extras:
      self.error(f"unrecognized arguments: {' '.join(extras)}")
    return namespace, extras


def _int_in(bounds: config_lib.Bounds):
  """An argparse type: an integer within ``bounds``."""
  def parse(text: str) -> int:
    try:
      value = int(text)
      bounds.check("", value)
    except ValueError:  # not an integer, or out of bounds (ConfigError)
      raise argparse.ArgumentTypeError(
          f"expected {bounds}; got {config_lib.short(text)}") from None
    return value
  return parse


def _csv(text: str) -> list[str]:
  return [t.strip() for t in text.split(",") if t.strip()]


# check-grads' plain progress lines: seconds between two (its rows are
# quicker than a run's epochs; runs use gdlab.progress.LINE_SECONDS).
PROGRESS_SECONDS = 5.0
# check-grads builds width-4 MLPs of up to this many hidden layers.
MAX_DEPTH = 32


def _depths(text: str) -> list[int]:
  """``--depths``: comma-separated numbers of hidden layers, each >= 0."""
  try:
    depths = [int(d) for d in _csv(text)]
  except ValueError:
    depths = []
  if not depths or not 0 <= min(depths) <= max(depths) <= MAX_DEPTH:
    raise UsageError(f"--depths: expected comma-separated integers >= 0 and "
                     f"<= {MAX_DEPTH} (numbers of hidden layers); got "
                     f"{config_lib.short(text)}.")
  return depths


def _names(flag: str, text: str | None, allowed) -> list[str]:
  """A comma-separated list of names from ``allowed``; all when not given."""
  if text is None:
    return list(allowed)
  names = _csv(text)
  if not names:
    raise UsageError(f"{flag}: expected comma-separated names from "
                     f"{', '.join(map(repr, allowed))}; got "
                     f"{config_lib.short(text)}.")
  for name in names:
    _checks.check_choice(flag, name, allowed)
  return names


class _RowProgress:
  """An ``on_row`` for ``gradcheck.grid``, shown by ``gdlab.progress``.

  A bar on a terminal or in a notebook; elsewhere a plain line every
  ``every`` seconds (default :data:`PROGRESS_SECONDS`).  Nothing goes to
  standard output.
  """

  def __init__(self, stream=sys.stderr, every: float | None = None):
    self.stream = stream
    self.every = PROGRESS_SECONDS if every is None else every
    self.progress = None

  @property
  def bar(self):
    """The tqdm bar, on a terminal or in a notebook (else ``None``)."""
    return None if self.progress is None else self.progress.bar

  def __call__(self, i: int, total: int, row) -> None:
    del row
    if self.progress is None:
      self.progress = progress_lib.Progress(
          total, label="check-grads", unit="row", show=True,
          stream=self.stream, every=self.every)
    self.progress.update(i + 1)
    if i + 1 == total:
      self.close()

  def close(self) -> None:
    if self.progress is not None:
      self.progress.close()


def _cmd_check_grads(args) -> int:
  acts = _names("--activations", args.activations, activations.names())
  loss_names = _names("--losses", args.losses, losses.names())
  biases = _names("--biases", args.biases, models.BIAS_ARRANGEMENTS)
  depths = _depths(args.depths)
  reductions = _names("--reductions", args.reductions, losses.REDUCTIONS)
  # float64 where the backend has it (not on a TPU); before the first array.
  precision = gradcheck.precision(dtype=args.precision)
  jax.config.update("jax_enable_x64", precision.dtype == "float64")
  on_row = _RowProgress(sys.stderr)
  try:
    rows = gradcheck.grid(acts, loss_names, biases, depths, reductions,
                          seed=args.seed, on_row=on_row, precision=precision)
  finally:
    on_row.close()
  print("Hand-written backpropagation against jax.grad and central finite "
        f"differences ({precision.dtype}: {precision.why}, backend "
        f"{jax.default_backend()};")
  print(f"pass: relative error <= {precision.autodiff_tol:g} against "
        f"jax.grad and <= {precision.fd_tol:g} against finite differences "
        f"with h = {precision.fd_step:g}).")
  print(gradcheck.format_table(rows, precision))
  return 0 if all(r.passed for r in rows) else 1


def _check_names(cfg: config_lib.RunConfig) -> None:
  """The names a run config gives, against those the builders take.

  Checked before anything is built, so that a misspelt name fails before
  any data is loaded or folder made (the builders check them again).
  """
  choices = [
      ("data.name", cfg.data.name, data_lib.function_names()
       if build.is_function_problem(cfg) else data_lib.names()),
      ("model.kind", cfg.model.kind, build.MODEL_KINDS),
      ("model.activation", cfg.model.activation, activations.names()),
      ("model.output_activation", cfg.model.output_activation,
       activations.names()),
      ("model.bias", cfg.model.bias, models.BIAS_ARRANGEMENTS),
      ("model.init", cfg.model.init, models.INITS),
      ("loss.name", cfg.loss.name, losses.names()),
      ("loss.reduction", cfg.loss.reduction, losses.REDUCTIONS),
      ("train.dtype", cfg.train.dtype, build.DTYPES),
      ("train.engine", cfg.train.engine, objective.ENGINES),
      ("train.step_metrics", cfg.train.step_metrics,
       loop.STEP_METRIC_CHOICES),
  ]
  if cfg.loss.penalty is not None:
    choices.append(("loss.penalty", cfg.loss.penalty, losses.PENALTIES))
  for key, value, allowed in choices:
    _checks.check_choice(key, value, allowed)
  try:
    # Builds the optax transformation (nothing runs): checks the
    # optimizer's names and the relations between its numbers.
    build.optimizer(cfg.optimizer)
  except (ValueError, TypeError) as e:
    message = str(e)
    raise ConfigError(message if message.startswith("optimizer.")
                      else f"optimizer.{message}") from e


def _load(args):
  """The experiment and its ``--set`` overrides, checked before any work.

  The file and every setting of every run (gdlab.config: keys, types,
  ranges), the names the builders take (:func:`_check_names`) and the
  analysis (``gdlab.analyses.check``): what can be checked without data
  fails here, before anything is built, compiled or written.
  """
  try:
    path = run_lib.find(args.config)
  except OSError as e:  # a name too long for a path, say
    raise ConfigError(f"config: expected an experiment name or a YAML file; "
                      f"got {config_lib.short(args.config)} "
                      f"({(e.strerror or 'not a path').lower()}).") from e
  exp = config_lib.load(path)
  # The default results folder is named after the experiment.
  folders.check_name("name", exp.name)
  sets = config_lib.parse_sets(args.set)
  if getattr(args, "devices", None) is not None:
    sets["train.devices"] = args.devices
  if getattr(args, "tensorboard", None) is not None:
    sets["train.tensorboard"] = args.tensorboard
  analyses.check(exp)
  for cfg in config_lib.resolve_runs(exp, smoke=getattr(args, "smoke", False),
                                     sets=sets):
    _check_names(cfg)
    if cfg.train.tensorboard is not None:
      try:
        tensorboard.require(tensorboard.CONFIG_KEY)
      except ImportError as e:
        raise UsageError(str(e)) from None
  return exp, sets


def _default_out(kind: str, name: str) -> Path:
  stamp = time.strftime("%Y%m%d-%H%M%S")
  return Path("runs") / f"{name}-{kind}-{stamp}"


def _interrupted(out: Path, again: str | None) -> str:
  """The line printed when a command was interrupted: what is on disk."""
  state = results.describe(out)
  if again and folders.is_gdlab_folder(out):
    return f"interrupted: {state}; continue with: {again}"
  return f"interrupted: {state}"


def _cmd_run(args) -> int:
  if getattr(args, "distributed", False):
    distributed.initialize(args.coordinator, args.num_processes,
                           args.process_id)
  exp, sets = _load(args)
  out = Path(args.out) if args.out else _default_out("run", exp.name)
  if args.resume and not args.out:
    raise UsageError("--resume: expected the folder to continue, given "
                     "with --out; got no --out.")
  if getattr(args, "allow_changes", False) and not args.resume:
    raise UsageError("--allow-changes: expected with --resume; got it "
                     "alone.")
  again = (f"gdlab run {args.config} --out {out} --resume" +
           "".join(f" --set {s}" for s in args.set or []) +
           (f" --tensorboard {args.tensorboard}"
            if getattr(args, "tensorboard", None) else ""))
  try:
    with interrupts.deferred(f"{out} is valid up to its last checkpoint; "
                             f"continue with: {again}", hard_exit=True):
      run_lib.run_experiment(exp, out, smoke=args.smoke, sets=sets,
                             resume=args.resume,
                             allow_changes=getattr(args, "allow_changes",
                                                   False))
  except KeyboardInterrupt as e:
    interrupts.consume()
    print(f"\n{_interrupted(out, again)}", file=sys.stderr)
    return interrupts.exit_code(e)
  if not distributed.is_writer():
    return 0
  print(f"results: {out}")
  print(f"report:  {out / 'report.md'}")
  print(f"plots:   {out / 'plots'}")
  return 0


def _parse_grid(items: Sequence[str] | None) -> dict | None:
  if not items:
    return None
  grid = {}
  for item in items:
    key, eq, text = item.partition("=")
    if not eq or not key.strip() or not text.strip():
      raise UsageError(f"--grid: expected key=v1,v2,...; got {item!r}.")
    grid[key.strip()] = [config_lib.parse_value(v) for v in text.split(",")]
  return grid


def _cmd_sweep(args) -> int:
  exp, sets = _load(args)
  grid = _parse_grid(args.grid)
  for key, values in (grid or {}).items():
    for v in values:
      config_lib.override(exp.base, key, v)
  out = Path(args.out) if args.out else _default_out("sweep", exp.name)
  try:
    with interrupts.deferred(f"the runs written so far are in {out}; a "
                             f"sweep does not resume: run it again with "
                             f"another --out", hard_exit=True):
      sweep.run_sweep(exp, out, grid=grid, smoke=args.smoke, sets=sets)
  except KeyboardInterrupt as e:
    interrupts.consume()
    print(f"\n{_interrupted(out, None)}; a sweep does not resume: run it "
          f"again with another --out", file=sys.stderr)
    return interrupts.exit_code(e)
  print(f"results: {out}")
  print(f"report:  {out / 'report.md'}")
  return 0


def _cmd_report(args) -> int:
  """A comparison report; of one finished sweep folder, the sweep's own.

  Runs that form a grid (runs of sweep folders, or runs that differ only
  by seed) get a table per grid point (``report.grid_points``).
  """
  dirs = report.run_folders(args.run_dirs)
  out = Path(args.out) if args.out else (
      _own_report_kept(Path(args.run_dirs[0])) if len(args.run_dirs) == 1
      else _default_out("report", "compare"))
  if len(args.run_dirs) == 1 and report.read_sweep(args.run_dirs[0]):
    path = sweep.report_folder(args.run_dirs[0], out)
  else:
    path = report.compare(dirs, out)
  print(f"report: {path}")
  return 0


def _own_report_kept(folder: Path) -> Path:
  """Where a report of one folder goes by default: the folder itself, but
  ``<folder>/compare`` for an experiment's, whose own report (with its
  analysis) stays as it is."""
  marker = folders.read_marker(folder)
  if marker is not None and marker.get("kind") == "experiment":
    return folder / "compare"
  return folder


def _csv_cell(v) -> str:
  """A CSV cell: numbers in full, lists and mappings as JSON, None empty."""
  if report._missing(v):
    return ""
  if isinstance(v, (list, tuple, dict)):
    return json.dumps(v)
  return str(v)


def _cmd_table(args) -> int:
  columns, rows = report.runs_table(args.run_dirs)
  if args.csv:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([_csv_cell(r[k]) for k in columns] for r in rows)
    folders.atomic_write(args.csv, buf.getvalue())
  if args.json:
    results.write_json(args.json, rows)
  print(report.text_table(columns, rows))
  return 0


def _cmd_list(args) -> int:
  del args
  names = run_lib.experiment_names()
  width = max((len(n) for n in names), default=0)
  for name in names:
    exp = config_lib.load(run_lib.find(name))
    print(f"{name:<{width}}  {exp.question or exp.description}")
  return 0


def _cmd_devices(args) -> int:
  del args
  print(f"jax {jax.__version__}, default backend: {jax.default_backend()}")
  for d in jax.devices():
    print(f"  {d.id}: {d.platform} {d.device_kind}")
  return 0


def build_parser() -> argparse.ArgumentParser:
  parser = _Parser(
      prog="gdlab",
      description="Study how gradient descent and backpropagation train "
      "models.")
  sub = parser.add_subparsers(dest="command", metavar="COMMAND",
                              required=True, parser_class=_CommandParser)

  p = sub.add_parser(
      "check-grads",
      help="compare the hand-written backpropagation with jax.grad and "
      "finite differences",
      description="Print a table over activations x losses x bias "
      "arrangements x depths with the largest relative error of the "
      "hand-written gradient against jax.grad and against central finite "
      "differences, in float64. Exits 1 if any row fails.")
  p.add_argument("--activations", help="comma-separated names (default: all)")
  p.add_argument("--losses", help="comma-separated names (default: all)")
  p.add_argument("--biases", help="comma-separated bias arrangements "
                 "(default: all)")
  p.add_argument("--depths", default="0,1,3",
                 help="comma-separated numbers of hidden layers, each >= 0 "
                 "(default: 0,1,3)")
  p.add_argument("--precision", default="auto",
                 choices=("auto", "float64", "float32"),
                 help="auto: float64 where the backend has it, float32 on "
                 "a TPU (with looser tolerances; default: auto)")
  p.add_argument("--reductions", default="mean",
                 help="mean and/or sum (default: mean)")
  p.add_argument("--seed", type=_int_in(config_lib.SEED), default=0)
  p.set_defaults(fn=_cmd_check_grads)

  p = sub.add_parser("devices", help="list the devices JAX sees")
  p.set_defaults(fn=_cmd_devices)

  def add_config_args(p):
    p.add_argument("config", help="an experiment name (see `gdlab list`) or "
                   "a YAML file")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a setting, e.g. --set "
                   "optimizer.learning_rate=0.5 (repeatable; type-checked)")
    p.add_argument("--out", help="results folder (default: "
                   "runs/<name>-<kind>-<time>)")
    p.add_argument("--smoke", action="store_true",
                   help="shrink the experiment to run in seconds")
    p.add_argument("--tensorboard", metavar="DIR",
                   help="also write TensorBoard event files, one folder per "
                   "run, DIR/<run name> (needs the extra: pip install "
                   "\"gdlab[tensorboard]\"; same as --set "
                   "train.tensorboard=DIR)")

  p = sub.add_parser(
      "run", help="run an experiment",
      description="Run every variant of an experiment and write a results "
      "folder: runs/<variant>/ (config.yaml, metrics.jsonl, steps.npz, "
      "summary.json, checkpoint, plots) and a comparison report.md with "
      "plots.")
  add_config_args(p)
  p.add_argument("--resume", action="store_true",
                 help="continue an interrupted run in --out (refused if the "
                 "config or data differ from the run's)")
  p.add_argument("--allow-changes", action="store_true",
                 help="with --resume: accept changed budgets ("
                 + ", ".join(results.SAFE_CHANGES) + ")")
  p.add_argument("--devices", type=_int_in(config_lib.counter(1)),
                 metavar="N",
                 help="train data-parallel over N devices (the batch is "
                 "sharded; same as --set train.devices=N)")
  p.add_argument("--distributed", action="store_true",
                 help="run as one of several processes (jax.distributed); "
                 "without the three flags below, JAX detects the cluster")
  p.add_argument("--coordinator", metavar="HOST:PORT",
                 help="address of process 0's coordination service")
  p.add_argument("--num-processes", type=_int_in(config_lib.counter(1)),
                 metavar="N")
  p.add_argument("--process-id", type=_int_in(config_lib.counter(0)),
                 metavar="I")
  p.set_defaults(fn=_cmd_run)

  p = sub.add_parser(
      "sweep", help="run a hyperparameter grid as vmapped programs",
      description="Run the experiment's sweep grid (or --grid): runs that "
      "differ only in numeric hyperparameters and seeds run as one vmapped "
      "program sharded over all devices; each run gets its own folder.")
  add_config_args(p)
  p.add_argument("--grid", action="append", metavar="KEY=V1,V2,...",
                 help="a grid axis, e.g. --grid "
                 "optimizer.learning_rate=0.01,0.1,1 (repeatable)")
  p.set_defaults(fn=_cmd_sweep)

  p = sub.add_parser(
      "report", help="compare run folders",
      description="Write a comparison table and overlaid plots of several "
      "run folders (or experiment or sweep folders holding runs/). Runs "
      "that form a grid (those of sweep folders, or runs that differ only "
      "by seed) also get a table per grid point: mean and spread over the "
      "seeds, how many diverged. A finished sweep folder alone gets its "
      "sweep's own report, sensitivity figures included.")
  p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
  p.add_argument("--out", help="where to write report.md and plots/ "
                 "(default: the one folder given, <folder>/compare for an "
                 "experiment's, or a new folder under runs/)")
  p.set_defaults(fn=_cmd_report)

  p = sub.add_parser(
      "table", help="tabulate runs: differing settings and final results",
      description="Print one row per run (a run folder, or every run of an "
      "experiment or sweep folder holding runs/): the config values that "
      "differ between the runs, the final training and test loss and "
      "accuracy, stop reason, steps, epochs, compile and run time (s).")
  p.add_argument("run_dirs", nargs="+", metavar="RUN_OR_FOLDER")
  p.add_argument("--csv", metavar="PATH", help="also write the table as CSV "
                 "(numbers in full precision)")
  p.add_argument("--json", metavar="PATH", help="also write the rows as a "
                 "JSON list of objects keyed by column")
  p.set_defaults(fn=_cmd_table)

  p = sub.add_parser("list", help="list the experiments and what each shows")
  p.set_defaults(fn=_cmd_list)

  p = sub.add_parser("demo", help="run the default experiment")
  p.set_defaults(fn=_cmd_run, config="default", set=None, out=None,
                 smoke=False, resume=False, allow_changes=False,
                 devices=None, distributed=False)
  return parser


def _main(argv: Sequence[str] | None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  if not getattr(args, "fn", None):
    parser.print_help()
    return 2
  # Before any command runs: JAX reads XLA_FLAGS when it initialises its
  # backends, at the first computation or device query, not at import.
  _use_all_cores()
  # Every program of the command, from its first, goes to the persistent
  # compilation cache (GDLAB_COMPILATION_CACHE=off turns it off).
  compilation_cache.enable()
  try:
    return args.fn(args)
  except (UsageError, ConfigError, ValueError, TypeError) as e:
    # gdlab reports bad input as ValueError/TypeError naming the argument;
    # GDLAB_DEBUG=1 shows the traceback instead.
    if os.environ.get("GDLAB_DEBUG"):
      raise
    print(f"gdlab {args.command}: error: {e}", file=sys.stderr)
    return 2
  except OSError as e:
    # A file or folder that cannot be read or written: one line naming it.
    if os.environ.get("GDLAB_DEBUG"):
      raise
    where = f"{e.filename!r}: " if e.filename else ""
    print(f"gdlab {args.command}: error: {where}{e.strerror or e}.",
          file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
  """The ``gdlab`` command; returns its exit status.

  From its first line to its last, Ctrl-C and SIGTERM stop the command at a
  safe point, never inside an XLA compilation (:mod:`gdlab.interrupts`),
  with exit status 130 or 143; a second one stops it at once.
  """
  try:
    with interrupts.deferred(hard_exit=True):
      return _main(argv)
  except KeyboardInterrupt as e:
    print("\ngdlab: interrupted", file=sys.stderr)
    return interrupts.exit_code(e)


if __name__ == "__main__":
  sys.exit(main())
