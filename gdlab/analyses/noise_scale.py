"""``noise_scale``: steps to a target loss against the batch size.

McCandlish et al. (2018) predict that SGD at batch size ``B``, with the best
learning rate for that ``B``, needs ``S = S_min (1 + B_noise / B)`` steps
to reach a given loss, with the noise scale ``B_noise`` estimated by
``B_simple = tr(Sigma) / |G|^2`` (:mod:`gdlab.noise`).  This analysis
measures ``S`` on finished runs and sets it beside that prediction.

* Steps to the target: every run logs its parameters at every step
  (``train.record_params``); the full training loss is evaluated at each of
  them (no training: one forward pass per logged step), and ``S`` is the
  first step count ``k`` whose parameters ``x_k`` have a loss at most the
  target.  For each batch size the fastest of its learning rates counts;
  on one seed, the fastest is also the luckiest, so ``S`` is a noisy and
  slightly low estimate where noise dominates (small ``B``).
* ``B_noise``: ``B_simple`` changes along training (it grows as ``|G|``
  falls).  If every step of the fastest path costs ``1 + B_noise(x)/B``
  steps at batch size ``B``, then ``S(B) = S_min (1 + Bbar / B)`` with
  ``Bbar`` the mean of ``B_noise`` over the ``S_min`` steps of that path.
  ``Bbar`` is the mean of ``B_simple`` over the steps of the fastest run at
  the largest batch size that reaches the target (the full batch); the
  values at the start and at the target are reported too.
* The prediction uses the finite-set form ``S = S_min (1 + Bbar (1/B -
  1/n))``: mini-batches drawn without replacement from ``n`` records have
  gradient noise ``tr(Sigma) (1/B - 1/n)``, none at ``B = n`` (for
  ``B << n`` it is the paper's form).  ``S_min`` is fitted to the measured
  steps (least squares on ``log S``) with ``Bbar`` held fixed; a free fit of
  both, ``(S_min, B_crit)``, shows which noise scale the steps imply.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.flatten_util import ravel_pytree
from matplotlib import ticker

from gdlab import noise
from gdlab import plots
from gdlab import results
from gdlab.analyses import common
from gdlab.analyses.common import register
from gdlab.report import Section

TARGET_LOSS = 0.1
# The smoke runs are a few steps long: a target they reach.
SMOKE_TARGET_LOSS = 0.6
# The free fit's B_crit is searched on this log-spaced grid.
B_CRIT_GRID = np.geomspace(1e-2, 1e5, 3501)


def steps_to_target(losses, target: float) -> int | None:
  """The first ``k`` with ``losses[k] <= target`` (None when none is)."""
  hit = np.flatnonzero(np.asarray(losses, float) <= target)
  return int(hit[0]) if hit.size else None


def noise_factor(b, n: int, b_noise: float) -> np.ndarray:
  """``1 + b_noise (1/b - 1/n)``: ``S / S_min`` at batch size ``b``."""
  return 1 + b_noise * (1 / np.asarray(b, float) - 1 / n)


def fit_s_min(b, s, n: int, b_noise: float) -> float:
  """``S_min`` minimising ``sum (log S - log S_min noise_factor)^2``."""
  return float(np.exp(np.mean(np.log(np.asarray(s, float)) -
                              np.log(noise_factor(b, n, b_noise)))))


def fit_b_crit(b, s, n: int) -> tuple[float, float]:
  """``(S_min, B_crit)`` fitted together, on :data:`B_CRIT_GRID`."""
  log_s = np.log(np.asarray(s, float))
  factors = np.log(noise_factor(np.asarray(b, float)[None], n,
                                B_CRIT_GRID[:, None]))
  log_s_min = np.mean(log_s - factors, axis=1)
  err = np.sum((log_s - log_s_min[:, None] - factors) ** 2, axis=1)
  i = int(np.argmin(err))
  return float(np.exp(log_s_min[i])), float(B_CRIT_GRID[i])


def best_per_batch(runs: list[dict]) -> list[dict]:
  """Per batch size (ascending), its run that reached the target first."""
  best = []
  for b in sorted({r["batch_size"] for r in runs}):
    reached = [r for r in runs
               if r["batch_size"] == b and (r["steps"] or 0) > 0]
    if reached:
      r = min(reached, key=lambda r: r["steps"])
      best.append(dict(r, records=r["steps"] * b))
  return best


def _predict(best: list[dict], b_path: np.ndarray, n: int,
             payload: dict) -> dict:
  """Fills ``best`` and ``payload`` with the fits; returns the curves.

  ``b_path`` is ``B_simple`` at the steps of the fastest large-batch run,
  its last entry at the target.
  """
  steps = best[-1]["steps"]
  b_bar = float(np.mean(b_path[:max(steps, 1)]))
  bs = [r["batch_size"] for r in best]
  ss = [r["steps"] for r in best]
  s_min = fit_s_min(bs, ss, n, b_bar)
  for r in best:
    r["predicted"] = float(s_min * noise_factor(r["batch_size"], n, b_bar))
    r["ratio"] = r["steps"] / r["predicted"]
  payload.update(b_simple_path=b_path, b_simple_mean=b_bar,
                 b_simple_init=float(b_path[0]),
                 b_simple_target=float(b_path[-1]), s_min=s_min)
  curves = {f"prediction, B_noise = mean B_simple = {b_bar:.3g}":
            (s_min, b_bar)}
  for where, b_at in (("start", b_path[0]), ("target", b_path[-1])):
    curves[f"B_simple at the {where}: {b_at:.3g}"] = (
        fit_s_min(bs, ss, n, b_at), b_at)
  if len(best) >= 2:
    s_free, b_crit = fit_b_crit(bs, ss, n)
    curves[f"free fit, B_crit = {b_crit:.3g}"] = (s_free, b_crit)
    payload.update(s_min_free=s_free, b_crit=b_crit)
  return curves


def _fit_text(payload: dict, path_run: dict) -> str:
  free = (f"S_min = {payload['s_min_free']:.3g}, B_crit = "
          f"{payload['b_crit']:.3g}." if "b_crit" in payload
          else "nothing (one batch size).")
  return (
      f"B_simple along the fastest run at B = {path_run['batch_size']} "
      f"({path_run['run']}, {path_run['steps']} steps): "
      f"{payload['b_simple_init']:.3g} at the start, "
      f"{payload['b_simple_target']:.3g} at the target, mean Bbar = "
      f"{payload['b_simple_mean']:.3g}.  Fitted S_min = "
      f"{payload['s_min']:.3g} with Bbar held; the free fit gives {free}"
      "\n\n" +
      common.table(payload["best"],
                   [("batch_size", "B"), ("learning_rate", "best lr"),
                    ("steps", "steps S"), ("predicted", "predicted S"),
                    ("ratio", "measured / predicted"),
                    ("records", "records S B")]))


# The curves of B_simple at the start and at the target: grey, told apart
# by their dashes.
_B_SIMPLE_STYLES = ((0, (1, 2)), (0, (5, 2, 1, 2)))


def _figure(runs: list[dict], best: list[dict], n: int, curves: dict, path,
            target: float):
  """Measured steps to the target against ``B``, with the fitted curves.

  The best learning rate of each batch size is a filled dot, the others
  grey; a batch size none of whose runs reached the target is an ``x`` on
  the top edge.
  """
  fig = plots.InlineFigure(figsize=(8.5, 4.5), layout="constrained")
  ax = fig.add_subplot()
  best_names = {r["run"] for r in best}
  others = [r for r in runs
            if (r["steps"] or 0) > 0 and r["run"] not in best_names]
  if others:
    ax.scatter([r["batch_size"] for r in others],
               [r["steps"] for r in others], s=14, color="0.7",
               label="other learning rates", zorder=2)
  ax.plot([r["batch_size"] for r in best], [r["steps"] for r in best], "o",
          color=plots.run_colour(0), ms=7,
          label="measured S, best learning rate of each B", zorder=3)
  missed = sorted({r["batch_size"] for r in runs} -
                  {r["batch_size"] for r in best})
  if missed:
    ax.plot(missed, np.full(len(missed), 0.97), "x", color="tab:red", ms=10,
            mew=2.5, transform=ax.get_xaxis_transform(), clip_on=False,
            label="target not reached in the logged steps", zorder=4)
  grid = np.geomspace(min(r["batch_size"] for r in runs), n, 200)
  greys = iter(_B_SIMPLE_STYLES)
  for i, (label, (s_min, b_noise)) in enumerate(curves.items()):
    grey = label.startswith("B_simple")
    ax.plot(grid, s_min * noise_factor(grid, n, b_noise),
            ls=next(greys, ":") if grey else ("-", "--")[i % 2],
            color="0.45" if grey else plots.run_colour(i + 1),
            lw=1.2 if grey else 1.4, label=label)
  ax.set_xscale("log")
  ax.set_yscale("log")
  plain = ticker.FuncFormatter(lambda v, _: f"{v:g}")
  ax.xaxis.set_major_formatter(plain)
  ax.yaxis.set_major_formatter(plain)
  low, high = ax.get_ylim()
  # Within two decades the log axis has one or two major ticks: the minor
  # ticks at 2, 3 and 5 are labelled too.
  ax.yaxis.set_minor_formatter(ticker.FuncFormatter(
      lambda v, _: f"{v:g}" if high / low < 100 and
      round(v / 10 ** np.floor(np.log10(v))) in (2, 3, 5) else ""))
  ax.set_xlabel(f"batch size B (records; B = n = {n}: the full batch)")
  ax.set_ylabel(f"steps S to training loss {target:g}")
  ax.set_title("steps to the target against the batch size:\n"
               "measured, and S_min (1 + B_noise (1/B - 1/n)) fitted")
  ax.grid(True, which="major", alpha=0.3)
  if not best:
    plots.mark_no_data(ax, "steps to the target (no run reached it)")
  plots.place_legend(ax)
  return plots.finish(fig, path)


def _fmt(v) -> str:
  return "-" if v is None else f"{v:.3g}"


@register("noise_scale")
def noise_scale(exp, out, run_dirs, smoke=False) -> list[Section]:
  """Measured steps to the target against ``S_min (1 + Bbar (1/B - 1/n))``.

  See the module docstring.  The runs must share their data, model and loss
  and log their parameters (``train.record_params: true``).  Writes
  ``noise_scale.json``.
  """
  del exp
  target = SMOKE_TARGET_LOSS if smoke else TARGET_LOSS
  recs = [results.load_run(d) for d in run_dirs]
  cfgs = [common.run_config(r) for r in recs]
  cfg0 = cfgs[0]
  for rec, cfg in zip(recs, cfgs):
    common.need(rec.trajectory is not None, "noise_scale",
                "runs that log their parameters (train.record_params: true)",
                cfg)
    common.need((cfg.data, cfg.model, cfg.loss, cfg.seed) ==
                (cfg0.data, cfg0.model, cfg0.loss, cfg0.seed), "noise_scale",
                f"the data, model, loss and seed of run {cfg0.name!r}", cfg)
  data, _, objective = common.problem(cfg0, smoke)
  x, y = data.x_train, data.y_train
  n = int(x.shape[0])
  flat0, unravel = ravel_pytree(common.initial_params(cfg0, objective))
  # lax.map, one logged step at a time: XLA's CPU backend has been seen to
  # miscompute this loss vmapped over a few hundred parameter vectors.
  losses_at = jax.jit(lambda rows: jax.lax.map(
      lambda f: objective.value(unravel(f), x, y), rows))
  scales_at = jax.jit(lambda rows: jax.lax.map(
      lambda f: noise.simple_noise_scale(objective, unravel(f), x, y,
                                         engine=cfg0.train.engine), rows))

  def flat(rows):
    return np.asarray(rows, flat0.dtype)

  # One call (one compilation) for the logged steps of every run.
  lengths = [len(rec.trajectory) for rec in recs]
  every_loss = np.asarray(losses_at(flat(np.concatenate(
      [rec.trajectory for rec in recs]))), float)
  runs = []
  for rec, cfg, losses in zip(recs, cfgs, np.split(every_loss,
                                                     np.cumsum(lengths)[:-1])):
    runs.append({"run": rec.name, "batch_size": cfg.train.regime.size(n),
                 "learning_rate": cfg.optimizer.learning_rate,
                 "steps": steps_to_target(losses, target),
                 "logged_steps": len(losses) - 1,
                 "final_loss": float(losses[-1])})
  best = best_per_batch(runs)
  payload = {"target": target, "n": n, "runs": runs, "best": best}
  curves, text_fit = {}, "No run reached the target: nothing to fit."
  if best:
    path_run = best[-1]
    traj = next(rec.trajectory for rec in recs if rec.name == path_run["run"])
    along = scales_at(flat(traj[:path_run["steps"] + 1]))
    payload.update(path_run=path_run["run"],
                   trace_sigma_init=float(along.trace_sigma[0]),
                   grad_sq_norm_init=float(along.grad_sq_norm[0]))
    curves = _predict(best, np.asarray(along.b_simple, float), n, payload)
    text_fit = _fit_text(payload, path_run)
  path = _figure(runs, best, n, curves,
                 out / results.PLOTS / "noise_scale.png", target)
  results.write_json(out / "noise_scale.json", payload)
  text = (
      f"Steps S to a training loss of {target:g} ({n} records), counted on "
      "the full training loss at each logged step; per batch size the best "
      "of its learning rates.  Prediction: S = S_min (1 + Bbar (1/B - "
      "1/n)), Bbar the mean of B_simple = tr(Sigma)/|G|^2 over the steps "
      "of the fastest large-batch run, S_min fitted on log S.  One seed: "
      "the counts at small B carry the noise of a single run.\n\n" +
      text_fit + "\n\nEvery run: " + ", ".join(
          f"{r['run']} {_fmt(r['steps'])}" for r in runs) + ".")
  return [Section("Steps to the target against the noise scale", text,
                  [path])]
