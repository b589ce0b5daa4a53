"""The run lifecycle: from a config to run folders, plots and a report.

``run(cfg, out_dir)`` trains one :class:`~gdlab.config.RunConfig` and writes
its folder (see :mod:`gdlab.results`); ``run_experiment(exp, out_dir)`` runs
each variant of an :class:`~gdlab.config.ExperimentConfig` into
``out_dir/runs/<variant>/``, its seed sweeps into ``out_dir/seeds/<variant>/``
(``seed_sweep: true``), then the experiment's analysis, and writes a
comparison report.  The same functions back the ``gdlab`` command.

Interruptions.  SIGINT (Ctrl-C) and SIGTERM are acted on at safe points
(:mod:`gdlab.interrupts`): the loop stops at the end of the chunk in
progress, never inside a compilation, and the folder keeps every metric
logged so far and a checkpoint; a second signal stops at once, leaving the
folder as of its last checkpoint.  ``resume=True`` continues from that
checkpoint, to the same final numbers an uninterrupted run gives, and is
refused when the config or the data differ from those the run started with
(``allow_changes`` admits the changes of
:data:`gdlab.results.SAFE_CHANGES`).

Folders.  A run, experiment or sweep writes only into a new or empty folder,
or (resuming) one it made, which its ``gdlab.json`` identifies; one process
at a time (``gdlab.lock``).  Everything that can be checked is checked before
the first folder is made, so a rejected config leaves nothing behind.
"""


from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp

from gdlab import analyses
from gdlab import build
from gdlab import catalog
from gdlab import config as config_lib
from gdlab import distributed
from gdlab import folders
from gdlab import interrupts
from gdlab import loop
from gdlab import metrics_log
from gdlab import parallel
from gdlab import progress as progress_lib
from gdlab import report
from gdlab import results
from gdlab import stopping
from gdlab import sweep
from gdlab import tensorboard

# The named experiments: the checkout's experiments/, else the installed copy.
EXPERIMENTS_DIR = catalog.experiments_dir()


def _resume_point(run_dir: Path, p: build.Problem, key):
  """``(carry, history)`` from a run folder's checkpoint and log, or
  ``(None, None)`` when it has no checkpoint yet (the run starts over)."""
  results.clean_temporaries(run_dir)
  if not (run_dir / results.CHECKPOINT).exists():
    return None, None
  point = results.read_checkpoint(run_dir)
  template = loop.initial_carry(p.objective, p.optimizer, key)
  try:
    carry = point.restore(template)
  except (ValueError, KeyError, TypeError) as e:
    raise folders.FolderError(
        f"--resume: {str(run_dir / results.CHECKPOINT)!r} does not hold this "
        f"run's state (another model or optimizer): "
        f"{str(e).splitlines()[0] if str(e) else type(e).__name__}. Start "
        f"the run again in a new folder.") from None
  history = results.load_history(run_dir, point)
  if int(loop.to_host(carry.step)) != history.num_steps:
    raise folders.FolderError(
        f"--resume: {str(run_dir / results.CHECKPOINT)!r} holds step "
        f"{int(loop.to_host(carry.step))} but covers "
        f"{history.num_steps} logged steps: the folder is damaged.")
  return carry, history


def _budget_grew(carry: loop.Carry, criteria: stopping.Criteria,
                 changed: list[str]) -> bool:
  """Whether the budget a run stopped on was raised past what it spent.

  Only then does it go on: a changed chunk size, or another budget, leaves a
  finished run as it was.
  """
  reason = stopping.reason_name(carry.stop.reason)
  if reason not in stopping.BUDGETS or f"train.stop.{reason}" not in changed:
    return False
  spent = {"max_epochs": carry.epoch, "max_steps": carry.step,
           "max_grad_evals": carry.grad_evals}[reason]
  return getattr(criteria, reason) > int(loop.to_host(spent))


def run(cfg: config_lib.RunConfig, out_dir: str | os.PathLike, *,
        smoke: bool = False, resume: bool = False,
        allow_changes: bool = False, progress: bool | None = None,
        plots: bool = True) -> loop.FitResult:
  """Trains one run config and writes its folder ``out_dir``.

  Args:
    cfg: the run's configuration.
    out_dir: the run folder: new or empty (``resume``: one this function
      wrote).
    smoke: shrink the data set (the config's ``smoke`` overrides are applied
      by :func:`gdlab.config.resolve_runs`).
    resume: continue from the folder's checkpoint (or start over when it has
      none yet); refused when ``cfg`` or the data differ from the run's.
    allow_changes: with ``resume``, accept changes to the keys of
      :data:`gdlab.results.SAFE_CHANGES` (more epochs, say).
    progress: show a progress line.
    plots: write the run's plots and ``report.md``.

  Returns:
    The ``loop.FitResult``; its ``stop_reason`` is ``"interrupted"`` if the
    run was stopped by Ctrl-C or SIGTERM (the folder is complete up to the
    last chunk).
  """
  run_dir = Path(out_dir)
  writer = distributed.is_writer()
  if writer:
    tensorboard.check(cfg, resume=resume)
    folders.check_out(run_dir, "run", resume=resume)
  with interrupts.deferred():
    return _run(cfg, run_dir, writer=writer, smoke=smoke, resume=resume,
                allow_changes=allow_changes, progress=progress, plots=plots)


def _run(cfg, run_dir: Path, *, writer, smoke, resume, allow_changes,
         progress, plots) -> loop.FitResult:
  # Progress on standard error (a bar, or plain lines in a log file) and a
  # result line on standard output, from the writing process only.
  shown = progress_lib.lifecycle(progress, cfg.name)
  if not writer:
    shown = dataclasses.replace(shown, show=False)
  p = build.problem(cfg, smoke)
  key = jax.random.PRNGKey(cfg.seed)
  mesh = (parallel.data_mesh(cfg.train.devices)
          if cfg.train.devices is not None or jax.process_count() > 1
          else None)
  # The data's fingerprint, for the folder (hashed on the host): writer only.
  digest = folders.data_sha256(p.data) if writer else None
  # What summary.json records besides the history, at every write.
  extra = {"processes": jax.process_count(),
           "devices": int(mesh.size) if mesh is not None else 1,
           **results.data_counts(p.data)}
  changed = []
  if resume and writer:
    changed = results.check_resume(run_dir, cfg, digest,
                                   allow_changes=allow_changes)
  interrupts.check()
  with (folders.locked(run_dir) if writer else contextlib.nullcontext()
        ), contextlib.ExitStack() as stack:
    carry = history = None
    if resume:
      carry, history = _resume_point(run_dir, p, key)
    if carry is not None and _budget_grew(carry, cfg.train.stop, changed):
      # A run that stopped on the budget it now has more of goes on.
      carry = carry._replace(stop=carry.stop._replace(
          reason=jnp.zeros_like(carry.stop.reason)))
    if writer:
      folders.create(run_dir, "run", name=cfg.name,
                     config_sha256=folders.config_sha256(cfg),
                     data_sha256=digest)
      if history is None:
        folders.atomic_write(run_dir / results.CONFIG, config_lib.dump(cfg))
        metrics_log.write_metrics(run_dir, {}, {})
      else:
        results.write_run(run_dir, cfg, history, carry, extra=extra)
    written = [history.num_steps if history else 0,
               len(history.epochs["epoch"]) if history else 0]
    # TensorBoard's events: flushed before each checkpoint, closed on the
    # way out, whatever ends the run.
    events = None
    if writer and cfg.train.tensorboard is not None:
      events = stack.enter_context(tensorboard.Writer(
          tensorboard.run_logdir(cfg),
          hparams=tensorboard.config_hparams(cfg), start=history))

    def on_chunk(c, h):
      if events is not None:
        events.write(h)
      if writer:
        results.write_run(run_dir, cfg, h, c, extra=extra,
                          written=tuple(written))
      written[:] = [h.num_steps, len(h.epochs["epoch"])]

    if carry is not None and stopping.reason_name(
        carry.stop.reason) != "running":
      # The run had ended; only its last files may be missing.
      history.stop_reason = stopping.reason_name(carry.stop.reason)
      result = loop.FitResult(carry.params, carry.opt_state, history,
                              history.stop_reason, carry)
    else:
      result = loop.fit(p.objective, p.optimizer, p.data, key=key,
                        regime=p.regime, criteria=p.criteria,
                        engine=cfg.train.engine,
                        chunk_epochs=cfg.train.chunk_epochs, carry=carry,
                        history=history, on_chunk=on_chunk,
                        progress=shown, record_params=p.record_params,
                        mesh=mesh, eval_every=cfg.train.eval_every,
                        step_metrics=cfg.train.step_metrics,
                        track=cfg.train.track)
    if shown.show is not False:
      print(progress_lib.result_line(shown.label, result.history),
            flush=True)
    if not writer:
      return result
    if events is not None:
      events.write(result.history)
    results.write_run(run_dir, cfg, result.history, result.carry,
                      extra=extra)
    if plots:
      interrupts.check()
      report.run_report(run_dir,
                        function=p.dataset if build.is_function_problem(
                            cfg) else None)
  return result


# ----------------------------------------------------------------------------
# Experiments.


def experiment_names() -> list[str]:
  """The experiments in :data:`EXPERIMENTS_DIR`, by name."""
  return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))


def find(name_or_path: str) -> Path:
  """A config path from a path or the name of an experiment in
  :data:`EXPERIMENTS_DIR`."""
  path = Path(name_or_path)
  if path.suffix in (".yaml", ".yml") or path.exists():
    return path
  candidate = EXPERIMENTS_DIR / f"{name_or_path}.yaml"
  if candidate.exists():
    return candidate
  raise config_lib.ConfigError(
      f"config: no experiment or file named {name_or_path!r}; known "
      f"experiments: {', '.join(experiment_names()) or 'none'} (in "
      f"{config_lib.short(str(EXPERIMENTS_DIR))}).")


def run_seed_sweeps(exp: config_lib.ExperimentConfig, out: Path,
                    runs: list[config_lib.RunConfig], *, smoke: bool = False,
                    resume: bool = False) -> list[Path]:
  """Runs every variant over the seeds of ``sweep.seed`` (``seed_sweep``).

  Each variant's resolved config (smoke and ``--set`` overrides applied) is
  the base of one sweep over the seeds, into ``out/seeds/<variant>/``, whose
  runs are named ``<variant>[seed=<s>]``.  With ``resume``, a variant whose
  sweep finished (its ``sweep.json`` written) is not run again, and one
  that was interrupted (a sweep is not resumable) runs again from the start.
  """
  seeds = config_lib.seed_sweep_seeds(exp, smoke)
  dirs = []
  for cfg in runs:
    interrupts.check()
    sub = out / results.SEEDS / cfg.name
    if not (resume and (sub / "sweep.json").exists()):
      if resume and sub.is_dir() and (folders.read_marker(sub) or {}).get(
          "kind") == "sweep":
        shutil.rmtree(sub)
      sweep.run_sweep(dataclasses.replace(exp, base=cfg, variants={},
                                          smoke={}),
                      sub, grid={"seed": seeds}, smoke=smoke, report=False)
    dirs.append(sub)
  return dirs


def run_experiment(exp: config_lib.ExperimentConfig,
                   out_dir: str | os.PathLike, *, smoke: bool = False,
                   sets: dict | None = None, resume: bool = False,
                   allow_changes: bool = False,
                   progress: bool | None = None) -> Path:
  """Runs every variant of ``exp``, its seed sweeps, its analysis and report.

  Every variant runs into ``out_dir/runs/<variant>/``; with
  ``exp.seed_sweep``, each is then also run over the seeds of
  ``sweep.seed`` (:func:`run_seed_sweeps`); the analysis named by
  ``exp.analysis`` reads those folders, and ``report.md`` compares the
  variants.  An interrupted run leaves the report of the runs so far (no
  seed sweeps, no analysis) and raises ``KeyboardInterrupt``.

  ``out_dir`` must be new or empty; with ``resume``, a folder this function
  wrote, whose runs continue from their checkpoints (a finished run only
  gets its files and figures written again; each is refused if its config
  differs; see :func:`run`).  The configs, the
  variant names and the analysis are checked before anything is written.
  """
  out = Path(out_dir)
  writer = distributed.is_writer()
  runs = config_lib.resolve_runs(exp, smoke=smoke, sets=sets)
  for cfg in runs:
    folders.check_name("variants", cfg.name)
  analyses.check(exp)
  if writer:
    for cfg in runs:
      tensorboard.check(cfg, resume=resume)
    folders.check_out(out, "experiment", resume=resume)
    if resume:
      # Every variant's config against its folder's, before any trains.
      for cfg in runs:
        run_dir = out / "runs" / cfg.name
        if folders.read_marker(run_dir) is not None:
          results.check_resume(run_dir, cfg, allow_changes=allow_changes)
  interrupts.check()  # a signal during the checks: nothing is written
  with contextlib.ExitStack() as stack:
    if writer:
      stack.enter_context(folders.removed_if_rejected(out))
      folders.create(out, "experiment", name=exp.name)
      stack.enter_context(folders.locked(out))
    stack.enter_context(interrupts.deferred())
    return _run_experiment(exp, out, runs, writer=writer, smoke=smoke,
                           resume=resume, allow_changes=allow_changes,
                           progress=progress)


def _run_experiment(exp, out: Path, runs, *, writer, smoke, resume,
                    allow_changes, progress) -> Path:
  run_dirs = []
  interrupted = False
  for cfg in runs:
    run_dir = out / "runs" / cfg.name
    run_dirs.append(run_dir)
    try:
      interrupts.check()
    except KeyboardInterrupt:
      interrupted = True
      break
    result = run(cfg, run_dir, smoke=smoke, resume=resume and (
        folders.read_marker(run_dir) is not None),
                 allow_changes=allow_changes,
                 progress=progress_lib.lifecycle(progress,
                                                 f"{exp.name}/{cfg.name}"))
    if result.stop_reason == "interrupted":
      interrupted = True
      break
  if not writer:
    if interrupted:
      raise interrupts.Interrupted(interrupts.last_signal() or 2)
    return out
  sections = []
  if not interrupted:
    if exp.seed_sweep:
      run_seed_sweeps(exp, out, runs, smoke=smoke, resume=resume)
    interrupts.check()
    sections = analyses.run(exp, out, run_dirs, smoke=smoke)
  finished = [d for d in run_dirs if (d / results.SUMMARY).exists()]
  report.compare(finished, out, title=exp.name, extra_sections=sections,
                 question=exp.question or None,
                 description=exp.description or None)
  if not interrupted and progress_lib.options(progress).show is not False:
    # The comparison table of report.md, on standard output.
    rows = [report.final_quantities(results.load_run(d)) for d in finished]
    print(f"\n{exp.name}: {len(rows)} runs\n"
          f"{report.markdown_table(rows, report.RUN_COLUMNS)}\n", flush=True)
  if interrupted:
    raise interrupts.Interrupted(interrupts.last_signal() or 2)
  return out
