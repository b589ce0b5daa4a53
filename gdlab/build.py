"""From a config to the pieces of a run: data, objective, optimizer, criteria.

Pure: every function here reads a :class:`~gdlab.config.RunConfig` (or one
of its sections) and returns arrays, models and optax transformations; none
reads or writes a folder.  :func:`problem` gathers everything a run needs.
A config value the builders cannot use raises
:class:`~gdlab.config.ConfigError` naming the key and the allowed values.
Data that do not fit the loss (labels out of range, a class loss on a
one-output model) raise ``ValueError`` from :func:`objective`, on the host,
before anything compiles.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gdlab import config as config_lib
from gdlab import data as data_lib
from gdlab import loop
from gdlab import models
from gdlab import optim
from gdlab import stopping
from gdlab.data.batching import Regime
from gdlab.losses import Penalty
from gdlab.objective import (FunctionObjective, Objective, abstract_call,
                             check_data)

DTYPES = ("float32", "float64")
MODEL_KINDS = ("mlp", "linear", "logistic", "function")
SCHEDULES = ("constant", "exponential", "step", "cosine", "warmup_cosine",
             "square_summable", "nonsummable", "constant_step_length",
             "polyak", "polyak_estimated")
OPTIMIZERS = ("gd", "heavy_ball", "subgradient", "adam", "rmsprop", "adagrad",
              "lbfgs")
LINE_SEARCHES = ("armijo", "goldstein", "wolfe", "exact", "exact_quadratic")


def float_dtype(cfg: config_lib.RunConfig):
  """The run's float dtype; float64 turns on JAX's x64 mode."""
  if not isinstance(cfg.train.dtype, str) or cfg.train.dtype not in DTYPES:
    raise config_lib.ConfigError(
        f"train.dtype: expected one of {', '.join(map(repr, DTYPES))}; got "
        f"{cfg.train.dtype!r}.")
  if cfg.train.dtype == "float64":
    jax.config.update("jax_enable_x64", True)
  return jnp.dtype(cfg.train.dtype)


def is_function_problem(cfg: config_lib.RunConfig) -> bool:
  """Whether the run minimises a 2-D test function (``model.kind: function``)."""
  return cfg.model.kind == "function"


def dataset(cfg: config_lib.RunConfig, smoke: bool = False):
  """``(loop.Data, dataset_or_function)`` for a run config.

  For a function problem the second item is the
  :class:`~gdlab.data.functions.Function2D` and the data are placeholders;
  otherwise it is the :class:`~gdlab.data.Dataset`, whose float arrays the
  ``loop.Data`` holds in the run's dtype.  ``smoke`` loads the data set's
  small form.
  """
  dtype = float_dtype(cfg)
  if is_function_problem(cfg):
    options = {"kappa": cfg.data.kappa} if cfg.data.kappa is not None else {}
    fn = data_lib.get_function(cfg.data.name, **options)
    dummy = jnp.zeros((1, 1), dtype)
    return loop.Data(dummy, dummy), fn
  options = {}
  for key in ("n", "noise", "labels"):
    value = getattr(cfg.data, key)
    if value is not None:
      options[key] = value
  options["test_fraction"] = cfg.data.test_fraction
  ds = data_lib.load(cfg.data.name, seed=cfg.data.seed, smoke=smoke,
                     **options)
  # On the host: a cast on the device would compile a program per shape.
  cast = lambda a: (jax.device_put(np.asarray(a).astype(dtype))
                    if jnp.issubdtype(a.dtype, jnp.floating) else a)
  return loop.Data(cast(ds.x_train), cast(ds.y_train), cast(ds.x_test),
                   cast(ds.y_test)), ds


def objective(cfg: config_lib.RunConfig, ds) -> Any:
  """The objective (model, loss, reduction, penalty) of a run config.

  ``ds`` is the second item of :func:`dataset`: the data set, whose shapes
  size the model, or the 2-D test function.  The data set's labels are
  checked against the loss and the model (``gdlab.objective.check_data``):
  hinge with 0/1 labels, binary cross-entropy with class indices or a class
  loss on a binary set raise ``ValueError``.
  """
  m = cfg.model
  if is_function_problem(cfg):
    start = m.start if m.start is not None else tuple(
        float(v) for v in np.asarray(ds.x0))
    return FunctionObjective(ds.fn, start)
  n_in, n_out = ds.n_features, ds.n_outputs
  common = dict(bias=m.bias, init_scheme=m.init, scale=m.scale,
                dtype=float_dtype(cfg))
  if m.kind == "mlp":
    model = models.mlp((n_in, *m.hidden, n_out), m.activation,
                       m.output_activation, **common)
  elif m.kind == "linear":
    model = models.mlp((n_in, n_out), "identity", m.output_activation,
                       **common)
  elif m.kind == "logistic":
    model = models.mlp((n_in, n_out), "identity", "identity", **common)
  else:
    raise config_lib.ConfigError(
        f"model.kind: expected one of {', '.join(map(repr, MODEL_KINDS))}; "
        f"got {m.kind!r}.")
  penalty = None
  if cfg.loss.penalty is not None:
    penalty = Penalty(cfg.loss.penalty, cfg.loss.strength,
                      cfg.loss.penalize_bias)
  obj = Objective(model, cfg.loss.name, cfg.loss.reduction, penalty)
  params = abstract_call(model, "init", jax.ShapeDtypeStruct((2,), jnp.uint32))
  for part in ("train", "test"):
    x = getattr(ds, f"x_{part}")
    # Inputs by shape alone, in the run's dtype (as dataset() casts them).
    check_data(obj, params, jax.ShapeDtypeStruct(x.shape, float_dtype(cfg)),
               getattr(ds, f"y_{part}"), part=part)
  return obj


def schedule(o: config_lib.OptimizerConfig):
  """The step-size schedule or rule of an optimizer config."""
  lr = o.learning_rate
  if o.schedule == "constant":
    return lr
  if o.schedule == "exponential":
    return optim.exponential_decay(lr, o.decay_steps, o.decay_rate)
  if o.schedule == "step":
    return optim.step_decay(lr, {o.decay_steps * i: o.decay_rate
                                 for i in range(1, 50)})
  if o.schedule == "cosine":
    return optim.cosine_decay(lr, o.decay_steps)
  if o.schedule == "warmup_cosine":
    return optim.warmup_cosine_decay(0.0, lr, o.warmup_steps,
                                     o.warmup_steps + o.decay_steps)
  if o.schedule == "square_summable":
    return optim.square_summable(lr, o.b)
  if o.schedule == "nonsummable":
    return optim.nonsummable_diminishing(lr)
  if o.schedule == "constant_step_length":
    return optim.constant_step_length(lr)
  if o.schedule == "polyak":
    if o.f_star is None:
      raise config_lib.ConfigError(
          "optimizer.f_star: the 'polyak' schedule needs the optimal value "
          "f*; got null. Set it, or use 'polyak_estimated'.")
    return optim.polyak(o.f_star)
  if o.schedule == "polyak_estimated":
    return optim.polyak_estimated(lr)
  raise config_lib.ConfigError(
      f"optimizer.schedule: expected one of "
      f"{', '.join(repr(s) for s in SCHEDULES)}; got {o.schedule!r}.")


def optimizer(o: config_lib.OptimizerConfig, store_grad: bool = False):
  """The optax transformation of an optimizer config.

  ``store_grad``: line searches keep the gradient at the accepted point, for
  full-batch runs, whose next step reuses it (see ``gdlab.train``).
  """
  if o.name not in OPTIMIZERS:
    raise config_lib.ConfigError(
        f"optimizer.name: expected one of "
        f"{', '.join(repr(s) for s in OPTIMIZERS)}; got {o.name!r}.")
  if o.line_search is not None:
    if o.line_search not in LINE_SEARCHES:
      raise config_lib.ConfigError(
          f"optimizer.line_search: expected one of "
          f"{', '.join(repr(s) for s in LINE_SEARCHES)} or null; got "
          f"{o.line_search!r}.")
    if o.line_search in ("armijo", "goldstein"):
      search = optim.backtracking_linesearch(
          initial_step=o.initial_step, shrink=o.shrink, c1=o.c1,
          reuse_last_step=o.reuse_last_step,
          condition="armijo" if o.line_search == "armijo" else "goldstein",
          store_grad=store_grad)
    elif o.line_search == "wolfe":
      search = optim.wolfe_linesearch(c1=o.c1, c2=o.c2,
                                      initial_step=o.initial_step,
                                      reuse_last_step=o.reuse_last_step,
                                      store_grad=store_grad)
    else:
      search = optim.exact_linesearch(
          method="golden" if o.line_search == "exact" else "quadratic",
          tol=o.tol, initial_step=o.initial_step)
    if o.name == "lbfgs":
      return optax.chain(optax.scale_by_lbfgs(), optax.scale(-1.0), search)
    if o.name != "gd" or o.momentum:
      raise config_lib.ConfigError(
          f"optimizer.line_search: a line search runs along the steepest "
          f"descent or L-BFGS direction: expected optimizer.name 'gd' (no "
          f"momentum) or 'lbfgs'; got {o.name!r} with momentum "
          f"{o.momentum}.")
    return optim.steepest_descent(search)
  rule = schedule(o)
  if o.name == "gd":
    return optim.gradient_descent(rule, o.momentum, o.nesterov)
  if o.name == "heavy_ball":
    return optim.heavy_ball(rule, o.momentum)
  if o.name == "subgradient":
    return optim.subgradient_descent(rule)
  if o.name == "lbfgs":
    return optax.lbfgs(learning_rate=None if o.schedule == "constant" and
                       o.learning_rate == 1.0 else rule)
  return getattr(optax, o.name)(rule)


class Problem(NamedTuple):
  """Everything a run of one config needs, built (see :func:`problem`)."""
  data: loop.Data
  dataset: Any                 # the gdlab.data.Dataset, or the Function2D
  objective: Any
  optimizer: optax.GradientTransformation
  criteria: stopping.Criteria
  regime: Regime
  record_params: bool          # log every iterate (2-D test functions,
                               # or train.record_params)


def problem(cfg: config_lib.RunConfig, smoke: bool = False) -> Problem:
  """The data, objective, optimizer, criteria and regime of a run config.

  In the full-batch regime a line search keeps the gradient at the point it
  accepts (``store_grad``), which the next step reuses.
  """
  data, ds = dataset(cfg, smoke)
  return Problem(
      data=data, dataset=ds, objective=objective(cfg, ds),
      optimizer=run_optimizer(cfg), criteria=cfg.train.stop,
      regime=cfg.train.regime,
      record_params=is_function_problem(cfg) or cfg.train.record_params)


def run_optimizer(cfg: config_lib.RunConfig):
  """The optimizer of a run: in the full-batch regime a line search keeps
  the gradient at the point it accepts, which the next step reuses."""
  return optimizer(cfg.optimizer,
                   store_grad=cfg.train.regime.kind == "full_batch")
