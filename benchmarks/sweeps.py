"""Sweeps: 64 step sizes as one vmapped program against 64 separate runs.

A small MLP 2-16-16-1 (tanh, binary cross-entropy on 512 training points of
the moons set), full-batch gradient descent for 500 steps, float32, with 64
step sizes from 1e-3 to 10 (log-spaced).  Cases:

* ``gdlab.sweep.run_sweep``: the 64 runs as one program, vmapped over the
  step size and sharded over the host devices (run this benchmark with
  ``XLA_FLAGS=--xla_force_host_platform_device_count=N``, as
  ``benchmarks.run`` does); it also writes the 64 run folders (config,
  per-step metrics, summary, checkpoint).
* ``64 x gdlab.fit``: the same 64 runs one after another, each compiled by
  its own ``gdlab.fit`` call (what a loop over configs does); no files.
* ``hand-written, compiled once``: one jitted ``lax.scan`` of 500 steps
  taking the step size as an argument, called 64 times (a peer that a JAX
  user who knows to avoid recompiling writes); no metrics, no stopping.

Every gdlab run checks the same stopping criteria (divergence) and evaluates
the training loss each epoch; runs that diverge stop early in both gdlab
cases.  Wall time from start to last result: the median over repeats for
the sweep and the hand-written runs, one pass for the separate ``gdlab.fit``
runs (each compiles anew, so a second pass would take as long).
"""

from __future__ import annotations

import json
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gdlab
from gdlab import build
from gdlab import config as config_lib
from gdlab import sweep
from benchmarks import common

SIZES = {
    "tiny": dict(rates=4, steps=20, n=80, repeats=1),
    "full": dict(rates=64, steps=500, n=640, repeats=3),
    # A GPU or TPU: the 64-rate sweep against 64 runs (target 20x), and one
    # sweep of 1,024 rates.
    "accelerator": dict(rates=64, steps=500, n=640, repeats=3, big=1024,
                        target=20),
}
SWEEP = "gdlab.sweep.run_sweep (vmapped, sharded)"
FITS = "separate gdlab.fit runs, one after another"
HAND = "hand-written lax.scan, compiled once, one call per rate"
DEVICES_FLAG = "--xla_force_host_platform_device_count"


def experiment_config(n: int, steps: int) -> config_lib.ExperimentConfig:
  base = config_lib.RunConfig(
      name="mlp", seed=0,
      data=config_lib.DataConfig(name="moons", n=n, noise=0.1,
                                 test_fraction=0.2),
      model=config_lib.ModelConfig(kind="mlp", hidden=(16, 16),
                                   activation="tanh"),
      loss=config_lib.LossConfig(name="binary_cross_entropy"),
      optimizer=config_lib.OptimizerConfig(name="gd", learning_rate=0.1),
      train=config_lib.TrainConfig(regime="full_batch",
                                   stop=gdlab.Criteria(max_epochs=steps),
                                   dtype="float32"))
  return config_lib.ExperimentConfig(name="sweep_benchmark", base=base)


def run(size: str = "full") -> common.Report:
  cfg = common.sized(SIZES, size)
  rates = [float(r) for r in np.logspace(-3, 1, cfg["rates"])]
  exp = experiment_config(cfg["n"], cfg["steps"])
  report = common.Report(
      "sweeps", f"{len(rates)} step sizes, MLP 2-16-16-1, full-batch GD, "
      f"{cfg['steps']} steps, {int(cfg['n'] * 0.8)} points",
      ["wall_s", "compile_s", "run_s", "speedup_vs_fits", "spread"])
  report.setup = {"rates": len(rates), "steps": cfg["steps"],
                  "n_train": int(cfg["n"] * 0.8), "repeats": cfg["repeats"],
                  "devices": jax.device_count(),
                  "xla_flags": os.environ.get("XLA_FLAGS", "")}
  if jax.device_count() == 1:
    report.notes.append(
        f"only one device: the sweep is vmapped but not sharded; run with "
        f"XLA_FLAGS={DEVICES_FLAG}=<cores> (benchmarks.run does).")
  cfg0 = config_lib.resolve_runs(exp, variants=False)[0]
  data, dataset = build.dataset(cfg0)
  objective = build.objective(cfg0, dataset)
  criteria = cfg0.train.stop
  extra = {}

  def gdlab_sweep():
    with tempfile.TemporaryDirectory() as out:
      sweep.run_sweep(exp, out, grid={"optimizer.learning_rate": rates},
                      report=False)
      first = sorted(os.listdir(os.path.join(out, "runs")))[0]
      with open(os.path.join(out, "runs", first, "summary.json"),
                encoding="utf-8") as f:
        summary = json.load(f)
      extra[SWEEP] = (summary["compile_time"], summary["run_time"])

  def separate_fits():
    compile_s = run_s = 0.0
    for lr in rates:
      result = gdlab.fit(objective, build.optimizer(
          config_lib.OptimizerConfig(name="gd", learning_rate=lr)), data,
                         key=jax.random.PRNGKey(cfg0.seed),
                         regime="full_batch", criteria=criteria,
                         progress=False)
      compile_s += result.history.compile_time
      run_s += result.history.run_time
    extra[FITS] = (compile_s, run_s)

  x, y = data.x_train, data.y_train
  params0 = objective.model.init(jax.random.split(jax.random.PRNGKey(0))[0])

  def hand_run(lr):
    opt = optax.sgd(lr)

    def body(carry, _):
      p, s = carry
      g = jax.grad(objective.value)(p, x, y)
      u, s = opt.update(g, s, p)
      return (optax.apply_updates(p, u), s), None
    (p, _), _ = jax.lax.scan(body, (params0, opt.init(params0)), None,
                             length=cfg["steps"])
    return objective.value(p, x, y)
  hand = jax.jit(hand_run)

  def hand_runs():
    for lr in rates:
      jax.block_until_ready(hand(jnp.float32(lr)))

  report.compile.append({
      "case": "hand-written lax.scan run",
      "first_step_s": common.first_call(
          lambda: jax.block_until_ready(hand(jnp.float32(rates[0]))))})
  timings = common.alternate({SWEEP: gdlab_sweep, HAND: hand_runs},
                             cfg["repeats"], warmup=0)
  # Every gdlab.fit compiles its own program, so one pass over the rates is
  # already its own warm-up: it is timed once.
  timings[FITS] = common.Timing([common.first_call(separate_fits)])
  for name, t in timings.items():
    compile_s, run_s = extra.get(name, (None, None))
    report.rows.append({"case": name, "wall_s": t.median,
                        "compile_s": compile_s, "run_s": run_s,
                        "speedup_vs_fits": timings[FITS].median / t.median,
                        "spread": t.spread})
  report.compile.append({"case": "gdlab sweep program (compile)",
                         "first_step_s": extra[SWEEP][0]})
  report.compile.append({"case": "one gdlab.fit (compile, mean of 64)",
                         "first_step_s": extra[FITS][0] / len(rates)})
  speedup = timings[FITS].median / timings[SWEEP].median
  target = cfg.get("target", 2)
  report.target(f"sweep speed-up over {len(rates)} separate gdlab.fit runs",
                speedup, f">= {target}", speedup >= target)
  if cfg.get("big"):
    big = [float(r) for r in np.logspace(-3, 1, cfg["big"])]
    with tempfile.TemporaryDirectory() as out:
      wall = common.first_call(lambda: sweep.run_sweep(
          exp, out, grid={"optimizer.learning_rate": big}, report=False))
    report.rows.append({"case": f"gdlab.sweep.run_sweep, {len(big)} rates",
                        "wall_s": wall, "compile_s": None, "run_s": None,
                        "speedup_vs_fits": None, "spread": None})
  vs_hand = timings[HAND].median / timings[SWEEP].median
  report.target(f"sweep speed-up over {len(rates)} hand-written runs "
                "compiled once", vs_hand, ">= 2 (same target)", vs_hand >= 2)
  report.notes.append(
      "the gdlab sweep also writes a run folder per step size; the gdlab.fit "
      "and hand-written runs write nothing.  The separate gdlab.fit runs are "
      "timed once (each compiles anew); the other cases are medians.")
  return report


if __name__ == "__main__":
  raise SystemExit(common.main(run))
