"""Test configuration: float64 everywhere, so derivative checks can be tight."""

import jax

jax.config.update("jax_enable_x64", True)
