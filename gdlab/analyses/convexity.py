"""``seed_spread``: one minimum for a convex model, many for an MLP."""

from __future__ import annotations

import dataclasses

import numpy as np

from gdlab import config as config_lib
from gdlab import experiment
from gdlab import plots
from gdlab import results
from gdlab import sweep
from gdlab.analyses import Section, common, register


def _align_hidden(p: dict, q: dict, odd: bool) -> float:
  """Distance between two one-hidden-layer MLPs up to their symmetries.

  Hidden units are matched by ``scipy.optimize.linear_sum_assignment`` on
  the cost ``||u_j - sigma u'_k||^2`` over each unit's incoming weights,
  bias and outgoing weights, with the sign flip ``sigma = -1`` allowed for
  odd activations (tanh).  The total decomposes over units, so the matching
  is the exact minimum over permutations (and flips).
  """
  from scipy import optimize  # pylint: disable=g-import-not-at-top
  def units(params):
    w1, w2 = (np.asarray(w, np.float64) for w in params["w"])
    cols = [w1, w2.T]
    b = params.get("b")
    if isinstance(b, list):
      cols.insert(1, np.asarray(b[0], np.float64)[None])
    return np.vstack(cols).T, (np.asarray(b[1], np.float64)
                               if isinstance(b, list) else np.zeros(0))
  u, out_u = units(p)
  v, out_v = units(q)
  cost = ((u[:, None] - v[None]) ** 2).sum(-1)
  if odd:
    cost = np.minimum(cost, ((u[:, None] + v[None]) ** 2).sum(-1))
  i, j = optimize.linear_sum_assignment(cost)
  return float(np.sqrt(cost[i, j].sum() + ((out_u - out_v) ** 2).sum()))


def _pairwise(vectors, dist) -> np.ndarray:
  n = len(vectors)
  return np.array([dist(vectors[i], vectors[j]) for i in range(n)
                   for j in range(i + 1, n)])


SMOKE_SEEDS = 5


@register("seed_spread")
def seed_spread(exp, out, run_dirs, smoke=False) -> list[Section]:
  """Final losses and parameters of each variant over the sweep's seeds.

  Every variant is run again for each seed of ``sweep.seed`` (the first
  ``SMOKE_SEEDS`` under ``smoke``; one vmapped program per variant,
  :func:`gdlab.sweep.run_sweep`, into ``seeds/<variant>/``); the spread of
  the final training losses and the pairwise distances between the final
  parameter vectors are tabulated.
  For a one-hidden-layer MLP the distance is also given after aligning
  hidden units (permutations, and sign flips for odd activations), so
  that copies of one minimum do not count as different minima.
  Writes ``seed_spread.json``.
  """
  seeds = exp.sweep.get("seed")
  if not seeds or len(seeds) < 2:
    raise config_lib.ConfigError(
        "sweep.seed: the 'seed_spread' analysis runs every variant over the "
        f"seeds of the sweep grid; expected a list of 2 or more; got "
        f"{seeds!r}.")
  seeds = list(seeds[:SMOKE_SEEDS] if smoke else seeds)
  rows, finals, figures, payload = [], {}, [], {"variants": []}
  for run_dir in run_dirs:
    rec = results.load_run(run_dir)
    cfg = common.run_config(rec)
    sub = sweep.run_sweep(
        dataclasses.replace(exp, base=cfg, variants={}, smoke={}),
        out / "seeds" / rec.name, grid={"seed": seeds}, smoke=smoke,
        report=False)
    dirs = [sub / "runs" / f"{rec.name}[seed={s}]" for s in seeds]
    _, _, objective = common.problem(cfg, smoke)
    template = common.initial_params(cfg, objective)
    params = [common.final_params(d, template) for d in dirs]
    losses = np.array([experiment.final_loss(results.load_run(d).summary)
                       for d in dirs])
    flat = [common.flat(p) for p in params]
    raw = _pairwise(flat, lambda u, v: float(np.linalg.norm(u - v)))
    scale = float(np.median([np.linalg.norm(v) for v in flat]))
    one_hidden = (cfg.model.kind == "mlp" and len(cfg.model.hidden) == 1 and
                  cfg.model.bias in ("per_neuron", "none"))
    aligned = (_pairwise(params, lambda p, q: _align_hidden(
        p, q, cfg.model.activation == "tanh")) if one_hidden else None)
    row = {"variant": rec.name, "seeds": len(seeds),
           "loss_min": float(np.nanmin(losses)),
           "loss_max": float(np.nanmax(losses)),
           "loss_range": float(np.nanmax(losses) - np.nanmin(losses)),
           "loss_std": float(np.nanstd(losses)),
           "dist_median": float(np.median(raw)), "dist_max": float(raw.max()),
           "aligned_median": (float(np.median(aligned)) if one_hidden
                              else None),
           "param_norm": scale}
    rows.append(row)
    finals[rec.name] = losses
    payload["variants"].append(dict(row, seed_list=seeds,
                                    final_losses=losses))
    runs = {d.name.split("[")[-1].rstrip("]"): results.load_run(d)
            for d in dirs}
    figures.append(plots.loss_curves(
        runs, out / results.PLOTS / f"seeds_{rec.name}.png", x="epoch",
        y="train_loss", title=f"{rec.name}: training loss, "
        f"{len(seeds)} seeds"))
  figures.insert(0, plots.sensitivity(
      seeds, finals, out / results.PLOTS / "seed_spread.png",
      xlabel="seed", ylabel="final training loss", log_x=False,
      title="final training loss of each seed"))
  results.write_json(out / "seed_spread.json", payload)
  text = (
      f"Each variant trained from {len(seeds)} seeds (initial parameters; "
      "the data are the same).  Losses are final training losses; distances "
      "are Euclidean between final parameter vectors, over all pairs of "
      "seeds; 'aligned' matches hidden units first (permutation and tanh "
      "sign symmetry), the distance between the minima themselves.\n\n" +
      common.table(rows, [("variant", "variant"), ("seeds", "seeds"),
                    ("loss_min", "min loss"), ("loss_max", "max loss"),
                    ("loss_range", "max - min"), ("loss_std", "std"),
                    ("dist_median", "median pairwise distance"),
                    ("dist_max", "max pairwise distance"),
                    ("aligned_median", "median aligned distance"),
                    ("param_norm", "median ||theta||")]))
  return [("Spread over seeds", text, figures)]
