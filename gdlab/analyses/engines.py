"""``gradcheck``: the hand-written backpropagation against ``jax.grad``."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from gdlab import gradcheck
from gdlab import plots
from gdlab import results
from gdlab.objective import value_and_grad_fn
from gdlab.analyses import Section, common, register


GRADCHECK_GRID = dict(biases=("per_neuron",), depths=(1,))
GRADCHECK_SMOKE_GRID = dict(activation_names=("tanh",),
                            loss_names=("softmax_cross_entropy",),
                            biases=("per_neuron",), depths=(1,))


def time_gradients(objective, params, x, y,
                   engines=("manual", "autodiff"),
                   repeats: int = 50) -> dict[str, float]:
  """Median seconds per jitted ``(value, grad)`` call of each engine.

  The engines are called in turn, ``repeats`` rounds after a warm-up call
  each, so a change in the machine's load affects them alike.
  """
  fns = {e: jax.jit(value_and_grad_fn(objective, e)) for e in engines}
  for fn in fns.values():
    jax.block_until_ready(fn(params, x, y))
  times = {e: [] for e in engines}
  for _ in range(repeats):
    for e, fn in fns.items():
      t0 = time.perf_counter()
      jax.block_until_ready(fn(params, x, y))
      times[e].append(time.perf_counter() - t0)
  return {e: float(np.median(t)) for e, t in times.items()}


@register("gradcheck")
def gradcheck_analysis(exp, out, run_dirs, smoke=False) -> list[Section]:
  """The gradient-check grid, the engines' loss curves and their speed.

  Runs :func:`gdlab.gradcheck.grid` (every activation x every loss, one
  hidden layer, per-neuron biases; the one row of tanh with softmax
  cross-entropy under ``smoke``) in the precision the runs use, draws
  :func:`gdlab.plots.gradcheck_table`, compares the logged losses of the
  runs with those of the first run, and times one jitted gradient of the
  first run's model on its whole training set with each engine (median of
  repeats).  Writes ``gradcheck.json``.
  """
  recs = [results.load_run(d) for d in run_dirs]
  cfg = common.run_config(recs[0])
  data, _, objective = common.problem(cfg, smoke)
  rows = gradcheck.grid(**(GRADCHECK_SMOKE_GRID if smoke else
                           GRADCHECK_GRID))
  precision = str(jnp.zeros(()).dtype)
  table = plots.gradcheck_table(rows, out / results.PLOTS / "gradcheck.png")
  passed = sum(bool(r.passed) for r in rows)
  ref = np.asarray(recs[0].steps["loss"], float)
  curves = []
  for rec in recs:
    loss = np.asarray(rec.steps["loss"], float)
    k = min(len(loss), len(ref))
    diff = np.abs(loss[:k] - ref[:k])
    curves.append({"run": rec.name, "engine": common.run_config(rec).train.engine,
                   "steps": len(loss), "max_abs_diff": float(diff.max()),
                   "max_rel_diff": float(np.max(diff / np.maximum(
                       np.abs(ref[:k]), 1e-300)))})
  params = common.initial_params(cfg, objective)
  repeats = 5 if smoke else 200
  seconds = time_gradients(objective, params, data.x_train, data.y_train,
                           repeats=repeats)
  speed = [{"engine": e, "seconds": t} for e, t in seconds.items()]
  for s in speed:
    s["microseconds"] = 1e6 * s["seconds"]
    s["relative"] = s["seconds"] / speed[1]["seconds"]
  results.write_json(out / "gradcheck.json", {
      "precision": precision, "rows": [r._asdict() for r in rows],
      "passed": passed, "curves": curves, "speed": speed,
      "timed_on": {"records": int(data.x_train.shape[0]),
                   "repeats": repeats}})
  check = (
      f"{passed}/{len(rows)} rows pass in {precision} (tolerances "
      f"{gradcheck.AUTODIFF_TOL:g} against jax.grad, {gradcheck.FD_TOL:g} "
      "against central finite differences).")
  same = ("Logged loss per step of each run against the first run "
          f"({recs[0].name}).\n\n" + common.table(curves, [
              ("run", "run"), ("engine", "engine"), ("steps", "steps"),
              ("max_abs_diff", "max |loss - loss_ref|"),
              ("max_rel_diff", "max relative difference")]))
  fast = (f"One jitted (value, gradient) call of the runs' model over "
          f"all {int(data.x_train.shape[0])} training records, median of "
          f"{repeats} calls of each engine (in turn) after a warm-up, "
          f"{precision}.\n\n" + common.table(
              speed, [("engine", "engine"),
                      ("microseconds", "time per gradient (us)"),
                      ("relative", "relative to jax.grad")]))
  return [("Gradient check: hand-written against jax.grad", check, [table]),
          ("Same loss curves from both engines", same, []),
          ("Speed of the two engines", fast, [])]
