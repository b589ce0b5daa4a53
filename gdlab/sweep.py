"""Sweeps: a grid of runs, as few compiled programs as possible.

A sweep is a grid over dotted config keys (``optimizer.learning_rate``,
``seed``, ...).  Its runs are grouped by *structure*: runs that differ only
in numeric hyperparameters (the float settings of the optimizer, the penalty
strength) and in the seed share one program, ``jax.vmap``-ped over those
values, with the batch of runs sharded over every available device (on a
CPU-only machine, the host devices that ``--xla_force_host_platform_device_count``
creates; the ``gdlab`` command sets it to the number of cores).  Runs that
differ in anything else (model shape, optimizer type, batch size, data set)
form separate groups, one program each.

Each run of a group keeps its own stopping state, so it stops when its own
criteria say; the group's program runs until every run has stopped.  Each run
gets its own folder, exactly as if it had run alone: the same seed gives the
same numbers, to float tolerance (a vmapped matrix product may round
differently from a single one).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gdlab import config as config_lib
from gdlab import experiment
from gdlab import history as history_lib
from gdlab import loop
from gdlab import parallel
from gdlab import results
from gdlab import stopping


def is_vmappable(key: str, cfg: config_lib.RunConfig) -> bool:
  """Whether a swept key can be a traced value in a shared program."""
  if key == "seed":
    return True
  section, _, field = key.partition(".")
  if section == "optimizer":
    # optax's L-BFGS branches on its learning rate, and optax's exponential
    # and step schedules on their decay rate, in Python: those stay static.
    if field == "learning_rate" and cfg.optimizer.name == "lbfgs":
      return False
    return field in ("learning_rate", "momentum", "b", "initial_step",
                     "shrink", "c1", "c2")
  return key == "loss.strength"


def _set_raw(cfg, key: str, value):
  """``cfg`` with a dotted key set to ``value`` (no checks: value may be traced)."""
  head, _, rest = key.partition(".")
  if rest:
    return dataclasses.replace(cfg, **{head: _set_raw(getattr(cfg, head),
                                                      rest, value)})
  return dataclasses.replace(cfg, **{head: value})


def _get(cfg, key: str):
  for part in key.split("."):
    cfg = getattr(cfg, part)
  return cfg


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
  """Groups runs by structure; returns ``[(vmapped_keys, runs)]``."""
  groups: dict[str, tuple[list[str], list]] = {}
  for cfg, point in runs:
    vkeys = [k for k in grid_keys if is_vmappable(k, cfg)]
    blank = cfg
    for k in vkeys:
      blank = _set_raw(blank, k, None)
    sig = repr(dataclasses.replace(blank, name=""))
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


def run_group(cfgs: list[config_lib.RunConfig], vkeys: list[str],
              out_dir: Path, *, smoke: bool = False) -> list[Path]:
  """Runs one group of structurally identical runs as one vmapped program."""
  base = cfgs[0]
  data, dataset = experiment.build_data(base, smoke)
  float_dtype = experiment.float_dtype(base)
  hkeys = [k for k in vkeys if k != "seed"]

  def setup(h):
    cfg = base
    for k in hkeys:
      cfg = _set_raw(cfg, k, h[k])
    return (experiment.build_objective(cfg, dataset),
            experiment.build_optimizer(cfg.optimizer))

  criteria = experiment.build_criteria(base.train)
  regime = experiment.build_regime(base.train)
  n_train = int(data.x_train.shape[0])
  chunk = base.train.chunk_epochs
  if chunk is None:
    chunk = loop.default_chunk_epochs(criteria.max_epochs,
                                      regime.steps_per_epoch(n_train))
  record = experiment.is_function_problem(base)
  # Runs are spread over the "runs" axis of the mesh; with train.devices set,
  # each run is also data parallel over the "data" axis.
  mesh, n_dev = _mesh(len(cfgs), base.train.devices or 1)
  program = loop.build(setup, regime, criteria, n_train=n_train,
                       engine=base.train.engine, chunk_epochs=chunk,
                       has_test=data.x_test is not None, record_params=record,
                       mesh=mesh if base.train.devices else None,
                       eval_every=base.train.eval_every,
                       step_metrics=base.train.step_metrics,
                       # Vmapped, the reuse's cond becomes a select that
                       # evaluates anyway (and so would the backward pass of
                       # a backtracking search that stores its gradient).
                       reuse_search_point=False)

  # Pad the batch of runs to a multiple of the "runs" axis; padding repeats
  # the last run and is dropped.
  n_pad = (-len(cfgs)) % n_dev
  padded = cfgs + [cfgs[-1]] * n_pad
  hparams = {k: jnp.asarray([_get(c, k) for c in padded], float_dtype)
             for k in hkeys}
  seeds = jnp.asarray([c.seed for c in padded], jnp.uint32)

  objective0, _ = setup({k: v[0] for k, v in hparams.items()})

  def init_one(seed, h):
    k_init, k_data = jax.random.split(jax.random.PRNGKey(seed))
    params = objective0.model.init(k_init)
    return program.init(k_data, params, h)

  shard = NamedSharding(mesh, PartitionSpec("runs"))
  seeds, hparams = jax.device_put((seeds, hparams), shard)
  data = parallel.shard_data(data, mesh)
  data_sharding = jax.tree_util.tree_map(lambda a: a.sharding, data)
  carry = jax.jit(jax.vmap(init_one), out_shardings=shard)(seeds, hparams)

  t0 = time.perf_counter()
  chunk_fn = jax.jit(jax.vmap(program.run_chunk, in_axes=(0, None, 0),
                              spmd_axis_name="runs"),
                     in_shardings=(shard, data_sharding, shard),
                     out_shardings=shard)
  compiled = chunk_fn.lower(carry, data, hparams).compile()
  compile_time = time.perf_counter() - t0

  histories = [history_lib.empty_history() for _ in cfgs]
  run_time = 0.0
  while bool(jnp.any(carry.stop.reason[:len(cfgs)] == stopping.RUNNING)):
    t0 = time.perf_counter()
    carry, epochs, steps = compiled(carry, data, hparams)
    epochs, steps = jax.device_get((epochs, steps))
    t1 = time.perf_counter()
    for i in range(len(cfgs)):
      pick = lambda d: {k: v[i] for k, v in d.items()}
      histories[i] = history_lib.append_chunk(histories[i], pick(epochs),
                                       pick(steps), run_time,
                                       run_time + (t1 - t0))
    run_time += t1 - t0

  carry = jax.device_get(carry)
  run_dirs = []
  for i, cfg in enumerate(cfgs):
    h = histories[i]
    h.stop_reason = stopping.reason_name(carry.stop.reason[i])
    # The group's times, shared by its runs.
    h.compile_time, h.run_time = compile_time, run_time
    carry_i = jax.tree_util.tree_map(lambda v: v[i], carry)
    run_dir = out_dir / "runs" / cfg.name
    experiment.write_run(run_dir, cfg, h, carry_i, extra={
        "sweep_group_size": len(cfgs), "sweep_devices": int(mesh.size),
        "sweep_mesh": dict(mesh.shape)})
    run_dirs.append(run_dir)
  return run_dirs


def run_sweep(exp: config_lib.ExperimentConfig, out_dir, *,
              grid: dict[str, list] | None = None, smoke: bool = False,
              sets: dict | None = None, report: bool = True) -> Path:
  """Runs the sweep grid of ``exp`` (or ``grid``) and writes the report."""
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
  base_runs = experiment.resolve_runs(exp, smoke=smoke, sets=sets,
                                      variants=False)
  runs = expand(base_runs, grid)
  by_name = {}
  for vkeys, members in group(runs, list(grid)):
    for d in run_group([c for c, _ in members], vkeys, out, smoke=smoke):
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


def write_report(out: Path, run_dirs: list[Path], points: list[dict],
                 grid: dict[str, list]) -> Path:
  """The sweep's comparison report, with a sensitivity curve per swept key."""
  from gdlab import plots  # pylint: disable=g-import-not-at-top
  from gdlab import report  # pylint: disable=g-import-not-at-top
  summaries = [results.load_run(d).summary for d in run_dirs]
  # A diverged run has no meaningful final loss: the plot marks it.
  finals = [math.nan if s.get("stop_reason") == "diverged"
            else experiment.final_loss(s) for s in summaries]
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
    path = plots.sensitivity(xs, finals_arg,
                             out / "plots" / f"sensitivity_{key}.png",
                             xlabel=key)
    sections.append((f"Sensitivity to {key}",
                     f"Final training loss against `{key}`"
                     + (f" (mean over {len(seeds)} seeds, min-max band)"
                        if len(seeds) > 1 and len(curves) == 1 else "")
                     + "; diverged runs are marked at the top edge.", [path]))
  return report.compare(run_dirs, out, title=out.name,
                        extra_sections=sections)
