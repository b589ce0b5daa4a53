"""Compile time: seconds to the first finished step of the MLP 784-512-512-10.

Each case is built afresh (``jax.clear_caches()`` first, so nothing compiled
earlier in the process is reused), then traced, compiled and run once on a
batch of 128; the clock stops when the result is ready.  The other
benchmarks report the same figure for their own programs (the sweep, the line
search loops, the digits run); ``benchmarks.run`` gathers them all into one
table.

``gdlab.fit``'s figure splits into tracing and lowering to HLO
(``jax.jit(...).lower``), XLA compilation (``.compile()``) and the first
chunk (one epoch of 8 steps and the per-epoch evaluation).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import optax

import gdlab
from gdlab import loop
from benchmarks import common
from benchmarks import throughput

SIZES = {
    "tiny": dict(hidden=(32, 32), repeats=1),
    "full": dict(hidden=(512, 512), repeats=3),
}
BATCH = 128
TARGET_S = 2.0


def run(size: str = "full") -> common.Report:
  cfg = SIZES[size]
  sizes = (784, *cfg["hidden"], 10)
  report = common.Report(
      "compile", f"time to the first finished step, MLP "
      f"{'-'.join(map(str, sizes))}, batch {BATCH}",
      ["seconds", "lower_s", "compile_s", "run_s", "spread"])
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
    program = loop.build(lambda h: (objective, optimizer),
                         gdlab.Regime("minibatch", BATCH),
                         gdlab.Criteria(max_epochs=1), n_train=n)
    carry = program.init(jax.random.PRNGKey(2), params, {})
    t0 = time.perf_counter()
    lowered = jax.jit(program.run_chunk).lower(carry, data, {})
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    jax.device_get(compiled(carry, data, {})[1:])
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
      "gdlab.fit chunk program (loop.build)": fit_chunk,
      "gdlab.fit, one epoch, start to end": whole_fit,
  }

  def fresh(fn):
    def case():
      jax.clear_caches()
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
  return report


if __name__ == "__main__":
  raise SystemExit(common.main(run))
