"""``methods``: what each gradient method spent, and what it bought.

The runs of the ``default`` experiment train one model on one data set by
full-batch GD, SGD, mini-batch SGD and GD with a backtracking line search.
Their logs count gradient evaluations as calls (``grad_evals``: one per
update, more where a line search asks for them); a call costs as many
*record-gradients* as the batch holds, ``n`` for a full-batch gradient, 1
for an SGD step, ``b`` for a mini-batch.  Per run this analysis reports the
updates taken (and per pass over the training set), the gradient calls, the
record-gradients and the passes they make (record-gradients / ``n``), the
compile and wall time, the final training loss and test accuracy; then the
cost of reaching a common training loss, the worst final training loss of
the runs: the first epoch at which each run's (whole-training-set) loss is at
or below it, with the record-gradients, updates and wall time spent by then.

Writes ``methods.json`` and ``plots/methods_loss_record_grads.png``
(training loss against record-gradients, in passes).  Reads the runs'
folders only: the configs, the per-epoch rows and the summaries.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from gdlab import build
from gdlab import plots
from gdlab import results
from gdlab.analyses import common
from gdlab.analyses.common import register
from gdlab.report import Section

COLUMNS = (
    ("run", "run"),
    ("batch", "records per gradient"),
    ("updates", "updates"),
    ("updates_per_pass", "updates per pass"),
    ("grad_evals", "gradient calls"),
    ("fun_evals", "loss evaluations"),
    ("record_grads", "record-gradients"),
    ("passes", "passes"),
    ("run_time", "wall time (s)"),
    ("train_loss", "final train loss"),
    ("test_accuracy", "test accuracy"),
)
REACH_COLUMNS = (
    ("run", "run"),
    ("reached_epoch", "first epoch at the target"),
    ("reached_record_grads", "record-gradients"),
    ("reached_updates", "updates"),
    ("reached_time", "wall time (s)"),
)


def _float(v) -> float | None:
  return None if v is None or not math.isfinite(float(v)) else float(v)


def _method(cfg) -> str:
  """The method of a run, in words: its regime and its step rule."""
  regime = cfg.train.regime
  kind = {"full_batch": "full-batch GD", "sgd": "SGD",
          "minibatch": f"mini-batch SGD (b={regime.batch_size})"}[regime.kind]
  if cfg.optimizer.line_search:
    return f"{kind} + {cfg.optimizer.line_search} line search"
  return f"{kind}, step {cfg.optimizer.learning_rate:g}"


def run_costs(rec: results.RunRecord, n: int, batch: int) -> dict:
  """One run's spending and results (see the module docstring).

  Args:
    rec: the run.
    n: training records.
    batch: records per gradient call (``n`` full batch, 1 SGD, ``b``).
  """
  s = rec.summary
  final = s.get("final") or {}
  grad_evals = int(s["grad_evals"])
  epochs = max(int(s["epochs"]), 1)
  return {
      "run": rec.name, "batch": batch, "updates": int(s["steps"]),
      "updates_per_pass": int(s["steps"]) / epochs,
      "grad_evals": grad_evals, "fun_evals": int(s["fun_evals"]),
      "record_grads": grad_evals * batch,
      "passes": grad_evals * batch / n,
      "compile_time": _float(s.get("compile_time")),
      "run_time": _float(s.get("run_time")),
      "train_loss": _float(final.get("train_loss")),
      "test_accuracy": _float(final.get("test_accuracy")),
      "stop_reason": s.get("stop_reason"),
  }


def reach(epochs: dict, target: float, batch: int) -> dict:
  """The first logged epoch whose training loss is at most ``target``, with
  the record-gradients (cumulative gradient calls x ``batch``), updates and
  seconds spent by its end; None values when no epoch reaches it."""
  loss = np.asarray(epochs.get("train_loss", ()), float)
  hit = np.flatnonzero(loss <= target)
  if not hit.size:
    return {"reached_epoch": None, "reached_record_grads": None,
            "reached_updates": None, "reached_time": None}
  i = int(hit[0])
  return {"reached_epoch": int(epochs["epoch"][i]),
          "reached_record_grads": int(epochs["grad_evals"][i]) * batch,
          "reached_updates": int(epochs["step"][i]),
          "reached_time": float(epochs["time"][i])}


def _reading(rows: list[dict], n: int, target: float, worst: str) -> str:
  """A few sentences with the numbers: what the table shows."""
  sgd = next((r for r in rows if r["batch"] == 1), None)
  full = next((r for r in rows if r["batch"] == n and r["grad_evals"] ==
               r["updates"]), None)
  best = min((r for r in rows if r["train_loss"] is not None),
             key=lambda r: r["train_loss"])
  reached = [r for r in rows if r["reached_record_grads"] is not None]
  text = [f"The runs computed {min(r['passes'] for r in rows):.3g} to "
          f"{max(r['passes'] for r in rows):.3g} passes' worth of "
          f"record-gradients over the n = {n} training records."]
  searched = [r for r in rows if r["grad_evals"] > r["updates"] or
              r["fun_evals"] > r["updates"]]
  for r in searched:
    text.append(f"{r['run']} made {r['grad_evals']} gradient calls and "
                f"{r['fun_evals']} loss evaluations for {r['updates']} "
                f"updates (its line search's trials).")
  if sgd and full:
    text.append(
        f"SGD took {sgd['updates_per_pass']:.0f} updates per pass to "
        f"full-batch GD's {full['updates_per_pass']:.0f}, each on one record "
        f"instead of {n}: {sgd['updates']} updates in "
        f"{sgd['run_time']:.3g} s against {full['updates']} in "
        f"{full['run_time']:.3g} s, "
        f"{sgd['run_time'] / sgd['updates'] * 1e6:.3g} us against "
        f"{full['run_time'] / full['updates'] * 1e6:.3g} us an update "
        f"(the per-epoch evaluations included).")
  text.append(f"The lowest final training loss is {best['run']}'s, "
              f"{best['train_loss']:.4g} ({best['method']}).")
  if reached:
    fastest = min(reached, key=lambda r: r["reached_record_grads"])
    text.append(
        f"To reach {target:.4g} (the final training loss of {worst}, the "
        f"worst), {fastest['run']} needed "
        f"{fastest['reached_record_grads']} record-gradients "
        f"({fastest['reached_record_grads'] / n:.3g} passes, epoch "
        f"{fastest['reached_epoch']})"
        + "".join(f"; {r['run']} {r['reached_record_grads']} "
                  f"({r['reached_record_grads'] / n:.3g} passes)"
                  for r in reached if r is not fastest) + ".")
  accs = [r for r in rows if r["test_accuracy"] is not None]
  if accs:
    text.append("Test accuracy: " + ", ".join(
        f"{r['run']} {r['test_accuracy']:.4f}" for r in accs) + ".")
  return "  ".join(text)


@register("methods")
def methods(exp, out, run_dirs, smoke=False) -> list[Section]:
  """Updates, gradient work, time and results of each method; the cost of a
  common training loss (see the module docstring).  Writes
  ``methods.json``."""
  out = Path(out)
  recs = [results.load_run(d) for d in run_dirs]
  rows, n = [], None
  for rec in recs:
    cfg = common.run_config(rec)
    data, _ = build.dataset(cfg, smoke)
    n_run = int(data.x_train.shape[0])
    common.need(n is None or n_run == n, "methods",
                "runs on one training set", cfg)
    n = n_run
    rows.append({**run_costs(rec, n, cfg.train.regime.size(n)),
                 "method": _method(cfg)})
  finite = [r for r in rows if r["train_loss"] is not None and
            r["stop_reason"] != "diverged"]
  if not finite:
    raise ValueError("methods: every run diverged; there is no common "
                     "training loss to compare the costs of.")
  worst = max(finite, key=lambda r: r["train_loss"])
  target = worst["train_loss"]
  for row, rec in zip(rows, recs):
    row.update(reach(rec.epochs, target, row["batch"]))

  pseudo = {r["run"]: common.series() for r in rows}
  for r, rec in zip(rows, recs):
    pseudo[r["run"]].epochs = {
        "grad_evals": np.asarray(rec.epochs["grad_evals"], float)
        * r["batch"] / n, "train_loss": rec.epochs["train_loss"]}
  fig = plots.loss_curves(
      pseudo, x="grad_evals", y="train_loss",
      title="training loss against the work spent (record-gradients)")
  ax = fig.axes[0]
  ax.set_xlabel(f"passes over the training set (record-gradients / n, "
                f"n = {n})")
  ax.axhline(target, color="0.4", ls=":", lw=1.2, zorder=0,
             label=f"common loss {target:.3g} ({worst['run']}'s final)")
  plots.place_legend(ax)
  figure = plots.finish(
      fig, out / results.PLOTS / "methods_loss_record_grads.png")
  reading = _reading(rows, n, target, worst["run"])
  results.write_json(out / "methods.json", {
      "n_train": n, "target_loss": target, "target_run": worst["run"],
      "runs": rows, "reading": reading})
  md = "\n".join([
      f"Work is counted in record-gradients: a gradient call on a batch "
      f"of b records costs b (full batch: n = {n}).  Wall time is the "
      f"run's compiled running time, its evaluations of the whole training "
      f"and test sets included, compilation excluded.",
      "", common.table(rows, list(COLUMNS) + [("method", "method")]), "",
      f"**Cost of a common training loss** {target:.4g} (the final training "
      f"loss of {worst['run']}, the worst): the first epoch whose training "
      f"loss is at or below it, and what had been spent by its end.", "",
      common.table(rows, REACH_COLUMNS), "", f"**Reading.** {reading}"])
  return [Section("Methods: work, time and results", md, [figure])]
