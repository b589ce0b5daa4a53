"""The run lifecycle: from a config to run folders, plots and a report.

``run(cfg, out_dir)`` trains one :class:`~gdlab.config.RunConfig` and writes
its folder (see :mod:`gdlab.results`); ``run_experiment(exp, out_dir)`` runs
each variant of an :class:`~gdlab.config.ExperimentConfig` into
``out_dir/runs/<variant>/``, its seed sweeps into ``out_dir/seeds/<variant>/``
(``seed_sweep: true``), then the experiment's analysis, and writes a
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
import os
import signal
from pathlib import Path

import jax

from gdlab import analyses
from gdlab import build
from gdlab import config as config_lib
from gdlab import distributed
from gdlab import loop
from gdlab import parallel
from gdlab import report
from gdlab import results
from gdlab import stopping
from gdlab import sweep

EXPERIMENTS_DIR = Path(__file__).resolve().parent.parent / "experiments"


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


def _resume_point(run_dir: Path, p: build.Problem, key):
  """``(carry, history)`` from a run folder's checkpoint and log."""
  if not (run_dir / results.CHECKPOINT).exists():
    raise config_lib.ConfigError(
        f"--resume: no checkpoint in {str(run_dir)!r} to resume from.")
  template = loop.initial_carry(p.objective, p.optimizer, key)
  try:
    carry = results.read_checkpoint(run_dir, template)
  except (ValueError, KeyError, TypeError) as e:
    raise config_lib.ConfigError(
        f"--resume: the checkpoint in {str(run_dir)!r} does not hold this "
        f"run's state (written by another version of gdlab, or for "
        f"another model or optimizer): {e}. Start the run again in a new "
        f"folder.") from e
  return carry, results.load_history(run_dir)


def run(cfg: config_lib.RunConfig, out_dir: str | os.PathLike, *,
        smoke: bool = False, resume: bool = False,
        progress: bool | None = None, plots: bool = True) -> loop.FitResult:
  """Trains one run config and writes its folder ``out_dir``.

  Args:
    cfg: the run's configuration.
    out_dir: the run folder (created).
    smoke: shrink the data set (the config's ``smoke`` overrides are applied
      by :func:`gdlab.config.resolve_runs`).
    resume: continue from the folder's checkpoint.
    progress: show a progress line.
    plots: write the run's plots and ``report.md``.

  Returns:
    The ``loop.FitResult``; its ``stop_reason`` is ``"interrupted"`` if the
    run was stopped by Ctrl-C or SIGTERM (the folder is complete up to the
    last chunk).
  """
  run_dir = Path(out_dir)
  p = build.problem(cfg, smoke)
  key = jax.random.PRNGKey(cfg.seed)
  writer = distributed.is_writer()
  mesh = (parallel.data_mesh(cfg.train.devices)
          if cfg.train.devices is not None or jax.process_count() > 1
          else None)

  carry = history = None
  if resume:
    carry, history = _resume_point(run_dir, p, key)
    if stopping.reason_name(carry.stop.reason) != "running":
      history.stop_reason = stopping.reason_name(carry.stop.reason)
      return loop.FitResult(carry.params, carry.opt_state, history,
                            history.stop_reason, carry)
  elif writer and (run_dir / results.SUMMARY).exists():
    raise config_lib.ConfigError(
        f"--out: {str(run_dir)!r} already holds a run; choose another "
        f"folder, or pass --resume to continue it.")

  if writer:
    run_dir.mkdir(parents=True, exist_ok=True)
    results.atomic_write(run_dir / results.CONFIG, config_lib.dump(cfg))
    if history is None:
      results.write_metrics(run_dir, {}, {})
    else:
      results.write_run(run_dir, cfg, history, carry)
  written = [history.num_steps if history else 0,
             len(history.epochs["epoch"]) if history else 0]

  def on_chunk(c, h):
    if writer:
      results.write_run(run_dir, cfg, h, c, written=tuple(written))
    written[:] = [h.num_steps, len(h.epochs["epoch"])]

  with sigterm_as_interrupt():
    result = loop.fit(p.objective, p.optimizer, p.data, key=key,
                      regime=p.regime, criteria=p.criteria,
                      engine=cfg.train.engine,
                      chunk_epochs=cfg.train.chunk_epochs, carry=carry,
                      history=history, on_chunk=on_chunk, progress=progress,
                      record_params=p.record_params, mesh=mesh,
                      eval_every=cfg.train.eval_every,
                      step_metrics=cfg.train.step_metrics)
  if not writer:
    return result
  results.write_run(run_dir, cfg, result.history, result.carry,
                    extra={"processes": jax.process_count(),
                           "devices": int(mesh.size) if mesh is not None
                           else 1})
  if plots:
    report.run_report(run_dir,
                      function=p.dataset if p.record_params else None)
  return result


# ----------------------------------------------------------------------------
# Experiments.


def experiment_names() -> list[str]:
  """The experiments in ``experiments/``, by name."""
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


def _finished(run_dir: Path) -> bool:
  return (run_dir / results.SUMMARY).exists() and results.load_run(
      run_dir).summary.get("stop_reason") not in ("interrupted", "running")


def run_seed_sweeps(exp: config_lib.ExperimentConfig, out: Path,
                    runs: list[config_lib.RunConfig], *, smoke: bool = False,
                    resume: bool = False) -> list[Path]:
  """Runs every variant over the seeds of ``sweep.seed`` (``seed_sweep``).

  Each variant's resolved config (smoke and ``--set`` overrides applied) is
  the base of one sweep over the seeds, into ``out/seeds/<variant>/``, whose
  runs are named ``<variant>[seed=<s>]``.  With ``resume``, a variant whose
  sweep finished (its ``sweep.json`` written) is not run again.
  """
  seeds = config_lib.seed_sweep_seeds(exp, smoke)
  dirs = []
  for cfg in runs:
    sub = out / results.SEEDS / cfg.name
    if not (resume and (sub / "sweep.json").exists()):
      sweep.run_sweep(dataclasses.replace(exp, base=cfg, variants={},
                                          smoke={}),
                      sub, grid={"seed": seeds}, smoke=smoke, report=False)
    dirs.append(sub)
  return dirs


def run_experiment(exp: config_lib.ExperimentConfig,
                   out_dir: str | os.PathLike, *, smoke: bool = False,
                   sets: dict | None = None, resume: bool = False,
                   progress: bool | None = None) -> Path:
  """Runs every variant of ``exp``, its seed sweeps, its analysis and report.

  Every variant runs into ``out_dir/runs/<variant>/``; with
  ``exp.seed_sweep``, each is then also run over the seeds of
  ``sweep.seed`` (:func:`run_seed_sweeps`); the analysis named by
  ``exp.analysis`` reads those folders, and ``report.md`` compares the
  variants.  An interrupted run leaves the report of the runs so far (no
  seed sweeps, no analysis) and raises ``KeyboardInterrupt``.
  """
  out = Path(out_dir)
  writer = distributed.is_writer()
  if writer:
    out.mkdir(parents=True, exist_ok=True)
  runs = config_lib.resolve_runs(exp, smoke=smoke, sets=sets)
  run_dirs = []
  interrupted = False
  for cfg in runs:
    run_dir = out / "runs" / cfg.name
    run_dirs.append(run_dir)
    if resume and _finished(run_dir):
      continue
    result = run(cfg, run_dir, smoke=smoke, resume=resume and (
        run_dir / results.CHECKPOINT).exists(), progress=progress)
    if result.stop_reason == "interrupted":
      interrupted = True
      break
  if not writer:
    if interrupted:
      raise KeyboardInterrupt
    return out
  sections = []
  if not interrupted:
    if exp.seed_sweep:
      run_seed_sweeps(exp, out, runs, smoke=smoke, resume=resume)
    sections = analyses.run(exp, out, run_dirs, smoke=smoke)
  report.compare(run_dirs, out, title=exp.name, extra_sections=sections)
  if interrupted:
    raise KeyboardInterrupt
  return out
