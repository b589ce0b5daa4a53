"""Device memory of a training chunk, with and without buffer donation.

``gdlab.loop.compiled_chunk`` donates the carry (parameters, optimizer
state, counters) to the compiled chunk, so its output reuses the input's
buffers and a device holds one copy of the state during a step, not two.
This benchmark compiles the same chunk program (``gdlab.loop.run_chunk``)
both ways and reads XLA's memory analysis of each: arguments, outputs,
aliased (donated) bytes and temporaries; the program's peak is about
``arguments + outputs - aliased + temporaries``.  On a GPU it also runs the
donated program and reads the device's peak memory in use
(``memory_stats()``, absent on CPU).

Cases: the MLP of the throughput benchmark (784-512-512-10 at full size) with
SGD (state: the parameters) and Adam (state: parameters and two moments),
mini-batches of 256.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import optax

import gdlab
from benchmarks import common
from benchmarks import throughput
from gdlab import loop
from gdlab import stopping

SIZES = {
    "tiny": dict(hidden=(32, 32), n=512),
    "full": dict(hidden=(2048, 2048), n=4096),
}
BATCH = 256
MB = 2 ** 20


def _analysis(plan, carry, data, numbers, donate: bool) -> dict:
  fn = functools.partial(loop.run_chunk, plan)
  jitted = jax.jit(fn, donate_argnums=0 if donate else ())
  compiled = jitted.lower(carry, data, numbers).compile()
  m = compiled.memory_analysis()
  row = {
      "arguments_mb": m.argument_size_in_bytes / MB,
      "outputs_mb": m.output_size_in_bytes / MB,
      "aliased_mb": m.alias_size_in_bytes / MB,
      "temporaries_mb": m.temp_size_in_bytes / MB,
  }
  row["peak_mb"] = (row["arguments_mb"] + row["outputs_mb"] -
                    row["aliased_mb"] + row["temporaries_mb"])
  stats = jax.devices()[0].memory_stats()
  if stats and "peak_bytes_in_use" in stats and donate:
    out = compiled(carry, data, numbers)
    jax.block_until_ready(out)
    row["device_peak_mb"] = jax.devices()[0].memory_stats()[
        "peak_bytes_in_use"] / MB
  return row, compiled


def run(size: str = "full") -> common.Report:
  cfg = common.sized(SIZES, size)
  sizes = (784, *cfg["hidden"], 10)
  report = common.Report(
      "memory", f"device memory of a training chunk, MLP "
      f"{'-'.join(map(str, sizes))}, batch {BATCH}, float32",
      ["donated", "state_mb", "arguments_mb", "outputs_mb", "aliased_mb",
       "temporaries_mb", "peak_mb", "device_peak_mb"])
  report.setup = {"sizes": sizes, "n_train": cfg["n"], "batch": BATCH,
                  "dtype": "float32", "device": jax.devices()[0].device_kind}
  model = gdlab.mlp(sizes, activation="relu", init_scheme="he",
                    dtype=jnp.float32)
  objective = gdlab.Objective(model, "softmax_cross_entropy", "mean")
  x, y = throughput.synthetic(cfg["n"])
  data = loop.Data(x, y)
  regime = loop.Regime("minibatch", BATCH)
  for name, optimizer in (("sgd", optax.sgd(0.01)),
                          ("adam", optax.adam(1e-3))):
    plan, numbers = loop.make_plan(
        objective, optimizer, regime, stopping.Criteria(max_epochs=1),
        n_train=cfg["n"], chunk_epochs=1, eval_every=1,
        step_metrics="loss")
    peaks = {}
    for donate in (False, True):
      carry = loop.own_buffers(loop.initial_carry(objective, optimizer,
                                                  jax.random.PRNGKey(0)))
      state = sum(a.nbytes for a in jax.tree_util.tree_leaves(carry)) / MB
      t0 = time.perf_counter()
      row, _ = _analysis(plan, carry, data, numbers, donate)
      seconds = time.perf_counter() - t0
      report.rows.append({"case": name, "donated": donate,
                          "state_mb": state, **row})
      peaks[donate] = row["peak_mb"]
      report.compile.append({
          "case": f"{name}, {'donated' if donate else 'not donated'} "
                  f"(compile and analysis)", "first_step_s": seconds})
    saved = peaks[False] - peaks[True]
    report.target(f"{name}: peak saved by donation (MB)", saved,
                  f">= state ({state:.1f} MB) x 0.9", saved >= 0.9 * state)
  report.notes.append(
      "peak_mb from XLA's memory analysis of the compiled chunk; "
      "device_peak_mb from the device's allocator where it reports one "
      "(GPU), after running the donated chunk once")
  return report


if __name__ == "__main__":
  raise SystemExit(common.main(run))
