"""The one configuration schema: frozen dataclasses, read from YAML, overridable.

An experiment file (``experiments/*.yaml``) looks like::

    name: step_size
    question: What happens when the step size is too large or too small?
    base:                      # a RunConfig: the settings every run shares
      seed: 0
      data: {name: moons, n: 400}
      model: {kind: mlp, hidden: [16], activation: tanh}
      loss: {name: binary_cross_entropy}
      optimizer: {name: gd, learning_rate: 1e-1}
      train:
        regime: {kind: minibatch, batch_size: 32}   # or a kind: `regime: sgd`
        stop: {max_epochs: 300, grad_tol: 1e-6}     # gdlab.stopping.Criteria
    variants:                  # named runs: dotted overrides of the base
      too_small: {optimizer.learning_rate: 0.001}
      line_search: {optimizer.line_search: armijo}
      sgd: {train.regime.kind: sgd}
    sweep:                     # a grid over dotted keys (gdlab sweep)
      optimizer.learning_rate: [0.01, 0.1, 1.0]
      seed: [0, 1]
    seed_sweep: false          # see below
    analysis: null             # an analysis of gdlab.analyses (see ANALYSES)
    smoke:                     # overrides that make any run take seconds
      train.stop.max_epochs: 3

Sections of a run (:class:`RunConfig`): ``data``, ``model``, ``loss``,
``optimizer`` and ``train``; ``train.stop`` is a
:class:`gdlab.stopping.Criteria` and ``train.regime`` a
:class:`gdlab.data.batching.Regime` (``kind``, ``batch_size``,
``remainder``), the same dataclasses ``gdlab.fit`` takes.  A string where the
regime goes is its kind (``regime: sgd``).

``seed_sweep: true`` makes ``gdlab run`` (``gdlab.run.run_experiment``) also
run every variant over the seeds of ``sweep.seed``, one vmapped program a
variant (``gdlab.sweep.run_sweep``), into ``seeds/<variant>/`` before the
analysis (the first :data:`SMOKE_SEEDS` seeds under ``--smoke``); the
``seed_spread`` analysis reads those folders.

Overrides (``variants``, ``sweep``, ``smoke``, ``--set key=value`` on the
command line, :func:`apply_overrides` in Python) are dotted keys
(``train.regime.batch_size``, ``train.stop.max_epochs``); a mapping value sets
several fields of a section at once (``train.regime: {kind: minibatch,
batch_size: 32}``), keeping the others.  All the overrides of one mapping are
applied before the result is checked, so ``train.regime.kind: minibatch``
and ``train.regime.batch_size: 32`` may come in either order.  The keys that
a sweep may vary inside one compiled program are marked on their fields
(``metadata={"sweepable": True}``); see :func:`sweepable`.

Files are read with a safe loader (no code is executed) that reads numbers
as YAML 1.2 does: ``1e-3``, ``1E+5`` and ``.5`` are floats (YAML 1.1 reads
the first two as strings).  Unknown keys and values of the wrong type raise
:class:`ConfigError`, which names the key, what was expected, what came, and
the allowed keys or values; a key of the older flat schema
(``train.max_epochs``, ``train.batch_size``, ...) is named with its new place.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, Union

import yaml

from gdlab.data.batching import Regime
from gdlab.stopping import Criteria


class ConfigError(ValueError):
  """A configuration that cannot be used, with a one-line explanation."""


SWEEPABLE = "sweepable"


def _sweepable(default):
  """A field a sweep may vary inside one compiled program (a traced value)."""
  return dataclasses.field(default=default, metadata={SWEEPABLE: True})


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
  strength: float = _sweepable(0.0)
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
  learning_rate: float = _sweepable(0.1)
  momentum: float = _sweepable(0.0)
  nesterov: bool = False
  schedule: str = "constant"
  decay_rate: float = 0.5
  decay_steps: int = 100
  warmup_steps: int = 0
  b: float = _sweepable(1.0)
  f_star: float | None = None
  line_search: str | None = None
  initial_step: float = _sweepable(1.0)
  shrink: float = _sweepable(0.5)
  c1: float = _sweepable(1e-4)
  c2: float = _sweepable(0.9)
  reuse_last_step: bool = False
  tol: float = 1e-8


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Regime, stopping criteria, gradient engine, precision and devices.

  ``regime``: how records are grouped into updates (a
  :class:`~gdlab.data.batching.Regime`; a string is its kind).  ``stop``:
  the stopping criteria (a :class:`~gdlab.stopping.Criteria`).
  ``devices``: train data-parallel over this many devices (the batch is
  sharded along its records; see ``gdlab.parallel``); ``None`` for one.
  ``eval_every``: evaluate on the whole training and test sets every this
  many epochs, or ``auto``: as often as costs at most 5% of the training
  (``gdlab.loop.auto_eval_every``, the default of ``gdlab.fit``).  An
  experiment evaluates every epoch unless it says otherwise: its figures
  draw per-epoch curves.  ``step_metrics``: ``all`` logs each step's
  gradient and update norms, ``loss`` skips them for speed (see
  ``gdlab.loop.make_plan``).
  """
  regime: Regime = Regime()
  stop: Criteria = Criteria()
  engine: str = "autodiff"
  dtype: str = "float32"
  chunk_epochs: int | None = None
  devices: int | None = None
  eval_every: int | str = 1
  step_metrics: str = "all"

  def __post_init__(self):
    if isinstance(self.regime, str):
      object.__setattr__(self, "regime", Regime(self.regime))
    if isinstance(self.eval_every, str) and self.eval_every != "auto":
      raise ConfigError(f"eval_every: expected an integer >= 1 or 'auto'; "
                        f"got {self.eval_every!r}.")
    for key in ("chunk_epochs", "devices", "eval_every"):
      value = getattr(self, key)
      if isinstance(value, int) and value < 1:
        raise ConfigError(f"{key}: expected an integer >= 1; got {value}.")


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Everything one training run needs."""
  name: str = "run"
  seed: int = _sweepable(0)
  data: DataConfig = DataConfig()
  model: ModelConfig = ModelConfig()
  loss: LossConfig = LossConfig()
  optimizer: OptimizerConfig = OptimizerConfig()
  train: TrainConfig = TrainConfig()

  def __post_init__(self):
    if isinstance(self.seed, int) and not 0 <= self.seed < 2**32:
      raise ConfigError(f"seed: expected an integer in [0, 2**32); got "
                        f"{self.seed}.")


# The analyses of gdlab.analyses, by the name an experiment's ``analysis``
# key gives (gdlab.analyses registers exactly these).
ANALYSES = ("closed_form", "gradcheck", "seed_spread", "subgradient_bound",
            "surface")
# Seeds of a seed sweep under --smoke: the first this many of sweep.seed.
SMOKE_SEEDS = 5


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
  """A named set of runs: a base, variants, a sweep grid and smoke settings.

  See the module docstring for ``seed_sweep`` and ``analysis``.
  """
  name: str = "experiment"
  question: str = ""
  description: str = ""
  base: RunConfig = RunConfig()
  variants: dict = dataclasses.field(default_factory=dict)
  sweep: dict = dataclasses.field(default_factory=dict)
  smoke: dict = dataclasses.field(default_factory=dict)
  seed_sweep: bool = False
  analysis: str | None = None

  def __post_init__(self):
    if self.analysis is not None and self.analysis not in ANALYSES:
      raise ConfigError(f"analysis: expected one of "
                        f"{', '.join(map(repr, ANALYSES))} or null; got "
                        f"{self.analysis!r}.")
    seeds = self.sweep.get("seed")
    if self.seed_sweep and not (isinstance(seeds, list) and len(seeds) >= 2):
      raise ConfigError(f"seed_sweep: runs every variant over the seeds of "
                        f"sweep.seed; expected a list of 2 or more seeds; got "
                        f"{seeds!r}.")
    if self.analysis == "seed_spread" and not self.seed_sweep:
      raise ConfigError("analysis: 'seed_spread' reads each variant's runs "
                        "over the seeds of sweep.seed; expected seed_sweep: "
                        "true; got false.")


# Keys of the older flat schema, by section class: where each one moved.
MOVED = {
    TrainConfig: {
        **{f.name: f"stop.{f.name}" for f in dataclasses.fields(Criteria)},
        "batch_size": "regime.batch_size",
        "remainder": "regime.remainder",
    },
}


# ----------------------------------------------------------------------------
# YAML: a safe loader that reads floats as YAML 1.2 does.


class _Loader(yaml.SafeLoader):  # pylint: disable=too-many-ancestors
  """PyYAML's safe loader with YAML 1.2's float forms (``1e-3``, ``.5``)."""


_FLOAT = "tag:yaml.org,2002:float"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _FLOAT]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
# A float has a point or an exponent (or both); plain integers stay ints.
_Loader.add_implicit_resolver(_FLOAT, re.compile(r"""^(?:
     [-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
    |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X), list("-+0123456789."))


def read_yaml(text: str) -> Any:
  """Parses YAML text safely (no code), reading floats as YAML 1.2 does."""
  return yaml.load(text, Loader=_Loader)  # nosec: a SafeLoader subclass


# libyaml's emitter where PyYAML was built with it: the same text, several
# times faster (a sweep writes one config per run).
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def dump(cfg) -> str:
  return yaml.dump(to_dict(cfg), Dumper=_DUMPER, sort_keys=False)


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
    for arg in typing.get_args(tp):
      try:
        return _coerce(key, value, arg)
      except ConfigError:
        pass
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
    if tp is Regime and isinstance(value, str):
      value = {"kind": value}
    if isinstance(value, dict):
      return from_dict(tp, value, prefix=key)
    if isinstance(value, tp):
      return value
  raise ConfigError(f"{key}: expected {_type_name(tp)}; got {value!r}"
                    f" ({type(value).__name__}).")


def _hints(cls) -> dict[str, Any]:
  return typing.get_type_hints(cls)


def _check_key(cls, name: str, prefix: str, key: str | None = None) -> None:
  """Raises the error for a key ``cls`` lacks: moved, or unknown.

  ``prefix`` is the section's dotted key; ``key`` the key to name in the
  message (default: ``prefix.name``).
  """
  known = [f.name for f in dataclasses.fields(cls)]
  if name in known:
    return
  key = key or (f"{prefix}.{name}" if prefix else str(name))
  moved = MOVED.get(cls, {}).get(name)
  if moved is not None:
    raise ConfigError(f"{key}: moved to "
                      f"{prefix + '.' if prefix else ''}{moved}.")
  raise ConfigError(f"{key}: unknown key; known keys"
                    f"{' of ' + prefix if prefix else ''}: "
                    f"{', '.join(known)}.")


def _located(cls, prefix: str, error: Exception) -> str:
  """A section's own check failed: its message, with the full key."""
  message = str(error)
  head, sep, rest = message.partition(": ")
  if not prefix:
    return message
  if sep and head in {f.name for f in dataclasses.fields(cls)}:
    return f"{prefix}.{head}: {rest}"
  if sep and head == prefix.rpartition(".")[2]:
    return f"{prefix}: {rest}"
  return f"{prefix}: {message}"


def from_dict(cls, data: dict, prefix: str = ""):
  """Builds the dataclass ``cls`` from a dict, rejecting unknown keys."""
  if not isinstance(data, dict):
    raise ConfigError(f"{prefix or 'config'}: expected a mapping; got "
                      f"{data!r}.")
  hints = _hints(cls)
  kwargs = {}
  for k, v in data.items():
    _check_key(cls, k, prefix)
    key = f"{prefix}.{k}" if prefix else str(k)
    kwargs[k] = _coerce(key, v, hints[k])
  try:
    return cls(**kwargs)
  except (ValueError, TypeError) as e:
    raise ConfigError(_located(cls, prefix, e)) from e


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


# ----------------------------------------------------------------------------
# Overrides.


def parse_value(text: str) -> Any:
  """Parses a command-line value as a YAML scalar or list (never code)."""
  try:
    return read_yaml(text)
  except yaml.YAMLError as e:
    raise ConfigError(f"could not parse {text!r} as a value: {e}") from e


def _set(tree: dict, cls, key: str, value: Any, prefix: str = "") -> None:
  """Sets the dotted ``key`` of ``tree`` (a ``to_dict`` of ``cls``), checked."""
  head, _, rest = key.partition(".")
  _check_key(cls, head, prefix[:-1], prefix + key)
  hint = _hints(cls)[head]
  full = f"{prefix}{head}"
  if rest:
    if not dataclasses.is_dataclass(hint):
      raise ConfigError(f"{prefix}{key}: {full} has no sub-keys; it takes "
                        f"{_type_name(hint)}.")
    _set(tree[head], hint, rest, value, f"{full}.")
    return
  if dataclasses.is_dataclass(hint):
    if hint is Regime and isinstance(value, str):
      value = {"kind": value}
    if isinstance(value, dict):
      # A mapping sets those fields of the section and keeps the others.
      for k, v in value.items():
        _set(tree[head], hint, str(k), v, f"{full}.")
      return
  tree[head] = to_dict(_coerce(full, value, hint))


def apply_overrides(cfg, overrides: dict[str, Any] | None):
  """Returns ``cfg`` with the dotted keys of ``overrides`` set, type-checked.

  Every key and value is checked as it is set; the sections' own checks
  (``Regime``, ``Criteria``, ...) run once all of them are set.
  """
  if not overrides:
    return cfg
  tree = to_dict(cfg)
  for k, v in overrides.items():
    _set(tree, type(cfg), str(k), v)
  return from_dict(type(cfg), tree)


def override(cfg, key: str, value: Any):
  """Returns ``cfg`` with the dotted ``key`` set to ``value``, type-checked."""
  return apply_overrides(cfg, {key: value})


def parse_sets(sets: list[str] | None) -> dict[str, Any]:
  """``["a.b=1", ...]`` -> ``{"a.b": 1}``."""
  out = {}
  for s in sets or []:
    key, eq, text = s.partition("=")
    if not eq or not key.strip():
      raise ConfigError(f"--set: expected key=value; got {s!r}.")
    out[key.strip()] = parse_value(text)
  return out


def _field(key: str) -> dataclasses.Field:
  """The field of :class:`RunConfig` a dotted key names."""
  cls, prefix = RunConfig, ""
  *sections, name = key.split(".")
  for section in sections:
    _check_key(cls, section, prefix[:-1], key)
    cls = _hints(cls)[section]
    if not dataclasses.is_dataclass(cls):
      raise ConfigError(f"{key}: {prefix}{section} has no sub-keys.")
    prefix += f"{section}."
  _check_key(cls, name, prefix[:-1], key)
  return next(f for f in dataclasses.fields(cls) if f.name == name)


def sweepable(key: str, cfg: RunConfig) -> bool:
  """Whether a sweep may vary ``key`` inside one compiled program.

  The sweepable keys are marked on their fields (``seed``,
  ``optimizer.learning_rate``, ``optimizer.momentum``, ``optimizer.b``,
  ``optimizer.initial_step``, ``optimizer.shrink``, ``optimizer.c1``,
  ``optimizer.c2``, ``loss.strength``): numbers the compiled program takes
  as traced inputs.  One exception depends on ``cfg``: optax's L-BFGS
  branches on its learning rate in Python, so under ``optimizer.name:
  lbfgs`` the learning rate is static.
  """
  if not _field(key).metadata.get(SWEEPABLE, False):
    return False
  if key == "optimizer.learning_rate" and cfg.optimizer.name == "lbfgs":
    return False
  return True


# ----------------------------------------------------------------------------
# Experiments.


def load(path: str | Path) -> ExperimentConfig:
  """Reads an experiment YAML file."""
  path = Path(path)
  if not path.is_file():
    raise ConfigError(f"config: no such file: {str(path)!r}.")
  try:
    data = read_yaml(path.read_text())
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


def resolve_runs(exp: ExperimentConfig, *, smoke: bool = False,
                 sets: dict | None = None,
                 variants: bool = True) -> list[RunConfig]:
  """The run configs of an experiment: base + variant + smoke + --set."""
  named = (exp.variants.items() if variants and exp.variants
           else [(exp.base.name if exp.base.name != "run" else exp.name,
                  {})])
  runs = []
  for name, ov in named:
    cfg = apply_overrides(exp.base, ov)
    if smoke:
      cfg = apply_overrides(cfg, exp.smoke)
    cfg = apply_overrides(cfg, sets)
    runs.append(dataclasses.replace(cfg, name=name))
  return runs


def seed_sweep_seeds(exp: ExperimentConfig, smoke: bool = False) -> list:
  """The seeds each variant runs over when ``exp.seed_sweep`` is set."""
  seeds = list(exp.sweep.get("seed") or [])
  return seeds[:SMOKE_SEEDS] if smoke else seeds
