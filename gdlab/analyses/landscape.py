"""``landscape``: the loss landscape around the solutions of several runs.

For every run (a network trained on a data set with ``train.record_params:
true``, so that its folder holds the iterates), from its initial parameters
(rebuilt from the config) and its final ones (its checkpoint), with
``gdlab.landscape``:

* the training and test loss along ``(1 - alpha) theta_0 + alpha theta_T``
  for ``alpha`` in ``[-0.5, 1.5]`` (Goodfellow et al., 2015): whether it
  falls monotonically on ``[0, 1]`` and, if not, its largest bump;
* the training loss on a plane through ``theta_T`` spanned by two
  filter-normalised random directions (Li et al., 2018), the same random
  draw for every run and the same span, so the runs' panels compare; its
  flatness, the mean rise of the loss over the grid points at
  filter-normalised distance :data:`RADIUS`, and the Hessian's largest
  eigenvalue (``gdlab.curvature.sharpness``) beside it;
* the top two principal directions of the path (one iterate an epoch: the
  first of each epoch and the last), their explained variance, and the
  loss on their plane with the path drawn on it.

Between the final points of two runs of one model and data set (in the
order of the run folders), the loss along the line between them and its
barrier: the largest rise above the straight line between the end losses.

Writes ``landscape.json`` and the figures ``landscape_interpolation.png``,
``landscape_slices.png`` and ``landscape_pca.png`` (and
``landscape_between.png`` for pairs).
"""

from __future__ import annotations

import functools

import jax
import numpy as np
from matplotlib import colors as mcolors
from matplotlib import ticker
from matplotlib.lines import Line2D

from gdlab import curvature
from gdlab import landscape as landscape_lib
from gdlab import plots
from gdlab import results
from gdlab.analyses import common
from gdlab.analyses.common import register
from gdlab.report import Section

DIRECTION_SEEDS = (0, 1)  # the random directions' keys: the same every run
SPAN = 1.0             # the random plane's window: [-SPAN, SPAN]^2
RADIUS = 0.5           # where the flatness is read
ALPHAS = (-0.5, 1.5)   # the interpolation's range
RESOLUTION = {False: 41, True: 9}     # grid points per axis (full, smoke)
LINE_POINTS = {False: 81, True: 9}    # interpolation points
# A curve counts as monotone when no rise exceeds this share of its drop.
MONOTONE_RTOL = 1e-4
PCA_MARGIN = 0.15      # the PCA window's margin, a share of the path's extent


def interpolation_figure(curves, path=None, title: str | None = None, *,
                         ends: tuple[str, str] = ("a", "b")):
  """Loss and accuracy along lines: one colour a curve, test loss dashed.

  The loss on the left (log scale), the accuracy on the right, the end
  points ``alpha = 0`` and ``alpha = 1`` dotted; one legend, on the right,
  names the curves.

  Args:
    curves: a mapping ``name -> gdlab.landscape.Interpolation``.
    path: the PNG to write, or None (see ``gdlab.plots``).
    title: the figure's title.
    ends: what sits at ``alpha = 0`` and at ``alpha = 1``, for the x label.

  Returns:
    The figure when ``path`` is None, else ``path``.
  """
  fig = plots.InlineFigure(figsize=(11, 4.2), layout="constrained")
  ax_loss, ax_acc = fig.subplots(1, 2)
  any_accuracy = False
  for i, (name, c) in enumerate(curves.items()):
    colour = plots.run_colour(i)
    alphas = np.asarray(c.alphas, float)
    ax_loss.plot(alphas, np.asarray(c.loss, float), "-", color=colour,
                 label=f"{name}: training")
    if c.test_loss is not None:
      ax_loss.plot(alphas, np.asarray(c.test_loss, float), "--",
                   color=colour, label=f"{name}: test")
    acc = np.asarray(c.accuracy, float)
    if np.isfinite(acc).any():
      any_accuracy = True
      ax_acc.plot(alphas, acc, "-", color=colour)
      if c.test_accuracy is not None:
        ax_acc.plot(alphas, np.asarray(c.test_accuracy, float), "--",
                    color=colour)
  for ax in (ax_loss, ax_acc):
    for x in (0.0, 1.0):
      ax.axvline(x, color="0.6", lw=0.8, ls=":")
    ax.set_xlabel(f"alpha (0: {ends[0]}, 1: {ends[1]})")
    ax.xaxis.set_major_locator(ticker.MultipleLocator(0.5))
    ax.grid(True, which="major", alpha=0.3)
  ax_loss.set_yscale("log")
  ax_loss.set(ylabel="loss", title="loss (log scale)")
  ax_acc.set(ylabel="accuracy (fraction correct)", title="accuracy")
  if not any_accuracy:
    plots.mark_no_data(ax_acc, "accuracy")
  plots.place_legend(ax_acc, handles=ax_loss.get_legend_handles_labels()[0])
  fig.suptitle(title or "loss and accuracy along (1 - alpha) a + alpha b")
  return plots.finish(fig, path)


def slice_figure(panels, path=None, title: str | None = None,
                 levels: int = 25):
  """Filled contours of slices side by side, on one log colour scale.

  Args:
    panels: a mapping ``name -> (slice, coords, xlabel, ylabel)``:
      a ``gdlab.landscape.Slice``, the ``(T, 2)`` path drawn on it (or
      None), and the axis labels.
    path: the PNG to write, or None (see ``gdlab.plots``).
    title: the figure's title.
    levels: the number of contour levels, spaced geometrically from the
      smallest loss of all panels to the largest.

  Returns:
    The figure when ``path`` is None, else ``path``.
  """
  grids = [np.asarray(s.loss, float) for s, *_ in panels.values()]
  finite = np.concatenate([g[np.isfinite(g)] for g in grids])
  low, high = float(finite.min()), float(finite.max())
  low = max(low, high * 1e-8, np.finfo(float).tiny)
  lev = np.geomspace(low, max(high, low * 1.001), levels)
  norm = mcolors.LogNorm(lev[0], lev[-1])
  fig = plots.InlineFigure(figsize=(5.2 * len(panels) + 1.2, 4.6),
                           layout="constrained")
  axes = np.atleast_1d(fig.subplots(1, len(panels)))
  cf, path_lengths = None, []
  for i, (ax, (name, (s, coords, xlabel, ylabel))) in enumerate(
      zip(axes, panels.items())):
    z = np.clip(np.nan_to_num(grids[i], nan=lev[-1], posinf=lev[-1]),
                lev[0], lev[-1])
    alphas, betas = np.asarray(s.alphas, float), np.asarray(s.betas, float)
    cf = ax.contourf(alphas, betas, z, levels=lev, norm=norm, cmap="viridis")
    ax.contour(alphas, betas, z, levels=lev[::2], norm=norm, colors="k",
               linewidths=0.4, alpha=0.4)
    if coords is not None and len(coords):
      c = np.asarray(coords, float)
      ax.plot(c[:, 0], c[:, 1], "-o", color="tab:red", ms=2.5, lw=1.4,
              mec="k", mew=0.3, markevery=max(1, len(c) // 40))
      ax.plot(*c[0], "o", ms=9, mfc="none", mec="tab:red", mew=2)
      path_lengths.append(len(c))
    ax.plot(0, 0, "*", ms=14, mfc="gold", mec="k", ls="", zorder=5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(name)
  fig.colorbar(cf, ax=list(axes), label="training loss (log scale)",
               ticks=lev[::4], format="%.3g")
  # One key for every panel, below them: inside a panel it would cover the
  # path or the surface.
  key = [Line2D([], [], marker="*", ls="", ms=12, mfc="gold", mec="k",
                label="final parameters theta_T (origin)")]
  if path_lengths:
    counts = sorted(set(path_lengths))
    key = [Line2D([], [], color="tab:red", marker="o", ms=2.5, lw=1.4,
                  mec="k", mew=0.3, label="path, one iterate an epoch ("
                  + "/".join(map(str, counts)) + " iterates)"),
           Line2D([], [], marker="o", ls="", ms=8, mfc="none",
                  mec="tab:red", mew=2, label="start theta_0")] + key
  fig.legend(handles=key, loc="outside lower center", ncols=len(key),
             fontsize="small")
  fig.suptitle(title or "loss on planes through the solutions")
  return plots.finish(fig, path)


@functools.partial(jax.jit, static_argnums=(0, 4))
def _sharpness(objective, params, x, y, engine: str):
  """``lambda_max`` of the Hessian, one compiled program."""
  return curvature.sharpness(objective, params, x, y, engine=engine)


def _to_list(a) -> list:
  return np.asarray(a, float).tolist()


def _interpolation_numbers(c: landscape_lib.Interpolation) -> dict:
  """The curve, and its monotonicity on ``0 <= alpha <= 1``."""
  alphas = np.asarray(c.alphas, float)
  loss = np.asarray(c.loss, float)
  inside = loss[(alphas >= 0) & (alphas <= 1)]
  bump = float(landscape_lib.max_bump(inside))
  drop = float(inside[0] - inside[-1])
  out = {"alphas": _to_list(alphas), "loss": _to_list(loss),
         "accuracy": _to_list(c.accuracy),
         "test_loss": None if c.test_loss is None else _to_list(c.test_loss),
         "test_accuracy": (None if c.test_accuracy is None
                           else _to_list(c.test_accuracy)),
         "loss_start": float(inside[0]), "loss_end": float(inside[-1]),
         "max_bump": bump,
         "monotone": bool(bump <= MONOTONE_RTOL * max(abs(drop), 1e-30))}
  return out


def _epoch_rows(rec, cfg, n_train: int) -> np.ndarray:
  """The logged iterates, one an epoch (the first of each) and the last."""
  rows = np.asarray(rec.trajectory, float)
  per_epoch = cfg.train.regime.steps_per_epoch(n_train)
  keep = list(range(0, len(rows) - 1, per_epoch)) + [len(rows) - 1]
  return rows[keep]


def _pca_window(coords: np.ndarray):
  """The PCA plane's window: the path and the origin, with a margin."""
  lo = np.minimum(coords.min(axis=0), 0.0)
  hi = np.maximum(coords.max(axis=0), 0.0)
  pad = PCA_MARGIN * np.maximum(hi - lo, 1e-3 * max(float(np.max(hi - lo)),
                                                     1e-12))
  return tuple((float(a - p), float(b + p)) for a, b, p in zip(lo, hi, pad))


def _path_plane(objective, final, rows: np.ndarray, x, y, res: int):
  """The path's PCA: ``(explained variance ratios, (T, 2) coordinates,
  the slice on the PCA plane around the path)``."""
  stacked = landscape_lib.stack_rows(rows, final)
  pca = landscape_lib.pca_directions(stacked)
  coords = np.asarray(landscape_lib.project(stacked, final, pca.d1, pca.d2),
                      float)
  plane = landscape_lib.slice_2d(objective, final, pca.d1, pca.d2, x, y,
                                 _pca_window(coords), res)
  return np.asarray(pca.explained_variance_ratio, float), coords, plane


def _study(run_dir, smoke: bool) -> dict:
  """Everything the analysis computes for one run."""
  rec = results.load_run(run_dir)
  cfg = common.run_config(rec)
  common.need(cfg.model.kind != "function", "landscape",
              "a model trained on a data set (model.kind mlp, linear or "
              "logistic)", cfg)
  common.need(rec.trajectory is not None, "landscape",
              "the iterates in the run folder (train.record_params: true)",
              cfg)
  data, _, objective = common.problem(cfg, smoke)
  init = common.initial_params(cfg, objective)
  final = common.final_params(run_dir, init)
  x, y = data.x_train, data.y_train
  test = ({} if data.x_test is None else
          {"x_test": data.x_test, "y_test": data.y_test})
  res = RESOLUTION[smoke]
  line = landscape_lib.interpolate(
      objective, init, final, x, y, np.linspace(*ALPHAS, LINE_POINTS[smoke]),
      **test)

  d1, d2 = (landscape_lib.filter_normalized_direction(
      jax.random.PRNGKey(seed), final) for seed in DIRECTION_SEEDS)
  plane = landscape_lib.slice_2d(objective, final, d1, d2, x, y, SPAN, res)
  flat = landscape_lib.flatness(plane, RADIUS)
  lambda_max = _sharpness(objective, final, x, y, cfg.train.engine)
  rows = _epoch_rows(rec, cfg, int(x.shape[0]))
  common.need(len(rows) >= 3, "landscape",
              "at least 2 epochs (3 iterates for the path's PCA)", cfg)
  ratio, coords, pca_plane = _path_plane(objective, final, rows, x, y, res)
  regime = cfg.train.regime
  return {
      "name": rec.name, "cfg": cfg, "objective": objective, "final": final,
      "x": x, "y": y, "test": test, "line": line, "plane": plane,
      "pca_plane": pca_plane, "coords": coords,
      "row": {
          "run": rec.name,
          "regime": (f"minibatch {regime.batch_size}"
                     if regime.kind == "minibatch" else regime.kind),
          "learning_rate": cfg.optimizer.learning_rate,
          "epochs": rec.summary.get("epochs"),
          "steps": rec.summary.get("steps"),
          "train_loss": float(np.asarray(plane.loss)[res // 2, res // 2]),
          "test_accuracy": (None if line.test_accuracy is None else float(
              np.asarray(line.test_accuracy)[int(np.argmin(np.abs(
                  np.asarray(line.alphas) - 1)))])),
          "monotone": None, "max_bump": None,
          "flatness_mean": float(flat.mean), "flatness_max": float(flat.max),
          "lambda_max": float(lambda_max),
          "pca_ratio_1": float(ratio[0]), "pca_ratio_2": float(ratio[1]),
          "pca_iterates": len(rows),
      },
      "directions": (d1, d2),
  }


def _between(a: dict, b: dict, smoke: bool) -> dict | None:
  """The line between two runs' final points, if they share a problem."""
  same = (a["cfg"].data == b["cfg"].data and a["cfg"].model == b["cfg"].model
          and a["cfg"].loss == b["cfg"].loss)
  if not same:
    return None
  line = landscape_lib.interpolate(
      a["objective"], a["final"], b["final"], a["x"], a["y"],
      np.linspace(*ALPHAS, LINE_POINTS[smoke]), **a["test"])
  alphas = np.asarray(line.alphas, float)
  loss = np.asarray(line.loss, float)
  inside = (alphas >= 0) & (alphas <= 1)
  straight = (1 - alphas) * loss[inside][0] + alphas * loss[inside][-1]
  return {"from": a["name"], "to": b["name"], "line": line,
          "barrier": float(np.max((loss - straight)[inside]))}


@register("landscape")
def landscape(exp, out, run_dirs, smoke=False) -> list[Section]:
  """The interpolation, the slices and the path of every run; see the
  module docstring.  Writes ``landscape.json``."""
  del exp
  studies = [_study(run_dir, smoke) for run_dir in run_dirs]
  pairs = [p for a, b in zip(studies, studies[1:])
           if (p := _between(a, b, smoke)) is not None]
  plot_dir = out / results.PLOTS
  payload = {"direction_seeds": list(DIRECTION_SEEDS), "span": SPAN,
             "radius": RADIUS, "resolution": RESOLUTION[smoke], "runs": [],
             "pairs": []}
  for s in studies:
    numbers = _interpolation_numbers(s["line"])
    s["row"].update(monotone=numbers["monotone"],
                    max_bump=numbers["max_bump"])
    d1, d2 = s["directions"]
    payload["runs"].append(dict(
        s["row"], interpolation=numbers,
        slice={"alphas": _to_list(s["plane"].alphas),
               "betas": _to_list(s["plane"].betas),
               "loss": _to_list(s["plane"].loss),
               "d1": _to_list(common.flat(d1)),
               "d2": _to_list(common.flat(d2))},
        pca={"alphas": _to_list(s["pca_plane"].alphas),
             "betas": _to_list(s["pca_plane"].betas),
             "loss": _to_list(s["pca_plane"].loss),
             "path": _to_list(s["coords"])}))
  for p in pairs:
    payload["pairs"].append({"from": p["from"], "to": p["to"],
                             "barrier": p["barrier"],
                             "loss": _to_list(p["line"].loss),
                             "alphas": _to_list(p["line"].alphas)})
  results.write_json(out / "landscape.json", payload)

  figures = [interpolation_figure(
      {s["name"]: s["line"] for s in studies},
      plot_dir / "landscape_interpolation.png",
      "loss and accuracy on the line from the initialisation theta_0 to "
      "the solution theta_T", ends=("theta_0", "theta_T"))]
  figures.append(slice_figure(
      {s["name"]: (s["plane"], None, "filter-normalised direction 1",
                   "filter-normalised direction 2") for s in studies},
      plot_dir / "landscape_slices.png",
      "training loss around each solution: the same random directions, "
      "filter-normalised"))
  figures.append(slice_figure(
      {s["name"]: (s["pca_plane"], s["coords"],
                   f"PC 1 ({100 * s['row']['pca_ratio_1']:.1f}%)",
                   f"PC 2 ({100 * s['row']['pca_ratio_2']:.1f}%)")
       for s in studies}, plot_dir / "landscape_pca.png",
      "the path on the plane of its top two principal directions"))
  table = common.table([s["row"] for s in studies], [
      ("run", "run"), ("regime", "regime"), ("learning_rate", "eta"),
      ("epochs", "epochs"), ("steps", "steps"),
      ("train_loss", "final training loss"),
      ("test_accuracy", "test accuracy"),
      ("monotone", "monotone from init"), ("max_bump", "largest bump"),
      ("flatness_mean", f"mean rise at r = {RADIUS:g}"),
      ("flatness_max", f"largest rise at r = {RADIUS:g}"),
      ("lambda_max", "lambda_max(H)"),
      ("pca_ratio_1", "PC 1 variance"), ("pca_ratio_2", "PC 2 variance")])
  text = (
      f"Interpolation: alpha in [{ALPHAS[0]:g}, {ALPHAS[1]:g}] from the "
      f"initial (alpha = 0) to the final parameters (alpha = 1); monotone "
      f"when no rise on [0, 1] exceeds {MONOTONE_RTOL:g} of the drop; "
      f"largest bump = max_k (L_k - min_(j <= k) L_j) on [0, 1].  Slices: "
      f"the training loss on theta_T + a d1 + b d2 for |a|, |b| <= "
      f"{SPAN:g}, d1 and d2 Gaussian (keys {DIRECTION_SEEDS[0]} and "
      f"{DIRECTION_SEEDS[1]}, the same for every run) rescaled filter by "
      f"filter to theta_T, biases not perturbed; the rise is the loss above its value at theta_T, over "
      f"the grid points at distance {RADIUS:g}.  lambda_max(H): the "
      f"Hessian's top eigenvalue by Lanczos.  PCA: the top two singular "
      f"directions of the iterates (one an epoch) minus the last.\n\n"
      + table)
  sections = [Section("Loss landscapes around the solutions", text,
                      figures)]
  if pairs:
    between = interpolation_figure(
        {f"{p['from']} -> {p['to']}": p["line"] for p in pairs},
        plot_dir / "landscape_between.png",
        "loss and accuracy on the line between two solutions",
        ends=((pairs[0]["from"], pairs[0]["to"]) if len(pairs) == 1 else
              ("first solution", "second solution")))
    rows = [{"from": p["from"], "to": p["to"], "barrier": p["barrier"]}
            for p in pairs]
    sections.append(Section(
        "Between the solutions",
        "barrier = max over alpha in [0, 1] of the training loss above the "
        "straight line between the end points' losses.\n\n"
        + common.table(rows, [("from", "from (alpha = 0)"),
                              ("to", "to (alpha = 1)"),
                              ("barrier", "barrier")]), [between]))
  return sections
