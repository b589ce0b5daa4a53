"""Figures and Markdown reports of synthetic run folders."""

import io
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from matplotlib import image as mpimg
from matplotlib.figure import Figure

from gdlab import data, folders, metrics_log, plots, report, results
from gdlab.history import History

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _check_png(path, min_bytes=5_000):
  assert path.exists(), path
  raw = path.read_bytes()
  assert raw[:8] == PNG_MAGIC
  assert len(raw) > min_bytes
  img = mpimg.imread(path)
  assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300
  assert img.shape[2] in (3, 4)
  assert img[..., :3].std() > 0.01  # not a blank canvas


def _history(n_epochs, steps_per_epoch, rate, *, diverge=False,
             step_size=0.1, test=True, seed=0):
  rng = np.random.default_rng(seed)
  n = n_epochs * steps_per_epoch
  k = np.arange(n)
  loss = 2.0 * rate ** k * np.exp(0.1 * rng.normal(size=n))
  if diverge:
    loss = 2.0 * 1.3 ** k
    loss[-1] = np.inf
  steps = {
      "loss": loss,
      "grad_norm": np.sqrt(loss),
      "update_norm": step_size * np.sqrt(loss),
      "step_size": step_size * (1 + 0.5 * np.sin(k)) if step_size else
                   np.full(n, np.nan),
      "fun_evals": np.ones(n),
      "grad_evals": np.ones(n),
  }
  e = np.arange(1, n_epochs + 1)
  last = loss[steps_per_epoch - 1::steps_per_epoch]
  nan = np.full(n_epochs, np.nan)
  epochs = {
      "epoch": e.astype(float), "step": e * steps_per_epoch * 1.0,
      "fun_evals": e * steps_per_epoch * 1.0,
      "grad_evals": e * steps_per_epoch * 1.0,
      "train_loss": last, "test_loss": 1.2 * last if test else nan,
      "train_accuracy": 1 - 0.5 * last / last[0],
      "test_accuracy": 0.95 - 0.5 * last / last[0] if test else nan,
      "time": 0.01 * e,
  }
  return steps, epochs


def _write_run(root, name, steps, epochs, stop_reason, trajectory=None):
  run = root / name
  run.mkdir(parents=True)
  folders.atomic_write(run / results.CONFIG, yaml.safe_dump(
      {"name": name, "optimizer": {"name": "gd", "learning_rate": 0.1}}))
  metrics_log.write_metrics(run, steps, epochs)
  n = len(steps["loss"])
  summary = {"name": name, "stop_reason": stop_reason, "steps": n,
             "compile_time": 0.25, "run_time": 0.5,
             "steps_per_second": n / 0.5,
             "versions": {"gdlab": "0.1.0", "jax": "0.0", "device": "cpu"}}
  summary.update({k: v[-1] for k, v in epochs.items()})
  results.write_json(run / results.SUMMARY, summary)
  if trajectory is not None:
    folders.atomic_write(run / results.TRAJECTORY, metrics_log.npz_bytes(
        {"params": np.asarray(trajectory, float)}))
  return run


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory):
  root = tmp_path_factory.mktemp("runs")
  gd = _write_run(root, "gd", *_history(60, 1, 0.85), "loss_tol")
  sgd = _write_run(root, "sgd", *_history(12, 10, 0.97, seed=1), "max_epochs")
  bad = _write_run(root, "diverged", *_history(20, 1, 1.0, diverge=True,
                                               test=False), "diverged")
  return {"gd": gd, "sgd": sgd, "diverged": bad}


@pytest.fixture(scope="module")
def records(run_dirs):
  return {k: results.load_run(v) for k, v in run_dirs.items()}


@pytest.mark.parametrize("x,y", [
    ("step", "loss"), ("epoch", "train_loss"), ("grad_evals", "loss"),
    ("time", "train_loss"), ("epoch", "test_accuracy"), ("time", "loss"),
    ("epoch", ("train_loss", "test_loss"))])
def test_loss_curves(records, tmp_path, x, y):
  out = plots.loss_curves(records, tmp_path / "sub" / "curves.png", x=x, y=y)
  assert out == tmp_path / "sub" / "curves.png"
  _check_png(out)


def test_series_places_steps_on_the_epoch_axis(records):
  xs, ys = plots.series(records["sgd"], "epoch", "loss")
  np.testing.assert_allclose(xs[:10], np.arange(1, 11) / 10)
  np.testing.assert_allclose(xs[-1], 12.0)
  xs, _ = plots.series(records["gd"], "grad_evals", "loss")
  np.testing.assert_array_equal(xs, np.arange(1, 61))
  assert plots.series(records["diverged"], "epoch", "no_such_metric") is None
  with pytest.raises(ValueError, match="x: expected one of"):
    plots.series(records["gd"], "iterations", "loss")


def test_auto_log_scale():
  assert plots._wants_log([np.array([1.0, 1e-3, np.inf, np.nan])], "auto")
  assert not plots._wants_log([np.array([1.0, 0.5])], "auto")
  assert not plots._wants_log([np.array([1.0, 1e-3, 0.0])], "auto")
  assert plots._wants_log([np.array([1.0, 0.5])], True)
  with pytest.raises(ValueError, match="log_y"):
    plots.loss_curves({}, "unused.png", log_y="yes")


def test_history_like_objects_and_empty_input(tmp_path):
  steps, epochs = _history(5, 2, 0.5)
  hist = type("H", (), {"steps": steps, "epochs": epochs})()
  _check_png(plots.loss_curves({"plain": hist}, tmp_path / "h.png",
                               x="grad_evals"))
  # Nothing finite to draw still gives a labelled figure.
  _check_png(plots.loss_curves({"plain": hist}, tmp_path / "none.png",
                               y="nothing"), min_bytes=2_000)


def test_step_sizes(records, tmp_path):
  _check_png(plots.step_sizes(records, tmp_path / "steps.png"))


def test_sensitivity(tmp_path):
  lrs = np.array([1e-3, 1e-2, 1e-1, 1.0, 10.0])
  seeds = np.array([[1.0, 0.1, 1e-3, np.inf, np.nan],
                    [1.1, 0.12, 2e-3, 5.0, np.inf],
                    [0.9, 0.09, 1e-3, np.inf, np.inf]])
  _check_png(plots.sensitivity(lrs, seeds, tmp_path / "band.png",
                               "learning rate"))
  _check_png(plots.sensitivity(lrs, seeds, tmp_path / "groups.png",
                               "learning rate", groups=["s0", "s1", "s2"]))
  _check_png(plots.sensitivity(lrs, seeds[0], tmp_path / "one.png",
                               "learning rate", log_x=False))
  _check_png(plots.sensitivity(lrs[::-1], {"mse": seeds[0], "ce": seeds[1]},
                               tmp_path / "map.png", "learning rate"))
  with pytest.raises(ValueError, match="groups"):
    plots.sensitivity(lrs, seeds, tmp_path / "x.png", "lr", groups=["a"])
  with pytest.raises(ValueError, match="finals"):
    plots.sensitivity(lrs[:3], seeds, tmp_path / "x.png", "lr")


def test_minimiser_stars_sit_under_the_paths():
  f = data.get_function("himmelblau")
  end = np.asarray(f.minimizers, float).reshape(-1, 2)[0]
  path = np.linspace([0.0, 0.0], end, 30)
  fig = plots.surface(f, {"gd": path}, num=30)
  ax = fig.axes[0]
  stars = [l for l in ax.lines if l.get_gid() == "minimiser"]
  paths = [l for l in ax.lines if l.get_label().startswith("gd")]
  end_marks = [l for l in ax.lines if l.get_gid() == "end"]
  assert len(stars) == 1 and paths and end_marks
  assert stars[0].get_zorder() < paths[0].get_zorder()
  assert stars[0].get_zorder() < end_marks[0].get_zorder()
  assert stars[0].get_markerfacecolor() == "none"  # hollow
  assert stars[0].get_markersize() < 17
  handle = [h for h in ax.get_legend().legend_handles
            if h.get_label().startswith("minimiser")]
  assert handle and handle[0].get_markerfacecolor() == "none"


def test_surface_rosenbrock(tmp_path):
  f = data.get_function("rosenbrock")
  t = np.linspace(0, 1, 80)[:, None]
  path = np.asarray(f.x0) * (1 - t) + np.asarray(f.minimizers[0]) * t
  path[:, 1] += 0.3 * np.sin(6 * t[:, 0])
  out = plots.surface(f, {"gd": path, "momentum": path[::4] + 0.1},
                      tmp_path / "rosen.png", num=120)
  _check_png(out, min_bytes=20_000)
  out = plots.surface("himmelblau", path, tmp_path / "himmel.png", num=80,
                      log_levels=False, levels=15, three_d=True)
  _check_png(out, min_bytes=20_000)
  with pytest.raises(ValueError, match="shape"):
    plots.surface(f, {"bad": np.zeros((3, 3))}, tmp_path / "bad.png")


def test_markdown_table():
  table = report.markdown_table(
      [{"name": "a|b", "loss": 0.000123456, "steps": 200, "acc": None,
        "ok": True},
       {"name": "c", "loss": float("nan"), "steps": 3.0, "acc": 0.5,
        "ok": False}],
      [("name", "run"), "loss", "steps", ("acc", "accuracy"), "ok"])
  lines = table.splitlines()
  assert lines[0] == "| run | loss | steps | accuracy | ok |"
  assert lines[1] == "|:---|---:|---:|---:|:---|"
  assert lines[2] == "| a\\|b | 0.0001235 | 200 | – | yes |"
  assert lines[3] == "| c | – | 3 | 0.5 | no |"
  assert report.format_value(float("inf")) == "inf"
  assert report.format_value(np.float32(2.5)) == "2.5"
  assert report.format_value(123456.789) == "1.235e+05"


def test_run_report(run_dirs):
  md_path = report.run_report(run_dirs["sgd"])
  assert md_path == run_dirs["sgd"] / "report.md"
  md = md_path.read_text()
  for name in ("loss", "loss_epochs", "accuracy", "step_size"):
    _check_png(run_dirs["sgd"] / "plots" / f"{name}.png")
    assert f"](plots/{name}.png)" in md
  assert "| stop reason | max_epochs |" in md
  assert "| steps | 120 |" in md
  assert "| steps/s | 240 |" in md
  assert "| compile time (s) | 0.25 |" in md
  assert "learning_rate: 0.1" in md  # the configuration section
  assert "| jax | 0.0 |" in md


def test_run_report_with_trajectory(tmp_path):
  traj = [[-2.5 * 0.8 ** i, 1.0 * (-0.5) ** i] for i in range(30)]
  run = _write_run(tmp_path, "quad", *_history(29, 1, 0.8, test=False),
                   "grad_tol", trajectory=traj)
  config = {"data": {"function": "quadratic", "kappa": 4.0}}
  folders.atomic_write(run / results.CONFIG, yaml.safe_dump(config))
  assert report._function(config, None).info["L"] == 4.0
  md = report.run_report(run).read_text()
  _check_png(run / "plots" / "surface.png", min_bytes=20_000)
  assert "](plots/surface.png)" in md and "loss_epochs.png" in md
  # Options the function does not take: no surface rather than a wrong one.
  assert report._function({"data": {"function": "quadratic", "k": 1}},
                          None) is None
  assert report._function({"function": "beale"}, None).name == "beale"
  assert report._function({}, "himmelblau").name == "himmelblau"


def test_compare(run_dirs, tmp_path):
  extra = tmp_path / "analysis" / "extra.png"
  plots.sensitivity([0.1, 1.0, 10.0], [1.0, 0.1, np.inf], extra, "lr")
  out_dir = tmp_path / "cmp"
  md_path = report.compare(
      list(run_dirs.values()), out_dir, title="GD against SGD",
      extra_sections=[("Learning-rate sweep", "Final loss per rate.",
                       [extra]),
                      report.Section("Notes", "Text only.")])
  assert md_path == out_dir / "report.md"
  md = md_path.read_text()
  assert md.startswith("# GD against SGD\n")
  for name in ("loss_steps", "loss_epochs", "loss_grad_evals", "loss_time",
               "test_accuracy", "step_sizes"):
    _check_png(out_dir / "plots" / f"{name}.png")
    assert f"](plots/{name}.png)" in md
  rows = [l for l in md.splitlines() if l.startswith("| ")]
  assert rows[0].startswith("| run | stop reason | steps | grad evals |")
  assert any(r.startswith("| gd | loss_tol | 60 | 60 |") for r in rows)
  assert any(r.startswith("| sgd | max_epochs | 120 | 120 |") for r in rows)
  # The diverged run's infinite final loss was stored as null: shown as "–".
  assert any(r.startswith("| diverged | diverged | 20 | 20 | – |")
             for r in rows)
  assert "## Learning-rate sweep\n\nFinal loss per rate." in md
  assert "](../analysis/extra.png)" in md
  assert "## Notes\n\nText only." in md
  with pytest.raises(ValueError, match="run_dirs"):
    report.compare([], out_dir)


def test_compare_disambiguates_names():
  assert report._unique(["gd", "sgd", "gd", "gd"]) == [
      "gd", "sgd", "gd (2)", "gd (3)"]


def test_headless_without_pyplot(tmp_path):
  # The raw rcParams entry: reading it does not resolve (and so import) a
  # backend, as matplotlib.get_backend() would.
  code = ("import sys, matplotlib\n"
          "backend = lambda: dict.__getitem__(matplotlib.rcParams, 'backend')\n"
          "before = backend()\n"
          "from types import SimpleNamespace as Run\n"
          "from gdlab import plots\n"
          "plots.loss_curves({'a': Run(steps={'loss': [1.0, 0.1]}, "
          "epochs={})}, sys.argv[1])\n"
          "assert 'matplotlib.pyplot' not in sys.modules\n"
          "assert backend() == before, (before, backend())\n")
  env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
  subprocess.run([sys.executable, "-c", code, str(tmp_path / "a.png")],
                 check=True, timeout=60, env=env,
                 cwd=Path(__file__).resolve().parents[1])
  _check_png(tmp_path / "a.png", min_bytes=2_000)


def test_figures_share_one_mathtext_parser_and_draw_the_same_pixels():
  """A log axis labels its ticks in mathtext; gdlab's figures parse them
  with one parser, and draw what a plain Figure on its own canvas draws."""
  def draw(cls):
    fig = cls(figsize=(4, 3), layout="constrained")
    ax = fig.add_subplot()
    ax.semilogy([1, 2, 3], [1e-3, 1e-1, 10.0])
    ax.set_title(r"$\alpha^2$ against $k$")
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=plots.DPI, format="png")
    return fig, buffer.getvalue()

  first, drawn = draw(plots.InlineFigure)
  second, again = draw(plots.InlineFigure)
  _, plain = draw(Figure)
  assert drawn == again == plain
  parsers = {id(f.canvas.get_renderer().mathtext_parser)
             for f in (first, second)}
  assert len(parsers) == 1


def test_envelope_keeps_the_shape_of_a_long_series():
  """A long series is drawn from its per-bucket extremes: the same range,
  the same ends, every local extreme of each bucket, in order."""
  rng = np.random.default_rng(0)
  xs = np.arange(57_520.0)
  ys = np.exp(rng.normal(size=xs.size)) / (1 + xs / 1000)
  ex, ey = plots.envelope(xs, ys, max_points=2000)
  assert len(ex) <= 2002 and np.all(np.diff(ex) > 0)
  assert ey.min() == ys.min() and ey.max() == ys.max()
  assert ex[0] == 0 and ex[-1] == xs[-1]
  np.testing.assert_array_equal(ey, ys[ex.astype(int)])
  size = -(-xs.size // 1000)
  for b in (0, 17, xs.size // size - 1):
    chunk = ys[b * size:(b + 1) * size]
    assert chunk.min() in ey and chunk.max() in ey
  short = np.arange(10.0)
  assert plots.envelope(short, short)[0] is short


# What each figure family does to stay readable, checked on the Figure.

def _run(loss, *, kind=None, lr=0.1, seed=0, stop="max_epochs", group=1,
         steps_per_epoch=1):
  """A run-like object: per-step loss, per-epoch losses, config, summary."""
  loss = np.asarray(loss, float)
  n = len(loss)
  e = np.arange(1, n // steps_per_epoch + 1)
  config = {"name": "r", "seed": seed,
            "optimizer": {"name": "gd", "learning_rate": lr}}
  if kind is not None:
    config["train"] = {"regime": {"kind": kind}}
  return SimpleNamespace(
      steps={"loss": loss, "step_size": np.full(n, lr)},
      epochs={"epoch": e * 1.0, "step": e * steps_per_epoch * 1.0,
              "train_loss": loss[steps_per_epoch - 1::steps_per_epoch],
              "time": 0.01 * e},
      config=config,
      summary={"stop_reason": stop, "sweep_group_size": group})


def _overlap(a, b) -> bool:
  return not (a.x1 <= b.x0 or b.x1 <= a.x0 or a.y1 <= b.y0 or b.y1 <= a.y0)


def _check_readable(fig):
  """Every axes titled and labelled; a legend, if any, outside the data."""
  fig.canvas.draw()
  for ax in fig.axes:
    if ax.get_label() == "<colorbar>":
      assert ax.get_ylabel() or ax.get_xlabel()
      continue
    assert ax.get_title() or fig.get_suptitle(), ax
    assert ax.get_xlabel() and ax.get_ylabel(), ax
    legend = ax.get_legend()
    if legend is not None:
      assert not _overlap(legend.get_window_extent(),
                          ax.get_window_extent())


@pytest.fixture(scope="module")
def noisy():
  """GD for 40 steps beside SGD whose batch losses are noisy (3000 steps)."""
  rng = np.random.default_rng(0)
  k = np.arange(3000)
  sgd = 2.0 / (1 + k / 100) * np.exp(rng.normal(size=k.size))
  gd = 2.0 * 0.9 ** np.arange(40)
  return {"gd": _run(gd, kind="full_batch", lr=2.0),
          "sgd": _run(sgd, kind="sgd", lr=0.02, steps_per_epoch=300)}


def test_stochastic_losses_are_smoothed_on_a_log_step_axis(noisy):
  fig = plots.loss_curves(noisy, x="step", y="loss")
  _check_readable(fig)
  ax = fig.axes[0]
  assert ax.get_xscale() == "log"  # 40 steps beside 3000
  raw = [l for l in ax.lines if l.get_gid() == "raw"]
  smooth = [l for l in ax.lines if l.get_gid() == "ema"]
  assert len(raw) == len(smooth) == 1  # SGD only; GD is drawn as it is
  assert raw[0].get_alpha() < 0.5 and smooth[0].get_alpha() in (None, 1.0)
  # The span: the noise's, (c / 0.1)^2 for the batch losses' median
  # coefficient of variation c over blocks of 20 (more than one epoch's 300
  # steps capped at 1% of the steps, 30; less than 10% of the steps, 300).
  ys = noisy["sgd"].steps["loss"]
  blocks = ys.reshape(-1, 20)
  c = np.median(blocks.std(axis=1) / blocks.mean(axis=1))
  span = int(np.ceil((c / 0.1) ** 2))
  assert 30 < span < 300
  assert any(f"span {span} steps" in t.get_text()
             for t in ax.get_legend().get_texts())
  # The EMA against a plain loop with Adam's bias correction.
  a, m, ref = 2 / (span + 1), 0.0, []
  for k, v in enumerate(ys, 1):
    m = (1 - a) * m + a * v
    ref.append(m / (1 - (1 - a) ** k))
  np.testing.assert_allclose(plots.ema(ys, span), ref, rtol=1e-12)
  # y-limits from the EMA and GD's loss, not the raw band.
  low = min(np.min(ref), np.min(noisy["gd"].steps["loss"]))
  assert 0.5 * low < ax.get_ylim()[0] < low
  assert ax.get_ylim()[0] > 5 * ys.min()
  # Legend labels say what differs.
  texts = [t.get_text() for t in ax.get_legend().get_texts()]
  assert any("learning_rate=2" in t for t in texts)


def test_a_diverged_run_does_not_set_the_y_range():
  k = np.arange(1.0, 301)
  slow = 1 / (1 + k / 100)  # changing to the end: no early-change log x
  runs = {"small": _run(0.3 + 2 * slow), "right": _run(0.32 + slow),
          "armijo": _run(0.33 + slow, lr=16.0),
          "large": _run(2.0 * 8.0 ** np.arange(8), lr=0.7, stop="diverged")}
  fig = plots.loss_curves(runs)
  _check_readable(fig)
  ax = fig.axes[0]
  assert ax.get_yscale() == "linear"  # the others span less than a decade
  assert ax.get_xscale() == "linear"  # the diverged run's length is ignored
  assert ax.get_ylim()[1] < 3.0 < 1e6
  marks = [l for l in ax.lines if l.get_gid() == "diverged"]
  assert len(marks) == 1 and marks[0].get_marker() == "^"
  # The triangle sits inside the axes, clear of the title; its value is in
  # the legend, not on the data.
  mark = marks[0].get_window_extent()
  box = ax.get_window_extent()
  assert box.y0 < mark.y0 and mark.y1 <= box.y1 + 0.5
  assert not _overlap(mark, ax.title.get_window_extent())
  assert not [t for t in ax.texts if "diverged" in t.get_text()]
  texts = [t.get_text() for t in ax.get_legend().get_texts()]
  assert any(t.startswith("large") and "diverged, last 4.2e+06" in t
             for t in texts)  # 2 * 8^7
  assert any("above the axes" in t for t in texts)  # the triangle's key


def test_step_sizes_label_diverged_runs_in_the_legend():
  k = np.arange(1.0, 301)
  runs = {"armijo": _run(0.3 + 1 / k, lr=16.0),
          "too_large": _run(2.0 * 8.0 ** np.arange(8), lr=0.7,
                            stop="diverged")}
  runs["armijo"].steps["step_size"] = 0.7 * 2.0 ** -(k % 3)
  fig = plots.step_sizes(runs)
  _check_readable(fig)
  ax = fig.axes[0]
  marks = [l for l in ax.lines if l.get_gid() == "diverged"]
  assert len(marks) == 1 and marks[0].get_marker() == "x"  # within range
  assert not ax.texts  # no label over armijo's step sizes
  texts = [t.get_text() for t in ax.get_legend().get_texts()]
  assert any(t.startswith("too_large") and t.endswith("(diverged)")
             for t in texts)


def test_a_style_key_shows_lines_as_drawn():
  run = _run(np.linspace(2.0, 1.0, 50))
  run.epochs["test_loss"] = run.epochs["train_loss"] + 0.1
  fig = plots.loss_curves({"a": run}, x="epoch",
                          y=("train_loss", "test_loss"),
                          styles={"test_loss": {"alpha": 0.4, "lw": 3.0}})
  legend = fig.axes[0].get_legend()
  handles = dict(zip((t.get_text() for t in legend.get_texts()),
                     legend.legend_handles))
  drawn = [l for l in fig.axes[0].lines if l.get_ls() == "--"]
  assert drawn[0].get_alpha() == 0.4
  assert handles["test loss"].get_alpha() == 0.4
  assert handles["test loss"].get_linewidth() == 3.0
  assert handles["test loss"].get_linestyle() == "--"
  assert handles["training loss"].get_alpha() is None


@pytest.mark.parametrize("curve,log_y,log_x", [
    ("exponential", "linear", "log"),  # settled after ~100 of 2000 steps
    ("linear", "linear", "linear"),
    ("geometric", "log", "linear"),  # a line on the log y axis
])
def test_log_x_when_all_the_change_is_early(curve, log_y, log_x):
  k = np.arange(2000.0)
  ys = {"exponential": 0.3 + 0.7 * np.exp(-k / 20),
        "linear": 1.0 - 0.7 * k / 2000,
        "geometric": 2.0 * 0.99 ** k}[curve]
  fig = plots.loss_curves({"a": _run(ys), "b": _run(1.1 * ys)})
  ax = fig.axes[0]
  assert ax.get_yscale() == log_y
  assert ax.get_xscale() == log_x
  # An oscillation about the plateau is no change; a run still changing
  # late keeps the axis linear.
  wobble = ys * (1 + 0.05 * (-1) ** k)
  fig = plots.loss_curves({"a": _run(wobble), "b": _run(1.1 * ys)})
  assert fig.axes[0].get_xscale() == log_x
  late = 1.0 - 0.7 * k / 2000
  fig = plots.loss_curves({"a": _run(ys), "b": _run(late)})
  assert fig.axes[0].get_xscale() == "linear"


def test_ema_span_grows_with_the_noise():
  rng = np.random.default_rng(0)
  trend = 1 / (1 + np.arange(4000.0) / 500)
  smooth = _run(trend, kind="sgd", steps_per_epoch=40)
  assert plots.noise_level(trend) < 1e-2
  assert plots.ema_span(smooth, 4000, trend) == 40  # one epoch
  assert plots.ema_span(smooth, 4000) == 40
  # Gaussian noise of 30% of the mean: (0.3 / 0.1)^2 = 9 by noise alone;
  # of 100%: 100.
  for cv, span in ((0.3, 40), (1.0, 100)):
    ys = trend * (1 + cv * rng.normal(size=trend.size))
    assert plots.noise_level(ys) == pytest.approx(cv, rel=0.1)
    assert plots.ema_span(smooth, 4000, ys) == pytest.approx(span, rel=0.2)
  # 400 steps of batch-1 SGD: capped at 10% of the steps.
  ys = np.exp(2.0 * rng.normal(size=400))
  assert plots.ema_span(_run(ys, kind="sgd"), 400, ys) == 40
  assert plots.ema_span(_run(ys[:60], kind="sgd"), 60, ys[:60]) == 10


def test_many_stochastic_runs_are_drawn_without_their_raw_traces():
  rng = np.random.default_rng(0)
  k = np.arange(400.0)

  def batch_one(seed):
    return _run(0.1 + 1 / (1 + k / 50) * rng.exponential(size=k.size) ** 2,
                kind="sgd", seed=seed)

  def lines(fig, gid):
    return [l for l in fig.axes[0].lines if l.get_gid() == gid]

  four = {f"b{i}": batch_one(i) for i in range(4)}
  fig = plots.loss_curves(four)
  assert len(lines(fig, "raw")) == len(lines(fig, "ema")) == 4
  five = {**four, "b4": batch_one(4), "full": _run(1 / (1 + k / 10))}
  fig = plots.loss_curves(five)
  _check_readable(fig)
  assert not lines(fig, "raw") and len(lines(fig, "ema")) == 5
  texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
  assert "EMA of the per-step values, span 40 steps" in texts
  assert "per-step values" not in texts


def test_sweeps_are_coloured_by_the_swept_value():
  lrs = [0.001, 0.01, 0.1, 1.0]
  runs = {f"s[learning_rate={lr:g},seed={s}]":
          _run(1 / (1 + lr * np.arange(50.0)) + 0.01 * s, lr=lr, seed=s,
               group=12)
          for lr in lrs for s in range(3)}
  fig = plots.loss_curves(runs, x="epoch", y="train_loss")
  _check_readable(fig)
  assert len(fig.axes) == 2  # the axes and their colour bar
  bar = fig.axes[1]
  assert bar.get_ylabel() == "learning rate"
  ax = fig.axes[0]
  assert ax.get_legend() is None  # no legend entry per run
  # Seeds share their value's colour, the colour map is log over the grid.
  colours = {tuple(l.get_color()) for l in ax.lines if l.get_xydata().size}
  assert len(colours) == len(lrs)
  # Vmapped runs share one wall time: nothing is drawn against it.
  fig = plots.loss_curves(runs, x="time", y="train_loss")
  assert not [l for l in fig.axes[0].lines if l.get_xydata().size]
  assert "wall time" in fig.axes[0].get_title()


def test_legend_is_outside_and_labels_name_the_differences(records):
  fig = plots.loss_curves(records, x="epoch", y=("train_loss", "test_loss"))
  _check_readable(fig)
  texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
  assert "training loss" in texts and "test loss" in texts  # styles, once
  assert sum("gd" in t for t in texts) == 2  # gd, sgd: one entry per run
  assert plots.run_labels({"a": _run([1.0], lr=0.5),
                           "b[learning_rate=0.2]": _run([1.0], lr=0.2)}) == {
      "a": "a (learning_rate=0.5)", "b[learning_rate=0.2]":
      "b[learning_rate=0.2]"}


def test_log_y_where_values_span_a_decade_and_floor():
  f = 0.07 + 2.0 * 0.5 ** np.arange(100.0)  # 2.07 down to 0.07
  fig = plots.loss_curves({"svm": _run(f)})
  assert fig.axes[0].get_yscale() == "log"
  gap = 10.0 ** -np.arange(20.0)
  gap[15:] = [1e-19, 0.0, 3e-18, -1e-18, 2e-19]  # below rounding
  fig = plots.loss_curves({"gd": _run(gap)}, floor=1e-16, log_y=True)
  lines = [l for l in fig.axes[0].lines if l.get_label() == "gd"]
  assert np.min(lines[0].get_ydata()) == 1e-16  # clipped, not a comb
  _check_readable(fig)


def test_categorical_seeds():
  seeds = [0, 1, 2, 3, 4]
  finals = {"logistic": np.full(5, 0.2844),
            "mlp": np.array([0.0841, 0.0837, 0.0839, 0.0853, np.inf])}
  fig = plots.strip(finals, seeds, ylabel="final loss")
  _check_readable(fig)
  for ax in fig.axes:
    assert [t.get_text() for t in ax.get_xticklabels()] == list("01234")
    dots = [l for l in ax.lines if l.get_marker() == "o"]
    assert dots and all(l.get_linestyle() == "None" for l in dots)
  # Equal values sit on one line in a range set by min_span, not noise.
  lo, hi = fig.axes[0].get_ylim()
  assert hi - lo == pytest.approx(0.01 * 0.2844)
  assert "spread 0" in fig.axes[0].get_title()
  assert [l for l in fig.axes[1].lines if l.get_gid() == "diverged"]
  with pytest.raises(ValueError, match="values"):
    plots.strip({"a": [1.0, 2.0]}, seeds)


def test_many_categories_label_every_kth_tick():
  seeds = list(range(100, 125))
  rng = np.random.default_rng(0)
  fig = plots.strip({"logistic": 0.28 + 1e-4 * rng.normal(size=25),
                     "mlp": 0.08 + 1e-3 * rng.normal(size=25)}, seeds)
  _check_readable(fig)
  for ax in fig.axes:
    assert len(ax.get_xticks()) == 25  # every seed keeps its tick
    ticks = [t for t in ax.get_xticklabels() if t.get_text()]
    assert 2 <= len(ticks) <= plots.MAX_TICK_LABELS
    assert ticks[0].get_text() == "100"
    boxes = [t.get_window_extent() for t in ticks]
    assert not any(_overlap(a, b) for a, b in zip(boxes, boxes[1:]))


@pytest.mark.parametrize("family", ["step_sizes", "sensitivity", "surface",
                                    "single"])
def test_every_figure_is_titled_and_labelled(noisy, family):
  if family == "step_sizes":
    fig = plots.step_sizes(noisy)
    assert fig.axes[0].get_xscale() == "log"
  elif family == "sensitivity":
    fig = plots.sensitivity([0.1, 1.0, 10.0], [[1.0, 0.1, np.inf],
                                               [1.1, 0.2, 5.0]], xlabel="lr")
  elif family == "surface":
    fig = plots.surface("himmelblau", np.zeros((3, 2)), num=30)
  else:
    fig = plots.loss_curves({"sgd": noisy["sgd"]}, x="epoch",
                            y="train_loss")
  _check_readable(fig)


# The quantities tracked during training (gdlab.tracking), by epoch.

def _tracked_run(lr=0.1, every=3, n=12, optimizer=None, **columns):
  """A run of ``n`` epochs whose tracked ``columns`` are finite every
  ``every`` epochs (from epoch ``every``) and NaN between."""
  run = _run(2.0 * 0.7 ** np.arange(n), lr=lr)
  if optimizer is not None:
    run.config["optimizer"] = optimizer
  for name, scale in columns.items():
    values = np.full(n, np.nan)
    values[every - 1::every] = scale * (1 + np.arange(n // every))
    run.epochs[name] = values
  return run


def _panels(fig):
  return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def test_tracked_draws_a_panel_per_tracked_quantity():
  runs = {"a": _tracked_run(sharpness=10.0, noise_scale=50.0),
          "b": _tracked_run(every=4, noise_scale=20.0,
                            hessian_trace=np.nan)}  # all NaN: not tracked
  assert plots.has_tracked(runs["a"]) == ("sharpness", "noise_scale")
  assert plots.has_tracked(runs["b"]) == ("noise_scale",)
  fig = plots.tracked(runs)
  _check_readable(fig)
  ylabels = [ax.get_ylabel() for ax in _panels(fig)]
  assert ylabels == ["training loss", "lambda_max of the Hessian",
                     "B_simple (records)"]
  assert all(ax.get_xlabel() == "epoch" for ax in _panels(fig))
  loss_ax, sharp_ax, noise_ax = _panels(fig)
  assert loss_ax.get_yscale() == "log"  # 2 down to 2 * 0.7^11 = 0.04
  # Only the tracked epochs are drawn: NaN epochs are skipped.
  lines = {l.get_color(): l for l in noise_ax.lines}
  a, b = (lines[plots.run_colour(i)] for i in range(2))
  np.testing.assert_array_equal(a.get_xdata(), [3, 6, 9, 12])
  np.testing.assert_array_equal(a.get_ydata(), [50, 100, 150, 200])
  np.testing.assert_array_equal(b.get_xdata(), [4, 8, 12])
  assert a.get_marker() == "o" and a.get_linestyle() == "-"
  sharp = [l for l in sharp_ax.lines if l.get_gid() == "sharpness"]
  assert len(sharp) == 1 and sharp[0].get_color() == plots.run_colour(0)
  # Every quantity: four panels in two rows.
  runs["b"].epochs["hessian_trace"][5] = -3.0
  fig = plots.tracked(runs)
  _check_readable(fig)
  assert [ax.get_ylabel() for ax in _panels(fig)][1:] == [
      "lambda_max of the Hessian", "tr H (Hutchinson)", "B_simple (records)"]


def test_tracked_draws_two_over_eta_where_the_step_is_constant():
  runs = {"gd": _tracked_run(lr=0.05, sharpness=10.0),
          "gd_fast": _tracked_run(lr=0.25, sharpness=5.0),
          "armijo": _tracked_run(sharpness=7.0, optimizer={
              "name": "gd", "learning_rate": 1.0, "line_search": "armijo"}),
          "cosine": _tracked_run(sharpness=7.0, optimizer={
              "name": "gd", "learning_rate": 0.1, "schedule": "cosine"}),
          "adam": _tracked_run(sharpness=7.0, optimizer={
              "name": "adam", "learning_rate": 0.01}),
          "no_rate": _tracked_run(sharpness=7.0, optimizer={"name": "gd"})}
  assert plots.constant_step(runs["gd"]) == 0.05
  assert [n for n, r in runs.items() if plots.constant_step(r)] == [
      "gd", "gd_fast"]

  def thresholds(fig):
    ax = _panels(fig)[1]
    return {l.get_color(): l.get_ydata()
            for l in ax.lines if l.get_gid() == "threshold"}

  fig = plots.tracked(runs)
  _check_readable(fig)
  assert "2/eta dashed" in _panels(fig)[1].get_title()
  lines = thresholds(fig)
  assert set(lines) == {plots.run_colour(0), plots.run_colour(1)}
  np.testing.assert_allclose(lines[plots.run_colour(0)], [40.0, 40.0])
  np.testing.assert_allclose(lines[plots.run_colour(1)], [8.0, 8.0])
  texts = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
  assert any("2/eta = 40" in t for t in texts)
  # Given step sizes replace the configs'.
  fig = plots.tracked(runs, step_sizes={"adam": 0.5, "gd": None})
  assert thresholds(fig) == {plots.run_colour(4): pytest.approx([4.0, 4.0])}
  # A history (no config): no line.
  steps, epochs = _history(6, 1, 0.5)
  epochs["sharpness"] = np.array([np.nan, 3.0, np.nan, 4.0, np.nan, 5.0])
  fig = plots.tracked({"h": SimpleNamespace(steps=steps, epochs=epochs)})
  assert not thresholds(fig)
  assert "2/eta" not in _panels(fig)[1].get_title()
  with pytest.raises(ValueError, match="step_sizes: expected names"):
    plots.tracked(runs, step_sizes={"sgd": 0.1})
  with pytest.raises(ValueError, match="step_sizes: expected a positive"):
    plots.tracked(runs, step_sizes={"gd": -0.1})
  with pytest.raises(TypeError, match="step_sizes"):
    plots.tracked(runs, step_sizes=0.1)


def test_tracked_without_tracked_quantities_says_so(tmp_path):
  run = _tracked_run(sharpness=np.nan)
  assert plots.has_tracked(run) == ()
  fig = plots.tracked({"plain": run})
  _check_readable(fig)
  loss_ax, empty = _panels(fig)
  assert loss_ax.lines and not empty.lines
  assert any("no finite values of sharpness" in t.get_text()
             for t in empty.texts)
  out = plots.tracked([results.load_run(_write_run(
      tmp_path, "r", *_history(8, 1, 0.6), "max_epochs"))],
      tmp_path / "t.png")
  assert out == tmp_path / "t.png"
  _check_png(out)


def test_tracked_sweep_is_coloured_by_the_swept_value():
  lrs = (0.01, 0.03, 0.1)
  runs = {f"s[learning_rate={lr:g},seed={s}]":
          _tracked_run(lr=lr, sharpness=1.0 + s) for lr in lrs
          for s in range(3)}
  fig = plots.tracked(runs)
  _check_readable(fig)
  assert [ax.get_ylabel() for ax in fig.axes
          if ax.get_label() == "<colorbar>"] == ["learning rate"]
  assert all(ax.get_legend() is None for ax in fig.axes)
  levels = sorted({float(l.get_ydata()[0]) for l in _panels(fig)[1].lines
                   if l.get_gid() == "threshold"})
  np.testing.assert_allclose(levels, [2 / 0.1, 2 / 0.03, 2 / 0.01])


def test_a_single_run_is_drawn_and_a_fit_result_is_refused():
  steps, epochs = _history(4, 3, 0.8)
  hist = History(steps=steps, epochs=epochs)
  fig = plots.loss_curves(hist, x="step")
  assert len(fig.axes[0].get_lines()) >= 1
  assert plots.named_runs(hist) == {"run": hist}
  with pytest.raises(TypeError, match="pass its .history"):
    plots.named_runs(SimpleNamespace(history=hist, params=None))
  with pytest.raises(TypeError, match="items of type int"):
    plots.named_runs([1, 2])
