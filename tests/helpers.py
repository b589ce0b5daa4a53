"""Problems, seeds and comparisons shared by the core-library tests.

Random problems for the gradient checks are drawn with NumPy from fixed
integer seeds: a JAX random draw compiles once per shape, and the tables of
networks have dozens of shapes, so the draws cost more than the checks.  The
parameter tree comes from ``model.init`` traced abstractly
(``jax.eval_shape``), so it is exactly the tree ``init`` returns, without
compiling ``init`` once per network.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from gdlab import losses

# XLA options for the tests' own check programs.  Such a program runs once or
# a few times, so its compile time is its cost; without fusion emitters and
# at optimisation level 0 XLA's CPU backend compiles it several times faster,
# and the results agree with the default options to rounding error.
FAST_COMPILE = {"xla_cpu_use_fusion_emitters": False,
                "xla_backend_optimization_level": 0}


def jit_once(fn, **kwargs):
  """``jax.jit`` with :data:`FAST_COMPILE`, for a test's one-off program."""
  return jax.jit(fn, compiler_options=FAST_COMPILE, **kwargs)


# ----------------------------------------------------------------------------
# Random problems for the gradient checks.


def rng(*seed: int) -> np.random.Generator:
  """A NumPy generator from fixed integers (a table index, a case index...)."""
  return np.random.default_rng(list(seed))


def random_params(model, gen: np.random.Generator, jitter: float = 0.5):
  """Parameters with the tree and dtypes of ``model.init``, drawn with NumPy.

  Weights are Glorot normal (variance ``2 / (n_in + n_out)``, the MLP's
  default initialisation) and biases zero, as ``init`` draws them; then every
  leaf gets ``jitter`` times a standard normal, so that biases are non-zero
  and no unit sits exactly at a kink (as ``gdlab.gradcheck.random_problem``
  does).
  """
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0))
  paths_and_leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)
  leaves = []
  for path, leaf in paths_and_leaves:
    is_weight = jax.tree_util.keystr(path).startswith("['w']")
    std = math.sqrt(2.0 / sum(leaf.shape)) if is_weight else 0.0
    value = (std * gen.standard_normal(leaf.shape) +
             jitter * gen.standard_normal(leaf.shape))
    leaves.append(jnp.asarray(value, leaf.dtype))
  return jax.tree_util.tree_unflatten(treedef, leaves)


def random_labels(loss: str, gen: np.random.Generator, n: int, k: int,
                  dtype) -> jax.Array:
  """Labels of the kind ``loss`` takes, for ``n`` records and ``k`` outputs."""
  kind = losses.get(loss).labels
  if kind == "real":
    return jnp.asarray(gen.standard_normal((n, k)), dtype)
  if kind == "binary":
    return jnp.asarray(gen.integers(0, 2, (n, k)), dtype)
  if kind == "sign":
    return jnp.asarray(2 * gen.integers(0, 2, (n, k)) - 1, dtype)
  return jnp.asarray(gen.integers(0, k, (n,)), jnp.int32)


def random_problem(model, loss: str, *seed: int, n: int = 8,
                   jitter: float = 0.5):
  """``(params, x, y)`` for ``model`` and ``loss`` from fixed integer seeds."""
  gen = rng(*seed)
  params = random_params(model, gen, jitter)
  dtype = jax.tree_util.tree_leaves(params)[0].dtype
  x = jnp.asarray(gen.standard_normal((n, model.sizes[0])), dtype)
  y = random_labels(loss, gen, n, model.sizes[-1], dtype)
  return params, x, y


def max_rel_error(g_manual, g_auto) -> float:
  """The largest leafwise relative error of ``g_manual`` against ``g_auto``.

  ``max|a - b| / max(max|a|, max|b|, floor)`` per leaf with
  ``floor = 1e-4 * max|g_auto|`` over the whole tree, the measure of
  ``gdlab.gradcheck.relative_errors``, computed in NumPy on the host.
  """
  a = [np.asarray(g) for g in jax.tree_util.tree_leaves(g_manual)]
  b = [np.asarray(g) for g in jax.tree_util.tree_leaves(g_auto)]
  assert len(a) == len(b)
  floor = 1e-4 * max(float(np.max(np.abs(g))) for g in b)
  worst = 0.0
  for x, y in zip(a, b):
    num = float(np.max(np.abs(x - y)))
    den = max(float(np.max(np.abs(x))), float(np.max(np.abs(y))), floor)
    worst = max(worst, num / den if den > 0 else num)
  return worst
