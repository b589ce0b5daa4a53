"""``surface``: optimiser paths on the 2-D test functions."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from gdlab import config as config_lib
from gdlab import data as data_lib
from gdlab import plots
from gdlab import results
from gdlab.analyses import common
from gdlab.analyses.common import register
from gdlab.report import Section


def _function_of(cfg: config_lib.RunConfig):
  options = {"kappa": cfg.data.kappa} if cfg.data.kappa is not None else {}
  return data_lib.get_function(cfg.data.name, **options)


@register("surface")
def surface(exp, out, run_dirs, smoke=False) -> list[Section]:
  """Each run's path on the surface of its 2-D test function.

  Runs on the same function (and ``kappa``) share one figure,
  :func:`gdlab.plots.surface`; the table gives where each path ended, its
  value above the minimum and its distance to the nearest minimiser.
  Writes ``surface.json``.
  """
  del smoke
  groups: dict[tuple, list] = {}
  for run_dir in run_dirs:
    rec = results.load_run(run_dir)
    cfg = common.run_config(rec)
    common.need(cfg.model.kind == "function", "surface",
          "model.kind 'function' (a 2-D test function)", cfg)
    groups.setdefault((cfg.data.name, cfg.data.kappa), []).append((rec, cfg))
  sections, payload = [], {"runs": []}
  for (name, kappa), members in groups.items():
    fn = _function_of(members[0][1])
    label = name + (f"_kappa{kappa:g}" if kappa is not None else "")
    paths, rows = {}, []
    for rec, cfg in members:
      traj = rec.trajectory if rec.trajectory is not None else np.zeros((0, 2))
      paths[rec.name] = traj
      end = traj[-1] if len(traj) else np.full(2, np.nan)
      value = float(fn(jnp.asarray(end)))
      row = {"run": rec.name, "method": _method(cfg), "steps": len(traj) - 1,
             "grad_evals": rec.summary.get("grad_evals"),
             "end_x": float(end[0]), "end_y": float(end[1]),
             "gap": value - fn.f_min,
             "distance": float(np.min(np.linalg.norm(
                 fn.minimizers - end[None], axis=1))),
             "stop_reason": rec.summary.get("stop_reason")}
      rows.append(row)
      payload["runs"].append(dict(row, function=label))
    pretty = name + (f" (kappa = {kappa:g})" if kappa is not None else "")
    path = plots.surface(
        fn, paths, out / results.PLOTS / f"surface_{label}.png",
        title=f"{pretty}: {len(paths)} optimiser "
        f"path{'s' if len(paths) > 1 else ''} on the contours of f")
    text = common.table(rows, [("run", "run"), ("method", "method"),
                         ("steps", "steps"), ("grad_evals", "grad evals"),
                         ("end_x", "end x"), ("end_y", "end y"),
                         ("gap", "f - f*"),
                         ("distance", "to nearest minimiser"),
                         ("stop_reason", "stop reason")])
    sections.append(Section(f"Paths on {label}", text, [path]))
  results.write_json(out / "surface.json", payload)
  return sections


def _method(cfg: config_lib.RunConfig) -> str:
  o = cfg.optimizer
  if o.line_search:
    return f"{o.name} + {o.line_search} line search"
  if o.name == "gd" and o.momentum:
    return (f"{'Nesterov' if o.nesterov else 'momentum'} {o.momentum:g}, "
            f"eta {o.learning_rate:g}")
  if o.name == "subgradient":
    return f"subgradient, {o.schedule} {o.learning_rate:g}"
  return f"{o.name}, eta {o.learning_rate:g}"
