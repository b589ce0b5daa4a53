"""The comparison report of an experiment: its header, table and HTML page."""

import dataclasses
import json
import re
import shutil

import pytest

import yaml

from gdlab import cli
from gdlab import config
from gdlab import plots
from gdlab import report
from gdlab import results
from gdlab import run
from gdlab import sweep


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
  out = tmp_path_factory.mktemp("reports") / "tiny"
  run.run_experiment(config.load("tests/configs/tiny.yaml"), out, smoke=True,
                     progress=False)
  return out


def _table(md):
  return [line for line in md.splitlines() if line.startswith("| ")]


def test_markdown_opens_with_the_setup(experiment):
  md = (experiment / "report.md").read_text()
  assert md.startswith("# tiny\n")
  setup = next(line for line in md.splitlines()
               if line.startswith("**Setup**"))
  for part in ("data linear", "model mlp", "hidden [4]", "activation tanh",
               "loss mse", "regime minibatch", "max epochs 2"):
    assert part in setup
  # The setup comes before the table; the rest of the report is unchanged.
  assert md.index("**Setup**") < md.index("| run |")
  assert "## Figures" in md and "## Runs" in md


def test_table_has_a_column_per_differing_hyperparameter(experiment):
  rows = _table((experiment / "report.md").read_text())
  assert rows[0].startswith("| run | stop reason | steps | grad evals |")
  assert rows[0].endswith("| optimizer.momentum |")
  # Values every run shares stay out of the table.
  assert "optimizer.learning_rate" not in rows[0]
  assert any(r.startswith("| gd |") and r.endswith("| 0 |") for r in rows)
  assert any(r.startswith("| momentum |") and r.endswith("| 0.9 |")
             for r in rows)


def test_html_is_self_contained(experiment):
  page = (experiment / "report.html").read_text()
  assert page.startswith("<!DOCTYPE html>")
  assert "<title>tiny</title>" in page and "<h1>tiny</h1>" in page
  assert "<table>" in page and "<th>run</th>" in page
  assert "optimizer.momentum" in page and "<strong>Setup</strong>" in page
  sources = re.findall(r'<img [^>]*src="([^"]+)"', page)
  assert sources and all(s.startswith("data:image/png;base64,")
                         for s in sources)
  assert "plots/" not in page and ".png" not in page


def test_question_description_and_escaping(experiment, tmp_path):
  runs = sorted((experiment / "runs").iterdir())
  md_path = report.compare(
      runs, tmp_path, question="Does momentum <help>?",
      description="Two variants & one `knob`.",
      extra_sections=[("Notes", "| a | b |\n|:---|---:|\n| x | 1 |", ())])
  md = md_path.read_text()
  # No title and no experiment marker in tmp_path: the default title.
  assert md.startswith("# Comparison of 2 runs\n\n"
                       "**Question:** Does momentum <help>?\n\n"
                       "Two variants & one `knob`.\n\n**Setup**")
  page = (tmp_path / "report.html").read_text()
  assert "Does momentum &lt;help&gt;?" in page
  assert "Two variants &amp; one <code>knob</code>." in page
  assert '<td>x</td><td style="text-align:right">1</td>' in page


def test_title_defaults_to_the_experiment_name(experiment, tmp_path):
  runs = sorted((experiment / "runs").iterdir())
  report.compare(runs, experiment)
  assert (experiment / "report.md").read_text().startswith("# tiny\n")


def _grid_rows(md):
  part = md[md.index("## Per grid point"):md.index("## Per run")]
  return _table(part)


def test_sweep_report_has_a_row_per_grid_point(experiment, tmp_path):
  gd, momentum = [results.load_run(d)
                  for d in sorted((experiment / "runs").iterdir())]
  diverged = dataclasses.replace(momentum, summary={
      **momentum.summary, "stop_reason": "diverged"})
  # Two grid points of two seeds each; one run of the second diverged.
  records = [gd, momentum, gd, diverged]
  points = [{"optimizer.learning_rate": lr, "seed": s}
            for lr in (0.1, 1.0) for s in (0, 1)]
  md = report.compare(records, tmp_path, points=points).read_text()
  assert (md.index("**Setup**") < md.index("## Per grid point")
          < md.index("## Per run") < md.index("## Figures"))
  head, *rows = _grid_rows(md)
  assert head.startswith("| optimizer.learning_rate | seeds | diverged | "
                         "final train loss (mean) | min | max | test loss")
  assert "test accuracy" not in head  # a regression: no accuracy logged
  # The final losses as summary.json holds them, averaged here.
  final = {r.name: json.loads((r.path / results.SUMMARY).read_text())
           ["final"] for r in (gd, momentum)}
  a, b = final["gd"]["train_loss"], final["momentum"]["train_loss"]
  cells = [row.strip("| ").split(" | ") for row in rows]
  assert cells[0][:6] == ["0.1", "2", "0", report.format_value((a + b) / 2),
                          report.format_value(min(a, b)),
                          report.format_value(max(a, b))]
  assert cells[1][:6] == ["1", "2", "1"] + [report.format_value(a)] * 3
  assert cells[1][6] == report.format_value(final["gd"]["test_loss"])
  page = (tmp_path / "report.html").read_text()
  assert "<h2>Per grid point</h2>" in page


def test_runs_of_several_folders_are_labelled_by_folder(experiment,
                                                        tmp_path):
  again = tmp_path / "again"
  shutil.copytree(experiment, again)
  runs = [d for e in (experiment, again)
          for d in sorted((e / "runs").iterdir())]
  md = report.compare(runs, tmp_path / "both").read_text()
  for label in ("tiny/gd", "again/gd", "tiny/momentum", "again/momentum"):
    assert f"| {label} |" in md and f"- {label}: `" in md
  # The same runs twice, seeds and all: no grid to aggregate.
  assert "## Per grid point" not in md


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
  """The sweep of tiny.yaml (2 learning rates x 2 seeds), without a report."""
  out = tmp_path_factory.mktemp("reports") / "tiny_sweep"
  sweep.run_sweep(config.load("tests/configs/tiny.yaml"), out, smoke=True,
                  report=False)
  return out


def _means_by_rate(run_dirs):
  """Mean final training loss per learning rate, read from the run folders."""
  finals = {}
  for d in run_dirs:
    lr = yaml.safe_load((d / results.CONFIG).read_text())["optimizer"][
        "learning_rate"]
    summary = json.loads((d / results.SUMMARY).read_text())
    finals.setdefault(lr, []).append(summary["final"]["train_loss"])
  assert all(len(v) == 2 for v in finals.values()), finals
  return {lr: sum(v) / len(v) for lr, v in finals.items()}


def _check_grid(md, run_dirs):
  head, *rows = _grid_rows(md)
  assert head.startswith("| optimizer.learning_rate | seeds | diverged | "
                         "final train loss (mean) |")
  means = _means_by_rate(run_dirs)
  cells = sorted(row.strip("| ").split(" | ")[:4] for row in rows)
  assert cells == sorted([report.format_value(lr), "2", "0",
                          report.format_value(m)] for lr, m in means.items())
  assert (md.index("## Per grid point") < md.index("## Per run")
          < md.index("| run |"))


def test_report_of_a_sweep_folder_aggregates_its_seeds(swept, tmp_path,
                                                        monkeypatch):
  figures = {}
  sensitivity = plots.sensitivity

  def keep(values, finals, path, **kwargs):
    figures[path.name] = sensitivity(values, finals, None, **kwargs)
    return plots.save_png(figures[path.name], path)

  monkeypatch.setattr(plots, "sensitivity", keep)
  assert cli.main(["report", str(swept), "--out", str(tmp_path)]) == 0
  md = (tmp_path / "report.md").read_text()
  assert md.startswith("# tiny_sweep\n")
  _check_grid(md, sorted((swept / "runs").iterdir()))
  # The sweep's own report: its sensitivity figure too, with a readable axis.
  fig = figures["sensitivity_optimizer.learning_rate.png"]
  assert fig.axes[0].get_xlabel() == "learning rate (step size)"
  assert "](plots/sensitivity_optimizer.learning_rate.png)" in md


def test_compare_finds_the_grid_of_runs(swept, tmp_path):
  runs = sorted((swept / "runs").iterdir())
  # The runs of a sweep folder: their points come from its sweep.json.
  _check_grid(report.compare(runs, tmp_path / "sweep").read_text(), runs)
  # The same runs in two plain folders, one per seed: the points come from
  # the configs, which differ by learning rate and seed.
  for d in runs:
    seed = "seed0" if "seed=0" in d.name else "seed1"
    shutil.copytree(d, tmp_path / seed / "runs" / d.name)
  split = report.run_folders([tmp_path / "seed0", tmp_path / "seed1"])
  md = report.compare(split, tmp_path / "split").read_text()
  _check_grid(md, split)


def test_sweep_axis_labels():
  assert sweep.axis_label("optimizer.learning_rate") == \
      "learning rate (step size)"
  assert sweep.axis_label("train.regime.batch_size") == "batch size (records)"
  assert sweep.axis_label("optimizer.momentum") == "momentum"
  assert sweep.axis_label("data.n") == "data set size (records)"
  assert sweep.axis_label("model.some_new_knob") == "some new knob"


def test_report_folder_needs_a_finished_sweep(experiment, tmp_path):
  with pytest.raises(ValueError, match="folder: expected a finished sweep"):
    sweep.report_folder(experiment, tmp_path)
