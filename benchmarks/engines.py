"""The gradient engines: hand-written backpropagation against ``jax.grad``.

The MLP 784-512-512-10 (relu, softmax cross-entropy, mean over the batch,
float32) of the throughput benchmark.  Each engine is
``gdlab.value_and_grad_fn(objective, engine)`` under ``jax.jit``: the forward
pass, the loss and the backward pass to the gradient of every weight and
bias, no update.  Time per call, median over alternating repeats of a block
of calls on the same batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import gdlab
from benchmarks import common
from benchmarks import throughput

SIZES = {
    "tiny": dict(hidden=(32, 32), batches=(32, 128), calls=5, repeats=2),
    "full": dict(hidden=(512, 512), batches=(32, 128), calls=50, repeats=9),
}
MANUAL = "manual (hand-written backprop)"
AUTODIFF = "autodiff (jax.grad)"


def run(size: str = "full") -> common.Report:
  cfg = common.sized(SIZES, size)
  sizes = (784, *cfg["hidden"], 10)
  report = common.Report(
      "engines", f"forward + backward of the MLP {'-'.join(map(str, sizes))}"
      ", float32", ["batch", "ms_per_call", "vs_autodiff", "spread"])
  report.setup = {"sizes": sizes, "calls_per_repeat": cfg["calls"],
                  "repeats": cfg["repeats"], "dtype": "float32"}
  model = gdlab.mlp(sizes, activation="relu", init_scheme="he",
                    dtype=jnp.float32)
  objective = gdlab.Objective(model, "softmax_cross_entropy", "mean")
  params = model.init(jax.random.PRNGKey(1))
  for batch in cfg["batches"]:
    x, y = throughput.synthetic(batch, seed=batch)
    fns, cases = {}, {}
    for name, engine in ((MANUAL, "manual"), (AUTODIFF, "autodiff")):
      jax.clear_caches()
      fn = jax.jit(gdlab.value_and_grad_fn(objective, engine))
      fns[name] = fn
      report.compile.append({
          "case": f"{name}, batch {batch}",
          "first_step_s": common.first_call(
              lambda fn=fn: jax.block_until_ready(fn(params, x, y)))})

      def block(fn=fn):
        for _ in range(cfg["calls"]):
          out = fn(params, x, y)
        jax.block_until_ready(out)
      cases[name] = block
    timings = common.alternate(cases, cfg["repeats"])
    per_call = {k: t.median / cfg["calls"] for k, t in timings.items()}
    for name, t in timings.items():
      report.rows.append({"case": name, "batch": batch,
                          "ms_per_call": 1e3 * per_call[name],
                          "vs_autodiff": per_call[name] / per_call[AUTODIFF],
                          "spread": t.spread})
    ratio = per_call[MANUAL] / per_call[AUTODIFF]
    report.target(f"manual / jax.grad time, batch {batch}", ratio, "<= 1.10",
                  ratio <= 1.10)
  return report


if __name__ == "__main__":
  raise SystemExit(common.main(run))
