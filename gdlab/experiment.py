"""Running experiments: from a config to run folders, plots and a report.

``run(cfg, out_dir)`` trains one :class:`~gdlab.config.RunConfig` and writes
its folder (see ``gdlab.results``); ``run_experiment(exp, out_dir)`` runs
each variant of an :class:`~gdlab.config.ExperimentConfig` into
``out_dir/runs/<variant>/``, runs the experiment's analysis, and writes a
comparison report.  The same functions back the ``gdlab`` command.

Interruptions.  While a run is going, SIGTERM is turned into
``KeyboardInterrupt``; the loop stops at the end of the chunk in progress
and the folder keeps every metric logged so far and a checkpoint.
``resume=True`` continues from that checkpoint, to the same final numbers an
uninterrupted run gives.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization

from gdlab import config as config_lib
from gdlab import data as data_lib
from gdlab import distributed
from gdlab import history as history_lib
from gdlab import loop
from gdlab import models
from gdlab import optim
from gdlab import parallel
from gdlab import results
from gdlab import stopping
from gdlab.losses import Penalty
from gdlab.objective import FunctionObjective, Objective

EXPERIMENTS_DIR = Path(__file__).resolve().parent.parent / "experiments"


# ----------------------------------------------------------------------------
# From a config to the pieces of a run.


def float_dtype(cfg: config_lib.RunConfig):
  """The run's float dtype; float64 turns on JAX's x64 mode."""
  config_lib._coerce("train.dtype", cfg.train.dtype, str)  # pylint: disable=protected-access
  if cfg.train.dtype not in ("float32", "float64"):
    raise config_lib.ConfigError(
        f"train.dtype: expected one of 'float32', 'float64'; got "
        f"{cfg.train.dtype!r}.")
  if cfg.train.dtype == "float64":
    jax.config.update("jax_enable_x64", True)
  return jnp.dtype(cfg.train.dtype)


def is_function_problem(cfg: config_lib.RunConfig) -> bool:
  return cfg.model.kind == "function"


def build_data(cfg: config_lib.RunConfig, smoke: bool = False):
  """``(loop.Data, dataset_or_function)`` for a run config."""
  dtype = float_dtype(cfg)
  if is_function_problem(cfg):
    options = {"kappa": cfg.data.kappa} if cfg.data.kappa is not None else {}
    fn = data_lib.get_function(cfg.data.name, **options)
    dummy = jnp.zeros((1, 1), dtype)
    return loop.Data(dummy, dummy), fn
  options = {}
  for key in ("n", "noise", "labels"):
    value = getattr(cfg.data, key)
    if value is not None:
      options[key] = value
  options["test_fraction"] = cfg.data.test_fraction
  ds = data_lib.load(cfg.data.name, seed=cfg.data.seed, smoke=smoke,
                     **options)
  cast = lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype,
                                                     jnp.floating) else a
  return loop.Data(cast(ds.x_train), cast(ds.y_train), cast(ds.x_test),
                   cast(ds.y_test)), ds


def build_objective(cfg: config_lib.RunConfig, dataset) -> Any:
  """The objective (model, loss, reduction, penalty) of a run config."""
  m = cfg.model
  if is_function_problem(cfg):
    start = m.start if m.start is not None else tuple(
        float(v) for v in np.asarray(dataset.x0))
    return FunctionObjective(dataset.fn, start)
  n_in, n_out = dataset.n_features, dataset.n_outputs
  common = dict(bias=m.bias, init_scheme=m.init, scale=m.scale,
                dtype=float_dtype(cfg))
  config_lib._coerce("model.kind", m.kind, str)  # pylint: disable=protected-access
  if m.kind == "mlp":
    model = models.mlp((n_in, *m.hidden, n_out), m.activation,
                       m.output_activation, **common)
  elif m.kind == "linear":
    model = models.mlp((n_in, n_out), "identity", m.output_activation,
                       **common)
  elif m.kind == "logistic":
    model = models.mlp((n_in, n_out), "identity", "identity", **common)
  else:
    raise config_lib.ConfigError(
        f"model.kind: expected one of 'mlp', 'linear', 'logistic', "
        f"'function'; got {m.kind!r}.")
  penalty = None
  if cfg.loss.penalty is not None:
    penalty = Penalty(cfg.loss.penalty, cfg.loss.strength,
                      cfg.loss.penalize_bias)
  return Objective(model, cfg.loss.name, cfg.loss.reduction, penalty)


SCHEDULES = ("constant", "exponential", "step", "cosine", "warmup_cosine",
             "square_summable", "nonsummable", "constant_step_length",
             "polyak", "polyak_estimated")
OPTIMIZERS = ("gd", "heavy_ball", "subgradient", "adam", "rmsprop", "adagrad",
              "lbfgs")
LINE_SEARCHES = ("armijo", "goldstein", "wolfe", "exact", "exact_quadratic")


def build_schedule(o: config_lib.OptimizerConfig):
  """The step-size schedule or rule of an optimizer config."""
  lr = o.learning_rate
  if o.schedule == "constant":
    return lr
  if o.schedule == "exponential":
    return optim.exponential_decay(lr, o.decay_steps, o.decay_rate)
  if o.schedule == "step":
    return optim.step_decay(lr, {o.decay_steps * i: o.decay_rate
                                 for i in range(1, 50)})
  if o.schedule == "cosine":
    return optim.cosine_decay(lr, o.decay_steps)
  if o.schedule == "warmup_cosine":
    return optim.warmup_cosine_decay(0.0, lr, o.warmup_steps,
                                     o.warmup_steps + o.decay_steps)
  if o.schedule == "square_summable":
    return optim.square_summable(lr, o.b)
  if o.schedule == "nonsummable":
    return optim.nonsummable_diminishing(lr)
  if o.schedule == "constant_step_length":
    return optim.constant_step_length(lr)
  if o.schedule == "polyak":
    if o.f_star is None:
      raise config_lib.ConfigError(
          "optimizer.f_star: the 'polyak' schedule needs the optimal value "
          "f*; got null. Set it, or use 'polyak_estimated'.")
    return optim.polyak(o.f_star)
  if o.schedule == "polyak_estimated":
    return optim.polyak_estimated(lr)
  raise config_lib.ConfigError(
      f"optimizer.schedule: expected one of "
      f"{', '.join(repr(s) for s in SCHEDULES)}; got {o.schedule!r}.")


def build_optimizer(o: config_lib.OptimizerConfig, store_grad: bool = False):
  """The optax transformation of an optimizer config.

  ``store_grad``: line searches keep the gradient at the accepted point, for
  full-batch runs, whose next step reuses it (see ``gdlab.train``).
  """
  if o.name not in OPTIMIZERS:
    raise config_lib.ConfigError(
        f"optimizer.name: expected one of "
        f"{', '.join(repr(s) for s in OPTIMIZERS)}; got {o.name!r}.")
  if o.line_search is not None:
    if o.line_search not in LINE_SEARCHES:
      raise config_lib.ConfigError(
          f"optimizer.line_search: expected one of "
          f"{', '.join(repr(s) for s in LINE_SEARCHES)} or null; got "
          f"{o.line_search!r}.")
    if o.line_search in ("armijo", "goldstein"):
      search = optim.backtracking_linesearch(
          initial_step=o.initial_step, shrink=o.shrink, c1=o.c1,
          reuse_last_step=o.reuse_last_step,
          condition="armijo" if o.line_search == "armijo" else "goldstein",
          store_grad=store_grad)
    elif o.line_search == "wolfe":
      search = optim.wolfe_linesearch(c1=o.c1, c2=o.c2,
                                      initial_step=o.initial_step,
                                      reuse_last_step=o.reuse_last_step,
                                      store_grad=store_grad)
    else:
      search = optim.exact_linesearch(
          method="golden" if o.line_search == "exact" else "quadratic",
          tol=o.tol, initial_step=o.initial_step)
    if o.name == "lbfgs":
      return optax.chain(optax.scale_by_lbfgs(), optax.scale(-1.0), search)
    if o.name != "gd" or o.momentum:
      raise config_lib.ConfigError(
          f"optimizer.line_search: a line search runs along the steepest "
          f"descent or L-BFGS direction: expected optimizer.name 'gd' (no "
          f"momentum) or 'lbfgs'; got {o.name!r} with momentum "
          f"{o.momentum}.")
    return optim.steepest_descent(search)
  schedule = build_schedule(o)
  if o.name == "gd":
    return optim.gradient_descent(schedule, o.momentum, o.nesterov)
  if o.name == "heavy_ball":
    return optim.heavy_ball(schedule, o.momentum)
  if o.name == "subgradient":
    return optim.subgradient_descent(schedule)
  if o.name == "lbfgs":
    return optax.lbfgs(learning_rate=None if o.schedule == "constant" and
                       o.learning_rate == 1.0 else schedule)
  return getattr(optax, o.name)(schedule)


def build_criteria(t: config_lib.TrainConfig) -> stopping.Criteria:
  """The stopping criteria: the train section's fields of the same names."""
  return stopping.Criteria(**{f.name: getattr(t, f.name) for f in
                              dataclasses.fields(stopping.Criteria)})


def build_regime(t: config_lib.TrainConfig) -> loop.Regime:
  return loop.Regime(t.regime, t.batch_size, t.remainder)


# ----------------------------------------------------------------------------
# One run, with its folder.


@contextlib.contextmanager
def sigterm_as_interrupt():
  """Turns SIGTERM into KeyboardInterrupt for the duration (main thread)."""
  def handler(signum, frame):
    del signum, frame
    raise KeyboardInterrupt
  try:
    previous = signal.signal(signal.SIGTERM, handler)
  except ValueError:  # not the main thread
    yield
    return
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM, previous)


def _write_checkpoint(run_dir: Path, carry: loop.Carry) -> None:
  results.atomic_write(run_dir / results.CHECKPOINT,
                       serialization.to_bytes(parallel.to_host(carry)))


def _history_from_folder(run_dir: Path) -> history_lib.History:
  record = results.load_run(run_dir)
  steps, epochs, summary = record.steps, record.epochs, record.summary
  steps.pop("step", None)
  history = history_lib.empty_history()
  if steps:
    history.steps = steps
  if epochs:
    history.epochs = epochs
  trajectory = record.trajectory
  if trajectory is not None and len(trajectory) > 1:
    # The parameters of every step; the last row is the final parameters,
    # which write_run appends.
    history.steps["params"] = trajectory[:-1]
  history.compile_time = summary.get("compile_time", 0.0) or 0.0
  history.run_time = summary.get("run_time", 0.0) or 0.0
  return history


def summarize(cfg: config_lib.RunConfig, history: history_lib.History,
              extra: dict | None = None) -> dict:
  """The content of ``summary.json``."""
  final = {k: v for k, v in history.final().items()}
  return {
      "name": cfg.name,
      "stop_reason": history.stop_reason,
      "steps": history.num_steps,
      "epochs": int(history.epochs["epoch"][-1]) if len(
          history.epochs.get("epoch", ())) else 0,
      "grad_evals": int(np.sum(history.steps["grad_evals"])) if
      history.num_steps else 0,
      "fun_evals": int(np.sum(history.steps["fun_evals"])) if
      history.num_steps else 0,
      "final": final,
      "compile_time": history.compile_time,
      "run_time": history.run_time,
      "steps_per_second": history.steps_per_second,
      "versions": results.versions(),
      **(extra or {}),
  }


def write_run(run_dir: Path, cfg: config_lib.RunConfig, history: history_lib.History,
              carry: loop.Carry | None, extra: dict | None = None,
              written: tuple[int, int] | None = None) -> None:
  """Writes a run folder's config, metrics, summary and checkpoint.

  ``written``: the (step, epoch) rows already in ``metrics.jsonl``; the rest
  are appended.  Without it the log is rewritten whole.
  """
  run_dir.mkdir(parents=True, exist_ok=True)
  results.atomic_write(run_dir / results.CONFIG, config_lib.dump(cfg))
  steps = {k: v for k, v in history.steps.items() if k != "params"}
  if written is None:
    results.write_metrics(run_dir, steps, history.epochs)
  else:
    results.append_metrics(run_dir, steps, history.epochs, *written)
  if "params" in history.steps and len(history.steps["params"]):
    traj = np.asarray(history.steps["params"], float)
    if carry is not None:
      final = np.concatenate([np.ravel(np.asarray(p)) for p in
                              jax.tree_util.tree_leaves(carry.params)])
      traj = np.vstack([traj, final[None]])
    results.write_json(run_dir / results.TRAJECTORY, traj.tolist())
  results.write_json(run_dir / results.SUMMARY, summarize(cfg, history, extra))
  if carry is not None:
    _write_checkpoint(run_dir, carry)


def run(cfg: config_lib.RunConfig, out_dir: str | os.PathLike, *,
        smoke: bool = False, resume: bool = False,
        progress: bool | None = None, plots: bool = True) -> loop.FitResult:
  """Trains one run config and writes its folder ``out_dir``.

  Args:
    cfg: the run's configuration.
    out_dir: the run folder (created).
    smoke: shrink the data set (the config's ``smoke`` overrides are applied
      by :func:`resolve_runs`).
    resume: continue from the folder's checkpoint.
    progress: show a progress line.
    plots: write the run's plots and ``report.md``.

  Returns:
    The ``loop.FitResult``; its ``stop_reason`` is ``"interrupted"`` if the
    run was stopped by Ctrl-C or SIGTERM (the folder is complete up to the
    last chunk).
  """
  run_dir = Path(out_dir)
  data, dataset = build_data(cfg, smoke)
  objective = build_objective(cfg, dataset)
  optimizer = build_optimizer(cfg.optimizer,
                              store_grad=cfg.train.regime == "full_batch")
  criteria = build_criteria(cfg.train)
  regime = build_regime(cfg.train)
  record = is_function_problem(cfg)
  key = jax.random.PRNGKey(cfg.seed)
  several_processes = jax.process_count() > 1
  writer = distributed.is_writer()
  mesh = (parallel.data_mesh(cfg.train.devices)
          if cfg.train.devices is not None or several_processes else None)

  carry = history = None
  if resume:
    if not (run_dir / results.CHECKPOINT).exists():
      raise config_lib.ConfigError(
          f"--resume: no checkpoint in {str(run_dir)!r} to resume from.")
    n_train = int(data.x_train.shape[0])
    program = loop.build(lambda h: (objective, optimizer), regime, criteria,
                         n_train=n_train,
                         step_metrics=cfg.train.step_metrics)
    k_init, k_data = jax.random.split(key)
    template = program.init(k_data, objective.model.init(k_init), {})
    try:
      carry = serialization.from_bytes(
          template, (run_dir / results.CHECKPOINT).read_bytes())
    except (ValueError, KeyError, TypeError) as e:
      raise config_lib.ConfigError(
          f"--resume: the checkpoint in {str(run_dir)!r} does not hold this "
          f"run's state (written by another version of gdlab, or for "
          f"another model or optimizer): {e}. Start the run again in a new "
          f"folder.") from e
    history = _history_from_folder(run_dir)
    if stopping.reason_name(carry.stop.reason) != "running":
      history.stop_reason = stopping.reason_name(carry.stop.reason)
      return loop.FitResult(carry.params, carry.opt_state, history,
                            history.stop_reason, carry)
  elif writer and run_dir.exists() and (run_dir / results.SUMMARY).exists():
    raise config_lib.ConfigError(
        f"--out: {str(run_dir)!r} already holds a run; choose another "
        f"folder, or pass --resume to continue it.")

  if writer:
    run_dir.mkdir(parents=True, exist_ok=True)
    results.atomic_write(run_dir / results.CONFIG, config_lib.dump(cfg))
    if history is None:
      results.write_metrics(run_dir, {}, {})
    else:
      write_run(run_dir, cfg, history, carry)
  written = [history.num_steps if history else 0,
             len(history.epochs["epoch"]) if history else 0]

  def on_chunk(c, h):
    if writer:
      write_run(run_dir, cfg, h, c, written=tuple(written))
    written[:] = [h.num_steps, len(h.epochs["epoch"])]

  with sigterm_as_interrupt():
    result = loop.fit(objective, optimizer, data, key=key, regime=regime,
                      criteria=criteria, engine=cfg.train.engine,
                      chunk_epochs=cfg.train.chunk_epochs, carry=carry,
                      history=history, on_chunk=on_chunk, progress=progress,
                      record_params=record, mesh=mesh,
                      eval_every=cfg.train.eval_every,
                      step_metrics=cfg.train.step_metrics)
  if not writer:
    return result
  write_run(run_dir, cfg, result.history, result.carry,
            extra={"processes": jax.process_count(),
                   "devices": int(mesh.size) if mesh is not None else 1})
  if plots:
    from gdlab import report  # pylint: disable=g-import-not-at-top
    report.run_report(run_dir, function=dataset if record else None)
  return result


# ----------------------------------------------------------------------------
# Experiments.


def experiment_names() -> list[str]:
  return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))


def find(name_or_path: str) -> Path:
  """A config path from a path or the name of an experiment in experiments/."""
  path = Path(name_or_path)
  if path.suffix in (".yaml", ".yml") or path.exists():
    return path
  candidate = EXPERIMENTS_DIR / f"{name_or_path}.yaml"
  if candidate.exists():
    return candidate
  raise config_lib.ConfigError(
      f"config: no experiment or file named {name_or_path!r}; known "
      f"experiments: {', '.join(experiment_names())}.")


def resolve_runs(exp: config_lib.ExperimentConfig, *, smoke: bool = False,
                 sets: dict | None = None,
                 variants: bool = True) -> list[config_lib.RunConfig]:
  """The run configs of an experiment: base + variant + smoke + --set."""
  named = (exp.variants.items() if variants and exp.variants
           else [(exp.base.name if exp.base.name != "run" else exp.name,
                  {})])
  runs = []
  for name, ov in named:
    cfg = config_lib.apply_overrides(exp.base, ov)
    if smoke:
      cfg = config_lib.apply_overrides(cfg, exp.smoke)
    cfg = config_lib.apply_overrides(cfg, sets)
    runs.append(dataclasses.replace(cfg, name=name))
  return runs


def run_experiment(exp: config_lib.ExperimentConfig,
                   out_dir: str | os.PathLike, *, smoke: bool = False,
                   sets: dict | None = None, resume: bool = False,
                   progress: bool | None = None) -> Path:
  """Runs every variant of ``exp`` and writes the comparison report."""
  from gdlab import analyses  # pylint: disable=g-import-not-at-top
  from gdlab import report  # pylint: disable=g-import-not-at-top
  out = Path(out_dir)
  writer = distributed.is_writer()
  if writer:
    out.mkdir(parents=True, exist_ok=True)
  run_dirs = []
  interrupted = False
  for cfg in resolve_runs(exp, smoke=smoke, sets=sets):
    run_dir = out / "runs" / cfg.name
    if resume and (run_dir / results.SUMMARY).exists() and \
        results.load_run(run_dir).summary.get("stop_reason") not in (
            "interrupted", "running"):
      run_dirs.append(run_dir)
      continue
    result = run(cfg, run_dir, smoke=smoke, resume=resume and (
        run_dir / results.CHECKPOINT).exists(), progress=progress)
    run_dirs.append(run_dir)
    if result.stop_reason == "interrupted":
      interrupted = True
      break
  if writer:
    extra = analyses.run(exp, out, run_dirs, smoke=smoke)
    report.compare(run_dirs, out, title=exp.name, extra_sections=extra)
  if interrupted:
    raise KeyboardInterrupt
  return out


def final_loss(summary: dict) -> float:
  value = (summary.get("final") or {}).get("train_loss")
  return math.nan if value is None else float(value)
