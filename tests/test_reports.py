"""The comparison report of an experiment: its header, table and HTML page."""

import re

import pytest

from gdlab import config
from gdlab import report
from gdlab import run


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
