"""The ``Dataset`` container and the helpers every loader shares.

Contract:

* A :class:`Dataset` is a frozen dataclass registered as a JAX pytree. The four
  arrays (``x_train``, ``y_train``, ``x_test``, ``y_test``) and the optional
  ``truth`` and ``stats`` dicts are pytree leaves; ``name``, ``task``,
  ``n_classes`` and ``labels`` are static metadata, so a data set can be passed
  through ``jax.jit`` and ``jax.device_put`` as one object.
* Inputs ``x`` are float arrays of shape ``(n, d)`` (images keep their extra
  axes when a loader is asked not to flatten them).
* Labels follow the ``task``:

  - ``"regression"``: ``y`` is float, shape ``(n, k)``; one target gives
    ``(n, 1)``.
  - ``"binary"``: ``y`` is float, shape ``(n, 1)``, values in ``{0, 1}``
    (``labels="01"``, for logistic and cross-entropy losses) or in
    ``{-1, +1}`` (``labels="pm1"``, for hinge and margin losses). Every loader
    of a two-class set takes ``labels=``; :func:`to_pm1` converts afterwards.
  - ``"multiclass"``: ``y`` is ``int32``, shape ``(n,)``, class indices in
    ``[0, n_classes)``; :func:`one_hot` gives the ``(n, n_classes)`` float
    encoding.

  A set with exactly two classes is always ``"binary"``; three or more are
  ``"multiclass"``.
* Floats use JAX's default float dtype: ``float32``, or ``float64`` when
  ``jax_enable_x64`` is on.
* Constructing a ``Dataset`` checks it on the host with NumPy (:func:`check`,
  nothing compiles): a non-empty training part, one label row per record, a
  test part absent or non-empty with records shaped like the training ones,
  labels that fit ``task`` (class indices in ``[0, n_classes)``; binary labels
  in ``{0, 1}`` or ``{-1, +1}`` as ``labels`` says), and no NaN or inf unless
  ``check_finite=False``. Each failure raises a one-line ``ValueError`` naming
  the array.
* Randomness comes from ``seed``, which is either a Python ``int`` (turned into
  ``jax.random.key(seed)``) or a ``jax.random`` key, so a run's key can be
  split and one part handed to its data. Data sets are sampled once, before
  training, on the host: :func:`rng` seeds NumPy's PCG64 generator with the
  key's data (``jax.random.key_data``), the records are drawn and split in
  NumPy (float64), and the parts are then put on the device. This costs no
  compilation whatever the shapes, and the same seed and options give
  identical arrays, equal in float32 and float64 runs up to rounding.
* Splits draw the test records from a random permutation; with labels given
  they are stratified, so each class keeps its share in both parts. The test
  part has ``round(n * test_fraction)`` records, clipped to ``[1, n - 1]``.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gdlab import _checks
from gdlab.data import validation

TASKS = ("regression", "binary", "multiclass")
BINARY_LABELS = ("01", "pm1")


def _static(**kwargs):
  return dataclasses.field(metadata=dict(static=True), **kwargs)


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A train/test split with its metadata.

  Attributes:
    x_train: float inputs, ``(n_train, d)``.
    y_train: labels; the module docstring gives shape and dtype per task.
    x_test: float inputs, ``(n_test, d)``.
    y_test: labels of the test records.
    name: the registry name of the set (``"moons"``, ``"digits"``, ...).
    task: ``"regression"``, ``"binary"`` or ``"multiclass"``.
    n_classes: number of classes; ``None`` for regression.
    labels: ``"01"`` or ``"pm1"`` for a binary set; ``None`` otherwise.
    truth: for synthetic sets, the parameters that generated the data (for
      example ``{"w": (d, k), "b": (k,)}`` for linear regression); else
      ``None``.
    stats: for standardised sets, the training-set statistics used
      (``{"x_mean", "x_std"}``, plus ``{"y_mean", "y_std"}`` when targets were
      standardised); else ``None``.
    check_finite: at construction, reject NaN and inf in the four arrays
      (``False`` lets them through; not stored).

  Construction checks the set on the host (:func:`check`) and raises
  ``ValueError`` for an empty training part, labels that do not match the
  records or the ``task``, or non-finite values. A set that JAX rebuilds from
  its leaves (``jit``, ``tree_map``, ``device_put``) is not checked again.
  """
  x_train: jax.Array
  y_train: jax.Array
  x_test: jax.Array
  y_test: jax.Array
  name: str = _static()
  task: str = _static()
  n_classes: int | None = _static(default=None)
  labels: str | None = _static(default=None)
  truth: dict[str, jax.Array] | None = None
  stats: dict[str, jax.Array] | None = None
  check_finite: dataclasses.InitVar[bool] = True

  def __post_init__(self, check_finite: bool):
    check(self, check_finite=check_finite)

  @property
  def n_train(self) -> int:
    return self.x_train.shape[0]

  @property
  def n_test(self) -> int:
    return self.x_test.shape[0]

  @property
  def n_features(self) -> int:
    """Size of one flattened input record."""
    return int(np.prod(self.x_train.shape[1:]))

  @property
  def n_outputs(self) -> int:
    """Width of a model output for these labels: ``k``, 1 or ``n_classes``."""
    if self.task == "multiclass":
      return self.n_classes
    return self.y_train.shape[1]


_LEAVES = tuple(f.name for f in dataclasses.fields(Dataset)
                if not f.metadata.get("static"))
_STATIC = tuple(f.name for f in dataclasses.fields(Dataset)
                if f.metadata.get("static"))


def _flatten(ds: Dataset):
  return ([(jax.tree_util.GetAttrKey(f), getattr(ds, f)) for f in _LEAVES],
          tuple(getattr(ds, f) for f in _STATIC))


def _unflatten(static, leaves) -> Dataset:
  # Not through __init__: JAX rebuilds a set from tracers and placeholders,
  # which cannot be checked, and the set it came from was checked.
  ds = object.__new__(Dataset)
  for f, v in zip(_STATIC + _LEAVES, (*static, *leaves)):
    object.__setattr__(ds, f, v)
  return ds


jax.tree_util.register_pytree_with_keys(Dataset, _flatten, _unflatten)


def check(ds: Dataset, *, check_finite: bool = True) -> None:
  """Checks a data set on the host (NumPy); what construction runs.

  The arrays as :func:`gdlab.data.validation.check_arrays` checks them; the
  metadata (``task``, ``n_classes``, ``labels``); and the labels' values
  against the task: class indices in ``[0, n_classes)`` for a multiclass
  set, ``{0, 1}`` or ``{-1, +1}`` (as ``labels`` says) for a binary one.

  Raises:
    ValueError: naming the field or array that fails.
  """
  _checks.check_choice("task", ds.task, TASKS)
  if ds.task == "binary":
    _checks.check_choice("labels", ds.labels, BINARY_LABELS)
  elif ds.labels is not None:
    raise ValueError(f"labels: expected None for a {ds.task!r} data set (only "
                     f"binary sets have 01/pm1 labels); got {ds.labels!r}.")
  if ds.task == "multiclass":
    _checks.check_positive_int("n_classes", ds.n_classes, minimum=2)
  validation.check_arrays(ds.x_train, ds.y_train, ds.x_test, ds.y_test,
                          check_finite=check_finite)
  for part in ("train", "test"):
    y = getattr(ds, f"y_{part}")
    if y is not None:
      _check_task_labels(ds, f"y_{part}", y)


def _check_task_labels(ds: Dataset, name: str, y) -> None:
  if ds.task == "multiclass":
    if not np.issubdtype(y.dtype, np.integer):
      raise TypeError(f"{name}: expected integer class indices for a "
                      f"'multiclass' data set; got dtype {y.dtype}.")
    validation.check_values_in(
        name, y, None, interval=(0, ds.n_classes - 1),
        expected=f"class indices in [0, {ds.n_classes}) (n_classes = "
        f"{ds.n_classes})")
  elif ds.task == "binary":
    allowed, shown = {"01": ((0, 1), "{0, 1}"),
                      "pm1": ((-1, 1), "{-1, +1}")}[ds.labels]
    validation.check_values_in(
        name, y, allowed,
        expected=f"labels in {shown} (labels={ds.labels!r})")


def float_dtype() -> np.dtype:
  """JAX's default float dtype: float64 with x64 enabled, else float32."""
  return jnp.result_type(float)


def as_key(seed: Any) -> jax.Array:
  """Turns ``seed`` into a typed ``jax.random`` key.

  ``seed`` is a Python ``int`` (giving ``jax.random.key(seed)``), a typed key,
  or the raw ``uint32[2]`` data of a legacy ``jax.random.PRNGKey``.
  """
  if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
    return jax.random.key(int(seed))
  if isinstance(seed, jax.Array):
    if jax.dtypes.issubdtype(seed.dtype, jax.dtypes.prng_key):
      return seed
    if seed.dtype == jnp.uint32 and seed.shape == (2,):
      return jax.random.wrap_key_data(seed)
  raise TypeError(f"seed: expected an int or a jax.random key; got {seed!r} "
                  f"of type {type(seed).__name__}.")


def rng(seed: Any) -> np.random.Generator:
  """NumPy's generator seeded from ``seed`` (``int`` or ``jax.random`` key).

  ``rng(7)`` and ``rng(jax.random.key(7))`` give the same stream.
  """
  data = np.asarray(jax.random.key_data(as_key(seed)))
  return np.random.default_rng(data.ravel().astype(np.uint64))


def one_hot(y: jax.Array, n_classes: int) -> jax.Array:
  """One-hot encoding of ``int`` class indices ``(n,)`` as floats ``(n, c)``."""
  return jax.nn.one_hot(y, n_classes, dtype=float_dtype())


def to_pm1(y: jax.Array) -> jax.Array:
  """Maps binary labels in ``{0, 1}`` to ``{-1, +1}`` (``2 y - 1``)."""
  return 2 * y - 1


def check_common(n: Any, noise: Any, test_fraction: Any) -> None:
  """Checks the options every synthetic generator takes."""
  _checks.check_positive_int("n", n, minimum=2)
  _checks.check_number("noise", noise, low=0, low_inclusive=True)
  check_test_fraction(test_fraction)


def check_test_fraction(test_fraction: Any) -> None:
  _checks.check_number("test_fraction", test_fraction, low=0, high=1)


def stratified_order(gen: np.random.Generator, n_first: int,
                     y: Any) -> np.ndarray:
  """A random order of the records whose first ``n_first`` are stratified.

  Args:
    gen: NumPy generator, see :func:`rng`.
    n_first: how many records to pick first (for a test part or subsample).
    y: class of each record, shape ``(n,)`` (all equal for no strata).

  Returns:
    A permutation of ``range(n)`` as a NumPy array: the first ``n_first``
    entries hold, for each class ``c`` with ``n_c`` members, ``n_c * n_first /
    n`` records rounded by the largest-remainder rule; the others follow.
  """
  y = np.asarray(y)
  n = y.shape[0]
  perm = gen.permutation(n)
  classes, counts = np.unique(y, return_counts=True)
  quota = counts * n_first / n
  take = np.floor(quota).astype(int)
  short = n_first - take.sum()
  take[np.argsort(-(quota - take), kind="stable")[:short]] += 1
  first = np.zeros(n, dtype=bool)
  y_perm = y[perm]
  for c, k in zip(classes, take):
    first[np.flatnonzero(y_perm == c)[:k]] = True
  return np.concatenate([perm[first], perm[~first]])


def build(
    gen: np.random.Generator,
    x: Any,
    y: Any,
    *,
    name: str,
    task: str,
    test_fraction: float,
    n_classes: int | None = None,
    labels: str | None = None,
    truth: dict[str, Any] | None = None,
    stratify: bool = True,
    check_finite: bool = True,
) -> Dataset:
  """Splits ``(x, y)`` into train and test and packs a :class:`Dataset`.

  ``gen`` draws the permutation that decides which records go to the test
  part. ``y`` comes in the canonical form of the task (``{0, 1}`` floats for a
  binary set); ``labels="pm1"`` maps it to ``{-1, +1}`` here.
  ``check_finite`` goes to the :class:`Dataset`.
  """
  _checks.check_choice("task", task, TASKS)
  check_test_fraction(test_fraction)
  if task == "binary":
    labels = _checks.check_choice("labels", labels or "01", BINARY_LABELS)
  n = x.shape[0]
  if n < 2:
    raise ValueError(f"x: expected at least 2 records to split into a "
                     f"training and a test part; got {n}.")
  n_test = int(np.clip(round(n * test_fraction), 1, n - 1))
  strata = (np.asarray(y).reshape(n, -1)[:, 0]
            if stratify and task != "regression" else np.zeros(n))
  order = stratified_order(gen, n_test, strata)
  test, train = order[:n_test], order[n_test:]
  x = np.asarray(x, dtype=float_dtype())
  if task == "multiclass":
    y = np.asarray(y, dtype=np.int32)
  else:
    y = np.asarray(y, dtype=float_dtype()).reshape(n, -1)
    if labels == "pm1":
      y = to_pm1(y)
  return Dataset(
      x_train=jax.device_put(x[train]), y_train=jax.device_put(y[train]),
      x_test=jax.device_put(x[test]), y_test=jax.device_put(y[test]),
      name=name, task=task, n_classes=n_classes,
      labels=labels if task == "binary" else None,
      truth=None if truth is None else jax.tree_util.tree_map(_to_device,
                                                              truth),
      check_finite=check_finite)


def _to_device(a: Any) -> jax.Array:
  a = np.asarray(a)
  return jax.device_put(a.astype(float_dtype()) if a.dtype.kind == "f" else a)


def standardize(ds: Dataset, *, features: bool = True,
                targets: bool = False) -> Dataset:
  """Standardises features and/or regression targets with training statistics.

  Each column is shifted by its training-set mean and divided by its
  training-set standard deviation; the test part uses the same numbers, so no
  information from the test records leaks into training. A column that is
  constant on the training set is only centred (its scale is taken as 1).

  Args:
    ds: the data set.
    features: standardise ``x`` (each flattened input coordinate).
    targets: standardise ``y`` (regression only).

  Returns:
    The data set with ``stats`` holding the means and deviations used
    (``x_mean``/``x_std`` and/or ``y_mean``/``y_std``, added to any already
    there).
  """
  if targets and ds.task != "regression":
    raise ValueError(f"targets: only regression targets can be standardised; "
                     f"got a {ds.task!r} data set.")
  stats, changes = {}, {}
  for part, on in (("x", features), ("y", targets)):
    if not on:
      continue
    train, test, mean, std = _standardize(getattr(ds, f"{part}_train"),
                                          getattr(ds, f"{part}_test"))
    stats.update({f"{part}_mean": mean, f"{part}_std": std})
    changes.update({f"{part}_train": train, f"{part}_test": test})
  stats = {**(ds.stats or {}), **stats}
  # Finite in, finite out: the values were checked (or let through) when
  # ``ds`` was built.
  return dataclasses.replace(ds, stats=stats or None, check_finite=False,
                             **changes)


@jax.jit
def _standardize(train, test):
  mean, std = train.mean(axis=0), train.std(axis=0)
  std = jnp.where(std > 0, std, 1.0)
  return (train - mean) / std, (test - mean) / std, mean, std
