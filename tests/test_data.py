"""Tests for gdlab.data: label conventions, seeds, splits, files, batching.

Checks on arrays run in NumPy, so the file compiles little beyond what the
library itself jit-compiles.
"""

import gzip
import os
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import datasets as sklearn_datasets

from gdlab import data
from gdlab.data import cache as data_cache
from gdlab.data import real
from helpers import jit_once

pytestmark = pytest.mark.strict_promotion

CLASSIFICATION = ["xor", "moons", "spirals", "blobs", "digits", "iris",
                  "breast_cancer"]
BINARY = [("xor", {}), ("moons", {}), ("spirals", {"n_arms": 2}),
          ("blobs", {"n_classes": 2}), ("breast_cancer", {})]
REAL = ["digits", "iris", "breast_cancer", "diabetes"]


def _leaves_equal(a, b):
  la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  return len(la) == len(lb) and all(
      np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


# ----------------------------------------------------------------- data sets


@pytest.mark.parametrize("name", data.names())
def test_shapes_dtypes_and_label_conventions(name):
  ds = data.load(name)
  assert ds.name == name
  assert ds.x_train.dtype == jnp.float64 and ds.x_test.dtype == jnp.float64
  assert ds.x_train.ndim == 2 and ds.x_train.shape[1:] == ds.x_test.shape[1:]
  assert ds.y_train.shape[0] == ds.n_train and ds.y_test.shape[0] == ds.n_test
  n = ds.n_train + ds.n_test
  assert abs(ds.n_test - 0.2 * n) <= 1
  if ds.task == "regression":
    assert ds.n_classes is None and ds.labels is None
    assert ds.y_train.dtype == jnp.float64 and ds.y_train.ndim == 2
  elif ds.task == "binary":
    assert ds.n_classes == 2 and ds.labels == "01" and ds.n_outputs == 1
    assert ds.y_train.dtype == jnp.float64 and ds.y_train.shape[1] == 1
    assert set(np.unique(ds.y_train)) == {0.0, 1.0}
  else:
    assert ds.task == "multiclass" and ds.n_outputs == ds.n_classes > 2
    assert ds.y_train.dtype == jnp.int32 and ds.y_train.ndim == 1
    assert set(np.unique(ds.y_train)) == set(range(ds.n_classes))
  for x in (ds.x_train, ds.x_test):
    assert np.all(np.isfinite(np.asarray(x)))


@pytest.mark.parametrize("name,options", BINARY)
def test_pm1_labels(name, options):
  ds01 = data.load(name, smoke=True, **options)
  pm1 = data.load(name, smoke=True, labels="pm1", **options)
  assert pm1.task == "binary" and pm1.labels == "pm1"
  assert set(np.unique(pm1.y_train)) == {-1.0, 1.0}
  np.testing.assert_array_equal(pm1.y_train, data.to_pm1(ds01.y_train))
  np.testing.assert_array_equal(pm1.x_train, ds01.x_train)


def test_one_hot():
  ds = data.load("iris", smoke=True)
  oh = data.one_hot(ds.y_train, ds.n_classes)
  assert oh.shape == (ds.n_train, 3) and oh.dtype == jnp.float64
  np.testing.assert_array_equal(oh.sum(axis=1), 1.0)
  np.testing.assert_array_equal(oh.argmax(axis=1), ds.y_train)


def test_two_classes_are_binary_more_are_multiclass():
  assert data.load("spirals", smoke=True, n_arms=2).task == "binary"
  four = data.load("spirals", smoke=True, n_arms=4)
  assert four.task == "multiclass" and four.n_classes == 4
  assert data.load("blobs", smoke=True, n_classes=2).task == "binary"


@pytest.mark.parametrize("name", data.names())
def test_same_seed_same_arrays_other_seed_other_arrays(name):
  a = data.load(name, seed=3, smoke=True)
  b = data.load(name, seed=3, smoke=True)
  c = data.load(name, seed=4, smoke=True)
  assert _leaves_equal(a, b)
  assert not _leaves_equal(a, c)


def test_seed_may_be_a_key():
  a = data.load("moons", seed=7, smoke=True)
  b = data.load("moons", seed=jax.random.key(7), smoke=True)
  assert _leaves_equal(a, b)
  with pytest.raises(TypeError, match="seed"):
    data.load("moons", seed="seven")


def test_smoke_shrinks_to_a_few_dozen_records():
  for name in data.names():
    ds = data.load(name, smoke=True)
    assert ds.n_train + ds.n_test == data.SMOKE_RECORDS
  assert data.load("xor", smoke=True, n=20).n_train == 16


@pytest.mark.parametrize("name", CLASSIFICATION)
def test_split_is_stratified(name):
  ds = data.load(name, seed=1, smoke=True)
  train = np.bincount(np.asarray(ds.y_train).ravel().astype(int))
  test = np.bincount(np.asarray(ds.y_test).ravel().astype(int),
                     minlength=train.size)
  share = test / (train + test)
  assert np.all(np.abs(share - 0.2) < 0.1), share


def test_split_covers_every_record_once():
  ds = data.load("linear", smoke=True, test_fraction=0.3)
  assert (ds.n_train, ds.n_test) == (34, 14)
  x = np.concatenate([ds.x_train, ds.x_test])
  assert np.unique(x, axis=0).shape[0] == 48


def test_linear_truth_generates_the_targets():
  ds = data.linear(n=48, k=2, noise=0.01, seed=2)
  w, b = ds.truth["w"], ds.truth["b"]
  assert w.shape == (5, 2) and b.shape == (2,) and ds.y_train.shape[1] == 2
  residual = ds.y_train - (ds.x_train @ w + b)
  assert 0.005 < float(residual.std()) < 0.02


def test_sparse_linear_support():
  ds = data.load("sparse_linear", smoke=True, noise=0.0)
  w = np.asarray(ds.truth["w"]).ravel()
  assert w.shape == (50,) and np.count_nonzero(w) == 5
  np.testing.assert_array_equal(w != 0, ds.truth["support"])
  assert np.all((np.abs(w[w != 0]) >= 1) & (np.abs(w[w != 0]) <= 2))
  np.testing.assert_allclose(ds.y_train, ds.x_train @ ds.truth["w"], atol=1e-12)


def test_xor_is_not_linearly_separable_but_labelled_by_quadrant():
  ds = data.load("xor", smoke=True, noise=0.1)
  x, y = np.asarray(ds.x_train), np.asarray(ds.y_train).ravel()
  np.testing.assert_array_equal(y, (x[:, 0] * x[:, 1] < 0).astype(float))


def test_blob_records_lie_near_their_centres():
  ds = data.load("blobs", smoke=True, noise=0.1, seed=5)
  centres = ds.truth["centers"][ds.y_train]
  assert float(jnp.abs(ds.x_train - centres).max()) < 0.6


@pytest.mark.parametrize("name", REAL)
def test_standardisation_uses_training_statistics(name):
  ds = jax.tree_util.tree_map(np.asarray, data.load(name, seed=2))
  raw = jax.tree_util.tree_map(
      np.asarray, data.load(name, seed=2, standardize=False))
  mean, std = ds.stats["x_mean"], ds.stats["x_std"]
  varying = raw.x_train.std(axis=0) > 0
  np.testing.assert_allclose(ds.x_train.mean(axis=0), 0.0, atol=1e-10)
  np.testing.assert_allclose(ds.x_train.std(axis=0)[varying], 1.0, rtol=1e-10)
  np.testing.assert_allclose(mean, raw.x_train.mean(axis=0), atol=1e-10)
  np.testing.assert_array_equal(std[~varying], 1.0)
  # The test part is shifted and scaled with the training numbers, not its own.
  np.testing.assert_allclose(ds.x_test * std + mean, raw.x_test, atol=1e-10)
  assert np.abs(ds.x_test.mean(axis=0)).max() > 1e-3


def test_diabetes_targets_are_standardised_too():
  ds = data.diabetes()
  y = np.asarray(ds.y_train)
  np.testing.assert_allclose(y.mean(), 0.0, atol=1e-10)
  np.testing.assert_allclose(y.std(), 1.0, rtol=1e-10)
  raw = data.diabetes(standardize_y=False)
  assert np.asarray(raw.y_train).mean() > 100
  assert "y_mean" not in raw.stats
  np.testing.assert_allclose(
      np.asarray(ds.y_test) * ds.stats["y_std"] + ds.stats["y_mean"],
      raw.y_test, rtol=1e-12)


def test_real_subsample():
  ds = data.digits(n=48, seed=1)
  assert ds.n_train + ds.n_test == 48 and ds.n_classes == 10
  assert set(np.unique(np.concatenate([ds.y_train, ds.y_test]))) == set(
      range(10))
  with pytest.raises(ValueError, match="n: .*1797"):
    data.digits(n=5000)


def test_dataset_is_a_pytree_for_jit():
  ds = data.load("blobs", smoke=True)

  @jax.jit
  def total(d):
    return d.x_train.sum() + d.n_classes

  np.testing.assert_allclose(total(ds), ds.x_train.sum() + 3)
  moved = jax.tree_util.tree_map(lambda a: a + 0, ds)
  assert moved.task == ds.task and moved.truth is not None


def test_float32_without_x64_gives_the_same_data_rounded():
  with jax.enable_x64(False):
    ds = data.load("moons", smoke=True)
    assert ds.x_train.dtype == jnp.float32 and ds.y_train.dtype == jnp.float32
    iris = data.load("iris", smoke=True)
    assert iris.x_train.dtype == jnp.float32 and iris.y_train.dtype == jnp.int32
  ds64 = data.load("moons", smoke=True)
  np.testing.assert_allclose(ds.x_train, ds64.x_train, rtol=1e-6)
  np.testing.assert_array_equal(ds.y_train, ds64.y_train)


# -------------------------------------------------------------------- errors


def test_unknown_names_list_the_allowed_ones():
  with pytest.raises(ValueError, match="name: .*'moons'.*got 'moon'"):
    data.load("moon")
  with pytest.raises(ValueError, match="name: .*'rosenbrock'"):
    data.get_function("rosenbrok")
  with pytest.raises(ValueError, match="options: .*'noise'.*'nosie'"):
    data.load("moons", nosie=0.1)


@pytest.mark.parametrize("options,match", [
    ({"n": -5}, "n: "),
    ({"n": 1}, "n: "),
    ({"test_fraction": 0.0}, "test_fraction"),
    ({"test_fraction": 1.0}, "test_fraction"),
    ({"test_fraction": -0.2}, "test_fraction"),
    ({"noise": -1.0}, "noise"),
    ({"labels": "signs"}, "labels"),
])
def test_bad_options_raise(options, match):
  with pytest.raises(ValueError, match=match):
    data.load("moons", **options)


def test_bad_generator_options_raise():
  with pytest.raises(ValueError, match="n_nonzero: .*d=10"):
    data.sparse_linear(d=10, n_nonzero=11)
  with pytest.raises(ValueError, match="n_arms"):
    data.spirals(n_arms=1)
  with pytest.raises(ValueError, match="test_fraction"):
    data.iris(test_fraction=1.5)
  with pytest.raises(ValueError, match="labels"):
    data.breast_cancer(labels="pm")


# ---------------------------------------------------------------- IDX files


def _idx_bytes(array, code):
  header = bytes([0, 0, code, array.ndim])
  header += b"".join(struct.pack(">I", s) for s in array.shape)
  return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def _write_mnist(tmp_path, n, seed, compress=False, prefix="train"):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, size=(n, 4, 3), dtype=np.uint8)
  labels = (np.arange(n) % 10).astype(np.uint8)
  paths = []
  for kind, array in (("images", images), ("labels", labels)):
    raw = _idx_bytes(array, 0x08)
    path = tmp_path / f"{prefix}-{kind}-idx{array.ndim}-ubyte"
    if compress:
      raw, path = gzip.compress(raw), path.with_name(path.name + ".gz")
    path.write_bytes(raw)
    paths.append(path)
  return images, labels, paths


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip_of_hand_written_file(tmp_path, compress):
  images, labels, (ipath, lpath) = _write_mnist(tmp_path, 30, 0, compress)
  got = data.load_idx(ipath)
  assert got.dtype == np.uint8 and got.shape == (30, 4, 3)
  np.testing.assert_array_equal(got, images)
  np.testing.assert_array_equal(data.load_idx(lpath), labels)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32,
                                   np.float32, np.float64])
@pytest.mark.parametrize("compress", [False, True])
def test_write_idx_round_trip(tmp_path, dtype, compress):
  array = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
  path = tmp_path / "a.idx"
  data.write_idx(path, array, compress=compress)
  got = data.load_idx(path)
  assert got.dtype == np.dtype(dtype)
  np.testing.assert_array_equal(got, array)


def test_idx_header_is_big_endian(tmp_path):
  path = tmp_path / "b.idx"
  path.write_bytes(bytes([0, 0, 0x0B, 1, 0, 0, 0, 2, 0x01, 0x02, 0xFF, 0xFE]))
  np.testing.assert_array_equal(data.load_idx(path), [258, -2])


@pytest.mark.parametrize("raw,match", [
    (b"\x01\x00\x08\x01\x00\x00\x00\x01\x05", "magic"),
    (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "type code 0x07"),
    (b"\x00\x00\x08\x02\x00\x00\x00\x01", "header"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x03\x05", "needs 3"),
    (b"", "magic"),
])
def test_malformed_idx_files_raise(tmp_path, raw, match):
  path = tmp_path / "bad.idx"
  path.write_bytes(raw)
  with pytest.raises(ValueError, match=f"path: .*{match}"):
    data.load_idx(path)


def test_load_mnist_idx_split_by_seed(tmp_path):
  images, labels, (ipath, lpath) = _write_mnist(tmp_path, 50, 1, True)
  ds = data.load_mnist_idx(ipath, lpath, seed=0, test_fraction=0.2)
  assert ds.task == "multiclass" and ds.n_classes == 10
  assert ds.x_train.shape == (40, 12) and ds.x_test.shape == (10, 12)
  assert ds.y_train.dtype == jnp.int32
  assert float(ds.x_train.min()) >= 0 and float(ds.x_train.max()) <= 1
  # Each test image with its label is one of the written records.
  flat = images.reshape(50, -1) / 255.0
  for x, y in zip(np.asarray(ds.x_test), np.asarray(ds.y_test)):
    i = int(np.argmin(np.abs(flat - x).sum(axis=1)))
    np.testing.assert_allclose(flat[i], x)
    assert labels[i] == y
  again = data.load_mnist_idx(ipath, lpath, seed=0, test_fraction=0.2)
  assert _leaves_equal(ds, again)


def test_load_mnist_idx_with_test_files(tmp_path):
  images, _, (ipath, lpath) = _write_mnist(tmp_path, 20, 1)
  timages, tlabels, (tipath, tlpath) = _write_mnist(tmp_path, 10, 2,
                                                    prefix="t10k")
  ds = data.load_mnist_idx(ipath, lpath, test_images_path=tipath,
                           test_labels_path=tlpath, flatten=False,
                           standardize=True)
  assert ds.x_train.shape == (20, 4, 3) and ds.x_test.shape == (10, 4, 3)
  np.testing.assert_array_equal(ds.y_test, tlabels)
  np.testing.assert_allclose(ds.x_train.mean(axis=0), 0.0, atol=1e-12)
  np.testing.assert_allclose(
      ds.x_test * ds.stats["x_std"] + ds.stats["x_mean"], timages / 255.0,
      atol=1e-12)
  with pytest.raises(ValueError, match="test_labels_path"):
    data.load_mnist_idx(ipath, lpath, test_images_path=tipath)
  with pytest.raises(ValueError, match="labels_path"):
    data.load_mnist_idx(ipath, tlpath)
  with pytest.raises(ValueError, match="n_classes"):
    data.load_mnist_idx(ipath, lpath, n_classes=5)


# ------------------------------------------------------------ 2-D functions

TEXTBOOK = {
    "quadratic": [[0.0, 0.0]],
    "rosenbrock": [[1.0, 1.0]],
    "beale": [[3.0, 0.5]],
    "himmelblau": [[3.0, 2.0], [-2.805118, 3.131312], [-3.779310, -3.283186],
                   [3.584428, -1.848126]],
    "abs_sum": [[0.0, 0.0]],
}


@pytest.mark.parametrize("name", data.function_names())
def test_functions_known_minimisers_and_values(name):
  f = data.get_function(name)
  assert f.name == name and f.f_min == 0.0
  np.testing.assert_allclose(f.minimizers, TEXTBOOK[name], atol=1e-6)
  for m in f.minimizers:
    np.testing.assert_allclose(f(jnp.asarray(m)), f.f_min, atol=1e-20)
    grad = jax.grad(f.fn)(jnp.asarray(m))
    np.testing.assert_allclose(grad, 0.0, atol=1e-12)
  x0 = jnp.asarray(f.x0)
  assert float(f(x0)) > f.f_min
  assert f.xlim[0] < f.x0[0] < f.xlim[1] and f.ylim[0] < f.x0[1] < f.ylim[1]
  for m in f.minimizers:
    assert f.xlim[0] <= m[0] <= f.xlim[1] and f.ylim[0] <= m[1] <= f.ylim[1]
  # Random points in the window are no lower than the minimum.
  pts = jax.random.uniform(jax.random.key(0), (500, 2),
                           minval=jnp.array([f.xlim[0], f.ylim[0]]),
                           maxval=jnp.array([f.xlim[1], f.ylim[1]]))
  assert float(jit_once(jax.vmap(f.fn))(pts).min()) >= f.f_min
  assert float(jax.jit(f.fn)(x0)) == pytest.approx(float(f(x0)))


def test_textbook_values_at_other_points():
  x = jnp.array([-1.2, 1.0])
  assert float(data.rosenbrock()(x)) == pytest.approx(24.2)
  assert float(data.beale()(jnp.array([0.0, 0.0]))) == pytest.approx(14.203125)
  assert float(data.himmelblau()(jnp.array([0.0, 0.0]))) == 170.0
  assert float(data.abs_sum()(jnp.array([-1.0, 0.5]))) == 2.0
  r = data.rosenbrock(a=2.0, b=10.0)
  np.testing.assert_allclose(r.minimizers, [[2.0, 4.0]])


@pytest.mark.parametrize("kappa,angle", [(1.0, 0.0), (10.0, 0.0),
                                         (100.0, 0.7)])
def test_quadratic_condition_number(kappa, angle):
  f = data.quadratic(kappa, angle)
  hessian = jax.hessian(f.fn)(jnp.zeros(2))
  np.testing.assert_allclose(hessian, f.info["A"], atol=1e-12)
  eig = np.linalg.eigvalsh(hessian)
  np.testing.assert_allclose(eig, [1.0, kappa], rtol=1e-12)
  x = jnp.array([0.3, -1.1])
  np.testing.assert_allclose(f(x), 0.5 * x @ f.info["A"] @ x)
  with pytest.raises(ValueError, match="kappa"):
    data.quadratic(0.5)


def test_abs_sum_is_nonsmooth_with_sign_subgradient():
  f = data.get_function("abs_sum")
  assert not f.smooth and all(
      data.get_function(n).smooth for n in data.function_names()
      if n != "abs_sum")
  np.testing.assert_array_equal(jax.grad(f.fn)(jnp.array([-0.5, 2.0])),
                                [-1.0, 2.0])
  np.testing.assert_array_equal(jax.grad(f.fn)(jnp.array([0.0, 0.0])),
                                [0.0, 0.0])


def test_function_grid_and_options():
  f = data.get_function("quadratic", kappa=4.0)
  xs, ys, zs = f.grid(num=11)
  assert xs.shape == ys.shape == zs.shape == (11, 11)
  np.testing.assert_allclose(zs[5, 5], 0.0, atol=1e-12)
  np.testing.assert_allclose(zs[0, 5], 0.5 * 4.0 * 9.0)
  with pytest.raises(ValueError, match="options: .*'kappa'"):
    data.get_function("quadratic", kapa=4.0)
  with pytest.raises(ValueError, match="no options"):
    data.get_function("beale", a=1.0)


# ----------------------------------------------------------------- batching


@pytest.mark.parametrize("n,batch_size", [(10, 3), (12, 4), (7, 7), (5, 1)])
def test_pad_uses_every_record_exactly_once(n, batch_size):
  idx, mask = data.epoch_batches(jax.random.key(0), n, batch_size, "pad")
  num = -(-n // batch_size)
  assert idx.shape == mask.shape == (num, batch_size)
  assert idx.dtype == jnp.int32 and mask.dtype == jnp.float64
  assert float(mask.sum()) == n
  real = np.asarray(idx)[np.asarray(mask) == 1]
  np.testing.assert_array_equal(np.sort(real), np.arange(n))
  assert np.all((np.asarray(idx) >= 0) & (np.asarray(idx) < n))
  # Padding sits at the end of the last batch.
  np.testing.assert_array_equal(np.asarray(mask).ravel(),
                                np.arange(num * batch_size) < n)


def test_drop_keeps_full_batches_of_distinct_records():
  idx, mask = data.epoch_batches(jax.random.key(1), 10, 3)
  assert idx.shape == (3, 3) and float(mask.sum()) == 9
  assert np.unique(np.asarray(idx)).size == 9
  assert data.num_batches(10, 3, "drop") == 3
  assert data.num_batches(10, 3, "pad") == 4


def test_batches_reshuffle_and_work_inside_jit_and_vmap():
  a, _ = data.epoch_batches(jax.random.key(0), 20, 5, "pad")
  b, _ = data.epoch_batches(jax.random.key(1), 20, 5, "pad")
  assert not bool(jnp.all(a == b))

  @jit_once
  def epoch_sum(key, x):
    idx, mask = data.epoch_batches(key, 23, 5, remainder="pad")
    return jnp.sum(x[idx] * mask)

  x = jnp.arange(23.0)
  np.testing.assert_allclose(epoch_sum(jax.random.key(2), x), x.sum())
  keys = jax.random.split(jax.random.key(3), 4)
  idx, mask = jit_once(jax.vmap(
      lambda k: data.epoch_batches(k, 9, 4, "pad")))(keys)
  assert idx.shape == mask.shape == (4, 3, 4)
  np.testing.assert_array_equal(mask.sum(axis=(1, 2)), 9)


@pytest.mark.parametrize("batch_size,error,match", [
    (0, ValueError, "batch_size: .*got 0"),
    (11, ValueError, r"batch_size: .*n=10.*got 11"),
    (2.5, TypeError, "batch_size"),
])
def test_bad_batch_size_raises(batch_size, error, match):
  with pytest.raises(error, match=match):
    data.epoch_batches(jax.random.key(0), 10, batch_size)


def test_bad_remainder_raises():
  with pytest.raises(ValueError, match="remainder: .*'pad'.*got 'keep'"):
    data.epoch_batches(jax.random.key(0), 10, 3, "keep")


def test_sklearn_sets_are_cached_and_read_from_the_cache(tmp_path,
                                                          monkeypatch):
  monkeypatch.setenv(data_cache.ENV, str(tmp_path))
  real._raw.cache_clear()
  x, y = real._raw("load_iris")
  raw = sklearn_datasets.load_iris()
  np.testing.assert_array_equal(x, raw.data)
  np.testing.assert_array_equal(y, raw.target)
  (file,) = tmp_path.glob("sklearn-load_iris-*.npz")
  assert file.stat().st_mode & 0o777 == 0o666 & ~_umask()
  # Read back from the file, not from scikit-learn: a file with other values
  # but the right key is what a later process gets.
  with np.load(file) as f:
    key = str(f["key"])
  data_cache.write(file, key, {"x": x + 1.0, "y": y})
  real._raw.cache_clear()
  np.testing.assert_array_equal(real._raw("load_iris")[0], raw.data + 1.0)
  # With the cache off, the (altered) file is not read.
  monkeypatch.setenv(data_cache.ENV, "off")
  real._raw.cache_clear()
  np.testing.assert_array_equal(real._raw("load_iris")[0], raw.data)
  monkeypatch.setenv(data_cache.ENV, str(tmp_path))
  # A damaged file, or one of another key, is rebuilt from scikit-learn.
  for damage in (b"not a zip file", None):
    if damage is None:
      data_cache.write(file, key.replace("load_iris", "load_wine"),
                       {"x": x, "y": y})
    else:
      file.write_bytes(damage)
    real._raw.cache_clear()
    np.testing.assert_array_equal(real._raw("load_iris")[0], raw.data)
  real._raw.cache_clear()


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def test_without_a_home_folder_the_data_cache_is_off(monkeypatch):
  monkeypatch.delenv(data_cache.ENV, raising=False)
  monkeypatch.delenv("XDG_CACHE_HOME", raising=False)

  def no_home():
    raise RuntimeError("Could not determine home directory.")
  monkeypatch.setattr(data_cache.Path, "home", staticmethod(no_home))
  assert data_cache.folder() is None
  real._raw.cache_clear()
  assert real._raw("load_iris")[0].shape == (150, 4)
  real._raw.cache_clear()
