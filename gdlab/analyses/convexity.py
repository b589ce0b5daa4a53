"""``seed_spread``: one minimum for a convex model, many for an MLP."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy import optimize

from gdlab import config as config_lib
from gdlab import plots
from gdlab import results
from gdlab.analyses import common
from gdlab.analyses.common import register
from gdlab.report import Section


def _align_hidden(p: dict, q: dict, odd: bool) -> float:
  """Distance between two one-hidden-layer MLPs up to their symmetries.

  Hidden units are matched by ``scipy.optimize.linear_sum_assignment`` on
  the cost ``||u_j - sigma u'_k||^2`` over each unit's incoming weights,
  bias and outgoing weights, with the sign flip ``sigma = -1`` allowed for
  odd activations (tanh).  The total decomposes over units, so the matching
  is the exact minimum over permutations (and flips).
  """
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


def seed_runs(out: Path, variant: str) -> tuple[list, list[Path]]:
  """``(seeds, run folders)`` of a variant's seed sweep, ``out/seeds/<variant>/``.

  Written by ``gdlab.run.run_experiment`` when the experiment sets
  ``seed_sweep: true`` (see :mod:`gdlab.config`).
  """
  sub = out / results.SEEDS / variant
  if not (sub / "sweep.json").exists():
    raise config_lib.ConfigError(
        f"analysis: 'seed_spread' reads the seed sweep of variant "
        f"{variant!r} in {str(sub)!r}; found none. Set seed_sweep: true in "
        f"the experiment and run it again.")
  info = json.loads((sub / "sweep.json").read_text())
  seeds = [entry["point"]["seed"] for entry in info["runs"]]
  if len(seeds) < 2:
    raise config_lib.ConfigError(
        f"sweep.seed: the 'seed_spread' analysis compares 2 or more seeds; "
        f"the sweep of {variant!r} has {seeds!r}.")
  return seeds, [sub / "runs" / entry["name"] for entry in info["runs"]]


@register("seed_spread")
def seed_spread(exp, out, run_dirs, smoke=False) -> list[Section]:
  """Final losses and parameters of each variant over the sweep's seeds.

  Reads each variant's runs over the seeds of ``sweep.seed``
  (``seed_sweep: true``; :func:`seed_runs`) and tabulates the spread of the
  final training losses and the pairwise distances between the final
  parameter vectors.
  For a one-hidden-layer MLP the distance is also given after aligning
  hidden units (permutations, and sign flips for odd activations), so
  that copies of one minimum do not count as different minima.
  Writes ``seed_spread.json``.
  """
  del exp
  rows, finals, figures, payload = [], {}, [], {"variants": []}
  all_seeds = None
  for run_dir in run_dirs:
    rec = results.load_run(run_dir)
    cfg = common.run_config(rec)
    seeds, dirs = seed_runs(out, rec.name)
    all_seeds = all_seeds or seeds
    _, _, objective = common.problem(cfg, smoke)
    template = common.initial_params(cfg, objective)
    params = [common.final_params(d, template) for d in dirs]
    losses = np.array([results.final_loss(results.load_run(d).summary)
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
    # Log epochs: the seeds part in the first few epochs and (an MLP's)
    # plateaus end late; a linear axis shows only one of the two.
    figures.append(plots.loss_curves(
        runs, out / results.PLOTS / f"seeds_{rec.name}.png", x="epoch",
        y="train_loss", log_x=True, title=f"{rec.name}: training loss of "
        f"each of {len(seeds)} seeds"))
  fig = plots.strip(finals, all_seeds, xlabel="seed",
                    ylabel="final training loss",
                    title="final training loss of each seed (dashed: median)")
  figures.insert(0, plots.finish(fig,
                                 out / results.PLOTS / "seed_spread.png"))
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
  return [Section("Spread over seeds", text, figures)]
