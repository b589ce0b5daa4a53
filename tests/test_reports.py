"""The comparison report of an experiment: its header, table and HTML page."""

import copy
import dataclasses
import json
import re
import shutil

import numpy as np
import pytest

import yaml

from gdlab import cli
from gdlab import config
from gdlab import plots
from gdlab import report
from gdlab import results
from gdlab import run
from gdlab import sweep
from gdlab.plots import _cache as figure_cache


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
  assert plots.axis_label("optimizer.learning_rate") == \
      "learning rate (step size)"
  assert plots.axis_label("train.regime.batch_size") == "batch size (records)"
  assert plots.axis_label("optimizer.momentum") == "momentum"
  assert plots.axis_label("data.n") == "data set size (records)"
  assert plots.axis_label("model.some_new_knob") == "some new knob"


def test_report_folder_needs_a_finished_sweep(experiment, tmp_path):
  with pytest.raises(ValueError, match="folder: expected a finished sweep"):
    sweep.report_folder(experiment, tmp_path)


# The figures a report leaves out or redraws: the runs are the tiny
# experiment's, altered in memory (no training).


@pytest.fixture
def drawn(monkeypatch):
  """The runs and options of every ``plots.loss_curves`` call, by figure."""
  calls = {}
  loss_curves = plots.loss_curves

  def keep(runs, path=None, **kwargs):
    fig = loss_curves(runs, None, **kwargs)
    calls[path.name if path else kwargs.get("title")] = (runs, kwargs, fig)
    return fig if path is None else plots.save_png(fig, path)

  monkeypatch.setattr(plots, "loss_curves", keep)
  return calls


def _tiny_runs(experiment):
  return [results.load_run(d) for d in sorted((experiment / "runs").iterdir())]


def _altered(record, name, *, config=None, summary=None, steps=None,
             epochs=None, path=None):
  """A copy of a run record with config values (dotted keys) replaced."""
  cfg = copy.deepcopy(record.config)
  for key, value in (config or {}).items():
    *parents, last = key.split(".")
    node = cfg
    for k in parents:
      node = node[k]
    node[last] = value
  return dataclasses.replace(
      record, name=name, config=cfg, path=path or record.path,
      summary={**record.summary, "name": name, **(summary or {})},
      steps={**record.steps, **(steps or {})},
      epochs={**record.epochs, **(epochs or {})})


# The summary of a run folder of an earlier version: no data sizes.
EARLIER = {"n_train": None, "n_test": None}


def _figure_files(out):
  return sorted(p.name for p in (out / results.PLOTS).glob("*.png"))


def test_constant_step_sizes_are_stated_not_drawn(experiment, tmp_path):
  gd, momentum = _tiny_runs(experiment)
  assert report.logged_constant_step(gd) == pytest.approx(0.1)
  md = report.compare([gd, momentum], tmp_path / "a").read_text()
  assert "**Step sizes:** constant, 0.1 in every run (no figure)." in md
  assert "step_sizes.png" not in _figure_files(tmp_path / "a")
  slow = _altered(momentum, "slow", steps={
      "step_size": momentum.steps["step_size"] / 2})
  md = report.compare([gd, slow], tmp_path / "b").read_text()
  assert ("**Step sizes:** constant in every run (no figure): 0.1 (gd); "
          "0.05 (slow).") in md
  # A schedule: the figure.
  decayed = _altered(momentum, "decayed", steps={
      "step_size": 0.1 * 0.5 ** np.arange(len(momentum.steps["step"]))})
  assert report.logged_constant_step(decayed) is None
  md = report.compare([gd, decayed], tmp_path / "c").read_text()
  assert "](plots/step_sizes.png)" in md and "**Step sizes:**" not in md
  # A run's own report; an earlier report's figure goes.
  run_dir = tmp_path / "gd"
  shutil.copytree(gd.path, run_dir)
  (run_dir / results.PLOTS).mkdir(exist_ok=True)
  (run_dir / results.PLOTS / "step_size.png").write_bytes(b"stale")
  md = report.run_report(run_dir).read_text()
  assert "**Step size:** constant, 0.1 (no figure)." in md
  assert "step_size.png" not in md + " ".join(_figure_files(run_dir))


def test_no_wall_time_figure_for_runs_under_a_tenth_of_a_second(
    experiment, tmp_path):
  gd, momentum = _tiny_runs(experiment)
  fast = [_altered(r, r.name, summary={"run_time": t})
          for r, t in ((gd, 0.01), (momentum, 0.0995))]
  md = report.compare(fast, tmp_path / "fast").read_text()
  assert ("**Wall time:** no figure: every run took under 0.1 s in all (at "
          "most 0.0995 s)") in md
  assert "loss_time.png" not in _figure_files(tmp_path / "fast")
  slow = [fast[0], _altered(momentum, "momentum", summary={"run_time": 0.2})]
  md = report.compare(slow, tmp_path / "slow").read_text()
  assert "](plots/loss_time.png)" in md and "**Wall time:**" not in md


def test_data_sizes_are_those_the_run_trained_on(experiment):
  gd, _ = _tiny_runs(experiment)
  # tiny.yaml asks for 64 records; its smoke form has 48, 20% for testing.
  assert report.data_sizes(gd) == (38, 10)
  assert gd.epochs["step"][0] == 38 // 8  # minibatches of 8, the rest dropped
  # A folder of an earlier version records none.
  assert report.data_sizes(_altered(gd, "gd", summary=EARLIER)) is None


def test_losses_of_sum_and_mean_runs_are_drawn_per_record(experiment,
                                                         tmp_path, drawn):
  gd, _ = _tiny_runs(experiment)
  # The same run as if it summed its losses: per step over its batch of 8,
  # per epoch over the 38 training and 10 test records.
  summed = _altered(gd, "summed", config={"loss.reduction": "sum"}, steps={
      "loss": gd.steps["loss"] * 8}, epochs={
          "train_loss": gd.epochs["train_loss"] * 38,
          "test_loss": gd.epochs["test_loss"] * 10})
  md = report.compare([gd, summed], tmp_path).read_text()
  assert "### Loss per record against steps" in md
  assert "divided by the records in its step (gd: 1; summed: 8)" in md
  runs, kwargs, fig = drawn["loss_steps.png"]
  assert kwargs["ylabel"] == "loss per record"
  assert fig.axes[0].get_ylabel() == "loss per record"
  np.testing.assert_allclose(runs["summed"].steps["loss"], gd.steps["loss"])
  runs, kwargs, _ = drawn["loss_epochs.png"]
  assert kwargs["ylabel"] == "loss per record"
  for key in ("train_loss", "test_loss"):
    np.testing.assert_allclose(runs["summed"].epochs[key], gd.epochs[key])
  # One batch size: gradient evaluations as they are.
  runs, _, fig = drawn["loss_grad_evals.png"]
  assert fig.axes[0].get_xlabel() == "gradient evaluations"
  np.testing.assert_allclose(runs["summed"].epochs["grad_evals"],
                             gd.epochs["grad_evals"])


def _full_batch_sum(gd, **kwargs):
  """``gd`` as if it were full-batch GD summing over its 38 records."""
  return _altered(gd, "full", config={
      "loss.reduction": "sum", "train.regime.kind": "full_batch",
      "train.regime.batch_size": None}, steps={
          "loss": gd.steps["loss"] * 38}, **kwargs)


def test_full_batch_and_minibatch_compare_per_record_gradient(
    experiment, tmp_path, drawn):
  gd, _ = _tiny_runs(experiment)
  md = report.compare([gd, _full_batch_sum(gd)], tmp_path).read_text()
  assert "divided by the records in its step (gd: 1; full: 38)" in md
  assert "### Training loss against record-gradients" in md
  assert "records per evaluation: gd: 8; full: 38" in md
  runs, _, _ = drawn["loss_steps.png"]
  np.testing.assert_allclose(runs["full"].steps["loss"], gd.steps["loss"])
  runs, _, fig = drawn[
      "training loss against the work spent (record-gradients)"]
  assert fig.axes[0].get_xlabel().startswith("record-gradients")
  grads = np.asarray(gd.epochs["grad_evals"], float)
  np.testing.assert_allclose(runs["gd"].epochs["grad_evals"], grads * 8)
  np.testing.assert_allclose(runs["full"].epochs["grad_evals"], grads * 38)
  assert (tmp_path / "plots" / "loss_grad_evals.png").is_file()
  # A training set of unknown size (a folder of an earlier version, whose
  # summary does not record it): no figure that needs it.
  unknown = _full_batch_sum(gd, summary=EARLIER)
  md = report.compare([gd, unknown], tmp_path / "b").read_text()
  assert ("the training set of full is unknown (a folder of an earlier "
          "version records no data sizes), so they cannot be put per "
          "record.") in md
  assert "**Loss against epochs, work and wall time:** no figures" in md
  assert _figure_files(tmp_path / "b") == []
  # Mean losses, but work on batches of unknown size.
  mean = _altered(gd, "full", config={"train.regime.kind": "full_batch",
                                      "train.regime.batch_size": None},
                  summary=EARLIER)
  md = report.compare([gd, mean], tmp_path / "c").read_text()
  assert ("the training set of full is unknown (a folder of an earlier "
          "version records no data sizes), so they cannot be counted in "
          "record-gradients.") in md
  drawn_c = _figure_files(tmp_path / "c")
  assert "loss_steps.png" in drawn_c and "loss_grad_evals.png" not in drawn_c


def test_runs_on_different_problems_have_no_loss_figures(experiment,
                                                         tmp_path):
  gd, momentum = _tiny_runs(experiment)
  other = _altered(momentum, "moons", config={"data.name": "moons"})
  md = report.compare([gd, other], tmp_path / "a").read_text()
  assert ("**Loss figures:** none, runs on different problems; see the "
          "analysis figures (the runs differ in `data.name`") in md
  assert not {"loss_steps.png", "loss_epochs.png", "loss_grad_evals.png",
              "loss_time.png"} & set(_figure_files(tmp_path / "a"))
  assert "| moons |" in md and "| gd |" in md  # the table stays
  # Another draw of one problem: the loss figures stay.
  redrawn = _altered(momentum, "redrawn", config={"data.seed": 1})
  md = report.compare([gd, redrawn], tmp_path / "b").read_text()
  assert "](plots/loss_steps.png)" in md and "different problems" not in md


def test_compare_takes_a_sweep_folder_and_refuses_a_bare_path(swept,
                                                               tmp_path):
  md = report.compare([swept], tmp_path / "cmp").read_text()
  assert "## Per grid point" in md
  with pytest.raises(TypeError, match=r"run_dirs: expected a sequence"):
    report.compare(str(swept), tmp_path / "bad")
  with pytest.raises(TypeError, match=r"paths: expected a sequence"):
    report.run_folders(swept)


def test_report_of_an_experiment_folder_keeps_its_own_report(experiment,
                                                             tmp_path):
  folder = tmp_path / "exp"
  shutil.copytree(experiment, folder)
  own = (folder / "report.md").read_text()
  assert cli.main(["report", str(folder)]) == 0
  assert (folder / "report.md").read_text() == own
  assert "| run |" in (folder / "compare" / "report.md").read_text()


def test_a_report_written_again_copies_its_figures(experiment, tmp_path,
                                                   monkeypatch):
  # The figure cache: written again, a report draws no figure, and the
  # copies are the figures drawn afresh with the cache off.
  monkeypatch.setenv(figure_cache.ENV, str(tmp_path / "figure-cache"))
  outs = {}
  for name in ("first", "again", "off"):
    if name == "off":
      monkeypatch.setenv(figure_cache.ENV, "off")
    before = dict(figure_cache.counts)
    assert cli.main(["report", str(experiment), "--out",
                     str(tmp_path / name)]) == 0
    drawn = figure_cache.counts["drawn"] - before["drawn"]
    outs[name] = {p.relative_to(tmp_path / name): p.read_bytes()
                  for p in (tmp_path / name).rglob("*.png")}
    assert drawn == (0 if name == "again" else len(outs[name])), name
  assert outs["first"] and outs["first"] == outs["again"] == outs["off"]
