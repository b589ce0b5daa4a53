"""MNIST-1D (Greydanus, 2020), built locally by the ``mnist1d`` package.

Contract: the records come from the package's own generator,
``mnist1d.data.make_dataset(args)`` with ``args`` its defaults
(``mnist1d.data.get_dataset_args()``: 5000 records of 40 features, 10 classes,
generator seed 42, 80% for training); nothing is downloaded.  The split is the
package's: its first 4000 records train, the last 1000 test, and the features
keep the package's scaling (centred and scaled to unit standard deviation over
all 5000 records).  ``test_fraction`` other than 0.2 sets the generator's
``train_split`` to ``1 - test_fraction``: still the package's split, of a
different set of arguments.

The generator seeds NumPy's and Python's global random generators; their
states are saved before it runs and restored after, so a caller's random
streams are unaffected.

The arrays are cached after the first build in one ``.npz`` per set of
arguments, named by the package's version and a hash of the arguments, in
the data cache (``gdlab.data.cache``: ``$GDLAB_DATA_CACHE``, by default
``~/.cache/gdlab/data``; ``off`` turns it off).  A cache file that cannot be
read or does not hold what its arguments give (a wrong shape, other
arguments) is rebuilt; an unwritable folder is not an error.

Reference: S. Greydanus, "Scaling down deep learning", arXiv:2011.14439
(2020); https://github.com/greydanus/mnist1d.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import math
import os
import random
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import jax
import numpy as np

from gdlab import _checks
from gdlab.data import cache
from gdlab.data import dataset
from gdlab.data.dataset import Dataset

ENV = cache.ENV
INSTALL = 'pip install "gdlab[mnist1d]"'
PACKAGE = "mnist1d"


def package() -> ModuleType:
  """``mnist1d.data``, or an ``ImportError`` that says how to install it."""
  # Imported here: an optional extra, and slow to import (it loads pyplot).
  try:
    import mnist1d.data  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError(f"mnist1d: the MNIST-1D data set is built by the "
                      f"optional package 'mnist1d', which is not installed; "
                      f"install it with: {INSTALL}") from e
  return mnist1d.data


def version() -> str:
  """The installed ``mnist1d`` version (a part of the cache key)."""
  package()
  return importlib.metadata.version(PACKAGE)


def generator_args(test_fraction: float = 0.2) -> dict[str, Any]:
  """The generator's default arguments, with ``train_split`` for the split."""
  dataset.check_test_fraction(test_fraction)
  args = package().get_dataset_args(as_dict=True)
  if not math.isclose(test_fraction, 1 - args["train_split"]):
    args["train_split"] = 1 - test_fraction
  return args


def cache_folder(cache_dir: str | os.PathLike | None = None) -> Path | None:
  """The cache folder (``gdlab.data.cache.folder``), or ``None`` when off."""
  return cache.folder(cache_dir)


def cache_key(args: dict[str, Any], package_version: str) -> str:
  """The canonical text that names one build: the version and the arguments."""
  return cache.key(PACKAGE, package_version, args)


def cache_path(folder: Path, key: str, package_version: str) -> Path:
  """``folder/mnist1d-<version>-<hash of key>.npz``."""
  return cache.path(folder, f"{PACKAGE}-{package_version}", key)


def expected_shapes(args: dict[str, Any]) -> dict[str, tuple[int, ...]]:
  """The shapes ``make_dataset(args)`` gives, for checking a cache file."""
  n = args["num_samples"] // 10 * 10  # whole classes of 10 templates
  n_train = int(n * args["train_split"])
  d = args["final_seq_length"]
  return {"x_train": (n_train, d), "y_train": (n_train,),
          "x_test": (n - n_train, d), "y_test": (n - n_train,)}


@contextlib.contextmanager
def _global_rng_kept():
  """Restores NumPy's and Python's global random states on exit."""
  np_state, py_state = np.random.get_state(), random.getstate()
  try:
    yield
  finally:
    np.random.set_state(np_state)
    random.setstate(py_state)


def build(args: dict[str, Any]) -> dict[str, np.ndarray]:
  """Runs ``mnist1d.data.make_dataset`` on ``args``; global RNGs kept.

  Returns:
    ``x_train``, ``y_train``, ``x_test``, ``y_test`` as the package gives
    them (its ``x``, ``y``, ``x_test``, ``y_test``).
  """
  data = package()
  with _global_rng_kept():
    raw = data.make_dataset(SimpleNamespace(**args))  # reads attributes
  return {"x_train": np.asarray(raw["x"]), "y_train": np.asarray(raw["y"]),
          "x_test": np.asarray(raw["x_test"]),
          "y_test": np.asarray(raw["y_test"])}


def arrays(test_fraction: float = 0.2,
           cache_dir: str | os.PathLike | None = None
           ) -> dict[str, np.ndarray]:
  """The package's arrays for its default arguments, from the cache if there.

  Args:
    test_fraction: share of the records in the test part (the generator's
      ``1 - train_split``).
    cache_dir: cache folder; ``None`` for the default (module doc).

  Returns:
    ``x_train`` ``(n_train, 40)`` float64, ``y_train`` ``(n_train,)``
    integer labels 0..9, and ``x_test``, ``y_test`` likewise.

  Raises:
    ImportError: when the ``mnist1d`` package is not installed.
  """
  args = generator_args(test_fraction)
  package_version = version()
  key = cache_key(args, package_version)
  folder = cache_folder(cache_dir)
  path = None if folder is None else cache_path(folder, key, package_version)
  return cache.cached(path, key, expected_shapes(args),
                      lambda: build(args))


def load_mnist1d(n: int | None = None, *, seed=0, test_fraction: float = 0.2,
                 cache_dir: str | os.PathLike | None = None) -> Dataset:
  """MNIST-1D: 40 features, 10 classes, 4000 training and 1000 test records.

  The records and their split are the ``mnist1d`` package's (module doc);
  ``seed`` draws only a subsample.

  Args:
    n: ``None`` for every record, or a stratified random subsample of ``n``
      records: ``round(n * test_fraction)`` (at least 1) from the test part,
      the others from the training part.
    seed: ``int`` or ``jax.random`` key for the subsample.
    test_fraction: share of the records in the test part.
    cache_dir: cache folder; ``None`` for the default (module doc).

  Raises:
    ImportError: when the ``mnist1d`` package is not installed.
  """
  raw = arrays(test_fraction, cache_dir)
  if n is not None:
    total = len(raw["y_train"]) + len(raw["y_test"])
    _checks.check_positive_int("n", n, minimum=2)
    if n > total:
      raise ValueError(f"n: expected an integer in [2, {total}] (the size of "
                       f"'mnist1d') or None; got {n}.")
    n_train_all, n_test_all = len(raw["y_train"]), len(raw["y_test"])
    n_test = int(np.clip(round(n * test_fraction), max(1, n - n_train_all),
                         min(n - 1, n_test_all)))
    gen = dataset.rng(seed)
    for part, k in (("train", n - n_test), ("test", n_test)):
      y = raw[f"y_{part}"]
      keep = dataset.stratified_order(gen, k, y)[:k]
      raw[f"x_{part}"], raw[f"y_{part}"] = raw[f"x_{part}"][keep], y[keep]
  float_dtype = dataset.float_dtype()
  return Dataset(
      x_train=jax.device_put(raw["x_train"].astype(float_dtype)),
      y_train=jax.device_put(raw["y_train"].astype(np.int32)),
      x_test=jax.device_put(raw["x_test"].astype(float_dtype)),
      y_test=jax.device_put(raw["y_test"].astype(np.int32)),
      name="mnist1d", task="multiclass", n_classes=10)
