"""A diverged update in loss-only mini-batch training.

Without the update norm, ``gdlab.loop`` tests the update itself for
finiteness in every step.  The run must stop as ``diverged`` at the step
whose update is not finite, wherever the bad entry is, that update not
applied: as the run that tests every update through its norm.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gdlab import loop, models, stopping
from gdlab.objective import Objective

BAD_STEP = 19  # 0-based: the 4th step of the 3rd epoch of 8 steps


def _poisoned(entry: int) -> optax.GradientTransformation:
  """SGD whose update at step ``BAD_STEP`` is infinite at ``entry`` of the
  weights alone (``-1``: the last entry)."""
  def init(params):
    del params
    return jnp.zeros([], jnp.int32)

  def update(updates, count, params=None):
    del params
    w = updates["w"][0]
    mask = jnp.zeros(w.size, bool).at[entry].set(True).reshape(w.shape)
    bad = jnp.where(mask & (count == BAD_STEP), jnp.inf, 1.0)
    updates = jax.tree_util.tree_map(lambda u: -0.05 * u, updates)
    updates["w"][0] = bad * updates["w"][0]
    return updates, count + 1
  return optax.GradientTransformation(init, update)


@pytest.fixture(scope="module")
def problem():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(64, 3))
  y = x @ rng.normal(size=(3, 1)) + 0.1 * rng.normal(size=(64, 1))
  return Objective(models.linear_regression(3), "mse"), (x, y)


@pytest.mark.parametrize("entry", [0, 1, -1])
def test_loss_only_run_stops_where_the_update_diverged(problem, entry):
  objective, data = problem
  key = jax.random.PRNGKey(0)
  runs = {metrics: loop.fit(objective, _poisoned(entry), data, key=key,
                            regime=loop.Regime("minibatch", 8),
                            criteria=stopping.Criteria(max_epochs=6),
                            chunk_epochs=2, eval_every=1,
                            step_metrics=metrics, progress=False)
          for metrics in ("loss", "all")}
  lean = runs["loss"]
  assert lean.stop_reason == "diverged"
  assert lean.history.num_steps == BAD_STEP + 1
  assert int(lean.opt_state) == BAD_STEP  # the diverged step not applied
  # The parameters after BAD_STEP plain SGD steps on the same batches: those
  # of the run that tests every update through its norm.
  for a, b in zip(jax.tree_util.tree_leaves(lean.params),
                  jax.tree_util.tree_leaves(runs["all"].params)):
    assert np.all(np.isfinite(a))
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=0)
  np.testing.assert_allclose(lean.history.steps["loss"],
                             runs["all"].history.steps["loss"], rtol=1e-12)
  assert runs["all"].history.num_steps == BAD_STEP + 1
