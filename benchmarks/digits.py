"""Time to 95% test accuracy on scikit-learn's digits.

The digits MLP of ``experiments/default.yaml``: 64-32-10, tanh, softmax
cross-entropy (mean over the batch), plain mini-batch SGD with step size 0.2
and batch size 32, no momentum, no weight penalty, float32, on gdlab's
standardised train/test split (1437/360 records).  Cases:

* ``gdlab.fit``: ``Regime("minibatch", 32)``, one epoch per chunk; after
  every epoch the loop evaluates the training and test sets on device.  The
  time to 95% is the run time up to the end of the first epoch whose test
  accuracy reaches 0.95 (``History.epochs["time"]``), without and with the
  compilation that ``fit`` does first.
* ``sklearn MLPClassifier(solver="sgd")``: the same architecture, step size,
  batch size and data, ``momentum=0``, ``alpha=0``; ``partial_fit`` runs one
  epoch, then ``score`` on the test set; the clock stops at the first epoch
  at 95%.

Both sides evaluate test accuracy after every epoch and include that in
their time.  The initialisations differ (each library's Glorot scheme), so
the number of epochs to 95% may differ; it is reported.  Median over
repeats of whole runs with the same seed.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

import gdlab
from gdlab import optim
from benchmarks import common

TARGET = 0.95
LEARNING_RATE = 0.2
BATCH = 32
SIZES = {
    "tiny": dict(max_epochs=2, repeats=1, target=0.0),
    "full": dict(max_epochs=40, repeats=3, target=TARGET),
}
GDLAB = "gdlab.fit (minibatch 32)"
SKLEARN = "sklearn MLPClassifier(solver='sgd')"


def run(size: str = "full") -> common.Report:
  cfg = common.sized(SIZES, size)
  target = cfg["target"]
  sklearn = common.optional("sklearn")
  report = common.Report(
      "digits", f"digits MLP 64-32-10 to {target:.0%} test accuracy, "
      f"SGD step {LEARNING_RATE}, batch {BATCH}",
      ["epochs", "seconds", "seconds_with_compile", "final_test_accuracy",
       "spread"])
  report.setup = {"max_epochs": cfg["max_epochs"], "repeats": cfg["repeats"],
                  "target": target, "learning_rate": LEARNING_RATE,
                  "batch": BATCH, "dtype": "float32"}
  ds = gdlab.data.digits(seed=0, test_fraction=0.2)
  f32 = lambda a: np.asarray(a, np.float32)
  x_tr, x_te = f32(ds.x_train), f32(ds.x_test)
  y_tr, y_te = np.asarray(ds.y_train), np.asarray(ds.y_test)
  model = gdlab.mlp((64, 32, 10), "tanh", dtype=jnp.float32)
  objective = gdlab.Objective(model, "softmax_cross_entropy", "mean")
  data = gdlab.Data(*(jnp.asarray(a) for a in (x_tr, y_tr, x_te, y_te)))

  results = {GDLAB: [], SKLEARN: []}

  def gdlab_run():
    result = gdlab.fit(objective, optim.gradient_descent(LEARNING_RATE), data,
                       key=jax.random.PRNGKey(0),
                       regime=gdlab.Regime("minibatch", BATCH),
                       criteria=gdlab.Criteria(max_epochs=cfg["max_epochs"]),
                       chunk_epochs=1, progress=False)
    h = result.history
    acc = h.epochs["test_accuracy"]
    hit = np.flatnonzero(acc >= target)
    if hit.size:
      i = int(hit[0])
      seconds, epochs = float(h.epochs["time"][i]), int(h.epochs["epoch"][i])
    else:
      seconds, epochs = None, None
    results[GDLAB].append((seconds, epochs, h.compile_time, float(acc[-1])))

  def sklearn_run():
    from sklearn.neural_network import MLPClassifier  # pylint: disable=g-import-not-at-top
    clf = MLPClassifier(hidden_layer_sizes=(32,), activation="tanh",
                        solver="sgd", learning_rate="constant",
                        learning_rate_init=LEARNING_RATE, batch_size=BATCH,
                        momentum=0.0, nesterovs_momentum=False, alpha=0.0,
                        shuffle=True, random_state=0)
    classes = np.arange(10)
    t0 = time.perf_counter()
    seconds = epochs = None
    acc = 0.0
    for epoch in range(1, cfg["max_epochs"] + 1):
      clf.partial_fit(x_tr, y_tr, classes=classes)
      acc = clf.score(x_te, y_te)
      if acc >= target:
        seconds, epochs = time.perf_counter() - t0, epoch
        break
    results[SKLEARN].append((seconds, epochs, 0.0, float(acc)))

  cases = {GDLAB: gdlab_run}
  if sklearn is None:
    report.notes.append(common.skipped_note("scikit-learn MLPClassifier",
                                            "scikit-learn"))
  else:
    cases[SKLEARN] = sklearn_run
  common.alternate(cases, cfg["repeats"], warmup=0)

  summary = {}
  for name in cases:
    runs = results[name]
    secs = [r[0] for r in runs if r[0] is not None]
    if len(secs) < len(runs):
      report.notes.append(f"{name}: did not reach {target:.0%} within "
                          f"{cfg['max_epochs']} epochs in "
                          f"{len(runs) - len(secs)} of {len(runs)} runs.")
    med = float(np.median(secs)) if secs else None
    comp = float(np.median([r[2] for r in runs]))
    summary[name] = med
    report.rows.append({
        "case": name, "epochs": runs[-1][1], "seconds": med,
        "seconds_with_compile": None if med is None else med + comp,
        "final_test_accuracy": runs[-1][3],
        "spread": common.Timing(secs).spread if secs else None})
    if name == GDLAB:
      report.compile.append({"case": "gdlab.fit digits program (compile)",
                             "first_step_s": comp})
  if SKLEARN in summary and summary[GDLAB] and summary[SKLEARN]:
    ratio = summary[SKLEARN] / summary[GDLAB]
    with_compile = summary[SKLEARN] / (summary[GDLAB] +
                                      report.compile[-1]["first_step_s"])
    report.target("digits: sklearn time / gdlab time to 95% (run only)",
                  ratio, "> 1", ratio > 1)
    report.target("digits: sklearn time / gdlab time to 95% (with compile)",
                  with_compile, "> 1", with_compile > 1)
  return report


if __name__ == "__main__":
  raise SystemExit(common.main(run))
