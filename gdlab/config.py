"""Experiment configuration: frozen dataclasses, read from YAML, overridable.

An experiment file (``experiments/*.yaml``) looks like::

    name: step_size
    question: What happens when the step size is too large or too small?
    base:                      # a RunConfig: the settings every run shares
      seed: 0
      data: {name: moons, n: 400}
      model: {kind: mlp, hidden: [16], activation: tanh}
      loss: {name: binary_cross_entropy}
      optimizer: {name: gd, learning_rate: 0.1}
      train: {regime: full_batch, max_epochs: 300}
    variants:                  # named runs: dotted overrides of the base
      too_small: {optimizer.learning_rate: 0.001}
      line_search: {optimizer.line_search: armijo}
    sweep:                     # a grid over dotted keys (gdlab sweep)
      optimizer.learning_rate: [0.01, 0.1, 1.0]
      seed: [0, 1]
    smoke:                     # overrides that make any run take seconds
      train.max_epochs: 3

Files are read with ``yaml.safe_load`` (no code is executed).  Unknown keys
and values of the wrong type raise :class:`ConfigError`, which names the key,
what was expected, what came, and the allowed keys or values.  Overrides
(``--set key=value`` on the command line, :func:`override` in Python) are
parsed as YAML scalars and checked the same way.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Union

import yaml


class ConfigError(ValueError):
  """A configuration that cannot be used, with a one-line explanation."""


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """The data set (``gdlab.data.names()``) or 2-D test function.

  ``name`` is a data set name, or a test-function name
  (``gdlab.data.function_names()``) with ``model.kind: function``.
  ``n`` and ``noise`` are passed to loaders that take them; ``labels: pm1``
  gives -1/+1 labels for hinge losses.  ``seed`` draws the data set and its
  train/test split (the run's own ``seed`` draws the initial parameters and
  the shuffling).
  """
  name: str = "digits"
  n: int | None = None
  noise: float | None = None
  test_fraction: float = 0.2
  labels: str | None = None
  seed: int = 0
  kappa: float | None = None


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """``kind``: ``mlp``, ``linear``, ``logistic`` or ``function``."""
  kind: str = "mlp"
  hidden: tuple[int, ...] = (32,)
  activation: str = "tanh"
  output_activation: str = "identity"
  bias: str = "per_neuron"
  init: str = "glorot"
  scale: float = 1.0
  start: tuple[float, ...] | None = None


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """A loss name, its reduction, and an optional ``l2``/``l1`` penalty."""
  name: str = "mse"
  reduction: str = "mean"
  penalty: str | None = None
  strength: float = 0.0
  penalize_bias: bool = False


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """The optimizer.

  ``name``: ``gd`` (gradient descent, with ``momentum``/``nesterov``),
  ``heavy_ball``, ``subgradient``, or an optax name (``adam``, ``rmsprop``,
  ``adagrad``, ``lbfgs``).  ``schedule``: ``constant``, ``exponential``,
  ``step``, ``cosine``, ``warmup_cosine`` (count schedules, optax's), or, for
  ``subgradient``, also ``square_summable`` (a/(b+k)), ``nonsummable``
  (a/sqrt(k+1)), ``constant_step_length`` (gamma/||g||), ``polyak``
  ((f - f*)/||g||^2) and ``polyak_estimated``.  ``line_search``: ``armijo``,
  ``goldstein``, ``wolfe``, ``exact`` (golden section) or ``exact_quadratic``
  (closed form for quadratics); a line search replaces the learning rate.
  """
  name: str = "gd"
  learning_rate: float = 0.1
  momentum: float = 0.0
  nesterov: bool = False
  schedule: str = "constant"
  decay_rate: float = 0.5
  decay_steps: int = 100
  warmup_steps: int = 0
  b: float = 1.0
  f_star: float | None = None
  line_search: str | None = None
  initial_step: float = 1.0
  shrink: float = 0.5
  c1: float = 1e-4
  c2: float = 0.9
  reuse_last_step: bool = False
  tol: float = 1e-8


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Regime, gradient engine, precision, stopping criteria and devices.

  ``devices``: train data-parallel over this many devices (the batch is
  sharded along its records; see ``gdlab.parallel``); ``None`` for one.
  ``eval_every``: evaluate on the whole training and test sets every this
  many epochs.  ``step_metrics``: ``all`` logs each step's gradient and
  update norms, ``loss`` skips them for speed (see ``gdlab.loop.build``).
  """
  regime: str = "full_batch"
  batch_size: int | None = None
  remainder: str = "drop"
  engine: str = "autodiff"
  dtype: str = "float32"
  max_epochs: int = 100
  max_steps: int | None = None
  max_grad_evals: int | None = None
  loss_tol: float | None = None
  rel_tol: float | None = None
  patience: int = 5
  param_tol: float | None = None
  grad_tol: float | None = None
  divergence_factor: float | None = 1e6
  chunk_epochs: int | None = None
  devices: int | None = None
  eval_every: int = 1
  step_metrics: str = "all"

  def __post_init__(self):
    for key in ("chunk_epochs", "devices", "eval_every", "max_epochs"):
      value = getattr(self, key)
      if isinstance(value, int) and value < 1:
        raise ConfigError(f"train.{key}: expected an integer >= 1; got "
                          f"{value}.")


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Everything one training run needs."""
  name: str = "run"
  seed: int = 0
  data: DataConfig = DataConfig()
  model: ModelConfig = ModelConfig()
  loss: LossConfig = LossConfig()
  optimizer: OptimizerConfig = OptimizerConfig()
  train: TrainConfig = TrainConfig()

  def __post_init__(self):
    if isinstance(self.seed, int) and not 0 <= self.seed < 2**32:
      raise ConfigError(f"seed: expected an integer in [0, 2**32); got "
                        f"{self.seed}.")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
  """A named set of runs: a base, variants, a sweep grid and smoke settings."""
  name: str = "experiment"
  question: str = ""
  description: str = ""
  base: RunConfig = RunConfig()
  variants: dict = dataclasses.field(default_factory=dict)
  sweep: dict = dataclasses.field(default_factory=dict)
  smoke: dict = dataclasses.field(default_factory=dict)
  analysis: str | None = None


# ----------------------------------------------------------------------------
# Type checking.


def _type_name(tp) -> str:
  origin = typing.get_origin(tp)
  if origin in (Union, types.UnionType):
    return " or ".join(_type_name(a) for a in typing.get_args(tp))
  if origin is tuple:
    return f"a list of {_type_name(typing.get_args(tp)[0])}"
  if tp is type(None):
    return "null"
  return getattr(tp, "__name__", str(tp))


def _coerce(key: str, value: Any, tp) -> Any:
  """Checks ``value`` against the annotation ``tp``; returns it normalised."""
  origin = typing.get_origin(tp)
  if origin in (Union, types.UnionType):
    errors = []
    for arg in typing.get_args(tp):
      try:
        return _coerce(key, value, arg)
      except ConfigError as e:
        errors.append(e)
    raise ConfigError(f"{key}: expected {_type_name(tp)}; got {value!r}.")
  if tp is type(None):
    if value is None:
      return None
  elif origin is tuple:
    if isinstance(value, (list, tuple)):
      (item,) = typing.get_args(tp)[:1]
      return tuple(_coerce(f"{key}[{i}]", v, item) for i, v in
                   enumerate(value))
  elif tp is bool:
    if isinstance(value, bool):
      return value
  elif tp is int:
    if isinstance(value, int) and not isinstance(value, bool):
      return value
  elif tp is float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      return float(value)
  elif tp is str:
    if isinstance(value, str):
      return value
  elif tp is dict:
    if isinstance(value, dict):
      return value
  elif dataclasses.is_dataclass(tp):
    if isinstance(value, dict):
      return from_dict(tp, value, prefix=key)
    if isinstance(value, tp):
      return value
  raise ConfigError(f"{key}: expected {_type_name(tp)}; got {value!r}"
                    f" ({type(value).__name__}).")


def _hints(cls) -> dict[str, Any]:
  return typing.get_type_hints(cls)


def from_dict(cls, data: dict, prefix: str = ""):
  """Builds the dataclass ``cls`` from a dict, rejecting unknown keys."""
  if not isinstance(data, dict):
    raise ConfigError(f"{prefix or 'config'}: expected a mapping; got "
                      f"{data!r}.")
  hints = _hints(cls)
  known = [f.name for f in dataclasses.fields(cls)]
  kwargs = {}
  for k, v in data.items():
    key = f"{prefix}.{k}" if prefix else str(k)
    if k not in known:
      raise ConfigError(f"{key}: unknown key; known keys"
                        f"{' of ' + prefix if prefix else ''}: "
                        f"{', '.join(known)}.")
    kwargs[k] = _coerce(key, v, hints[k])
  return cls(**kwargs)


def to_dict(cfg) -> dict:
  """A plain dict of a config (tuples as lists), ready for YAML."""
  def conv(v):
    if dataclasses.is_dataclass(v):
      return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, (list, tuple)):
      return [conv(x) for x in v]
    if isinstance(v, dict):
      return {k: conv(x) for k, x in v.items()}
    return v
  return conv(cfg)


# libyaml's emitter where PyYAML was built with it: the same text, several
# times faster (a sweep writes one config per run).
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def dump(cfg) -> str:
  return yaml.dump(to_dict(cfg), Dumper=_DUMPER, sort_keys=False)


def parse_value(text: str) -> Any:
  """Parses a command-line value as a YAML scalar or list (never code)."""
  try:
    return yaml.safe_load(text)
  except yaml.YAMLError as e:
    raise ConfigError(f"could not parse {text!r} as a value: {e}") from e


def override(cfg, key: str, value: Any, _prefix: str = ""):
  """Returns ``cfg`` with the dotted ``key`` set to ``value``, type-checked."""
  head, _, rest = key.partition(".")
  full = f"{_prefix}{key}"
  known = [f.name for f in dataclasses.fields(cfg)]
  if head not in known:
    where = f" of {_prefix[:-1]}" if _prefix else ""
    raise ConfigError(f"{full}: unknown key; known keys{where}: "
                      f"{', '.join(known)}.")
  hint = _hints(type(cfg))[head]
  current = getattr(cfg, head)
  if rest:
    if not dataclasses.is_dataclass(current):
      raise ConfigError(f"{full}: {_prefix}{head} has no sub-keys; it takes "
                        f"{_type_name(hint)}.")
    new = override(current, rest, value, f"{_prefix}{head}.")
    return dataclasses.replace(cfg, **{head: new})
  return dataclasses.replace(cfg, **{head: _coerce(full, value, hint)})


def apply_overrides(cfg, overrides: dict[str, Any] | None):
  for k, v in (overrides or {}).items():
    cfg = override(cfg, k, v)
  return cfg


def parse_sets(sets: list[str] | None) -> dict[str, Any]:
  """``["a.b=1", ...]`` -> ``{"a.b": 1}``."""
  out = {}
  for s in sets or []:
    key, eq, text = s.partition("=")
    if not eq or not key.strip():
      raise ConfigError(f"--set: expected key=value; got {s!r}.")
    out[key.strip()] = parse_value(text)
  return out


def load(path: str | Path) -> ExperimentConfig:
  """Reads an experiment YAML file."""
  path = Path(path)
  if not path.is_file():
    raise ConfigError(f"config: no such file: {str(path)!r}.")
  try:
    data = yaml.safe_load(path.read_text())
  except yaml.YAMLError as e:
    first = str(e).splitlines()[0] if str(e) else "invalid YAML"
    mark = getattr(e, "problem_mark", None)
    where = f" (line {mark.line + 1})" if mark is not None else ""
    raise ConfigError(f"config: malformed YAML in {str(path)!r}{where}: "
                      f"{first}.") from e
  if data is None:
    data = {}
  exp = from_dict(ExperimentConfig, data)
  # Variants, sweep and smoke hold dotted overrides: check them now.
  for name, ov in exp.variants.items():
    if not isinstance(ov, dict):
      raise ConfigError(f"variants.{name}: expected a mapping of dotted keys "
                        f"to values; got {ov!r}.")
    apply_overrides(exp.base, ov)
  apply_overrides(exp.base, exp.smoke)
  for k, values in exp.sweep.items():
    if not isinstance(values, list) or not values:
      raise ConfigError(f"sweep.{k}: expected a non-empty list of values; "
                        f"got {values!r}.")
    for v in values:
      override(exp.base, k, v)
  return exp
