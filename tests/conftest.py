"""Test configuration: float64 everywhere, so derivative checks can be tight.

A module (or test) marked ``strict_promotion`` runs under
``jax.numpy_dtype_promotion("strict")``, so an implicit mix of dtypes (float32
with float64, a Python float with an integer array) fails instead of being
silently promoted.  Unmarked tests keep JAX's standard promotion.

The persistent compilation cache that ``gdlab.fit`` and the ``gdlab`` command
turn on lives in this session's temporary folder, shared by the pytest
workers and the processes the tests start: a test suite never reads or fills
the user's own cache, and a program compiled by one test process is read back
by the next.  ``GDLAB_COMPILATION_CACHE=off`` set by the user turns it off for
the tests too.  Data sets that gdlab caches (MNIST-1D, scikit-learn's) and
the figure cache live in the same session folder, never in the user's.

XLA compiles the suite's programs at LLVM optimisation level 0 and, where
this XLA knows the option, without its CPU fusion emitters (the options of
``helpers.FAST_COMPILE`` and of ``gdlab check-grads``): they compile several
times faster and agree with the default options to rounding error.  It also
generates each program's code in one part, not split for several threads:
with a worker per core, the split only adds work.  NumPy's BLAS runs one
thread per process, for the same reason.  The flags go into ``XLA_FLAGS``
before JAX starts its backend, so every process a test starts compiles the
same way; comparisons bit for bit are between programs compiled alike.
``GDLAB_TEST_XLA_DEFAULTS=1`` runs the suite with XLA's default options
instead.
"""

import importlib.util
import mmap
import os
import subprocess
import sys
from pathlib import Path

# One pytest worker per core: NumPy's BLAS threads, which spin while they
# wait for work, would only take time from the other worker.  The workers
# and every process the tests start inherit it before they load NumPy.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# Imports JAX without starting its backend.
import helpers  # pylint: disable=wrong-import-position

# The one flag of helpers.FAST_COMPILE that every XLA knows.
KNOWN_FLAG = "xla_backend_optimization_level"


def _named_in_jaxlib(name: str) -> bool | None:
  """Whether jaxlib's compiled libraries hold ``name`` (an XLA flag is
  known exactly when its definition, which holds its name, is compiled
  in); None when there are none to read."""
  spec = importlib.util.find_spec("jaxlib")
  libraries = [p for folder in (spec.submodule_search_locations or ())
               for p in Path(folder).rglob("*.so*") if p.is_file()]
  found = False
  for library in libraries:
    try:
      with open(library, "rb") as f, mmap.mmap(
          f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if data.find(name.encode()) >= 0:
          return True
      found = True
    except (OSError, ValueError):  # unreadable, or empty
      continue
  return False if found else None


def _known_to_xla(flag: str) -> bool:
  """Whether this XLA accepts ``flag`` (an unknown one aborts the process):
  read off jaxlib's libraries, else tried in a process of its own."""
  named = _named_in_jaxlib(flag.removeprefix("--").split("=")[0])
  if named is not None:
    return named
  env = dict(os.environ, XLA_FLAGS=flag, JAX_PLATFORMS="cpu")
  probe = subprocess.run(
      [sys.executable, "-c",
       "import jax; jax.numpy.zeros(1).block_until_ready()"],
      env=env, capture_output=True, timeout=120, check=False)
  return probe.returncode == 0


def _quick_xla_flags() -> None:
  """Adds ``helpers.FAST_COMPILE`` to ``XLA_FLAGS`` (see the module doc)."""
  flags = os.environ.get("XLA_FLAGS", "")
  if (os.environ.get("GDLAB_TEST_XLA_DEFAULTS") == "1"
      or f"--{KNOWN_FLAG}=" in flags):  # set already (a pytest worker)
    return
  quick = [f"--{k}={str(v).lower()}" for k, v in helpers.FAST_COMPILE.items()]
  quick = [f for f in quick
           if f.startswith(f"--{KNOWN_FLAG}=") or _known_to_xla(f)]
  os.environ["XLA_FLAGS"] = " ".join([flags, *quick]).strip()


# Before JAX starts its backend (importing JAX and gdlab does not).
_quick_xla_flags()

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

from gdlab import compilation_cache  # pylint: disable=wrong-import-position
from gdlab.data import cache as data_cache  # pylint: disable=wrong-import-position
from gdlab.plots import _cache as figure_cache  # pylint: disable=wrong-import-position

jax.config.update("jax_enable_x64", True)


def pytest_configure(config):
  config.addinivalue_line(
      "markers", "strict_promotion: run under "
      "jax.numpy_dtype_promotion('strict') (implicit dtype mixes raise)")


def _session_folder(tmp_path_factory, env: str, name: str):
  """Points ``env`` at ``name`` in the run's temporary folder (shared by the
  pytest workers and the processes the tests start) for the session, then
  restores it; yields the folder."""
  previous = os.environ.get(env)
  base = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    base = base.parent  # the run's folder, above the workers' own
  folder = base / name
  folder.mkdir(exist_ok=True)
  os.environ[env] = str(folder)
  yield folder
  if previous is None:
    del os.environ[env]
  else:
    os.environ[env] = previous


@pytest.fixture(scope="session", autouse=True)
def _compilation_cache(tmp_path_factory):
  """This session's persistent compilation cache (see the module doc)."""
  if compilation_cache.folder() is None:
    yield None  # turned off by the user: the tests run without it
    return
  yield from _session_folder(tmp_path_factory, compilation_cache.ENV,
                             "compilation-cache")


@pytest.fixture(scope="session", autouse=True)
def _data_cache(tmp_path_factory):
  """Data sets that gdlab caches (MNIST-1D, scikit-learn's) are kept in this
  session's temporary folder: the tests never fill the user's cache."""
  yield from _session_folder(tmp_path_factory, data_cache.ENV, "data-cache")


@pytest.fixture(scope="session", autouse=True)
def _figure_cache(tmp_path_factory):
  """Figures that gdlab caches are kept in this session's temporary folder:
  a figure drawn by one test is copied by the next that saves it.
  ``GDLAB_FIGURE_CACHE=off`` set by the user draws every figure."""
  if figure_cache.folder() is None:
    yield None
    return
  yield from _session_folder(tmp_path_factory, figure_cache.ENV,
                             "figure-cache")


@pytest.fixture(autouse=True)
def _dtype_promotion(request):
  """Strict dtype promotion for tests marked ``strict_promotion``."""
  if request.node.get_closest_marker("strict_promotion") is None:
    yield
    return
  with jax.numpy_dtype_promotion("strict"):
    yield
