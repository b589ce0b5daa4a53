"""The compiled training chunk never talks to the host while it runs.

For each data regime and each optimizer family, the chunk program of
``gdlab.fit`` runs under ``jax.transfer_guard("disallow")`` with its inputs
already on the device (any implicit host-to-device or device-to-host
transfer raises), and its compiled HLO holds no host callback, infeed,
outfeed, send or receive.  What holds on the CPU here holds on a GPU or TPU:
the program is the same, only compiled for another backend.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gdlab
from gdlab import loop, optim, stopping

# Ops that would reach the host from inside a compiled program.
HOST_OPS = ("callback", "outfeed", "infeed", " send(", " recv(",
            "send-done", "recv-done", "host_compute")

OPTIMIZERS = {
    "gd": lambda: optim.gradient_descent(0.1),
    "momentum": lambda: optim.gradient_descent(0.02, momentum=0.9),
    "heavy_ball": lambda: optim.heavy_ball(0.1, 0.5),
    "armijo": lambda: optim.steepest_descent(
        optim.backtracking_linesearch(store_grad=True)),
    "wolfe": lambda: optim.steepest_descent(
        optim.wolfe_linesearch(store_grad=True)),
    "subgradient": lambda: optim.subgradient_descent(
        optim.square_summable(0.5, 1.0)),
    "adam": lambda: optax.adam(1e-2),
}
REGIMES = {
    "full_batch": loop.Regime("full_batch"),
    "minibatch": loop.Regime("minibatch", 16),
    "sgd": loop.Regime("sgd"),
}
CASES = [(o, "full_batch") for o in OPTIMIZERS] + [
    ("gd", "minibatch"), ("momentum", "sgd"), ("adam", "minibatch"),
    ("subgradient", "sgd")]


@pytest.mark.parametrize("opt_name,regime_name", CASES)
def test_a_chunk_runs_without_host_transfers(opt_name, regime_name):
  gen = np.random.default_rng(0)
  x = gen.normal(size=(48, 3)).astype(np.float32)
  y = (x @ np.asarray([1.0, -2.0, 0.5], np.float32))[:, None]
  model = gdlab.mlp((3, 8, 1), activation="tanh", dtype=jnp.float32)
  objective = gdlab.Objective(model, "mse", "mean")
  optimizer = OPTIMIZERS[opt_name]()
  regime = REGIMES[regime_name]
  plan, numbers = loop.make_plan(
      objective, optimizer, regime, stopping.Criteria(max_epochs=2),
      n_train=32, chunk_epochs=2, has_test=True, n_test=16, eval_every=1)
  data = jax.device_put(loop.Data(x[:32], y[:32], x[32:], y[32:]))
  numbers = jax.device_put(numbers)
  carry = loop.own_buffers(loop.initial_carry(objective, optimizer,
                                              jax.random.PRNGKey(0)))
  program, _ = loop.compiled_chunk(plan, carry, data, numbers)
  hlo = program.as_text().lower()
  assert not [op for op in HOST_OPS if op in hlo], opt_name
  with jax.transfer_guard("disallow"):
    out = program(carry, data, numbers)
    jax.block_until_ready(out)
  new_carry, epochs, steps = out
  assert int(new_carry.epoch) == 2
  assert np.all(np.isfinite(np.asarray(steps["loss"])))
  del epochs


def test_donation_leaves_the_callers_arrays_valid():
  """The chunk program takes its carry's buffers; a caller's parameters and
  a carry passed back in (to continue a run) stay usable."""
  gen = np.random.default_rng(1)
  x = gen.normal(size=(32, 3)).astype(np.float32)
  y = x[:, :1] - x[:, 1:2]
  model = gdlab.mlp((3, 4, 1), activation="tanh", dtype=jnp.float32)
  objective = gdlab.Objective(model, "mse", "mean")
  params = model.init(jax.random.PRNGKey(0))
  kwargs = dict(key=jax.random.PRNGKey(0), progress=False,
                criteria=stopping.Criteria(max_epochs=2))
  first = gdlab.fit(objective, optim.gradient_descent(0.1), (x, y),
                    params=params, **kwargs)
  again = gdlab.fit(objective, optim.gradient_descent(0.1), (x, y),
                    carry=first.carry, history=first.history, **kwargs)
  for tree in (params, first.carry, again.carry):
    for leaf in jax.tree_util.tree_leaves(tree):
      assert not leaf.is_deleted()
      np.asarray(leaf)
  # The same carry held once: own_buffers copies a buffer met twice.
  a = jnp.zeros(3)
  owned = loop.own_buffers({"u": a, "v": a})
  assert owned["u"] is a and owned["v"] is not a
