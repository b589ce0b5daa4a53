"""``gdlab table`` and ``report.runs_table``; the check-grads table's columns."""

import csv
import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest

from gdlab import cli, config, gradcheck, report, run

TINY = Path(__file__).parent / "configs" / "tiny.yaml"
QUANTITIES = ["train_loss", "test_loss", "stop_reason", "steps", "epochs",
              "compile_time", "run_time"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
  """``exp1/runs/{fast,slow}`` (learning rates 0.1 and 0.05, two epochs) and
  ``exp2/runs/slow``, a copy of the first experiment's ``slow``."""
  root = tmp_path_factory.mktemp("tables")
  base = config.apply_overrides(config.load(TINY).base,
                                {"train.stop.max_epochs": 2})
  for name, lr in (("fast", 0.1), ("slow", 0.05)):
    cfg = config.apply_overrides(base, {"optimizer.learning_rate": lr})
    run.run(dataclasses.replace(cfg, name=name), root / "exp1" / "runs" / name,
            plots=False, progress=False)
  shutil.copytree(root / "exp1" / "runs" / "slow",
                  root / "exp2" / "runs" / "slow")
  return root


def test_rows_hold_the_differing_config_keys_and_final_results(folders):
  runs = folders / "exp1" / "runs"
  columns, rows = report.runs_table([runs / "slow", runs / "fast"])
  assert columns == ["run", "optimizer.learning_rate"] + QUANTITIES
  assert [r["run"] for r in rows] == ["slow", "fast"]
  assert [r["optimizer.learning_rate"] for r in rows] == [0.05, 0.1]
  for r in rows:
    assert r["stop_reason"] == "max_epochs"
    assert r["epochs"] == 2 and r["steps"] == 12
    assert math.isfinite(r["train_loss"]) and math.isfinite(r["test_loss"])
    assert r["compile_time"] >= 0 and r["run_time"] > 0
  assert rows[1]["train_loss"] < rows[0]["train_loss"]  # the larger step


def test_experiment_folders_expand_and_repeated_names_get_their_folder(
    folders):
  columns, rows = report.runs_table([folders / "exp1", folders / "exp2"])
  assert [r["run"] for r in rows] == ["fast", "exp1/slow", "exp2/slow"]
  assert "optimizer.learning_rate" in columns
  # One run alone: no config column differs.
  columns, rows = report.runs_table([folders / "exp2"])
  assert columns == ["run"] + QUANTITIES and len(rows) == 1


def _cell(text: str):
  """A CSV cell as the number or string it holds."""
  for kind in (int, float):
    try:
      return kind(text)
    except ValueError:
      pass
  return text


def test_cli_prints_the_table_and_writes_csv_and_json(folders, tmp_path,
                                                      capsys):
  out_csv, out_json = tmp_path / "t.csv", tmp_path / "t.json"
  assert cli.main(["table", str(folders / "exp1"), "--csv", str(out_csv),
                   "--json", str(out_json)]) == 0
  lines = capsys.readouterr().out.splitlines()
  header, rule, *body = lines
  assert set(rule) == {"-"}
  columns = header.split()
  assert columns == ["run", "optimizer.learning_rate"] + QUANTITIES
  printed = [dict(zip(columns, line.split())) for line in body]
  assert [p["run"] for p in printed] == ["fast", "slow"]
  with open(out_csv, newline="") as f:
    from_csv = list(csv.DictReader(f))
  with open(out_json) as f:
    from_json = json.load(f)
  assert [list(r) for r in from_csv] == [columns] * 2
  assert [list(r) for r in from_json] == [columns] * 2
  for shown, c, j in zip(printed, from_csv, from_json):
    assert {k: report.format_value(_cell(v)) for k, v in c.items()} == shown
    assert {k: report.format_value(v) for k, v in j.items()} == shown


@pytest.mark.parametrize("make,match", [
    (lambda p: p, "expected a run folder holding summary.json"),
    (lambda p: (p / "runs").mkdir() or p, "found no run in"),
])
def test_cli_bad_paths_exit_2_with_one_line(make, match, tmp_path, capsys):
  assert cli.main(["table", str(make(tmp_path))]) == 2
  captured = capsys.readouterr()
  assert captured.out == ""
  assert match in captured.err and "Traceback" not in captured.err
  assert len(captured.err.strip().splitlines()) == 1


def test_check_grads_table_shows_the_raw_error_and_its_noise():
  rows = gradcheck.grid(["tanh", "relu"], ["mse", "softmax_cross_entropy"],
                        ["per_neuron"], [1])
  table = gradcheck.format_table(rows)
  lines = table.splitlines()
  for r in rows:
    # The noise-reduced error is 0, the raw one is not, and below the noise.
    assert r.passed and r.vs_finite_diff == 0
    assert 0 < r.fd_raw < r.fd_noise
    line = next(l for l in lines if l.startswith(f"{r.activation:<11} "
                                                 f"{r.loss:<22} "))
    assert f"{r.fd_raw:.2e}" in line and f"{r.fd_noise:.1e}" in line
  assert "4/4 rows pass" in table
  for term in ("vs jax.grad  ", "vs fin.diff  ", "FD noise  ", "result  "):
    assert any(l.startswith(term) for l in lines), term
  assert "<= 1e-05" in table and "<= 1e-10" in table


def test_rows_built_positionally_still_format():
  row = gradcheck.Row("tanh", "mse", "none", 1, "mean", 1e-14, 1e-9, True)
  assert math.isnan(row.fd_raw) and math.isnan(row.fd_noise)
  assert "1/1 rows pass" in gradcheck.format_table([row])
