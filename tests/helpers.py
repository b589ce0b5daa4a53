"""Problems, seeds, compiled runners and comparisons shared by the tests.

* :func:`jit_once` compiles a test's own program (a training run, a check)
  with XLA options that compile several times faster: such a program runs
  once or a few times, so its compile time is its cost.
* Random problems for the gradient checks are drawn with NumPy from fixed
  integer seeds: a JAX random draw compiles once per shape, and the tables
  of networks have dozens of shapes, so the draws would cost more than the
  checks.  The parameter tree comes from ``model.init`` traced abstractly
  (``jax.eval_shape``), so it is exactly the tree ``init`` returns, without
  compiling ``init`` once per network.
* :data:`PROBLEMS` are the smooth test functions the optimizer tests share,
  and :func:`run_scan` / :func:`run_eager` the loops that run an optax
  transformation on them, compiled and op by op.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gdlab import gradcheck
from gdlab import losses

# ----------------------------------------------------------------------------
# Compiled programs.

# Without fusion emitters and at optimisation level 0, XLA's CPU backend
# compiles a small program several times faster (the settings of
# gdlab.gradcheck's programs); the results agree with the default options to
# rounding error, and the bit-for-bit comparisons in the tests compare two
# programs compiled alike.  The suite runs one pytest worker per core, so
# splitting a program's code generation into parts for several threads only
# adds work: in one part, XLA compiles the suite's programs with about a
# fifth less CPU time, to the same results (a smoke run's parameters agree
# bit for bit).
FAST_COMPILE = {**gradcheck.CPU_COMPILER_OPTIONS,
                "xla_cpu_parallel_codegen_split_count": 1}


@functools.cache
def _compiler_options() -> dict[str, Any] | None:
  """The options of :data:`FAST_COMPILE` that this XLA knows, on a CPU."""
  if jax.default_backend() != "cpu":
    return None
  known = {}
  for name, value in FAST_COMPILE.items():
    try:
      jax.jit(lambda x: x, compiler_options={name: value})(np.zeros(()))
    except RuntimeError:  # "No such compile option" on other XLA versions.
      continue
    known[name] = value
  return known or None


def jit_once(fn: Callable[..., Any], **kwargs) -> Callable[..., Any]:
  """``jax.jit`` with :data:`FAST_COMPILE` (on CPU), for a test's own program.

  Only for a top-level program: JAX rejects compiler options on a ``jit``
  nested in another.
  """
  return jax.jit(fn, compiler_options=_compiler_options(), **kwargs)


# ----------------------------------------------------------------------------
# Random problems for the gradient checks.


def rng(*seed: int) -> np.random.Generator:
  """A NumPy generator from fixed integers (a table index, a case index...)."""
  return np.random.default_rng(list(seed))


@functools.lru_cache(maxsize=None)
def _init_shapes(model):
  """``model.init``'s leaves (with their paths) and tree, traced once."""
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0))
  return jax.tree_util.tree_flatten_with_path(shapes)


def random_params(model, gen: np.random.Generator, jitter: float = 0.5):
  """Parameters with the tree and dtypes of ``model.init``, drawn with NumPy.

  Weights are Glorot normal (variance ``2 / (n_in + n_out)``, the MLP's
  default initialisation) and biases zero, as ``init`` draws them; then every
  leaf gets ``jitter`` times a standard normal, so that biases are non-zero
  and no unit sits exactly at a kink (as ``gdlab.gradcheck.random_problem``
  does).
  """
  paths_and_leaves, treedef = _init_shapes(model)
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


# ----------------------------------------------------------------------------
# Smooth problems and the loops that run optimizers on them.


class Problem(NamedTuple):
  """An objective ``fn(params) -> scalar`` and a starting point."""
  fn: Callable[[Any], jax.Array]
  start: Any


def rosenbrock(x):
  """Rosenbrock's function of two variables; its minimum is 0 at (1, 1)."""
  return (1.0 - x[0])**2 + 100.0 * (x[1] - x[0]**2)**2


def smooth_tree(p):
  """A non-quadratic objective on a pytree (a dict of two arrays)."""
  return (jnp.sum(jnp.log(jnp.cosh(p["w"] - 0.3))) +
          0.25 * jnp.sum(p["b"] ** 4) + jnp.sum(p["w"][:2] * p["b"]))


def _logistic() -> Problem:
  """Non-separable logistic regression with a small ridge; params are a dict."""
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.normal(k1, (200, 10))
  labels = jnp.sign(x @ jax.random.normal(k2, (10,)) +
                    0.5 * jax.random.normal(k3, (200,)))

  def loss(p):
    margins = labels * (x @ p["w"] + p["b"])
    return jnp.mean(jnp.logaddexp(0.0, -margins)) + 5e-4 * jnp.sum(p["w"]**2)

  return Problem(loss, {"w": jnp.zeros(10), "b": jnp.zeros(())})


# Built on first use (the logistic data are drawn by a compiled program).
PROBLEMS: dict[str, Callable[[], Problem]] = {
    "rosenbrock": lambda: Problem(rosenbrock, jnp.array([-1.2, 1.0])),
    "logistic": _logistic,
    "smooth_tree": lambda: Problem(smooth_tree, {
        "w": jnp.array([1.0, -2.0, 0.5]), "b": jnp.array([0.7, -1.1])}),
}


@functools.cache
def problem(name: str) -> Problem:
  """The problem ``name`` of :data:`PROBLEMS`, the same object every call."""
  return PROBLEMS[name]()


def scan_updates(opt, grad_fn, x0, num_steps: int):
  """``num_steps`` updates of ``opt`` with ``grad_fn`` in ``lax.scan``.

  Returns the final state and the iterates ``x_1, ..., x_N`` stacked.
  Traceable: the body of :func:`run_scan`, and of a caller's own ``jit``.
  """
  def step(carry, _):
    x, state = carry
    updates, state = opt.update(grad_fn(x), state, x)
    x = optax.apply_updates(x, updates)
    return (x, state), x

  (_, state), xs = jax.lax.scan(step, (x0, opt.init(x0)), None,
                                length=num_steps)
  return state, xs


def run_scan(opt, grad_fn, x0, num_steps: int):
  """:func:`scan_updates` as one compiled program (:func:`jit_once`)."""
  return jit_once(lambda x0: scan_updates(opt, grad_fn, x0, num_steps))(x0)


def run_eager(opt, grad_fn, x0, num_steps: int):
  """The same loop in plain Python, op by op; returns state and iterates."""
  x, state, xs = x0, opt.init(x0), []
  for _ in range(num_steps):
    updates, state = opt.update(grad_fn(x), state, x)
    x = optax.apply_updates(x, updates)
    xs.append(x)
  return state, xs


# ----------------------------------------------------------------------------
# Run folders compared across processes.

# What differs between two runs of the same config: how long things took.
TIMING_FIELDS = frozenset({"time", "compile_time", "run_time",
                           "steps_per_second"})


def without_timing(obj):
  """A JSON value with every timing field (:data:`TIMING_FIELDS`) removed."""
  if isinstance(obj, dict):
    return {k: without_timing(v) for k, v in obj.items()
            if k not in TIMING_FIELDS}
  if isinstance(obj, list):
    return [without_timing(v) for v in obj]
  return obj
