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

Numbers are range-checked here, wherever they come from (a file, an
override, Python): each numeric field carries its :class:`Bounds` (see
:func:`limits`).  Counters (epochs, steps, batch sizes, widths) are int32 in
the compiled program, so they lie in ``[1, 2**31 - 1]``; seeds lie in
``[0, 2**32)``; real numbers are finite.  A message quotes at most a short
piece of what came (:func:`short`), never a file's contents.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
import reprlib
import types
import typing
from pathlib import Path
from typing import Any, NamedTuple, Union

import yaml

from gdlab.data.batching import Regime
from gdlab.stopping import Criteria
from gdlab.tracking import Track


class ConfigError(ValueError):
  """A configuration that cannot be used, with a one-line explanation."""


SWEEPABLE = "sweepable"
BOUNDS = "bounds"
# Counters are int32 in the compiled program.
INT32_MAX = 2**31 - 1
# Seeds are uint32 (``jax.random.key``): they lie in [0, 2**32).
SEED_LIMIT = 2**32
# An experiment file is a few kilobytes; a larger file is not a config.
MAX_FILE_BYTES = 1 << 20

_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60
_SHORT.maxlevel = 3


def short(value: Any) -> str:
  """``repr(value)`` cut to a few dozen characters, for one-line messages."""
  return _SHORT.repr(value)


def _as_float(value) -> float:
  """``float(value)``; an integer too large for a float is infinite."""
  try:
    return float(value)
  except OverflowError:
    return math.inf if value > 0 else -math.inf


class Bounds(NamedTuple):
  """Where a numeric setting lies: ``low <= x <= high`` (``<`` where open).

  ``integer``: an integer; otherwise a finite real number.
  """
  low: float = -math.inf
  high: float = math.inf
  open_low: bool = False
  open_high: bool = False
  integer: bool = False

  def __str__(self) -> str:
    def end(x):
      if x == SEED_LIMIT:
        return "2**32"
      return f"{x:g}" if isinstance(x, float) else str(x)
    low_open = self.open_low or math.isinf(self.low)
    high_open = self.open_high or math.isinf(self.high)
    return (f"{'an integer' if self.integer else 'a finite number'} in "
            f"{'(' if low_open else '['}{end(self.low)}, "
            f"{end(self.high)}{')' if high_open else ']'}")

  def check(self, name: str, value: Any) -> None:
    """Raises ``ConfigError`` unless ``value`` is in bounds.

    ``None`` (a switched-off setting) and values of other types (``eval_every:
    auto``; a wrong type is the type check's to report) pass.
    """
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
      return
    x = value if self.integer else _as_float(value)
    inside = ((x > self.low if self.open_low else x >= self.low) and
              (x < self.high if self.open_high else x <= self.high))
    if not (inside and (self.integer or math.isfinite(x))):
      raise ConfigError(f"{name}: expected {self}; got {short(value)}.")


def counter(low: int = 1) -> Bounds:
  """An int32 counter, at least ``low``."""
  return Bounds(low, INT32_MAX, integer=True)


SEED = Bounds(0, SEED_LIMIT, open_high=True, integer=True)
REAL = Bounds()
POSITIVE = Bounds(0.0, open_low=True)
NON_NEGATIVE = Bounds(0.0)
OPEN_UNIT = Bounds(0.0, 1.0, open_low=True, open_high=True)

# The counters of the sections defined elsewhere, which check their own
# lower bounds: their int32 ceiling.
FOREIGN_BOUNDS: dict[type, dict[str, Bounds]] = {
    Regime: {"batch_size": counter(1)},
    Criteria: {name: counter(1) for name in ("max_epochs", "max_steps",
                                            "max_grad_evals", "patience")},
    Track: {**{name: counter(1) for name in ("every", "subset", "num_iters",
                                             "num_samples")},
            "seed": SEED},
}


def _bounded(default, bounds: Bounds, sweepable: bool = False):
  """A numeric field and its bounds (``sweepable``: see :func:`sweepable`)."""
  return dataclasses.field(default=default, metadata={
      BOUNDS: bounds, SWEEPABLE: sweepable})


def _sweepable(default, bounds: Bounds):
  """A field a sweep may vary inside one compiled program (a traced value)."""
  return _bounded(default, bounds, sweepable=True)


def limits(section) -> dict[str, Bounds]:
  """The bounds of a section's numeric settings (a class or an instance)."""
  own = {f.name: f.metadata[BOUNDS] for f in dataclasses.fields(section)
         if BOUNDS in f.metadata}
  cls = section if isinstance(section, type) else type(section)
  return {**own, **FOREIGN_BOUNDS.get(cls, {})}


def check_limits(section, prefix: str = "") -> None:
  """Checks a section's numeric settings against their :func:`limits`.

  A list setting (``model.hidden``) has every item checked; the message
  names the key as ``prefix`` + field (``hidden[0]`` for an item).
  """
  for name, bounds in limits(section).items():
    value = getattr(section, name)
    if isinstance(value, tuple):
      for i, item in enumerate(value):
        bounds.check(f"{prefix}{name}[{i}]", item)
    else:
      bounds.check(f"{prefix}{name}", value)


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
  n: int | None = _bounded(None, counter(2))
  noise: float | None = _bounded(None, NON_NEGATIVE)
  test_fraction: float = _bounded(0.2, OPEN_UNIT)
  labels: str | None = None
  seed: int = _bounded(0, SEED)
  kappa: float | None = _bounded(None, Bounds(1.0))

  def __post_init__(self):
    check_limits(self)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """``kind``: ``mlp``, ``linear``, ``logistic`` or ``function``."""
  kind: str = "mlp"
  hidden: tuple[int, ...] = _bounded((32,), counter(1))
  activation: str = "tanh"
  output_activation: str = "identity"
  bias: str = "per_neuron"
  init: str = "glorot"
  scale: float = _bounded(1.0, POSITIVE)
  start: tuple[float, ...] | None = _bounded(None, REAL)

  def __post_init__(self):
    check_limits(self)
    if self.start is not None and len(self.start) != 2:
      raise ConfigError(f"start: expected 2 numbers (a point of the 2-D "
                        f"test function); got {len(self.start)}.")


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """A loss name, its reduction, and an optional ``l2``/``l1`` penalty."""
  name: str = "mse"
  reduction: str = "mean"
  penalty: str | None = None
  strength: float = _sweepable(0.0, NON_NEGATIVE)
  penalize_bias: bool = False

  def __post_init__(self):
    check_limits(self)


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
  learning_rate: float = _sweepable(0.1, POSITIVE)
  momentum: float = _sweepable(0.0, Bounds(0.0, 1.0, open_high=True))
  nesterov: bool = False
  schedule: str = "constant"
  decay_rate: float = _bounded(0.5, POSITIVE)
  decay_steps: int = _bounded(100, counter(1))
  warmup_steps: int = _bounded(0, counter(0))
  b: float = _sweepable(1.0, POSITIVE)
  f_star: float | None = _bounded(None, REAL)
  line_search: str | None = None
  initial_step: float = _sweepable(1.0, POSITIVE)
  shrink: float = _sweepable(0.5, OPEN_UNIT)
  c1: float = _sweepable(1e-4, OPEN_UNIT)
  c2: float = _sweepable(0.9, OPEN_UNIT)
  reuse_last_step: bool = False
  tol: float = _bounded(1e-8, POSITIVE)

  def __post_init__(self):
    check_limits(self)


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
  ``gdlab.loop.make_plan``).  ``record_params``: log every step's
  parameters (flattened) into the run folder's ``trajectory.npz``, as
  runs on a 2-D test function always do; meant for small models (a row of
  all the parameters a step; sweeps do not log them).

  ``track``: quantities logged every few epochs (a
  :class:`~gdlab.tracking.Track`: ``metrics``, ``every``, ``subset``,
  ``num_iters``, ...; a list is its ``metrics``), e.g. ``track: {metrics:
  [sharpness], every: 5}``; ``null`` tracks nothing.  Single runs only: a
  sweep refuses it.

  ``tensorboard``: a folder to also write TensorBoard event files into,
  one sub-folder per run, ``<tensorboard>/<run name>`` (a relative path
  from the working directory; ``gdlab.tensorboard``, an optional extra);
  ``null`` writes none.
  """
  regime: Regime = Regime()
  stop: Criteria = Criteria()
  engine: str = "autodiff"
  dtype: str = "float32"
  chunk_epochs: int | None = _bounded(None, counter(1))
  devices: int | None = _bounded(None, counter(1))
  eval_every: int | str = _bounded(1, counter(1))
  step_metrics: str = "all"
  track: Track | None = None
  record_params: bool = False
  tensorboard: str | None = None

  def __post_init__(self):
    if isinstance(self.regime, str):
      object.__setattr__(self, "regime", Regime(self.regime))
    if isinstance(self.eval_every, str) and self.eval_every != "auto":
      raise ConfigError(f"eval_every: expected an integer >= 1 or 'auto'; "
                        f"got {short(self.eval_every)}.")
    for key in ("chunk_epochs", "devices", "eval_every"):
      value = getattr(self, key)
      if isinstance(value, int) and value < 1:
        raise ConfigError(f"{key}: expected an integer >= 1; got {value}.")
    check_limits(self)
    check_limits(self.regime, "regime.")
    check_limits(self.stop, "stop.")
    if self.track is not None:
      check_limits(self.track, "track.")
    if isinstance(self.tensorboard, str) and (
        not self.tensorboard.strip() or "\0" in self.tensorboard):
      raise ConfigError(f"tensorboard: expected a folder path (a non-empty "
                        f"string) or null; got {short(self.tensorboard)}.")


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Everything one training run needs."""
  name: str = "run"
  seed: int = _sweepable(0, SEED)
  data: DataConfig = DataConfig()
  model: ModelConfig = ModelConfig()
  loss: LossConfig = LossConfig()
  optimizer: OptimizerConfig = OptimizerConfig()
  train: TrainConfig = TrainConfig()

  def __post_init__(self):
    check_limits(self)
    regime, n = self.train.regime, self.data.n
    if (regime.kind == "minibatch" and isinstance(n, int) and
        isinstance(regime.batch_size, int) and regime.batch_size > n):
      raise ConfigError(f"train.regime.batch_size: expected at most data.n "
                        f"= {n} records (fewer after the test split); got "
                        f"{regime.batch_size}.")


# The analyses of gdlab.analyses, by the name an experiment's ``analysis``
# key gives (gdlab.analyses registers exactly these).
ANALYSES = ("closed_form", "gradcheck", "seed_spread", "subgradient_bound",
            "surface", "landscape", "edge_of_stability", "step_size",
            "mnist1d", "methods", "noise_scale")
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


class _NoRepeatedKeys:  # pylint: disable=too-few-public-methods
  """A key given twice in one mapping is an error (PyYAML keeps the last one,
  so a second ``variants:`` would silently replace the first)."""

  def construct_mapping(self, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
      if (isinstance(key_node, yaml.ScalarNode) and
          key_node.tag != "tag:yaml.org,2002:merge"):
        key = (key_node.tag, key_node.value)
        if key in seen:
          raise yaml.constructor.ConstructorError(
              "while constructing a mapping", node.start_mark,
              f"found the key {short(key_node.value)} twice",
              key_node.start_mark)
        seen.add(key)
    return super().construct_mapping(node, deep=deep)


class _Loader(_NoRepeatedKeys, yaml.SafeLoader):  # pylint: disable=too-many-ancestors
  """PyYAML's safe loader with YAML 1.2's float forms (``1e-3``, ``.5``),
  refusing repeated keys."""


# libyaml's parser, where PyYAML was built with it: the same loader (the
# same constructors and resolvers) around a parser several times faster.
if hasattr(yaml, "CSafeLoader"):
  class _CLoader(_NoRepeatedKeys, yaml.CSafeLoader):  # pylint: disable=too-many-ancestors
    """:class:`_Loader` with libyaml's parser."""
else:
  _CLoader = None


_FLOAT = "tag:yaml.org,2002:float"
_RESOLVERS = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _FLOAT]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
# A float has a point or an exponent (or both); plain integers stay ints.
_FLOAT_FORMS = re.compile(r"""^(?:
     [-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
    |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)
for _loader in filter(None, (_Loader, _CLoader)):
  _loader.yaml_implicit_resolvers = {k: list(v) for k, v in _RESOLVERS.items()}
  _loader.add_implicit_resolver(_FLOAT, _FLOAT_FORMS, list("-+0123456789."))


def read_yaml(text: str) -> Any:
  """Parses YAML text safely (no code), reading floats as YAML 1.2 does.

  With libyaml's parser where PyYAML has it; a text that it refuses is read
  again by PyYAML's own parser, whose errors say more (the character or
  alias at fault), so the error is the same either way.
  """
  if _CLoader is not None:
    try:
      return yaml.load(text, Loader=_CLoader)  # nosec: a SafeLoader
    except Exception:  # pylint: disable=broad-except
      pass  # Read again below, for PyYAML's own error.
  return yaml.load(text, Loader=_Loader)  # nosec: a SafeLoader subclass


def _clip(text: str, size: int = 100) -> str:
  """``text`` on one line, cut to ``size`` characters."""
  text = " ".join(str(text).split())
  return text if len(text) <= size else text[:size - 3] + "..."


def _yaml_problem(error: Exception) -> str:
  """What a YAML error says went wrong, in one short line, and where.

  PyYAML's own message quotes the offending lines; this keeps its one-line
  ``problem`` and the position only.
  """
  if isinstance(error, RecursionError):
    return "nesting too deep"
  if isinstance(error, yaml.reader.ReaderError):
    code = (error.character if isinstance(error.character, int)
            else ord(error.character))
    return (f"the character #x{code:04x} (not allowed in YAML) at offset "
            f"{error.position}")
  problem = getattr(error, "problem", None) or str(error)
  context = getattr(error, "context", None)
  if context and context.startswith("while "):
    problem = f"{problem} ({context})"
  elif context:
    problem = f"{context} {problem}"
  problem = _clip(problem)
  mark = getattr(error, "problem_mark", None)
  if mark is not None:
    problem += f" at line {mark.line + 1}, column {mark.column + 1}"
  return problem


def _parse(text: str) -> Any:
  """:func:`read_yaml`, with every failure as a ``ValueError`` to report."""
  try:
    return read_yaml(text)
  except (yaml.YAMLError, RecursionError) as e:
    raise ValueError(_yaml_problem(e)) from e
  except ValueError as e:
    # A value the safe loader cannot build: a date like 2020-13-45, an
    # integer of thousands of digits.
    raise ValueError(f"a value that cannot be read "
                     f"({_clip(str(e).partition(';')[0])})") from e


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
    sections = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
    if value is not None and len(sections) == 1:  # an optional section
      return _coerce(key, value, sections[0])
    for arg in typing.get_args(tp):
      try:
        return _coerce(key, value, arg)
      except ConfigError:
        pass
    raise ConfigError(f"{key}: expected {_type_name(tp)}; got "
                      f"{short(value)}.")
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
      return _as_float(value)
  elif tp is str:
    if isinstance(value, str):
      return value
  elif tp is dict:
    if isinstance(value, dict):
      return value
  elif dataclasses.is_dataclass(tp):
    if tp is Regime and isinstance(value, str):
      value = {"kind": value}
    if tp is Track and isinstance(value, (str, list)):
      value = {"metrics": [value] if isinstance(value, str) else value}
    if isinstance(value, dict):
      return from_dict(tp, value, prefix=key)
    if isinstance(value, tp):
      return value
  raise ConfigError(f"{key}: expected {_type_name(tp)}; got {short(value)}"
                    f" ({type(value).__name__}).")


def _hints(cls) -> dict[str, Any]:
  return typing.get_type_hints(cls)


# What a key looks like; any other key (a line of some other file read as
# YAML) is described in messages, not quoted.
_KEY_LIKE = re.compile(r"[\w.\-\[\] ]{1,64}")


def _check_key(cls, name: str, prefix: str, key: str | None = None) -> None:
  """Raises the error for a key ``cls`` lacks: moved, or unknown.

  ``prefix`` is the section's dotted key; ``key`` the key to name in the
  message (default: ``prefix.name``).
  """
  known = [f.name for f in dataclasses.fields(cls)]
  if name in known:
    return
  if not _KEY_LIKE.fullmatch(str(name)):
    raise ConfigError(f"{prefix or 'config'}: expected keys"
                      f"{' of ' + prefix if prefix else ''}: "
                      f"{', '.join(known)}; got a key of "
                      f"{len(str(name))} characters that is not a setting "
                      f"name.")
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
  # The head is a field (``seed``), an item (``hidden[0]``) or a field of a
  # sub-section (``stop.max_epochs``).
  field = re.split(r"[.\[]", head, maxsplit=1)[0]
  if sep and field in {f.name for f in dataclasses.fields(cls)}:
    return f"{prefix}.{head}: {rest}"
  if sep and head == prefix.rpartition(".")[2]:
    return f"{prefix}: {rest}"
  return f"{prefix}: {message}"


def from_dict(cls, data: dict, prefix: str = ""):
  """Builds the dataclass ``cls`` from a dict, rejecting unknown keys."""
  if not isinstance(data, dict):
    raise ConfigError(f"{prefix or 'config'}: expected a mapping; got "
                      f"{short(data)}.")
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


def parse_value(text: str, key: str = "value") -> Any:
  """Parses a command-line value as a YAML scalar or list (never code).

  ``key`` names the setting in the error message.
  """
  try:
    return _parse(text)
  except ValueError as e:
    raise ConfigError(f"{key}: expected a YAML value (a number, string, "
                      f"list or mapping); got {short(text)}: {e}.") from e


def _set(tree: dict, cls, key: str, value: Any, prefix: str = "") -> None:
  """Sets the dotted ``key`` of ``tree`` (a ``to_dict`` of ``cls``), checked."""
  head, _, rest = key.partition(".")
  _check_key(cls, head, prefix[:-1], prefix + key)
  hint = _hints(cls)[head]
  full = f"{prefix}{head}"
  if rest:
    # An optional section (``train.track``): switched off, it starts from
    # its defaults.
    section = next((t for t in typing.get_args(hint)
                    if dataclasses.is_dataclass(t)), hint)
    if section is not hint and tree[head] is None:
      tree[head] = to_dict(section())
    hint = section
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
      raise ConfigError(f"--set: expected key=value; got {short(s)}.")
    out[key.strip()] = parse_value(text, key.strip())
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


def _read_text(path: Path) -> str:
  """The text of a config file.

  Raises:
    ConfigError: naming the file, when it is missing, not a regular file,
      unreadable, larger than :data:`MAX_FILE_BYTES` or not UTF-8 text.
  """
  shown = short(str(path))
  try:
    is_file = path.is_file()
    size = path.stat().st_size if is_file else 0
    raw = path.read_bytes() if is_file and size <= MAX_FILE_BYTES else b""
    what = ("a directory" if path.is_dir() else
            "not a regular file" if path.exists() else None)
  except (OSError, ValueError) as e:
    # ValueError: a path with a NUL character.
    reason = getattr(e, "strerror", None) or "not a valid path"
    raise ConfigError(f"config: expected a readable YAML file; got {shown} "
                      f"({reason.lower()}).") from e
  if not is_file and what is None:
    raise ConfigError(f"config: expected an existing YAML file; got "
                      f"{shown}: no such file.")
  if not is_file:
    raise ConfigError(f"config: expected a YAML file; got {shown}, {what}.")
  if size > MAX_FILE_BYTES:
    raise ConfigError(f"config: expected a YAML file of at most "
                      f"{MAX_FILE_BYTES >> 20} MiB; got {shown} of "
                      f"{size / 2**20:.1f} MiB.")
  try:
    return raw.decode("utf-8-sig")
  except UnicodeDecodeError as e:
    raise ConfigError(f"config: cannot read {shown} as UTF-8 text: expected "
                      f"a YAML text file; got the byte "
                      f"0x{raw[e.start]:02x} at offset {e.start}.") from e


_KINDS = {str: "a string", list: "a list", int: "an integer",
          float: "a number", bool: "true or false"}


def load(path: str | Path) -> ExperimentConfig:
  """Reads an experiment YAML file.

  Every failure is a one-line ``ConfigError`` that names the file and never
  quotes more of it than a short piece: a missing or unreadable file, text
  that is not YAML (its line and column), an empty file, YAML that is not a
  mapping of settings, and every check of :func:`from_dict` and the
  overrides of ``variants``, ``sweep`` and ``smoke``.
  """
  path = Path(path)
  shown = short(str(path))
  text = _read_text(path)
  try:
    data = _parse(text)
  except ValueError as e:
    raise ConfigError(f"config: expected YAML in {shown}; got malformed YAML"
                      f": {e}.") from e
  if data is None:
    got = "an empty file" if not text.strip() else "no settings (null)"
    raise ConfigError(f"config: expected a YAML mapping of settings in "
                      f"{shown}; got {got}.")
  if not isinstance(data, dict):
    kind = _KINDS.get(type(data), f"a {type(data).__name__}")
    raise ConfigError(f"config: expected a YAML mapping of settings in "
                      f"{shown}; got {kind}.")
  exp = from_dict(ExperimentConfig, data)
  # Variants, sweep and smoke hold dotted overrides: check them now.
  for name, ov in exp.variants.items():
    if not isinstance(ov, dict):
      raise ConfigError(f"variants.{name}: expected a mapping of dotted keys "
                        f"to values; got {short(ov)}.")
    apply_overrides(exp.base, ov)
  apply_overrides(exp.base, exp.smoke)
  for k, values in exp.sweep.items():
    if not isinstance(values, list) or not values:
      raise ConfigError(f"sweep.{k}: expected a non-empty list of values; "
                        f"got {short(values)}.")
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
