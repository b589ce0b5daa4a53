"""gdlab.tracking: curvature logged during training, against dense Hessians.

A tiny MLP (13 parameters), so Lanczos with as many steps as parameters is
exact and the dense Hessian (``jax.hessian`` in float64) is the reference:
the sharpness logged by ``fit(..., track=...)`` at an epoch equals the top
eigenvalue of the dense Hessian at that epoch's parameters, for both
gradient engines; the epochs not tracked log NaN.  Then the config key
``train.track``, its errors, and a run folder that is interrupted, resumed
and read back.
"""

import functools
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import gdlab
import helpers
from gdlab import config, loop, results, run, sweep, tracking

TINY = Path(__file__).parent / "configs" / "tiny.yaml"
EPOCHS = 5
EVERY = 2


@functools.lru_cache(maxsize=None)
def _problem():
  model = gdlab.mlp((2, 3, 1), activation="tanh")
  params, x, y = helpers.random_problem(model, "mse", 11, n=10)
  return gdlab.Objective(model, "mse", "mean"), params, x, y


def _dense_hessian(objective, flat, unravel, x, y) -> np.ndarray:
  def hessian(flat, x, y):
    return jax.hessian(lambda f: objective.value(unravel(f), x, y))(flat)
  return np.asarray(helpers.jit_once(hessian)(flat, x, y))


@functools.lru_cache(maxsize=None)
def _fit(engine: str):
  objective, params, x, y = _problem()
  track = tracking.Track(("sharpness", "hessian_trace"), every=EVERY,
                         num_samples=4000)
  return loop.fit(objective, gdlab.optim.gradient_descent(0.3), (x, y),
                  key=jax.random.PRNGKey(0), params=params,
                  criteria=gdlab.stopping.Criteria(max_epochs=EPOCHS),
                  engine=engine, track=track, record_params=True,
                  progress=False)


@pytest.mark.parametrize("engine", ("autodiff", "manual"))
def test_fit_logs_the_sharpness_of_the_dense_hessian(engine):
  objective, params, x, y = _problem()
  result = _fit(engine)
  epochs = result.history.epochs
  logged = epochs["sharpness"]
  tracked = [int(e) for e, s in zip(epochs["epoch"], logged)
             if np.isfinite(s)]
  # Every EVERY epochs, and the epoch where the run stops.
  assert tracked == [2, 4, 5]
  assert np.all(np.isnan(epochs["hessian_trace"][[0, 2]]))
  _, unravel = ravel_pytree(params)
  # The parameters after epoch e are those before step e + 1 (one step an
  # epoch); after the last epoch, the result's.
  flats = {e: np.asarray(result.history.steps["params"][e]) for e in (2, 4)}
  flats[5] = np.asarray(ravel_pytree(result.params)[0])
  for e, flat in flats.items():
    h = _dense_hessian(objective, jnp.asarray(flat), unravel, x, y)
    eig = np.linalg.eigvalsh(h)
    row = list(epochs["epoch"]).index(e)
    assert logged[row] == pytest.approx(eig[-1], rel=1e-9, abs=1e-12), e
    # Hutchinson's estimate, within four standard deviations of tr H.
    off = np.sum(h ** 2) - np.sum(np.diag(h) ** 2)
    std = math.sqrt(2 * off / 4000)
    assert abs(epochs["hessian_trace"][row] - np.trace(h)) < 4 * std + 1e-12


def test_both_engines_log_the_same_curvature():
  a, m = (_fit(e).history.epochs for e in ("autodiff", "manual"))
  np.testing.assert_allclose(a["sharpness"], m["sharpness"], rtol=1e-10)


def test_tracking_leaves_the_training_program_alone():
  objective, params, x, y = _problem()
  common = dict(key=jax.random.PRNGKey(0), params=params, chunk_epochs=2,
                criteria=gdlab.stopping.Criteria(max_epochs=4),
                progress=False)
  opt = gdlab.optim.gradient_descent(0.3)
  plain = loop.fit(objective, opt, (x, y), **common)
  programs = len(loop._PROGRAMS)  # pylint: disable=protected-access
  tracked = loop.fit(objective, opt, (x, y), track=tracking.Track(every=2),
                     **common)
  assert len(loop._PROGRAMS) == programs  # pylint: disable=protected-access
  assert "sharpness" not in plain.history.epochs
  np.testing.assert_array_equal(plain.history.steps["loss"],
                                tracked.history.steps["loss"])
  assert list(np.isfinite(tracked.history.epochs["sharpness"])) == [
      False, True, False, True]


def test_chunk_size_divides_every_and_subsets_are_fixed():
  assert tracking.chunk_epochs(100, 10) == 10
  assert tracking.chunk_epochs(4, 10) == 2
  assert tracking.chunk_epochs(7, 7) == 7
  rows = tracking.subset_rows(50, 8, 0)
  assert len(set(rows)) == 8 and np.all(np.diff(rows) > 0)
  np.testing.assert_array_equal(rows, tracking.subset_rows(50, 8, 0))
  assert tracking.subset_rows(50, 50, 0) is None


@pytest.mark.parametrize("value, match", [
    (["sharpness", "curvature"], r"train\.track\.metrics: .*unknown "
     r"'curvature'; allowed: 'sharpness', 'hessian_trace', "
     r"'noise_scale'"),
    ({"every": 0}, r"train\.track\.every: expected an integer >= 1"),
    ({"engine": "numeric"}, r"train\.track\.engine: expected one of "
     r"'autodiff', 'manual'"),
    ({"metric": ["sharpness"]}, r"train\.track\.metric: unknown key; known "
     r"keys of train\.track: metrics, every"),
    ({"subset": 2**40}, r"train\.track\.subset: expected an integer in"),
    ([], r"train\.track\.metrics: expected one or more distinct names"),
])
def test_bad_track_configs_are_clear_errors(value, match):
  with pytest.raises(config.ConfigError, match=match):
    config.override(config.RunConfig(), "train.track", value)


def test_track_config_forms():
  cfg = config.RunConfig()
  assert config.override(cfg, "train.track", ["sharpness"]).train.track == (
      tracking.Track(("sharpness",)))
  assert config.override(cfg, "train.track.every", 5).train.track == (
      tracking.Track(("sharpness",), every=5))
  with pytest.raises(TypeError, match="track: expected"):
    tracking.as_track(3)


def test_sweeps_refuse_tracking(tmp_path):
  exp = config.load(TINY)
  exp = config.ExperimentConfig(**{
      **{f: getattr(exp, f) for f in ("name", "question", "variants",
                                      "sweep", "smoke")},
      "base": config.override(exp.base, "train.track", ["sharpness"])})
  with pytest.raises(config.ConfigError, match=r"train\.track: a sweep does "
                     r"not track"):
    sweep.run_sweep(exp, tmp_path / "sweep", smoke=True)
  assert not (tmp_path / "sweep").exists()


def test_run_folder_round_trip_and_resume(tmp_path, monkeypatch):
  cfg = config.apply_overrides(config.resolve_runs(config.load(TINY))[0], {
      "train.stop.max_epochs": 6, "train.chunk_epochs": 4,
      "train.track": {"metrics": ["sharpness"], "every": 2, "subset": 20}})
  full = run.run(cfg, tmp_path / "full", plots=False)
  logged = full.history.epochs["sharpness"]
  assert list(np.isfinite(logged)) == [False, True] * 3
  rec = results.load_run(tmp_path / "full")
  np.testing.assert_array_equal(rec.epochs["sharpness"], logged)
  assert rec.summary["final"]["sharpness"] == pytest.approx(logged[-1])

  original = results.write_run

  def interrupt_after_two_chunks(*args, **kwargs):
    original(*args, **kwargs)
    if kwargs.get("written") is not None and args[2].num_epochs == 4:
      raise KeyboardInterrupt
  monkeypatch.setattr(results, "write_run", interrupt_after_two_chunks)
  part = run.run(cfg, tmp_path / "part", plots=False)
  monkeypatch.undo()
  assert part.stop_reason == "interrupted"
  run.run(cfg, tmp_path / "part", resume=True, plots=False)
  np.testing.assert_array_equal(
      results.load_run(tmp_path / "part").epochs["sharpness"], logged)


def test_the_noise_scale_is_tracked_as_computed_alone():
  objective, params, x, y = _problem()
  result = loop.fit(objective, gdlab.optim.gradient_descent(0.3), (x, y),
                    key=jax.random.PRNGKey(0), params=params,
                    criteria=gdlab.stopping.Criteria(max_epochs=1),
                    track="noise_scale", progress=False)
  # Per-record gradients by jax.grad, their covariance in NumPy.
  grads = np.stack([np.asarray(ravel_pytree(jax.grad(
      lambda p, i=i: objective.value(p, x[i:i + 1], y[i:i + 1]))(
          result.params))[0]) for i in range(len(x))])
  mean = grads.mean(axis=0)
  trace_sigma = np.sum((grads - mean) ** 2) / (len(x) - 1)
  assert result.history.epochs["noise_scale"][-1] == pytest.approx(
      trace_sigma / (mean @ mean), rel=1e-9)
