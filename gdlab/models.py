"""Models as pure functions: ``init(key) -> params``, ``apply(params, x) -> y``.

A gdlab model is any object with those two methods (see :class:`Model`).  The
multilayer perceptron :class:`MLP` is gdlab's own; the hand-written
backpropagation (``gdlab.backprop``) works on it.  Flax modules become models
through :func:`from_flax` (linen) and :func:`from_nnx` (nnx) and train with
the automatic gradient engine.

MLP conventions.  Inputs are row vectors: ``x`` has shape ``(n, d_in)``.  With
layer sizes ``(n_0, n_1, ..., n_L)``, layer ``l`` computes

    a_l = z_{l-1} W_l + b_l,    z_l = f_l(a_l),    z_0 = x,

with ``W_l`` of shape ``(n_{l-1}, n_l)``; ``f_l`` is the hidden activation for
``l < L`` and the output activation for ``l = L``.  The parameter tree is
``{"w": [W_1, ..., W_L], "b": ...}`` where ``"b"`` depends on the bias
arrangement:

* ``"per_neuron"``: ``[b_1, ..., b_L]`` with ``b_l`` of shape ``(n_l,)``;
* ``"per_layer"``:  ``[b_1, ..., b_L]`` with each ``b_l`` a scalar shared by
  the neurons of layer ``l``;
* ``"shared"``:     one scalar ``b`` shared by every neuron of the network;
* ``"none"``:       no ``"b"`` entry.

Initialisation (biases start at zero; ``scale`` multiplies the weights):

* ``"glorot"``: normal with variance ``2 / (n_in + n_out)`` (Glorot & Bengio
  2010), suited to tanh and sigmoid;
* ``"he"``: normal with variance ``2 / n_in`` (He et al. 2015), suited to
  relu-like activations;
* ``"normal"``: normal with standard deviation ``scale``;
* ``"lecun"``: normal with variance ``1 / n_in``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Protocol, Sequence

import jax
import jax.numpy as jnp

from gdlab import _checks
from gdlab import activations

Array = jax.Array
Params = Any

BIAS_ARRANGEMENTS = ("per_neuron", "per_layer", "shared", "none")
INITS = ("glorot", "he", "lecun", "normal")


class Model(Protocol):
  """What gdlab needs of a model."""

  def init(self, key: Array) -> Params:
    ...

  def apply(self, params: Params, x: Array) -> Array:
    ...


@dataclasses.dataclass(frozen=True)
class MLP:
  """A multilayer perceptron (hashable, so it can be a static jit argument).

  Attributes:
    sizes: layer sizes ``(n_in, hidden..., n_out)``; at least two entries.
    activation: hidden-layer activation name (see ``gdlab.activations``).
    output_activation: output-layer activation name.
    bias: ``"per_neuron"``, ``"per_layer"``, ``"shared"`` or ``"none"``.
    init_scheme: ``"glorot"``, ``"he"``, ``"lecun"`` or ``"normal"``.
    scale: multiplies the initial weights (the standard deviation for
      ``"normal"``).
    dtype: the parameters' dtype; ``None`` for JAX's default float.
  """
  sizes: tuple[int, ...]
  activation: str = "tanh"
  output_activation: str = "identity"
  bias: str = "per_neuron"
  init_scheme: str = "glorot"
  scale: float = 1.0
  dtype: Any = None

  def __post_init__(self):
    if isinstance(self.sizes, (int, str)) or len(tuple(self.sizes)) < 2:
      raise ValueError(
          "sizes: expected a sequence of at least two layer sizes "
          f"(n_in, ..., n_out); got {self.sizes!r}.")
    object.__setattr__(self, "sizes", tuple(self.sizes))
    for i, s in enumerate(self.sizes):
      _checks.check_positive_int(f"sizes[{i}]", s)
    activations.get(self.activation, argname="activation")
    activations.get(self.output_activation, argname="output_activation")
    _checks.check_choice("bias", self.bias, BIAS_ARRANGEMENTS)
    _checks.check_choice("init_scheme", self.init_scheme, INITS)
    _checks.check_number("scale", self.scale, low=0)

  @property
  def depth(self) -> int:
    """The number of hidden layers."""
    return len(self.sizes) - 2

  @property
  def num_layers(self) -> int:
    """The number of weight layers ``L``."""
    return len(self.sizes) - 1

  def layer_activation(self, l: int) -> activations.Activation:
    """The activation of weight layer ``l`` (0-based)."""
    name = (self.output_activation if l == self.num_layers - 1
            else self.activation)
    return activations.get(name)

  def init(self, key: Array) -> Params:
    """Draws initial parameters; see the module docstring for the schemes.

    Layer ``l``'s weights are ``std * jax.random.normal(k_l, (n_in, n_out))``
    with ``k_l`` the ``l``-th key of ``jax.random.split(key, L)``.  The whole
    draw is one compiled program per MLP (see :func:`_init_mlp`).
    """
    return _init_mlp(self, key)

  def layer_bias(self, params: Params, l: int) -> Array | float:
    """The bias added to layer ``l``'s pre-activations (0 for ``"none"``)."""
    if self.bias == "none":
      return 0.0
    if self.bias == "shared":
      return params["b"]
    return params["b"][l]

  def check_input(self, x: Array) -> Array:
    """Checks ``x`` has shape ``(n, n_in)``; raises ``ValueError`` otherwise."""
    x = jnp.asarray(x)
    if x.ndim != 2 or x.shape[1] != self.sizes[0]:
      raise ValueError(
          f"x: expected inputs of shape (n, {self.sizes[0]}) for an MLP with "
          f"sizes {self.sizes}; got shape {tuple(x.shape)}.")
    return x

  def apply(self, params: Params, x: Array) -> Array:
    """The network's output ``z_L`` for a batch ``x`` of shape ``(n, n_in)``."""
    z = self.check_input(x)
    for l, w in enumerate(params["w"]):
      a = z @ w + self.layer_bias(params, l)
      z = self.layer_activation(l).fn(a)
    return z


@functools.partial(jax.jit, static_argnums=0)
def _init_mlp(model: MLP, key: Array) -> Params:
  """:meth:`MLP.init`, compiled once per MLP.

  JAX compiles its normal generator once per shape, which took over a second
  for three layers of an MNIST-sized MLP.  Here every layer draws a vector of
  the largest layer's length from its own key (one vmapped draw, one
  compilation) and keeps its first ``n_in * n_out`` numbers: with JAX's
  default counter-based generator (``jax_threefry_partitionable``) these are
  the numbers of ``jax.random.normal(k_l, (n_in, n_out))``, so the
  parameters do not depend on how they were drawn.
  """
  dtype = model.dtype or jnp.zeros(()).dtype
  shapes = list(zip(model.sizes[:-1], model.sizes[1:]))
  keys = jax.random.split(key, model.num_layers)
  longest = max(n_in * n_out for n_in, n_out in shapes)
  draws = jax.vmap(lambda k: jax.random.normal(k, (longest,), dtype))(keys)
  ws = []
  for draw, (n_in, n_out) in zip(draws, shapes):
    std = {
        "glorot": math.sqrt(2.0 / (n_in + n_out)),
        "he": math.sqrt(2.0 / n_in),
        "lecun": math.sqrt(1.0 / n_in),
        "normal": 1.0,
    }[model.init_scheme] * model.scale
    ws.append(std * draw[:n_in * n_out].reshape(n_in, n_out))
  params = {"w": ws}
  if model.bias == "per_neuron":
    params["b"] = [jnp.zeros((n,), dtype) for n in model.sizes[1:]]
  elif model.bias == "per_layer":
    params["b"] = [jnp.zeros((), dtype) for _ in model.sizes[1:]]
  elif model.bias == "shared":
    params["b"] = jnp.zeros((), dtype)
  return params


def mlp(sizes: Sequence[int], activation: str = "tanh",
        output_activation: str = "identity", bias: str = "per_neuron",
        init_scheme: str = "glorot", scale: float = 1.0, dtype=None) -> MLP:
  """A multilayer perceptron; see :class:`MLP`."""
  return MLP(tuple(sizes), activation, output_activation, bias, init_scheme,
             scale, dtype)


def linear_regression(n_in: int, n_out: int = 1, bias: str = "per_neuron",
                      **kwargs) -> MLP:
  """Linear regression ``y = x W + b``: an MLP with no hidden layer."""
  return mlp((n_in, n_out), output_activation="identity", bias=bias, **kwargs)


def logistic_regression(n_in: int, n_classes: int = 2,
                        bias: str = "per_neuron", **kwargs) -> MLP:
  """Logistic regression: a linear map to logits, no hidden layer.

  With ``n_classes == 2`` the model has one output, the logit of class 1, to
  train with ``binary_cross_entropy``; with more classes it has one logit per
  class, to train with ``softmax_cross_entropy`` (multinomial regression).
  The outputs are logits: the losses apply the sigmoid or softmax.
  """
  _checks.check_positive_int("n_classes", n_classes, minimum=2)
  n_out = 1 if n_classes == 2 else n_classes
  return mlp((n_in, n_out), output_activation="identity", bias=bias, **kwargs)


# ----------------------------------------------------------------------------
# Flax adapters.


@dataclasses.dataclass(frozen=True)
class FlaxLinen:
  """A ``flax.linen`` module as a gdlab model.

  ``init(key)`` returns the module's ``"params"`` collection;
  ``apply(params, x)`` calls ``module.apply({"params": params}, x)``.
  Modules with other mutable collections (batch statistics) are not
  supported.
  """
  module: Any
  input_shape: tuple[int, ...]

  def init(self, key: Array) -> Params:
    x = jnp.zeros((1, *self.input_shape))
    return self.module.init(key, x)["params"]

  def apply(self, params: Params, x: Array) -> Array:
    return self.module.apply({"params": params}, x)


def from_flax(module, input_shape: Sequence[int]) -> FlaxLinen:
  """Wraps a ``flax.linen`` module taking inputs of shape ``(n, *input_shape)``."""
  return FlaxLinen(module, tuple(input_shape))


class FlaxNNX:
  """A ``flax.nnx`` module as a gdlab model.

  Built from a constructor ``make(rngs) -> nnx.Module``: ``init(key)`` builds
  the module with ``nnx.Rngs(key)`` and returns its ``nnx.Param`` state (an
  ``nnx.State``, which is a pytree); ``apply(params, x)`` merges it with the
  module's graph and calls it.  Non-parameter state (such as random number
  streams) is taken from a module built once with ``nnx.Rngs(0)``.
  """

  def __init__(self, make: Callable[[Any], Any]):
    from flax import nnx  # pylint: disable=g-import-not-at-top
    self._nnx = nnx
    self._make = make
    self._graphdef, _, self._rest = nnx.split(make(nnx.Rngs(0)), nnx.Param,
                                              ...)

  def init(self, key: Array) -> Params:
    module = self._make(self._nnx.Rngs(key))
    _, params, _ = self._nnx.split(module, self._nnx.Param, ...)
    return params

  def apply(self, params: Params, x: Array) -> Array:
    return self._nnx.merge(self._graphdef, params, self._rest)(x)


def from_nnx(make: Callable[[Any], Any]) -> FlaxNNX:
  """Wraps a ``flax.nnx`` module constructor ``make(rngs)`` as a gdlab model."""
  return FlaxNNX(make)
