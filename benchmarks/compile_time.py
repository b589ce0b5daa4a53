"""Compile time: the first step of the MLP 784-512-512-10, and compiling once.

Each case is built afresh (``jax.clear_caches()`` first, so nothing compiled
earlier in the process is reused), then traced, compiled and run once on a
batch of 128; the clock stops when the result is ready.  The other
benchmarks report the same figure for their own programs (the sweep, the line
search loops, the digits run); ``benchmarks.run`` gathers them all into one
table.

``gdlab.fit``'s figure splits into tracing and lowering to HLO
(``jax.jit(...).lower``), XLA compilation (``.compile()``) and the first
chunk (one epoch of 8 steps and the per-epoch evaluation).

Compiling once, side by side in one process (:func:`repeats`): an MLP
64-128-2 trained by mini-batch SGD (batch 64, loss-only logging) with
``gdlab.fit``, first call, repeated calls and a call with a new learning
rate, against the same training written by hand as one jitted ``lax.scan``
over epochs and batches (first call and repeated calls); compilations are
counted from JAX's monitoring events.  Then ``gdlab run default`` twice, each
in a new process sharing one fresh persistent compilation cache folder and
one fresh figure cache folder (at the tiny size ``gdlab run closed_form
--smoke``, the quickest experiment), three such pairs at the full size,
each with its own fresh folders, reported by the pair of the median ratio;
the "compilations" column of these rows counts the programs the process
wrote to the cache (the second: those it did not find there), and
"figures_drawn" the figures it drew rather than copied.  At the full size a
third process runs the command again with the figure cache off, so that
the table shows what the second run owes to each cache.
The rest of this benchmark runs with the persistent cache off, so that its
first calls compile.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gdlab
from gdlab import compilation_cache
from gdlab import loop
from gdlab import optim
from gdlab.plots import _cache as figure_cache
from benchmarks import common
from benchmarks import throughput

SIZES = {
    "tiny": dict(hidden=(32, 32), repeats=1),
    "full": dict(hidden=(512, 512), repeats=3),
}
BATCH = 128
TARGET_S = 2.0
REPEAT_SIZES = {
    # training records, epochs, repeated calls timed, `gdlab run` pairs, and
    # whether each pair adds a run with the figure cache off
    "tiny": dict(n=512, epochs=2, repeats=3, run_pairs=1, figures_off=False),
    "full": dict(n=4096, epochs=5, repeats=7, run_pairs=3, figures_off=True),
}
REPEAT_BATCH = 64
# The command run twice in new processes: (experiment, extra arguments).
RUN_TWICE = {"tiny": ("closed_form", "--smoke"), "full": ("default",)}
COMPILE_EVENTS = ("/jax/core/compile/backend_compile_duration",)
_events: list[str] = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kw: _events.append(event))


def _compilations(fn) -> tuple[int, float]:
  """(XLA compilations made by ``fn()``, its wall time in seconds)."""
  start = len(_events)
  t0 = time.perf_counter()
  fn()
  seconds = time.perf_counter() - t0
  return sum(e in COMPILE_EVENTS for e in _events[start:]), seconds


def hand_training(optimizer, n: int, batch: int, epochs: int):
  """The whole training as a JAX user writes it: one jitted function, a
  ``lax.scan`` over epochs of a reshuffle and a ``lax.scan`` over batches."""
  epoch = throughput.hand_scan_epoch(optimizer, n, batch)

  def train(params, key, x, y):
    state = optimizer.init(params)

    def body(carry, k):
      return epoch(*carry, k, x, y), None
    return jax.lax.scan(body, (params, state),
                        jax.random.split(key, epochs))[0]
  return jax.jit(train)


def _cache_entries(folder: Path, pattern: str = "*-cache") -> int:
  """Entries of a cache folder: programs of a persistent compilation cache
  (one file each), or figures of the figure cache (``pattern="*.png"``)."""
  return len(list(folder.glob(pattern))) if folder.is_dir() else 0


def _gdlab_run_twice(size: str) -> list[tuple[float, int, int]]:
  """``gdlab run`` (:data:`RUN_TWICE`) twice, in new processes that share a
  fresh persistent compilation cache and a fresh figure cache, then (where
  :data:`REPEAT_SIZES` says ``figures_off``) a third time with the figure
  cache off: ``(seconds, programs written to the compilation cache, figures
  drawn)`` per process.  A process that loads every program from the cache
  writes none; one that copies every figure from the figure cache draws
  none (the figures drawn are the entries it adds, or, with the cache off,
  the PNGs it writes).

  JAX's own cache settings are removed from the processes' environment, so
  that the first one starts from the empty folder.
  """
  name, *extra = RUN_TWICE[size]
  with tempfile.TemporaryDirectory() as tmp:
    cache, figures = Path(tmp) / "cache", Path(tmp) / "figures"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("JAX_COMPILATION_CACHE")
           and k != "JAX_ENABLE_COMPILATION_CACHE"}
    env[compilation_cache.ENV] = str(cache)
    env[figure_cache.ENV] = str(figures)
    processes = []
    runs = 3 if common.sized(REPEAT_SIZES, size)["figures_off"] else 2
    for i in range(runs):
      out = Path(tmp) / f"run{i}"
      if i == 2:
        env[figure_cache.ENV] = "off"
      args = [sys.executable, "-m", "gdlab.cli", "run", name, "--out",
              str(out), *extra]
      before = (_cache_entries(cache), _cache_entries(figures, "*.png"))
      t0 = time.perf_counter()
      subprocess.run(args, env=env, check=True, capture_output=True)
      seconds = time.perf_counter() - t0
      drawn = (len(list(out.rglob("*.png"))) if i == 2 else
               _cache_entries(figures, "*.png") - before[1])
      processes.append((seconds, _cache_entries(cache) - before[0], drawn))
  return processes


def repeats(report: common.Report, size: str) -> None:
  """The rows and targets of compiling once (see the module docstring)."""
  cfg = common.sized(REPEAT_SIZES, size)
  n, epochs = cfg["n"], cfg["epochs"]
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(n, 64)), jnp.float32)
  y = jnp.asarray((x @ jnp.asarray(rng.normal(size=(64,)), jnp.float32)
                   > 0).astype(jnp.int32))
  model = gdlab.mlp((64, 128, 2), activation="relu", init_scheme="he",
                    dtype=jnp.float32)
  objective = gdlab.Objective(model, "softmax_cross_entropy", "mean")
  regime = gdlab.Regime("minibatch", REPEAT_BATCH)
  criteria = gdlab.Criteria(max_epochs=epochs)
  params = model.init(jax.random.PRNGKey(1))

  def fit(lr):
    result = gdlab.fit(objective, optim.gradient_descent(lr), (x, y),
                       key=jax.random.PRNGKey(0), regime=regime,
                       criteria=criteria, step_metrics="loss",
                       progress=False)
    jax.block_until_ready(result.params)

  hand = hand_training(optax.sgd(0.1), n, REPEAT_BATCH, epochs)

  def hand_call():
    jax.block_until_ready(hand(params, jax.random.PRNGKey(0), x, y))

  jax.clear_caches()
  loop.clear_programs()
  rows = {}
  rows["gdlab.fit, first call"] = _compilations(lambda: fit(0.1))
  rows["hand-written lax.scan, first call"] = _compilations(hand_call)
  again = [_compilations(lambda: fit(0.1)) for _ in range(cfg["repeats"])]
  by_hand = [_compilations(hand_call) for _ in range(cfg["repeats"])]
  rows["gdlab.fit, repeated call"] = (max(c for c, _ in again), float(
      np.median([t for _, t in again])))
  rows["hand-written lax.scan, repeated call"] = (
      max(c for c, _ in by_hand), float(np.median([t for _, t in by_hand])))
  rows["gdlab.fit, new learning rate"] = _compilations(lambda: fit(0.05))
  command = "gdlab run " + " ".join(RUN_TWICE[size])
  # Each pair with its own fresh caches; the pair of the median ratio.
  pairs = sorted((_gdlab_run_twice(size) for _ in range(cfg["run_pairs"])),
                 key=lambda p: p[1][0] / p[0][0])
  runs = pairs[len(pairs) // 2]
  names = ("first process", "second process",
           "second process, figure cache off")
  figures = {}
  for what, (seconds, programs, drawn) in zip(names, runs):
    rows[f"{command}, {what}"] = (programs, seconds)
    figures[f"{command}, {what}"] = drawn
  for name, (count, seconds) in rows.items():
    report.rows.append({"case": name, "seconds": seconds,
                        "compilations": count,
                        "figures_drawn": figures.get(name)})
  ratio = (rows["gdlab.fit, repeated call"][1] /
           rows["hand-written lax.scan, repeated call"][1])
  report.target("repeated gdlab.fit / repeated hand-written lax.scan",
                ratio, "<= 2", ratio <= 2)
  count = rows["gdlab.fit, repeated call"][0]
  report.target("compilations in a repeated gdlab.fit", count, "0",
                count == 0)
  count = rows["gdlab.fit, new learning rate"][0]
  report.target("compilations in a gdlab.fit with a new learning rate",
                count, "0", count == 0)
  ratio = runs[1][0] / runs[0][0]
  report.target(f"second {command} / first (new process)", ratio,
                "<= 0.4", ratio <= 0.4)
  count = runs[1][1]
  report.target(f"programs the second {command} compiled (not in the "
                "cache)", count, "0", count == 0)
  report.setup.update({"repeat_n_train": n, "repeat_epochs": epochs,
                       "repeat_batch": REPEAT_BATCH,
                       "repeat_sizes": (64, 128, 2),
                       "run_pairs": [{"first_s": p[0][0], "second_s": p[1][0],
                                      "ratio": p[1][0] / p[0][0],
                                      "figures_drawn": [r[2] for r in p],
                                      **({"second_figures_off_s": p[2][0]}
                                         if len(p) > 2 else {})}
                                     for p in pairs]})


def run(size: str = "full") -> common.Report:
  compilation_cache.disable()
  cfg = common.sized(SIZES, size)
  sizes = (784, *cfg["hidden"], 10)
  report = common.Report(
      "compile", f"time to the first finished step, MLP "
      f"{'-'.join(map(str, sizes))}, batch {BATCH}",
      ["seconds", "lower_s", "compile_s", "run_s", "spread",
       "compilations", "figures_drawn"])
  report.setup = {"sizes": sizes, "batch": BATCH, "repeats": cfg["repeats"]}
  n = 8 * BATCH
  x, y = throughput.synthetic(n)
  batch = (x[:BATCH], y[:BATCH])
  model = gdlab.mlp(sizes, activation="relu", init_scheme="he",
                    dtype=jnp.float32)
  objective = gdlab.Objective(model, "softmax_cross_entropy", "mean")
  params = model.init(jax.random.PRNGKey(1))
  optimizer = optax.sgd(throughput.LEARNING_RATE)
  state = optimizer.init(params)
  data = loop.Data(x, y)
  parts: dict[str, list[tuple[float, float, float]]] = {}

  def gdlab_step(engine):
    step = gdlab.make_step(objective, optimizer, engine)
    jax.block_until_ready(step(params, state, batch))

  def hand_step():
    step = jax.jit(throughput.hand_step(optimizer))
    jax.block_until_ready(step(params, state, *batch))

  def hand_scan():
    epoch = jax.jit(throughput.hand_scan_epoch(optimizer, n, BATCH))
    jax.block_until_ready(epoch(params, state, jax.random.PRNGKey(0), x, y))

  def fit_chunk():
    opt = optimizer
    plan, numbers = loop.make_plan(objective, opt,
                                   gdlab.Regime("minibatch", BATCH),
                                   gdlab.Criteria(max_epochs=1), n_train=n)
    carry = loop.initial_carry(objective, opt, jax.random.PRNGKey(2), params)
    t0 = time.perf_counter()
    lowered = jax.jit(functools.partial(loop.run_chunk, plan)).lower(
        carry, data, numbers)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    jax.device_get(compiled(carry, data, numbers)[1:])
    t3 = time.perf_counter()
    parts.setdefault("fit", []).append((t1 - t0, t2 - t1, t3 - t2))

  def whole_fit():
    gdlab.fit(objective, optimizer, data, key=jax.random.PRNGKey(0),
              regime=gdlab.Regime("minibatch", BATCH),
              criteria=gdlab.Criteria(max_epochs=1), progress=False)

  cases = {
      "gdlab.make_step (autodiff)": lambda: gdlab_step("autodiff"),
      "gdlab.make_step (manual)": lambda: gdlab_step("manual"),
      "jax.grad + optax.sgd step": hand_step,
      "jax.grad + optax.sgd, lax.scan epoch": hand_scan,
      "gdlab.fit chunk program (loop.run_chunk)": fit_chunk,
      "gdlab.fit, one epoch, start to end": whole_fit,
  }

  def fresh(fn):
    def case():
      jax.clear_caches()
      loop.clear_programs()
      fn()
    return case
  timings = common.alternate({k: fresh(v) for k, v in cases.items()},
                             cfg["repeats"], warmup=0)
  for name, t in timings.items():
    row = {"case": name, "seconds": t.median, "spread": t.spread}
    if name.startswith("gdlab.fit chunk"):
      for i, key in enumerate(("lower_s", "compile_s", "run_s")):
        row[key] = sorted(p[i] for p in parts["fit"])[len(parts["fit"]) // 2]
    report.rows.append(row)
    report.compile.append({"case": name, "first_step_s": t.median})
  step_s = timings["gdlab.make_step (autodiff)"].median
  report.target("compile + first step, gdlab.make_step (MLP, batch 128)",
                step_s, f"< {TARGET_S:g} s", step_s < TARGET_S)
  fit_s = timings["gdlab.fit, one epoch, start to end"].median
  report.target("gdlab.fit start to first finished chunk (MLP, batch 128)",
                fit_s, f"< {TARGET_S:g} s", fit_s < TARGET_S)
  repeats(report, size)
  return report


if __name__ == "__main__":
  raise SystemExit(common.main(run))
