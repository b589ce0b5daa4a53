"""Test configuration: float64 everywhere, so derivative checks can be tight.

A module (or test) marked ``strict_promotion`` runs under
``jax.numpy_dtype_promotion("strict")``, so an implicit mix of dtypes (float32
with float64, a Python float with an integer array) fails instead of being
silently promoted.  Unmarked tests keep JAX's standard promotion.
"""

import jax
import pytest

jax.config.update("jax_enable_x64", True)


def pytest_configure(config):
  config.addinivalue_line(
      "markers", "strict_promotion: run under "
      "jax.numpy_dtype_promotion('strict') (implicit dtype mixes raise)")


@pytest.fixture(autouse=True)
def _dtype_promotion(request):
  """Strict dtype promotion for tests marked ``strict_promotion``."""
  if request.node.get_closest_marker("strict_promotion") is None:
    yield
    return
  with jax.numpy_dtype_promotion("strict"):
    yield
