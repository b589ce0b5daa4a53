"""Figures and Markdown reports of synthetic run folders."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from matplotlib import image as mpimg

from gdlab import data, plots, report, results

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
  results.atomic_write(run / results.CONFIG, yaml.safe_dump(
      {"name": name, "optimizer": {"name": "gd", "learning_rate": 0.1}}))
  results.write_metrics(run, steps, epochs)
  n = len(steps["loss"])
  summary = {"name": name, "stop_reason": stop_reason, "steps": n,
             "compile_time": 0.25, "run_time": 0.5,
             "steps_per_second": n / 0.5,
             "versions": {"gdlab": "0.1.0", "jax": "0.0", "device": "cpu"}}
  summary.update({k: v[-1] for k, v in epochs.items()})
  results.write_json(run / results.SUMMARY, summary)
  if trajectory is not None:
    results.write_json(run / results.TRAJECTORY, trajectory)
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
  results.atomic_write(run / results.CONFIG, yaml.safe_dump(config))
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
