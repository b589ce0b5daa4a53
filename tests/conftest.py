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
the tests too.
"""

import os

import jax
import pytest

from gdlab import compilation_cache

jax.config.update("jax_enable_x64", True)


def pytest_configure(config):
  config.addinivalue_line(
      "markers", "strict_promotion: run under "
      "jax.numpy_dtype_promotion('strict') (implicit dtype mixes raise)")


@pytest.fixture(scope="session", autouse=True)
def _compilation_cache(tmp_path_factory):
  """This session's persistent compilation cache (see the module doc)."""
  if compilation_cache.folder() is None:
    yield None  # turned off by the user: the tests run without it
    return
  previous = os.environ.get(compilation_cache.ENV)
  base = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    base = base.parent  # the run's folder, above the workers' own
  folder = base / "compilation-cache"
  folder.mkdir(exist_ok=True)
  os.environ[compilation_cache.ENV] = str(folder)
  yield folder
  if previous is None:
    del os.environ[compilation_cache.ENV]
  else:
    os.environ[compilation_cache.ENV] = previous


@pytest.fixture(autouse=True)
def _dtype_promotion(request):
  """Strict dtype promotion for tests marked ``strict_promotion``."""
  if request.node.get_closest_marker("strict_promotion") is None:
    yield
    return
  with jax.numpy_dtype_promotion("strict"):
    yield
