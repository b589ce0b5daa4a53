"""Configs, run folders, resume, sweeps and the gdlab command."""

import dataclasses
import json
from pathlib import Path

import jax
import numpy as np
import pytest
import yaml
from flax import serialization

from gdlab import cli, config, metrics_log, results, run, stopping, sweep
from gdlab.data.batching import Regime

TINY = Path(__file__).parent / "configs" / "tiny.yaml"


def _params(run_dir):
  """The parameters saved in a run folder's checkpoint, as a flat list."""
  raw = serialization.msgpack_restore(results.read_checkpoint(run_dir).state)
  return [np.asarray(x) for x in jax.tree.leaves(raw["params"])]


def test_load_and_override():
  exp = config.load(TINY)
  assert exp.base.optimizer.learning_rate == 0.1
  assert exp.base.model.hidden == (4,)
  cfg = config.apply_overrides(exp.base, {"optimizer.learning_rate": 1,
                                          "model.hidden": [8, 8]})
  assert cfg.optimizer.learning_rate == 1.0
  assert isinstance(cfg.optimizer.learning_rate, float)
  assert cfg.model.hidden == (8, 8)
  assert config.parse_sets(["train.stop.max_epochs=5",
                            "loss.penalty=null"]) == {
      "train.stop.max_epochs": 5, "loss.penalty": None}
  # The resolved config round-trips through YAML.
  again = config.from_dict(config.RunConfig, config.to_dict(cfg))
  assert again == cfg


@pytest.mark.parametrize("key,value,match", [
    ("optimizer.lr", 0.1, r"optimizer.lr: unknown key; known keys of "
     r"optimizer: name, learning_rate"),
    ("optimiser.learning_rate", 0.1, r"optimiser.learning_rate: unknown key; "
     r"known keys: name, seed, data, model, loss, optimizer, train"),
    ("optimizer.learning_rate", "fast", r"optimizer.learning_rate: expected "
     r"float; got 'fast'"),
    ("train.stop.max_epochs", 2.5,
     r"train.stop.max_epochs: expected int; got 2.5"),
    ("train.stop.max_epochs", True,
     r"train.stop.max_epochs: expected int; got True"),
    ("train.stop.max_epochs", 0,
     r"train.stop.max_epochs: expected an integer >= 1; got 0"),
    ("train.regime.kind", "batch",
     r"train.regime: expected one of 'full_batch', 'sgd', 'minibatch'; got "
     r"'batch'"),
    ("train.regime", {"kind": "minibatch", "batch_size": None},
     r"train.regime.batch_size: the 'minibatch' regime needs a batch size"),
    ("model.hidden", "wide", r"model.hidden: expected a list of int"),
])
def test_bad_overrides(key, value, match):
  exp = config.load(TINY)
  with pytest.raises(config.ConfigError, match=match):
    config.override(exp.base, key, value)


def test_bad_files(tmp_path):
  with pytest.raises(config.ConfigError, match="no such file"):
    config.load(tmp_path / "missing.yaml")
  bad = tmp_path / "bad.yaml"
  bad.write_text("base: {data: {name: digits}\n  model: [\n")
  with pytest.raises(config.ConfigError, match=r"malformed YAML.*line"):
    config.load(bad)
  unknown = tmp_path / "unknown.yaml"
  unknown.write_text("name: x\nbase: {trian: {}}\n")
  with pytest.raises(config.ConfigError, match=r"base.trian: unknown key"):
    config.load(unknown)
  code = tmp_path / "code.yaml"
  code.write_text("name: !!python/object/apply:os.system ['echo hi']\n")
  with pytest.raises(config.ConfigError, match="malformed YAML"):
    config.load(code)


def test_run_writes_a_complete_folder(tmp_path):
  exp = config.load(TINY)
  out = run.run_experiment(exp, tmp_path / "exp")
  for name in ("gd", "momentum"):
    run_dir = out / "runs" / name
    for f in (results.CONFIG, metrics_log.METRICS, results.SUMMARY,
              results.CHECKPOINT):
      assert (run_dir / f).exists(), f
    rec = results.load_run(run_dir)
    assert rec.summary["stop_reason"] == "max_epochs"
    assert rec.summary["versions"]["jax"] == jax.__version__
    # 51 training records (64 less a 20% test split): 6 batches of 8.
    assert len(rec.steps["loss"]) == 30 * 6 == rec.summary["steps"]
    assert len(rec.epochs["epoch"]) == 30
    assert rec.config["optimizer"]["momentum"] == (0.9 if name == "momentum"
                                                   else 0.0)
  assert (out / "report.md").exists()
  assert list((out / "plots").glob("*.png"))


def test_same_seed_gives_identical_numbers(tmp_path):
  cfg = config.resolve_runs(config.load(TINY))[0]
  run.run(cfg, tmp_path / "a", plots=False)
  run.run(cfg, tmp_path / "b", plots=False)
  a = metrics_log.read_metrics(tmp_path / "a")[0]["loss"]
  b = metrics_log.read_metrics(tmp_path / "b")[0]["loss"]
  np.testing.assert_array_equal(a, b)
  for x, y in zip(_params(tmp_path / "a"), _params(tmp_path / "b")):
    np.testing.assert_array_equal(x, y)


def test_sweep_runs_match_runs_alone(tmp_path):
  exp = config.load(TINY)
  out = sweep.run_sweep(exp, tmp_path / "sweep")
  info = json.loads((out / "sweep.json").read_text())
  assert len(info["runs"]) == 4
  assert (out / "report.md").exists()
  assert list((out / "plots").glob("sensitivity_*.png"))
  for entry in info["runs"]:
    point = entry["point"]
    cfg = config.apply_overrides(config.resolve_runs(
        exp, variants=False)[0], point)
    alone = tmp_path / "alone" / entry["name"]
    run.run(cfg, alone, plots=False)
    swept = out / "runs" / entry["name"]
    np.testing.assert_allclose(metrics_log.read_metrics(swept)[0]["loss"],
                               metrics_log.read_metrics(alone)[0]["loss"],
                               rtol=1e-5)
    for x, y in zip(_params(swept), _params(alone)):
      np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_a_line_search_sweep_counts_evaluations_as_runs_alone(tmp_path):
  """The stored point of a line search is reused in a sweep as alone: the
  same evaluation counts, step for step, and the same numbers to float32
  rounding (a vmapped product may sum in another order)."""
  exp = config.load(TINY)
  base = config.apply_overrides(exp.base, {
      "train.regime": "full_batch", "optimizer.line_search": "armijo",
      "train.stop.max_epochs": 6, "train.chunk_epochs": 3})
  exp = dataclasses.replace(exp, base=base, variants={}, smoke={})
  out = sweep.run_sweep(exp, tmp_path / "sweep",
                        grid={"optimizer.c1": [1e-4, 0.3]}, report=False)
  for entry in json.loads((out / "sweep.json").read_text())["runs"]:
    cfg = config.apply_overrides(base, entry["point"])
    alone = run.run(cfg, tmp_path / "alone" / entry["name"], plots=False)
    swept = results.load_run(out / "runs" / entry["name"])
    for key in ("fun_evals", "grad_evals"):
      np.testing.assert_array_equal(swept.steps[key],
                                    alone.history.steps[key])
    assert swept.summary["fun_evals"] > swept.summary["steps"]  # it searched
    np.testing.assert_allclose(swept.steps["loss"],
                               alone.history.steps["loss"], rtol=1e-5)


def test_interrupted_run_resumes_to_the_same_parameters(tmp_path, monkeypatch):
  cfg = config.resolve_runs(config.load(TINY))[0]
  run.run(cfg, tmp_path / "full", plots=False)
  calls = {"n": 0}
  original = results.write_run

  def interrupt_after_two_chunks(*args, **kwargs):
    original(*args, **kwargs)
    if kwargs.get("written") is not None:
      calls["n"] += 1
      if calls["n"] == 2:
        raise KeyboardInterrupt
  monkeypatch.setattr(results, "write_run", interrupt_after_two_chunks)
  part = run.run(cfg, tmp_path / "part", plots=False)
  monkeypatch.undo()
  assert part.stop_reason == "interrupted"
  rec = results.load_run(tmp_path / "part")
  assert rec.summary["stop_reason"] == "interrupted"
  assert len(rec.epochs["epoch"]) == 10  # two chunks of five epochs
  with pytest.raises(config.ConfigError, match="already holds a gdlab run"):
    run.run(cfg, tmp_path / "part", plots=False)
  run.run(cfg, tmp_path / "part", resume=True, plots=False)
  for x, y in zip(_params(tmp_path / "full"), _params(tmp_path / "part")):
    np.testing.assert_array_equal(x, y)
  np.testing.assert_array_equal(
      metrics_log.read_metrics(tmp_path / "full")[0]["loss"],
      metrics_log.read_metrics(tmp_path / "part")[0]["loss"])


def test_resume_with_another_optimizer_is_a_clear_error(tmp_path):
  exp = config.load(TINY)
  cfg = config.apply_overrides(exp.base, {"train.stop.max_epochs": 3})
  run.run(cfg, tmp_path / "run", plots=False)
  other = config.apply_overrides(cfg, {"optimizer.line_search": "wolfe"})
  with pytest.raises(config.ConfigError, match=r"--resume: the config "
                     r"differs .* in optimizer.line_search \(None -> "
                     r"'wolfe'\)"):
    run.run(other, tmp_path / "run", resume=True, plots=False)


def test_divergent_run_keeps_its_folder(tmp_path):
  cfg = config.apply_overrides(config.resolve_runs(config.load(TINY))[0],
                               {"optimizer.learning_rate": 50.0})
  result = run.run(cfg, tmp_path / "div", plots=False)
  assert result.stop_reason == "diverged"
  rec = results.load_run(tmp_path / "div")
  assert rec.summary["stop_reason"] == "diverged"
  assert all(np.all(np.isfinite(p)) for p in _params(tmp_path / "div"))


@pytest.mark.parametrize("argv,match", [
    (["run", str(TINY), "--set", "optimizer.lr=1"],
     "optimizer.lr: unknown key; known keys of optimizer"),
    (["run", str(TINY), "--set", "train.stop.max_epochs=many"],
     "train.stop.max_epochs: expected int; got 'many'"),
    (["run", str(TINY), "--set", "train.max_epochs=3"],
     "train.max_epochs: moved to train.stop.max_epochs"),
    (["sweep", str(TINY), "--grid", "train.batch_size=4,8"],
     "train.batch_size: moved to train.regime.batch_size"),
    (["run", "no_such_experiment"],
     "no experiment or file named 'no_such_experiment'; known experiments:"),
    (["run", str(TINY), "--set", "data.name=mnist"],
     "expected one of"),
    (["sweep", str(TINY), "--grid", "optimizer.learning_rate"],
     "--grid: expected key=v1,v2"),
])
def test_cli_bad_input_exits_2_with_one_line(argv, match, capsys, tmp_path):
  code = cli.main(argv + ["--out", str(tmp_path / "x")])
  err = capsys.readouterr().err
  assert code == 2
  assert match in err
  assert "Traceback" not in err
  assert len(err.strip().splitlines()) == 1


def test_cli_malformed_yaml(tmp_path, capsys):
  bad = tmp_path / "bad.yaml"
  bad.write_text("base: [\n")
  assert cli.main(["run", str(bad)]) == 2
  assert "malformed YAML" in capsys.readouterr().err


def test_cli_run_report_and_list(tmp_path, capsys):
  out = tmp_path / "exp"
  assert cli.main(["run", str(TINY), "--smoke", "--out", str(out)]) == 0
  printed = capsys.readouterr().out
  assert str(out / "report.md") in printed
  assert cli.main(["report", str(out / "runs" / "gd"), str(out / "runs" /
                                                           "momentum"),
                   "--out", str(tmp_path / "cmp")]) == 0
  assert (tmp_path / "cmp" / "report.md").exists()
  assert cli.main(["list"]) == 0
  assert "default" in capsys.readouterr().out


def test_resume_keeps_the_trajectory_of_a_function_problem(tmp_path,
                                                           monkeypatch):
  exp = config.load(run.find("loss_surface"))
  cfg = config.apply_overrides(config.resolve_runs(exp)[0],
                               {"train.stop.max_epochs": 9,
                                "train.chunk_epochs": 2})
  run.run(cfg, tmp_path / "full", plots=False)
  original = results.write_run

  def interrupt_after_first_chunk(*args, **kwargs):
    original(*args, **kwargs)
    if kwargs.get("written") is not None:
      raise KeyboardInterrupt
  monkeypatch.setattr(results, "write_run", interrupt_after_first_chunk)
  run.run(cfg, tmp_path / "part", plots=False)
  monkeypatch.undo()
  run.run(cfg, tmp_path / "part", resume=True, plots=False)
  full = results.load_run(tmp_path / "full").trajectory
  part = results.load_run(tmp_path / "part").trajectory
  assert full.shape == part.shape == (10, 2)
  np.testing.assert_array_equal(full, part)
  assert (tmp_path / "full" / results.TRAJECTORY).read_bytes() == (
      tmp_path / "part" / results.TRAJECTORY).read_bytes()
  # A folder of an earlier version, with the rows as JSON, reads the same.
  old = tmp_path / "full"
  (old / results.TRAJECTORY).unlink()
  results.write_json(old / results.TRAJECTORY_JSON, full.tolist())
  np.testing.assert_array_equal(results.load_run(old).trajectory, full)
  np.testing.assert_array_equal(
      results.load_history(old).steps["params"], full[:-1])


def test_sweep_rejects_repeated_values_and_bad_seeds(tmp_path, capsys):
  assert cli.main(["sweep", str(TINY), "--grid", "seed=0,0", "--out",
                   str(tmp_path / "a")]) == 2
  assert "sweep.seed: expected distinct values" in capsys.readouterr().err
  assert cli.main(["sweep", str(TINY), "--grid", "seed=-1,1", "--out",
                   str(tmp_path / "b")]) == 2
  assert "seed: expected an integer in [0, 2**32); got -1" in \
      capsys.readouterr().err
  assert cli.main(["run", str(TINY), "--set", "train.chunk_epochs=0",
                   "--out", str(tmp_path / "c")]) == 2
  assert "train.chunk_epochs: expected an integer >= 1; got 0" in \
      capsys.readouterr().err


def test_sweepable_keys_are_marked_on_the_config_fields():
  cfg = config.resolve_runs(config.load(TINY))[0]
  marked = ["seed", "optimizer.learning_rate", "optimizer.momentum",
            "optimizer.b", "optimizer.initial_step", "optimizer.shrink",
            "optimizer.c1", "optimizer.c2", "loss.strength"]
  for key in marked:
    assert config.sweepable(key, cfg), key
  for key in ("optimizer.decay_rate", "model.hidden", "train.stop.max_epochs",
              "train.regime.batch_size", "data.seed"):
    assert not config.sweepable(key, cfg), key
  # optax's L-BFGS branches on its learning rate in Python.
  lbfgs = config.apply_overrides(cfg, {"optimizer.name": "lbfgs"})
  assert not config.sweepable("optimizer.learning_rate", lbfgs)
  assert config.sweepable("optimizer.momentum", lbfgs)
  with pytest.raises(config.ConfigError, match="optimizer.lr: unknown key"):
    config.sweepable("optimizer.lr", cfg)


def test_nested_stop_and_regime():
  exp = config.load(TINY)
  assert exp.base.train.stop == stopping.Criteria(max_epochs=30)
  assert exp.base.train.regime == Regime("minibatch", 8)
  # A kind alone, or a mapping that keeps the other fields.
  cfg = config.apply_overrides(exp.base, {"train.regime": "sgd"})
  assert cfg.train.regime == Regime("sgd", 8)
  cfg = config.apply_overrides(exp.base, {"train.stop": {"grad_tol": 1e-6}})
  assert cfg.train.stop == stopping.Criteria(max_epochs=30, grad_tol=1e-6)
  # Every override is set before the regime checks itself: either order.
  full = config.apply_overrides(exp.base, {"train.regime": "full_batch",
                                           "train.regime.batch_size": None})
  for order in (["train.regime.kind", "train.regime.batch_size"],
                ["train.regime.batch_size", "train.regime.kind"]):
    values = {"train.regime.kind": "minibatch", "train.regime.batch_size": 4}
    cfg = config.apply_overrides(full, {k: values[k] for k in order})
    assert cfg.train.regime == Regime("minibatch", 4)
  assert config.from_dict(config.RunConfig, {"train": {"regime": "sgd"}}) \
      .train.regime == Regime("sgd")
  assert config.TrainConfig(regime="sgd").regime == Regime("sgd")


@pytest.mark.parametrize("old,new", [
    ("train.max_epochs", "train.stop.max_epochs"),
    ("train.loss_tol", "train.stop.loss_tol"),
    ("train.divergence_factor", "train.stop.divergence_factor"),
    ("train.batch_size", "train.regime.batch_size"),
    ("train.remainder", "train.regime.remainder"),
])
def test_an_old_flat_key_names_its_new_place(old, new, tmp_path):
  exp = config.load(TINY)
  message = f"{old}: moved to {new}"
  with pytest.raises(config.ConfigError, match=message):
    config.override(exp.base, old, 1)
  with pytest.raises(config.ConfigError, match=message):
    config.apply_overrides(exp.base, config.parse_sets([f"{old}=1"]))
  field = old.split(".")[1]
  # In a file: the base, a variant, the smoke section and the sweep grid.
  for text in (f"base: {{train: {{{field}: 1}}}}\n",
               f"variants: {{a: {{{old}: 1}}}}\n",
               f"smoke: {{{old}: 1}}\n",
               f"sweep: {{{old}: [1, 2]}}\n"):
    path = tmp_path / "old.yaml"
    path.write_text(text)
    with pytest.raises(config.ConfigError, match=message.replace(
        "train.", r"(base\.)?train\.")):
      config.load(path)


def test_yaml_reads_floats_as_yaml_1_2(tmp_path):
  for text, value in [("1e-3", 1e-3), ("1E+5", 1e5), (".5", 0.5),
                      ("-2.5e-2", -0.025), ("3.", 3.0), ("7", 7),
                      ("1.0e-05", 1e-5), ("-.inf", -float("inf"))]:
    parsed = config.parse_value(text)
    assert parsed == value and type(parsed) is type(value), text
  assert config.parse_value("1e") == "1e"
  # --set and files alike.
  exp = config.load(TINY)
  sets = config.parse_sets(["optimizer.learning_rate=1e-3",
                            "loss.strength=.5"])
  cfg = config.apply_overrides(exp.base, sets)
  assert cfg.optimizer.learning_rate == 1e-3
  assert cfg.loss.strength == 0.5
  path = tmp_path / "floats.yaml"
  path.write_text("base:\n  optimizer: {learning_rate: 1e-3, c1: 1E-4}\n"
                  "sweep:\n  optimizer.learning_rate: [1e-2, .1, 1E+0]\n")
  exp = config.load(path)
  assert exp.base.optimizer.learning_rate == 1e-3
  assert exp.base.optimizer.c1 == 1e-4
  assert exp.sweep["optimizer.learning_rate"] == [1e-2, 0.1, 1.0]
  # What gdlab writes reads back the same.
  assert config.from_dict(config.RunConfig, config.read_yaml(
      config.dump(cfg))) == cfg


def test_libyaml_and_pyyaml_read_every_file_alike(monkeypatch):
  """read_yaml parses with libyaml where PyYAML has it; what it reads, and
  the errors it raises (PyYAML's, which name the alias or character at
  fault), are those of PyYAML's own parser."""
  texts = [p.read_text() for p in sorted(run.EXPERIMENTS_DIR.glob("*.yaml"))]
  texts += [TINY.read_text(), config.dump(config.load(TINY).base),
            "a: 1e-3\nb: .5\nc: 1_000\nd: 0x10\ne: [.inf, -1.5E+2]\n"]
  bad = ["a: 1\na: 2\n", "a: *nope\n", "key: @x\n", "a: [1, 2\n",
         "a: b: c\n", "\x07", "[" * 5000 + "]" * 5000]

  def outcome(text):
    try:
      return config.read_yaml(text)
    except (yaml.YAMLError, RecursionError) as e:
      return type(e).__name__, str(e)

  with_libyaml = [outcome(t) for t in texts + bad]
  monkeypatch.setattr(config, "_CLoader", None)
  assert with_libyaml == [outcome(t) for t in texts + bad]
  assert "'nope'" in with_libyaml[len(texts) + 1][1]


def test_unknown_analysis_is_a_load_time_error(tmp_path):
  path = tmp_path / "bad.yaml"
  path.write_text("name: x\nanalysis: seed_sprad\n")
  with pytest.raises(config.ConfigError, match=r"analysis: expected one of "
                     r"'closed_form', .*'surface'.* or null; got 'seed_sprad'"):
    config.load(path)
  path.write_text("name: x\nanalysis: seed_spread\nsweep: {seed: [0, 1]}\n")
  with pytest.raises(config.ConfigError, match="seed_sweep: true"):
    config.load(path)
  path.write_text("name: x\nseed_sweep: true\nsweep: {seed: [0]}\n")
  with pytest.raises(config.ConfigError, match="seed_sweep: .*2 or more"):
    config.load(path)
