"""Shared by the analyses: their registry, and a run folder back to its problem.

An analysis registers itself under a name of :data:`gdlab.config.ANALYSES`
(the names an experiment's ``analysis`` key may give).  The helpers rebuild a
run's data, model and initial parameters from its ``config.yaml`` (the same
seed gives the same arrays) and read its final parameters from its
checkpoint; none of them trains.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import jax
import numpy as np

from gdlab import build
from gdlab import config as config_lib
from gdlab import loop
from gdlab import report
from gdlab import results

ANALYSES: dict[str, Callable[..., list[report.Section]]] = {}


def register(name: str):
  """Registers an analysis ``fn(exp, out, run_dirs, smoke=False)``."""
  if name not in config_lib.ANALYSES:
    raise ValueError(f"register: expected a name of gdlab.config.ANALYSES "
                     f"({', '.join(config_lib.ANALYSES)}); got {name!r}.")

  def deco(fn):
    ANALYSES[name] = fn
    return fn
  return deco


def run_config(rec: results.RunRecord) -> config_lib.RunConfig:
  """The resolved run config stored in a run folder."""
  return config_lib.from_dict(config_lib.RunConfig, rec.config)


def problem(cfg: config_lib.RunConfig, smoke: bool):
  """``(loop.Data, dataset, objective)`` exactly as the run built them."""
  data, dataset = build.dataset(cfg, smoke)
  return data, dataset, build.objective(cfg, dataset)


def initial_params(cfg: config_lib.RunConfig, objective):
  """The run's initial parameters (the key split of ``loop.fit``)."""
  k_init, _ = loop.run_keys(jax.random.PRNGKey(cfg.seed))
  return objective.model.init(k_init)


def final_params(run_dir: Path, template):
  """The parameters in a run's checkpoint, shaped like ``template``."""
  return results.final_params(run_dir, template)


def flat(params) -> np.ndarray:
  return np.concatenate([np.ravel(np.asarray(p, np.float64))
                         for p in jax.tree_util.tree_leaves(params)])


def linear_theta(params) -> np.ndarray:
  """``(w, b)`` of a one-layer model as one vector, bias last (if any)."""
  parts = [np.ravel(np.asarray(params["w"][0], np.float64))]
  if "b" in params:
    b = params["b"]
    parts.append(np.ravel(np.asarray(b[0] if isinstance(b, list) else b,
                                     np.float64)))
  return np.concatenate(parts)


def train_arrays(data) -> tuple[np.ndarray, np.ndarray]:
  return (np.asarray(data.x_train, np.float64),
          np.asarray(data.y_train, np.float64).reshape(len(data.x_train), -1))


def mean_factor(cfg: config_lib.RunConfig, n: int) -> float:
  """``s`` with ``reduce_i l_i = s * mean_i l_i`` (1 for mean, n for sum).

  The run's loss over ``n`` records is ``s`` times the mean loss; compare
  ``gdlab.losses.reduction_scale``, the per-record factor ``dC/dl_i``.
  """
  return float(n) if cfg.loss.reduction == "sum" else 1.0


def need(cond: bool, analysis: str, what: str, cfg) -> None:
  if not cond:
    raise config_lib.ConfigError(
        f"analysis: {analysis!r} needs {what}; run {cfg.name!r} has "
        f"model.kind={cfg.model.kind!r}, loss.name={cfg.loss.name!r}, "
        f"loss.penalty={cfg.loss.penalty!r}, optimizer.name="
        f"{cfg.optimizer.name!r}.")


def table(rows: list[dict], columns) -> str:
  """A Markdown table, formatted as the reports format theirs."""
  return report.markdown_table(rows, columns)


def series(**steps) -> SimpleNamespace:
  """A pseudo-run holding per-step series, for ``plots.loss_curves``."""
  return SimpleNamespace(steps={k: np.asarray(v, float) for k, v in
                                steps.items()}, epochs={}, summary={})
