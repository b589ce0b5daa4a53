"""Sweeps: a grid of runs, as few compiled programs as possible.

A sweep is a grid over dotted config keys (``optimizer.learning_rate``,
``seed``, ...).  Its runs are grouped by *structure*: runs that differ only
in the keys a config marks sweepable (``gdlab.config.sweepable``: the
optimizer's numeric hyperparameters, the penalty strength, the seed) share
one program, the chunk program of ``gdlab.loop`` ``jax.vmap``-ped over the
numbers of their optimizers (``gdlab.optim.hyperparams``) and over their
seeds, with the batch of runs sharded over every available device (on a
CPU-only machine, the host devices that
``--xla_force_host_platform_device_count`` creates; the ``gdlab`` command
sets it to the number of cores).  Runs that differ in anything else (model
shape, optimizer type, batch size, data set; a momentum of exactly 0, which
keeps no velocity buffer) form separate groups, one program each.  Each run
is built from its own config, as if it ran alone; the sweep only stacks the
numbers, and no config ever holds a traced value.

Each run of a group keeps its own stopping state, so it stops when its own
criteria say; the group's program runs until every run has stopped.  Each run
gets its own folder, as if it had run alone: the same steps, stop reason and
evaluation counts (a line search's stored point is reused as alone), and the
same numbers to rounding: XLA compiles the vmapped program on its own, and a
batched matrix product may sum in another order than a single one.  Measured
on the smoke sweeps of ``default``, ``step_size`` and ``convexity`` (float32,
CPU): 46 of 62 runs differ, each step's loss by at most 2e-6 relative (a few
ulps); final losses by at most 1.1e-6, except near the edge of stability
(``step_size`` at learning rates 0.7 and 1), where the dynamics amplify the
rounding to 3e-4.  The tests hold sweeps to 1e-5 against runs alone.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gdlab import build
from gdlab import compilation_cache
from gdlab import config as config_lib
from gdlab import folders
from gdlab import history as history_lib
from gdlab import interrupts
from gdlab import loop
from gdlab import parallel
from gdlab import plots
from gdlab import progress as progress_lib
from gdlab import report
from gdlab import results
from gdlab import stopping
from gdlab import tensorboard
from gdlab.optim import hyperparams


def _blank(cfg: config_lib.RunConfig, key: str) -> config_lib.RunConfig:
  """``cfg`` with the dotted ``key`` set to ``None``: a grouping key only."""
  head, _, rest = key.partition(".")
  value = _blank(getattr(cfg, head), rest) if rest else None
  return dataclasses.replace(cfg, **{head: value})


def _fmt(v: Any) -> str:
  return f"{v:g}" if isinstance(v, float) else str(v)


def expand(base_runs: list[config_lib.RunConfig],
           grid: dict[str, list]) -> list[tuple[config_lib.RunConfig, dict]]:
  """Every (run config, grid point) of the grid, for every base run."""
  keys = list(grid)
  out = []
  for base in base_runs:
    for values in itertools.product(*(grid[k] for k in keys)):
      point = dict(zip(keys, values))
      cfg = config_lib.apply_overrides(base, point)
      suffix = ",".join(f"{k.split('.')[-1]}={_fmt(v)}" for k, v in
                        point.items())
      name = f"{base.name}[{suffix}]" if suffix else base.name
      out.append((dataclasses.replace(cfg, name=name), point))
  return out


def group(runs: list[tuple[config_lib.RunConfig, dict]],
          grid_keys: list[str]) -> list[tuple[list[str], list]]:
  """Groups runs by structure; returns ``[(vmapped_keys, runs)]``.

  The structure is the config with its swept sweepable keys blanked, and
  the recipe of its optimizer.
  """
  groups: dict[Any, tuple[list[str], list]] = {}
  for cfg, point in runs:
    vkeys = [k for k in grid_keys if config_lib.sweepable(k, cfg)]
    blank = cfg
    for k in vkeys:
      blank = _blank(blank, k)
    recipe, _ = hyperparams.split(build.run_optimizer(cfg))
    sig = (repr(dataclasses.replace(blank, name="")), recipe)
    groups.setdefault(sig, (vkeys, []))[1].append((cfg, point))
  return list(groups.values())


def _mesh(n_runs: int, n_data: int) -> tuple[Mesh, int]:
  """A ("runs", "data") mesh: configurations x data-parallel devices."""
  devices = jax.devices()
  if n_data > len(devices):
    raise config_lib.ConfigError(
        f"train.devices: asked for {n_data} data-parallel devices; "
        f"{len(devices)} are available.")
  n = max(1, min(len(devices) // n_data, n_runs))
  grid = np.array(devices[:n * n_data]).reshape(n, n_data)
  return Mesh(grid, ("runs", parallel.DATA_AXIS)), n


def _stack(trees: list, dtype) -> Any:
  """The runs' numbers, stacked leaf by leaf into arrays of ``dtype``."""
  return jax.tree_util.tree_map(
      lambda *leaves: jnp.asarray(np.asarray(leaves, np.float64), dtype),
      *trees)


def group_plan(cfgs: list[config_lib.RunConfig], vkeys: list[str],
               smoke: bool = False):
  """``(plan, numbers of every run, data)`` of one group of runs."""
  base = cfgs[0]
  data, ds = build.dataset(base, smoke)
  objective = build.objective(base, ds)
  # A line search's stored point is reused as in a run alone (vmapped, the
  # cond becomes a select that evaluates anyway, but the numbers and the
  # evaluation counts are those of the run alone).
  optimizers = [build.run_optimizer(c) for c in cfgs]
  regime, criteria = base.train.regime, base.train.stop
  n_train = int(data.x_train.shape[0])
  chunk = base.train.chunk_epochs or loop.default_chunk_epochs(
      criteria.max_epochs, regime.steps_per_epoch(n_train))
  strength = "loss.strength" in vkeys and objective.penalty is not None
  plan, _ = loop.make_plan(
      objective, optimizers[0], regime, criteria, n_train=n_train,
      engine=base.train.engine, chunk_epochs=chunk,
      has_test=data.x_test is not None,
      record_params=build.is_function_problem(base),
      eval_every=base.train.eval_every,
      n_test=0 if data.x_test is None else int(data.x_test.shape[0]),
      step_metrics=base.train.step_metrics, strength_input=strength)
  numbers = []
  for c, opt in zip(cfgs, optimizers):
    n = {"optimizer": hyperparams.split(opt)[1]}
    if strength:
      n["strength"] = c.loss.strength
    numbers.append(n)
  return plan, numbers, data


def run_group(cfgs: list[config_lib.RunConfig], vkeys: list[str],
              out_dir: Path, *, smoke: bool = False,
              progress: bool | None | progress_lib.Options = True
              ) -> list[Path]:
  """Runs one group of structurally identical runs as one vmapped program.

  ``progress`` (as ``gdlab.fit``'s, on standard error): a bar over the
  group's epochs, or plain lines in a log file, with how many of its runs
  are still running, then one line that counts their stop reasons.
  """
  base = cfgs[0]
  dtype = build.float_dtype(base)
  plan, numbers, data = group_plan(cfgs, vkeys, smoke)
  # Runs are spread over the "runs" axis of the mesh; with train.devices set,
  # each run is also data parallel over the "data" axis.
  mesh, n_dev = _mesh(len(cfgs), base.train.devices or 1)
  if base.train.devices:
    plan = plan._replace(mesh=mesh)
  # Pad the batch of runs to a multiple of the "runs" axis; padding repeats
  # the last run and is dropped.
  n_pad = (-len(cfgs)) % n_dev
  numbers = _stack(numbers + [numbers[-1]] * n_pad, dtype)
  seeds = jnp.asarray([c.seed for c in cfgs + [cfgs[-1]] * n_pad],
                      jnp.uint32)

  def init_one(seed, n):
    objective, optimizer = loop.assemble(plan, n)
    return loop.initial_carry(objective, optimizer,
                              jax.random.PRNGKey(seed))

  runs = NamedSharding(mesh, PartitionSpec("runs"))
  seeds, numbers = jax.device_put((seeds, numbers), runs)
  data = parallel.shard_data(data, mesh)
  data_sharding = jax.tree_util.tree_map(lambda a: a.sharding, data)
  carry = loop.own_buffers(jax.jit(jax.vmap(init_one), out_shardings=runs)(
      seeds, numbers))
  program, compile_time = loop.compiled_chunk(
      plan, carry, data, numbers, vmapped=(mesh, runs, data_sharding))

  histories = [history_lib.empty_history() for _ in cfgs]
  bar = progress_lib.Progress.of(progress, progress_lib.epoch_budget(
      plan.criteria, plan.regime.steps_per_epoch(plan.n_train)))
  try:
    carry, interrupted = loop.drive(program, carry, data, numbers, histories,
                                    batched=True, bar=bar)
  except BaseException:
    bar.close()
    raise
  bar.close("interrupted" if interrupted else
            progress_lib.group_message(histories))
  if interrupted:
    raise interrupts.Interrupted(interrupts.last_signal() or 2)
  carry = jax.device_get(carry)
  run_dirs = []
  for i, cfg in enumerate(cfgs):
    h = histories[i]
    h.stop_reason = stopping.reason_name(carry.stop.reason[i])
    # The group's compile time, shared by its runs.
    h.compile_time = compile_time
    carry_i = jax.tree_util.tree_map(lambda v, i=i: v[i], carry)
    run_dir = out_dir / "runs" / cfg.name
    folders.create(run_dir, "run", name=cfg.name,
                   config_sha256=folders.config_sha256(cfg))
    results.write_run(run_dir, cfg, h, carry_i, extra={
        "sweep_group_size": len(cfgs), "sweep_devices": int(mesh.size),
        "sweep_mesh": dict(mesh.shape), **results.data_counts(data)})
    if cfg.train.tensorboard is not None:
      with tensorboard.Writer(tensorboard.run_logdir(cfg),
                              hparams=tensorboard.config_hparams(cfg)) as tb:
        tb.write(h)
    run_dirs.append(run_dir)
  return run_dirs


def run_sweep(exp: config_lib.ExperimentConfig, out_dir, *,
              grid: dict[str, list] | None = None, smoke: bool = False,
              sets: dict | None = None, report: bool = True) -> Path:
  """Runs the sweep grid of ``exp`` (or ``grid``) and writes the report.

  Its programs go to JAX's persistent compilation cache
  (``gdlab.compilation_cache``), as :func:`gdlab.fit`'s do.  ``out_dir``
  must be new or empty (a sweep is not resumable: run it again in a new
  folder); the run names and the folder are checked before anything runs.
  """
  compilation_cache.enable()
  grid = grid if grid is not None else exp.sweep
  if not grid:
    raise config_lib.ConfigError(
        f"sweep: experiment {exp.name!r} has no sweep grid; give one with "
        f"--grid key=v1,v2 (e.g. --grid optimizer.learning_rate=0.01,0.1).")
  for key, values in grid.items():
    if len({repr(v) for v in values}) != len(values):
      raise config_lib.ConfigError(
          f"sweep.{key}: expected distinct values (each run gets its own "
          f"folder); got {values!r}.")
  out = Path(out_dir)
  base_runs = config_lib.resolve_runs(exp, smoke=smoke, sets=sets,
                                      variants=False)
  runs = expand(base_runs, grid)
  for cfg, _ in runs:
    folders.check_name("sweep run name", cfg.name)
    tensorboard.check(cfg)
    if cfg.train.track is not None:
      raise config_lib.ConfigError(
          f"train.track: a sweep does not track curvature (its runs train "
          f"as one vmapped program); got {cfg.train.track.metrics!r} in run "
          f"{cfg.name!r}. Set train.track: null, or run the variants with "
          f"`gdlab run`.")
  folders.check_out(out, "sweep")
  interrupts.check()  # a signal during the checks: nothing is written
  with folders.removed_if_rejected(out):
    folders.create(out, "sweep", name=exp.name)
    with interrupts.deferred(), folders.locked(out):
      return _run_sweep(exp, out, runs, grid, smoke=smoke, report=report)


def _run_sweep(exp, out: Path, runs, grid, *, smoke, report) -> Path:
  by_name = {}
  groups = group(runs, list(grid))
  for i, (vkeys, members) in enumerate(groups):
    interrupts.check()
    # "default sweep", "default/sgd sweep" (a variant's seeds), "... 2/3".
    base = members[0][0].name.partition("[")[0]
    label = (exp.name if base == exp.name else f"{exp.name}/{base}") + (
        " sweep" + (f" {i + 1}/{len(groups)}" if len(groups) > 1 else ""))
    for d in run_group([c for c, _ in members], vkeys, out, smoke=smoke,
                       progress=progress_lib.Options(show=True,
                                                     label=label)):
      by_name[d.name] = d
  run_dirs = [by_name[c.name] for c, _ in runs]
  points = [p for _, p in runs]
  results.write_json(out / "sweep.json", {
      "experiment": exp.name, "grid": grid,
      "runs": [{"name": d.name, "point": p} for d, p in zip(run_dirs,
                                                            points)]})
  if report:
    write_report(out, run_dirs, points, grid)
  return out


def report_folder(folder, out=None) -> Path:
  """Writes the report of a finished sweep folder again, from its files.

  The report is that of :func:`write_report`, from the grid and points of
  the folder's ``sweep.json`` and its runs' folders.

  Args:
    folder: the sweep folder.
    out: where to write ``report.md`` and ``plots/`` (default: ``folder``).

  Returns:
    The path of ``report.md``.

  Raises:
    ValueError: ``folder`` holds no ``sweep.json`` (it is not a finished
      sweep), or a run it names has no folder.
  """
  folder = Path(folder)
  record = report.read_sweep(folder)
  if record is None:
    raise ValueError(f"folder: expected a finished sweep folder holding "
                     f"{report.SWEEP}; got {str(folder)!r}, which has none.")
  run_dirs = [folder / report.RUNS / r["name"] for r in record["runs"]]
  for d in run_dirs:
    results.load_run(d)  # Raises, naming the folder, if it is not a run.
  return write_report(folder, run_dirs, [r["point"] for r in record["runs"]],
                      record["grid"], report_dir=out)


def write_report(out: Path, run_dirs: list[Path], points: list[dict],
                 grid: dict[str, list], *,
                 report_dir: Path | None = None) -> Path:
  """Writes the sweep's comparison report; returns the path of ``report.md``.

  A row per grid point (its seeds aggregated), a row per run, and a
  sensitivity curve per swept numeric key (``plots.axis_label`` on its x
  axis).  ``out`` is the sweep folder (the report's title is its name);
  ``report_dir`` is where ``report.md`` and ``plots/`` go (default
  ``out``).
  """
  report_dir = Path(report_dir) if report_dir is not None else out
  summaries = [results.load_run(d).summary for d in run_dirs]
  # A diverged run has no meaningful final loss: the plot marks it.
  finals = [math.nan if s.get("stop_reason") == "diverged"
            else results.final_loss(s) for s in summaries]
  sections = []
  for key in grid:
    if key == "seed" or not all(isinstance(p[key], (int, float))
                                for p in points):
      continue
    xs = list(dict.fromkeys(p[key] for p in points))
    others = [k for k in grid if k not in (key, "seed")]
    seeds = list(dict.fromkeys(p.get("seed") for p in points))
    curves = {}
    for p, f in zip(points, finals):
      label = ", ".join(f"{k}={_fmt(p[k])}" for k in others) or "final loss"
      rows = curves.setdefault(label, np.full((len(seeds), len(xs)), np.nan))
      rows[seeds.index(p.get("seed")), xs.index(p[key])] = f
    if len(curves) == 1:
      finals_arg = next(iter(curves.values()))  # seeds as a band
    else:
      finals_arg = {k: np.nanmean(v, axis=0) for k, v in curves.items()}
    path = plots.sensitivity(
        xs, finals_arg, report_dir / results.PLOTS / f"sensitivity_{key}.png",
        xlabel=plots.axis_label(key))
    sections.append((f"Sensitivity to {key}",
                     f"Final training loss against `{key}`"
                     + (f" (mean over {len(seeds)} seeds, min-max band)"
                        if len(seeds) > 1 and len(curves) == 1 else "")
                     + "; diverged runs are marked at the top edge.", [path]))
  return report.compare(run_dirs, report_dir, title=out.name,
                        extra_sections=sections, points=points)
