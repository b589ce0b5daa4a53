"""The notebooks: as committed, and run top to bottom as a reader runs them.

As committed: each opens with its Colab badge and the same install cell,
both naming the repository of pyproject.toml, and carries the outputs of a
smoke-sized run (``make notebooks``): every code cell run in order, no
error, figures where the notebook draws them, no path of the machine that
ran it, and a size that stays small.

Run: every notebook, in a Jupyter kernel (nbclient) of the environment that
holds gdlab from its wheel (tests/test_wheel.py), from a folder outside the
checkout, install cell included, at smoke size.  The quickstart runs the
``default`` experiment in float32 (x64 off, as ``gdlab run`` runs it): its
summaries are compared with the numbers recorded before the orchestration
was restructured.
"""

import base64
import json
from pathlib import Path

import nbformat
import pytest

from test_experiments import check_recorded_summaries
from test_wheel import installed, notebook_runner, project, stdout

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# Notebooks that draw figures; their committed outputs must hold some.
WITH_FIGURES = {"instruments", "quickstart", "step_size_vs_curvature"}
MAX_TOTAL_BYTES = 1_500_000
MAX_IMAGE_BYTES = 150_000


def _read(path: Path) -> nbformat.NotebookNode:
  return nbformat.read(path, as_version=4)


def _code_cells(nb) -> list:
  return [c for c in nb.cells if c.cell_type == "code"]


def _repository() -> str:
  return project()["urls"]["Repository"]


def test_there_are_notebooks():
  names = {p.stem for p in NOTEBOOKS}
  assert {"quickstart", "backprop_by_hand", "step_size_vs_curvature"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_opens_with_its_colab_badge(path):
  owner_repo = _repository().removeprefix("https://github.com/")
  first = _read(path).cells[0]
  assert first.cell_type == "markdown"
  assert first.source.startswith("[![Open In Colab]")
  assert (f"(https://colab.research.google.com/github/{owner_repo}/blob/main/"
          f"notebooks/{path.name})") in first.source


def test_notebooks_share_one_install_cell():
  cells = {_code_cells(_read(p))[0].source for p in NOTEBOOKS}
  assert len(cells) == 1, "the notebooks' first code cells differ"
  (cell,) = cells
  assert f'REPO = "{_repository()}"' in cell
  assert '%pip install -q "gdlab @ git+{REPO}"' in cell


def test_readme_names_each_notebook_and_the_repository():
  readme = (ROOT / "README.md").read_text()
  owner_repo = _repository().removeprefix("https://github.com/")
  assert f'pip install "gdlab @ git+{_repository()}"' in readme
  assert "make notebooks" in readme
  for path in NOTEBOOKS:
    assert (f"https://colab.research.google.com/github/{owner_repo}/blob/"
            f"main/notebooks/{path.name}") in readme, path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_carries_its_outputs(path):
  nb = _read(path)
  cells = _code_cells(nb)
  assert [c.execution_count for c in cells] == list(range(1, len(cells) + 1))
  outputs = [o for c in cells for o in c.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  text = json.dumps(outputs)
  for machine_path in (str(ROOT), "/tmp/", "site-packages"):
    assert machine_path not in text, machine_path
  images = [base64.b64decode(o.data["image/png"]) for o in outputs
            if "image/png" in o.get("data", {})]
  assert bool(images) == (path.stem in WITH_FIGURES)
  assert all(len(image) < MAX_IMAGE_BYTES for image in images)


def test_notebooks_stay_small():
  total = sum(p.stat().st_size for p in NOTEBOOKS)
  assert total < MAX_TOTAL_BYTES, f"{total:,} bytes"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path, tmp_path_factory):
  wheel_env = installed(tmp_path_factory)
  nb = _read(path)
  # One more cell: which gdlab the kernel imported.
  nb.cells.append(nbformat.v4.new_code_cell(
      "import gdlab\nprint(gdlab.__file__)"))
  copy = tmp_path / path.name
  nbformat.write(nb, copy)
  env = dict(wheel_env.env, GDLAB_SMOKE="1", GDLAB_OUT=str(tmp_path / "out"))
  done = notebook_runner()(copy, python=str(wheel_env.python), cwd=tmp_path,
                           env=env)
  imported = Path(stdout(done.cells[-1]).strip()).resolve()
  assert imported.is_relative_to(wheel_env.venv.resolve()), imported
  if path.stem == "quickstart":
    check_recorded_summaries("default", tmp_path / "out" / "default")

