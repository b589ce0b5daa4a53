"""Data parallelism on 4 host devices, in a subprocess (JAX fixes its device
count when it starts)."""

import os
import subprocess
import sys
import textwrap


SCRIPT = textwrap.dedent('''
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    from gdlab import loop, models, optim, parallel, stopping
    from gdlab.objective import Objective
    assert jax.device_count() == 4, jax.devices()
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(64, 3)))
    y = jnp.asarray(rng.normal(size=(64, 1)))
    obj = Objective(models.mlp((3, 8, 1), "tanh"), "mse")
    mesh = parallel.data_mesh(4)
    cases = [
        ("gd", loop.Regime("full_batch"), optim.gradient_descent(0.1)),
        ("sgd", loop.Regime("sgd"), optim.gradient_descent(0.01)),
        ("minibatch", loop.Regime("minibatch", 16),
         optim.gradient_descent(0.1, 0.9)),
        ("wolfe", loop.Regime("full_batch"),
         optim.steepest_descent(optim.wolfe_linesearch())),
    ]
    for name, regime, opt in cases:
      kw = dict(key=jax.random.PRNGKey(0), regime=regime,
                criteria=stopping.Criteria(max_epochs=5))
      one = loop.fit(obj, opt, (x, y), **kw)
      four = loop.fit(obj, opt, (x, y), mesh=mesh, **kw)
      np.testing.assert_allclose(four.history.steps["loss"],
                                 one.history.steps["loss"], rtol=1e-12)
      for a, b in zip(jax.tree.leaves(four.params), jax.tree.leaves(one.params)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)
        assert a.sharding.is_fully_replicated
      print(name, "ok")
    # The data really is split over the devices ...
    data = parallel.shard_data(loop.Data(x, y), mesh)
    assert data.x_train.sharding.spec == jax.sharding.PartitionSpec("data")
    assert len({s.device for s in data.x_train.addressable_shards}) == 4
    assert data.x_train.addressable_shards[0].data.shape == (16, 3)
    # ... and the compiled step sums the per-device gradients.
    opt = optim.gradient_descent(0.1)
    plan, numbers = loop.make_plan(obj, opt, loop.Regime("full_batch"),
                                   stopping.Criteria(), n_train=64, mesh=mesh)
    carry = loop.initial_carry(obj, opt, jax.random.PRNGKey(0))
    program, _ = loop.compiled_chunk(plan, carry, data, numbers)
    hlo = program.as_text()
    assert "all-reduce" in hlo
    # Clear errors for what cannot work.
    for make, what in [
        (lambda: parallel.data_mesh(8), "asked for 8 devices; 4 cpu"),
        (lambda: loop.fit(obj, optim.gradient_descent(0.1), (x, y),
                          key=jax.random.PRNGKey(0),
                          regime=loop.Regime("minibatch", 10), mesh=mesh),
         "a batch of 10 records (batch_size) cannot be split evenly over 4"),
    ]:
      try:
        make()
      except ValueError as e:
        assert what in str(e), str(e)
      else:
        raise AssertionError("no error for " + what)
    print("all ok")
''')


def test_data_parallel_matches_one_device():
  env = dict(os.environ,
             XLA_FLAGS=os.environ.get("XLA_FLAGS", "") +
             " --xla_force_host_platform_device_count=4")
  out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True,
                       text=True, env=env, timeout=300)
  assert out.returncode == 0, out.stdout + out.stderr
  assert "all ok" in out.stdout


SWEEP_SCRIPT = textwrap.dedent('''
    import pathlib, sys
    import numpy as np
    from gdlab import config, results, run, sweep
    out = pathlib.Path(sys.argv[1])
    exp = config.load(sys.argv[2])
    sets = {"train.devices": 2, "data.n": 80, "train.dtype": "float64",
            "train.stop.max_epochs": 5}
    sweep.run_sweep(exp, out / "sweep", sets=sets, report=False)
    base = config.resolve_runs(exp, variants=False, sets=sets)[0]
    for entry in __import__("json").loads(
        (out / "sweep" / "sweep.json").read_text())["runs"]:
      rec = results.load_run(out / "sweep" / "runs" / entry["name"])
      # 4 runs x 2-way data parallelism on 4 devices: a 2 x 2 mesh.
      assert rec.summary["sweep_mesh"] == {"runs": 2, "data": 2}, rec.summary
      cfg = config.apply_overrides(base, entry["point"])
      alone = run.run(cfg, out / "alone" / entry["name"], plots=False)
      np.testing.assert_allclose(rec.steps["loss"],
                                 alone.history.steps["loss"], rtol=1e-12)
    print("all ok")
''')


def test_sweep_over_a_two_axis_mesh(tmp_path):
  """Configurations x data: a sweep of data-parallel runs uses every device."""
  env = dict(os.environ,
             XLA_FLAGS=os.environ.get("XLA_FLAGS", "") +
             " --xla_force_host_platform_device_count=4")
  tiny = os.path.join(os.path.dirname(__file__), "configs", "tiny.yaml")
  out = subprocess.run([sys.executable, "-c", SWEEP_SCRIPT, str(tmp_path),
                        tiny], capture_output=True, text=True, env=env,
                       timeout=300)
  assert out.returncode == 0, out.stdout + out.stderr
  assert "all ok" in out.stdout
