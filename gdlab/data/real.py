"""Small real data sets that ship inside scikit-learn, loaded offline.

Contract: the raw files come with the ``scikit-learn`` package
(``sklearn.datasets.load_*``); nothing is downloaded. Each loader

1. optionally draws a subsample of ``n`` records (stratified for
   classification),
2. splits train and test by ``seed`` with ``test_fraction`` of the records in
   the test part (stratified for classification), and
3. standardises every feature with the mean and standard deviation of the
   training part only (``standardize=True``), applying the same shift and
   scale to the test part; the statistics are kept in ``Dataset.stats``.

Label shapes and dtypes follow :mod:`gdlab.data.dataset`.

The raw arrays are read through scikit-learn once and then kept in the data
cache (:mod:`gdlab.data.cache`, keyed by scikit-learn's version and the
loader): importing scikit-learn takes longer than a small run trains, and a
cached set is read without it.

=================  =====  ========  ==========  ===============================
name               n      features  task        labels
=================  =====  ========  ==========  ===============================
``digits``         1797   64        multiclass  10 digits, 8 x 8 pixels 0..16
``iris``           150    4         multiclass  3 species
``breast_cancer``  569    30        binary      0 malignant, 1 benign
``diabetes``       442    10        regression  disease progression after 1 y
=================  =====  ========  ==========  ===============================
"""

from __future__ import annotations

import functools
import importlib.metadata

import numpy as np

from gdlab import _checks
from gdlab.data import cache
from gdlab.data import dataset
from gdlab.data.dataset import Dataset


def _read_sklearn(loader: str) -> dict[str, np.ndarray]:
  # Imported here: scikit-learn is slow to import, and needed only to fill
  # the cache.
  from sklearn import datasets
  raw = getattr(datasets, loader)()
  return {"x": np.asarray(raw.data, float), "y": np.asarray(raw.target)}


@functools.lru_cache(maxsize=None)
def _raw(loader: str) -> tuple[np.ndarray, np.ndarray]:
  """``(features, targets)`` of a ``sklearn.datasets`` loader, read once per
  process, from the data cache when it holds them."""
  version = importlib.metadata.version("scikit-learn")
  key = cache.key("scikit-learn", version, {"loader": loader})
  where = cache.folder()
  file = None if where is None else cache.path(where, f"sklearn-{loader}", key)
  arrays = cache.cached(file, key, {"x": None, "y": None},
                        lambda: _read_sklearn(loader))
  x, y = arrays["x"].astype(float), arrays["y"]
  x.setflags(write=False)
  y.setflags(write=False)
  return x, y


def _load(name: str, loader: str, task: str, *, n, seed, test_fraction,
          standardize_x, standardize_y=False, labels=None) -> Dataset:
  dataset.check_test_fraction(test_fraction)
  if task == "binary":
    _checks.check_choice("labels", labels, dataset.BINARY_LABELS)
  x_all, y_all = _raw(loader)
  x, y = x_all.copy(), y_all.copy()
  gen = dataset.rng(seed)
  if n is not None:
    _checks.check_positive_int("n", n, minimum=2)
    if n > x.shape[0]:
      raise ValueError(f"n: expected an integer in [2, {x.shape[0]}] (the size "
                       f"of {name!r}) or None; got {n}.")
    strata = y if task != "regression" else np.zeros(x.shape[0])
    keep = dataset.stratified_order(gen, n, strata)[:n]
    x, y = x[keep], y[keep]
  n_classes = None
  if task != "regression":
    n_classes = int(y_all.max()) + 1
  ds = dataset.build(gen, x, y, name=name, task=task, n_classes=n_classes,
                     test_fraction=test_fraction, labels=labels)
  if standardize_x or standardize_y:
    ds = dataset.standardize(ds, features=standardize_x, targets=standardize_y)
  return ds


def digits(n: int | None = None, *, seed=0, test_fraction: float = 0.2,
           standardize: bool = True) -> Dataset:
  """Handwritten digits, 8 x 8 images flattened to 64 features, 10 classes.

  Args:
    n: subsample size, or ``None`` for all 1797 records.
    seed: ``int`` or ``jax.random`` key for the subsample and the split.
    test_fraction: share of records held out for testing.
    standardize: standardise features with training-set statistics. Border
      pixels that are always 0 on the training set are only centred.
  """
  return _load("digits", "load_digits", "multiclass", n=n, seed=seed,
               test_fraction=test_fraction, standardize_x=standardize)


def iris(n: int | None = None, *, seed=0, test_fraction: float = 0.2,
         standardize: bool = True) -> Dataset:
  """Fisher's iris flowers: 4 measurements, 3 species, 150 records.

  Args:
    n: subsample size, or ``None`` for all records.
    seed: ``int`` or ``jax.random`` key for the subsample and the split.
    test_fraction: share of records held out for testing.
    standardize: standardise features with training-set statistics.
  """
  return _load("iris", "load_iris", "multiclass", n=n, seed=seed,
               test_fraction=test_fraction, standardize_x=standardize)


def breast_cancer(n: int | None = None, *, seed=0, test_fraction: float = 0.2,
                  standardize: bool = True, labels: str = "01") -> Dataset:
  """Wisconsin diagnostic breast cancer: 30 features, 569 records, binary.

  Class 1 is benign and class 0 malignant, as in scikit-learn.

  Args:
    n: subsample size, or ``None`` for all records.
    seed: ``int`` or ``jax.random`` key for the subsample and the split.
    test_fraction: share of records held out for testing.
    standardize: standardise features with training-set statistics.
    labels: ``"01"`` or ``"pm1"``.
  """
  return _load("breast_cancer", "load_breast_cancer", "binary", n=n,
               seed=seed, test_fraction=test_fraction,
               standardize_x=standardize, labels=labels)


def diabetes(n: int | None = None, *, seed=0, test_fraction: float = 0.2,
             standardize: bool = True,
             standardize_y: bool = True) -> Dataset:
  """Diabetes progression: 10 features, 442 records, one real target.

  scikit-learn ships the features already centred and scaled on the whole set;
  they are standardised again here with training statistics only.

  Args:
    n: subsample size, or ``None`` for all records.
    seed: ``int`` or ``jax.random`` key for the subsample and the split.
    test_fraction: share of records held out for testing.
    standardize: standardise features with training-set statistics.
    standardize_y: also standardise the target with training statistics;
      ``stats`` keeps ``y_mean`` and ``y_std``
      to map predictions back to the original scale.
  """
  return _load("diabetes", "load_diabetes", "regression", n=n, seed=seed,
               test_fraction=test_fraction, standardize_x=standardize,
               standardize_y=standardize_y)
