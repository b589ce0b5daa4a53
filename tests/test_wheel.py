"""gdlab as a user installs it: from its wheel, away from the checkout.

Built once per test run (:func:`installed`): the checkout's wheel, from
a copy of the files the build reads (so the build writes nothing into the
checkout, and no stale ``build/`` folder leaks into the wheel), with the
setuptools of this environment (``--no-build-isolation``: nothing is
fetched); then a fresh virtual environment with no pip of its own, and the
wheel installed into it with ``pip install --no-deps``.  The dependencies
are this environment's, not downloaded again: a ``.pth`` file in the new
environment names this one's site-packages.  Python appends that folder
after the new environment's own, so ``gdlab`` comes from the wheel, and
does not read the ``.pth`` files inside it, so the editable install's
finder there stays off.

From a folder outside the checkout, the tests run ``gdlab list`` and
``gdlab run default --smoke``, and the notebooks' install cell from a copy
of the checkout; tests/test_notebooks.py runs every notebook in a kernel of
the same environment.
"""

from __future__ import annotations

import fcntl
import functools
import importlib.util
import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import NamedTuple

import nbformat
import pytest

from gdlab import config
from test_experiments import check_recorded_summaries

try:
  import tomllib
except ModuleNotFoundError:  # Python 3.10
  tomllib = None

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = sorted(p.stem for p in (ROOT / "experiments").glob("*.yaml"))
# What the build reads: the project's metadata, the package, the experiments.
BUILD_INPUTS = ("pyproject.toml", "setup.py", "README.md", "gdlab",
                "experiments")
TIMEOUT_S = 600


class Installed(NamedTuple):
  """A fresh environment holding gdlab from its wheel."""
  wheel: Path
  venv: Path
  python: Path
  env: dict[str, str]  # for its processes: no PYTHONPATH into the checkout


def copy_checkout(dest: Path) -> Path:
  """The files the build reads, copied to ``dest`` (caches left out)."""
  dest.mkdir(parents=True)
  for name in BUILD_INPUTS:
    source = ROOT / name
    if source.is_dir():
      shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns(
          "__pycache__", "*.pyc"))
    else:
      shutil.copy2(source, dest / name)
  return dest


def _run(argv, **kwargs) -> subprocess.CompletedProcess:
  out = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                       timeout=TIMEOUT_S, check=False, **kwargs)
  assert out.returncode == 0, (argv, out.stdout[-3000:], out.stderr[-3000:])
  return out


def fresh_venv(path: Path) -> Path:
  """A virtual environment without pip or gdlab that imports this one's
  packages (the ``.pth`` file of the module docstring); its Python."""
  _run([sys.executable, "-m", "venv", "--without-pip", path])
  python = path / "bin" / "python"
  purelib = _run([python, "-c", "import sysconfig; "
                  "print(sysconfig.get_path('purelib'))"]).stdout.strip()
  (Path(purelib) / "_gdlab_test_dependencies.pth").write_text(
      "\n".join(site.getsitepackages()) + "\n")
  return python


def environment() -> dict[str, str]:
  """This process's environment without PYTHONPATH (which could point at the
  checkout); the compilation cache and XLA flags of the tests stay."""
  return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


@functools.cache
def _install(base: Path) -> Installed:
  """Builds the environment in ``base`` once: the first process to take the
  lock builds, the others wait and find it done."""
  base.mkdir(exist_ok=True)
  wheels, venv = base / "dist", base / "venv"
  with open(base / "lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not (base / "done").exists():
      source = copy_checkout(base / "source")
      _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
            "--no-build-isolation", "--no-index", "--wheel-dir", wheels,
            source])
      python = fresh_venv(venv)
      _run([python, "-m", "pip", "install", "--quiet", "--no-deps",
            "--no-index", *wheels.glob("gdlab-*.whl")], env=environment())
      (base / "done").touch()
  (wheel,) = wheels.glob("gdlab-*.whl")
  return Installed(wheel, venv, venv / "bin" / "python", environment())


def installed(tmp_path_factory) -> Installed:
  """The environment of the module docstring, built once per test run (the
  pytest workers share it, as they share the compilation cache)."""
  base = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    base = base.parent  # the run's folder, above the workers' own
  return _install(base / "wheel")


@pytest.fixture(name="wheel_env", scope="session")
def _wheel_env(tmp_path_factory) -> Installed:
  return installed(tmp_path_factory)


@functools.cache
def notebook_runner():
  """``execute`` of notebooks/execute.py, the runner of ``make notebooks``."""
  spec = importlib.util.spec_from_file_location(
      "gdlab_notebooks_execute", ROOT / "notebooks" / "execute.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.execute


def stdout(cell) -> str:
  """What a run cell printed on standard output."""
  return "".join(o["text"] for o in cell.outputs if o.get("name") == "stdout")


def project() -> dict:
  """The ``[project]`` table of pyproject.toml."""
  if tomllib is None:
    pytest.skip("reading pyproject.toml needs tomllib (Python 3.11 or newer)")
  return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_the_wheel_carries_the_experiments_inside_the_package(wheel_env):
  names = zipfile.ZipFile(wheel_env.wheel).namelist()
  assert sorted(n for n in names if n.startswith("gdlab/experiments/")) == [
      f"gdlab/experiments/{name}.yaml" for name in EXPERIMENTS]
  # Nothing lands beside the package in site-packages.
  assert {n.split("/")[0] for n in names} == {
      "gdlab", wheel_env.wheel.name.split("-py3")[0] + ".dist-info"}


def test_the_wheel_declares_the_license_and_the_repository(wheel_env):
  with zipfile.ZipFile(wheel_env.wheel) as whl:
    (path,) = [n for n in whl.namelist() if n.endswith(".dist-info/METADATA")]
    lines = whl.read(path).decode().splitlines()
  table = project()
  assert f"License-Expression: {table['license']}" in lines
  for label, url in table["urls"].items():
    assert f"Project-URL: {label}, {url}" in lines


def test_gdlab_imports_from_the_wheel(wheel_env, tmp_path):
  # Where each import would come from (found, not run: no JAX start-up).
  out = _run([wheel_env.python, "-c", "import importlib.util as u; "
              "print(u.find_spec('gdlab').origin); "
              "print(u.find_spec('jax').origin)"], cwd=tmp_path,
             env=wheel_env.env)
  package, jax_file = (Path(line).resolve() for line in out.stdout.split())
  venv = wheel_env.venv.resolve()
  assert package.is_relative_to(venv), package
  assert (package.parent / "experiments" / "default.yaml").is_file()
  assert not jax_file.is_relative_to(venv)  # this environment's


def test_gdlab_list_shows_every_experiment(wheel_env, tmp_path):
  out = _run([wheel_env.venv / "bin" / "gdlab", "list"], cwd=tmp_path,
             env=wheel_env.env)
  lines = out.stdout.splitlines()
  assert [line.split()[0] for line in lines] == EXPERIMENTS
  assert all(len(line.split()) > 1 for line in lines)  # and its question


def test_gdlab_run_default_smoke_writes_a_full_folder(wheel_env, tmp_path):
  _run([wheel_env.venv / "bin" / "gdlab", "run", "default", "--smoke",
        "--out", "out"], cwd=tmp_path, env=wheel_env.env)
  out = tmp_path / "out"
  assert (out / "report.md").read_text().startswith("# default")
  assert list((out / "plots").glob("*.png"))
  variants = config.load(ROOT / "experiments" / "default.yaml").variants
  assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(variants)
  for name in variants:
    run = out / "runs" / name
    for file in ("config.yaml", "metrics.jsonl", "summary.json"):
      assert (run / file).stat().st_size > 0, (name, file)
    assert json.loads((run / "summary.json").read_text())["name"] == name
  check_recorded_summaries("default", out)


def test_the_install_cell_installs_a_checkout(tmp_path):
  """Where gdlab is missing and the notebook sits in a checkout, the first
  cell installs that checkout, and this kernel imports it at once."""
  execute = notebook_runner()
  checkout = copy_checkout(tmp_path / "checkout")
  (checkout / "notebooks").mkdir()
  python = fresh_venv(tmp_path / "venv")
  nb = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
  install = next(c for c in nb.cells if c.cell_type == "code")
  check = nbformat.v4.new_code_cell(
      "import gdlab, gdlab.catalog\n"
      "print(gdlab.__file__)\nprint(gdlab.catalog.experiments_dir())")
  nb.cells = [install, check]
  path = checkout / "notebooks" / "install.ipynb"
  nbformat.write(nb, path)
  # Offline: the build backend and the dependencies are this environment's
  # (pip reads PIP_NO_BUILD_ISOLATION=0 as --no-build-isolation).
  env = dict(environment(), PIP_NO_INDEX="1", PIP_NO_BUILD_ISOLATION="0")
  done = execute(path, python=str(python), env=env)
  package, experiments = (Path(line).resolve()
                          for line in stdout(done.cells[-1]).split())
  assert package == checkout.resolve() / "gdlab" / "__init__.py"
  assert experiments == checkout.resolve() / "experiments"
