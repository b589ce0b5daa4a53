"""Models, losses and their errors; the flax adapters against gdlab's MLP."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from gdlab import activations, gradcheck, losses, models
from gdlab.objective import Objective
from helpers import jit_once
from helpers import random_problem

# Standard promotion: under strict promotion gdlab.models.FlaxLinen.init
# (gdlab/models.py) feeds a float64 dummy input to a flax module whose
# parameters are float32, and flax's promote_dtype rejects the mix.


def test_mlp_shapes_and_bias_arrangements():
  key = jax.random.PRNGKey(0)
  shapes = {
      "per_neuron": [(4,), (3,)],
      "per_layer": [(), ()],
  }
  for bias in models.BIAS_ARRANGEMENTS:
    model = models.mlp((2, 4, 3), "tanh", bias=bias)
    params = model.init(key)
    assert [w.shape for w in params["w"]] == [(2, 4), (4, 3)]
    if bias in shapes:
      assert [b.shape for b in params["b"]] == shapes[bias]
    elif bias == "shared":
      assert params["b"].shape == ()
    else:
      assert "b" not in params
    assert model.apply(params, jnp.ones((5, 2))).shape == (5, 3)


def test_shared_bias_is_one_number_added_everywhere():
  model = models.mlp((2, 3, 1), "identity", bias="shared")
  params = model.init(jax.random.PRNGKey(0))
  params["b"] = jnp.array(0.7)
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 2))
  w1, w2 = params["w"]
  np.testing.assert_allclose(model.apply(params, x),
                             ((x @ w1 + 0.7) @ w2) + 0.7, rtol=1e-12)


@pytest.mark.parametrize("scheme,var", [
    ("glorot", lambda i, o: 2 / (i + o)), ("he", lambda i, o: 2 / i),
    ("lecun", lambda i, o: 1 / i), ("normal", lambda i, o: 0.5**2)])
def test_initialisation_variance(scheme, var):
  scale = 0.5 if scheme == "normal" else 1.0
  model = models.mlp((400, 300), init_scheme=scheme, scale=scale)
  w = model.init(jax.random.PRNGKey(0))["w"][0]
  assert abs(float(jnp.var(w)) / var(400, 300) - 1) < 0.02
  np.testing.assert_array_equal(model.init(jax.random.PRNGKey(0))["b"][0], 0)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_initial_weights_are_one_normal_draw_per_layer(dtype):
  """The documented draw, layer by layer, inside jit and vmap too.

  Equal bit for bit under XLA's default options; the suite's quick compiler
  options (conftest.py) round the sampler's polynomial differently in the
  separately compiled per-layer draws, by at most an ulp or two.
  """
  model = models.mlp((7, 30, 2, 5), init_scheme="he", scale=0.7, dtype=dtype)
  key = jax.random.PRNGKey(4)
  expected = [0.7 * (2 / n_in)**0.5 * jax.random.normal(k, (n_in, n_out),
                                                        dtype)
              for k, n_in, n_out in zip(jax.random.split(key, 3),
                                        (7, 30, 2), (30, 2, 5))]
  vmapped = jax.vmap(model.init)(jnp.stack([jax.random.PRNGKey(0), key]))
  for params in (model.init(key), jax.jit(model.init)(key),
                 jax.tree.map(lambda v: np.asarray(v)[1], vmapped)):
    for w, e in zip(params["w"], expected):
      assert w.dtype == dtype
      np.testing.assert_array_max_ulp(w, e, maxulp=4)


def test_regression_models_are_zero_hidden_layer_mlps():
  lin = models.linear_regression(3)
  assert lin.sizes == (3, 1) and lin.depth == 0
  assert models.logistic_regression(4).sizes == (4, 1)
  assert models.logistic_regression(4, n_classes=5).sizes == (4, 5)


@pytest.mark.parametrize("name", activations.names())
def test_activation_derivatives_match_autodiff(name):
  act = activations.get(name)
  a = jnp.concatenate([jnp.linspace(-6, 6, 101), jnp.array([0.0, -0.0])])

  @jit_once
  def manual_and_auto(a):
    return act.deriv(a, act.fn(a)), jax.vmap(jax.grad(act.fn))(a)

  manual, auto = manual_and_auto(a)
  np.testing.assert_allclose(manual, auto, rtol=1e-12, atol=1e-13)


def test_activations_against_jax_nn():
  a = jnp.linspace(-5, 5, 41)
  pairs = {"sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh, "relu": jax.nn.relu,
           "softplus": jax.nn.softplus, "elu": jax.nn.elu,
           "gelu": jax.nn.gelu, "swish": jax.nn.swish,
           "leaky_relu": lambda x: jax.nn.leaky_relu(x, 0.01)}
  for name, ref in pairs.items():
    np.testing.assert_allclose(activations.get(name).fn(a), ref(a),
                               rtol=1e-12, atol=1e-15)


def test_losses_against_optax():
  key = jax.random.PRNGKey(0)
  o = jax.random.normal(key, (6, 4))
  y = jax.random.normal(jax.random.PRNGKey(1), (6, 4))
  labels = jnp.array([0, 3, 1, 2, 2, 0])

  @jit_once
  def ours_and_reference(o, y, labels):
    """``{case: (gdlab's loss, optax's or jnp's)}`` and gdlab's multiclass
    hinge, from one compiled program."""
    onehot = jax.nn.one_hot(labels, 4)
    ce = optax.softmax_cross_entropy_with_integer_labels(o, labels)
    b = (y > 0).astype(float)
    s = jnp.where(y > 0, 1.0, -1.0)
    return {
        "mse": (losses.loss(o, y, "mse"), jnp.mean((o - y)**2)),
        "sum_squares": (losses.loss(o, y, "sum_squares", "sum"),
                        0.5 * jnp.sum((o - y)**2)),
        "huber": (losses.loss(o, y, "huber"),
                  jnp.mean(optax.huber_loss(o, y, delta=1.0))),
        "softmax_cross_entropy, labels": (
            losses.loss(o, labels, "softmax_cross_entropy", "sum"),
            jnp.sum(ce)),
        "softmax_cross_entropy, one-hot": (
            losses.loss(o, onehot, "softmax_cross_entropy", "sum"),
            jnp.sum(ce)),
        "binary_cross_entropy": (
            losses.loss(o, b, "binary_cross_entropy"),
            jnp.mean(jnp.sum(optax.sigmoid_binary_cross_entropy(o, b), -1))),
        "hinge": (losses.loss(o, s, "hinge", "sum"),
                  jnp.sum(jnp.maximum(0, 1 - s * o))),
    }, losses.loss(o, labels, "multiclass_hinge", "sum")

  cases, multiclass_hinge = ours_and_reference(o, y, labels)
  # Weston-Watkins multiclass hinge, written out with loops (in NumPy).
  o_np, labels_np = np.asarray(o), np.asarray(labels)
  expect = sum(max(0.0, 1 + float(o_np[i, j] - o_np[i, labels_np[i]]))
               for i in range(6) for j in range(4) if j != labels_np[i])
  cases["multiclass_hinge"] = (multiclass_hinge, expect)
  for name, (ours, reference) in cases.items():
    np.testing.assert_allclose(ours, reference, rtol=1e-12, err_msg=name)


def test_mse_is_mean_over_output_units_of_one_record():
  o, y = jnp.array([[1.0, 2.0, 4.0]]), jnp.array([[0.0, 0.0, 0.0]])
  np.testing.assert_allclose(losses.loss(o, y, "mse"), 21 / 3)


@pytest.mark.parametrize("loss", losses.names())
def test_loss_derivatives_match_autodiff(loss):
  o = jax.random.normal(jax.random.PRNGKey(0), (7, 3))
  y = gradcheck.random_labels(loss, jax.random.PRNGKey(1), 7, 3)
  fn = losses.get(loss)
  y = losses.check_labels(fn, o, y)

  @jit_once
  def manual_and_auto(o, y):
    return fn.deriv(o, y), jax.grad(lambda o: jnp.sum(fn.per_example(o, y)))(o)

  manual, auto = manual_and_auto(o, y)
  np.testing.assert_allclose(manual, auto, rtol=1e-12, atol=1e-15)


def _dense_stack_params(model, params):
  return {f"Dense_{i}": {"kernel": w, "bias": b}
          for i, (w, b) in enumerate(zip(params["w"], params["b"]))}


class _LinenMLP(nn.Module):
  sizes: tuple

  @nn.compact
  def __call__(self, x):
    for i, n in enumerate(self.sizes[1:]):
      x = nn.Dense(n)(x)
      if i < len(self.sizes) - 2:
        x = jnp.tanh(x)
    return x


class _NNXMLP(nnx.Module):

  def __init__(self, sizes, rngs):
    self.layers = nnx.List([nnx.Linear(i, o, rngs=rngs)
                            for i, o in zip(sizes[:-1], sizes[1:])])

  def __call__(self, x):
    for i, layer in enumerate(self.layers):
      x = layer(x)
      if i < len(self.layers) - 1:
        x = jnp.tanh(x)
    return x


def test_flax_linen_adapter_matches_mlp():
  sizes = (3, 5, 2)
  model = models.mlp(sizes, "tanh")
  params, x, y = random_problem(model, "mse", 0)
  flax_model = models.from_flax(_LinenMLP(sizes), (3,))
  template = jit_once(flax_model.init)(jax.random.PRNGKey(1))
  flax_params = _dense_stack_params(model, params)
  assert jax.tree.structure(template) == jax.tree.structure(flax_params)
  np.testing.assert_allclose(flax_model.apply(flax_params, x),
                             model.apply(params, x), rtol=1e-12)
  _, g_flax = jit_once(Objective(flax_model, "mse").value_and_grad)(
      flax_params, x, y)
  _, g_mlp = Objective(model, "mse").value_and_grad(params, x, y,
                                                    engine="manual")
  for i in range(2):
    np.testing.assert_allclose(g_flax[f"Dense_{i}"]["kernel"], g_mlp["w"][i],
                               rtol=1e-10)
    np.testing.assert_allclose(g_flax[f"Dense_{i}"]["bias"], g_mlp["b"][i],
                               rtol=1e-10)


def test_flax_nnx_adapter_matches_mlp():
  sizes = (3, 5, 2)
  model = models.mlp(sizes, "tanh")
  params, x, y = random_problem(model, "mse", 0)
  nnx_model = models.from_nnx(lambda rngs: _NNXMLP(sizes, rngs))
  state = nnx_model.init(jax.random.PRNGKey(1))
  pure = nnx.to_pure_dict(state)
  for i in range(2):
    pure["layers"][i]["kernel"] = params["w"][i]
    pure["layers"][i]["bias"] = params["b"][i]
  nnx.replace_by_pure_dict(state, pure)
  np.testing.assert_allclose(nnx_model.apply(state, x),
                             model.apply(params, x), rtol=1e-12)
  _, g_nnx = jax.jit(Objective(nnx_model, "mse").value_and_grad)(state, x, y)
  _, g_mlp = Objective(model, "mse").value_and_grad(params, x, y,
                                                    engine="manual")
  g_nnx = nnx.to_pure_dict(g_nnx)
  for i in range(2):
    np.testing.assert_allclose(g_nnx["layers"][i]["kernel"], g_mlp["w"][i],
                               rtol=1e-10)
    np.testing.assert_allclose(g_nnx["layers"][i]["bias"], g_mlp["b"][i],
                               rtol=1e-10)


# ---------------------------------------------------------------------------
# Bad input: a clear error naming the argument, never a wrong number.

def test_bad_model_arguments():
  with pytest.raises(ValueError, match=r"activation.*'relu'.*got 'rleu'"):
    models.mlp((2, 1), "rleu")
  with pytest.raises(ValueError, match=r"output_activation.*got 'soft'"):
    models.mlp((2, 1), output_activation="soft")
  with pytest.raises(ValueError, match=r"bias.*'per_neuron'.*got 'per_unit'"):
    models.mlp((2, 1), bias="per_unit")
  with pytest.raises(ValueError, match=r"sizes.*at least two"):
    models.mlp((2,))
  with pytest.raises(ValueError, match=r"sizes\[1\].*>= 1.*got 0"):
    models.mlp((2, 0))
  with pytest.raises(ValueError, match=r"init_scheme.*'glorot'"):
    models.mlp((2, 1), init_scheme="xavier")


def test_mismatched_input_width():
  model = models.mlp((3, 2))
  params = model.init(jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match=r"x: expected inputs of shape \(n, 3\)"
                     r".*got shape \(4, 2\)"):
    model.apply(params, jnp.ones((4, 2)))
  with pytest.raises(ValueError, match=r"x: expected.*got shape \(1, 4, 3\)"):
    Objective(model, "mse").value_and_grad(params, jnp.ones((1, 4, 3)),
                                           jnp.ones((4, 2)), engine="manual")


def test_bad_labels():
  o = jnp.zeros((4, 3))
  with pytest.raises(ValueError, match=r"y: expected labels of shape \(4, 3\)"
                     r".*'mse'.*got shape \(4,\)"):
    losses.loss(o, jnp.zeros(4), "mse")
  with pytest.raises(ValueError, match=r"y: expected integer class labels of "
                     r"shape \(4,\).*got shape \(4, 1\)"):
    losses.loss(o, jnp.zeros((4, 1), jnp.int32), "softmax_cross_entropy")
  with pytest.raises(TypeError, match=r"y: expected integer class labels.*"
                     r"'multiclass_hinge'.*got dtype float"):
    losses.loss(o, jnp.zeros(4), "multiclass_hinge")
  with pytest.raises(TypeError, match=r"y: expected floating labels.*dtype "
                     r"int"):
    losses.loss(o, jnp.zeros((4, 3), jnp.int32), "mse")
  # A single output accepts (n,) labels as (n, 1): no silent broadcasting.
  np.testing.assert_allclose(
      losses.loss(jnp.zeros((4, 1)), jnp.ones(4), "mse"), 1.0)


def test_bad_names():
  o = jnp.zeros((4, 1))
  with pytest.raises(ValueError, match=r"loss: expected one of 'mse'.*got "
                     r"'l2'"):
    losses.loss(o, o, "l2")
  with pytest.raises(ValueError, match=r"reduction: expected one of 'mean', "
                     r"'sum'; got 'avg'"):
    losses.loss(o, o, "mse", "avg")
  with pytest.raises(ValueError, match=r"penalty.kind.*'l2', 'l1'.*got "
                     r"'elastic'"):
    losses.Penalty("elastic", 0.1)
  with pytest.raises(ValueError, match=r"penalty.strength.*\[0, inf\).*-1"):
    losses.Penalty("l2", -1.0)
  with pytest.raises(ValueError, match=r"reduction.*got 'avg'"):
    Objective(models.mlp((2, 1)), "mse", "avg")
