"""MNIST-1D: gdlab's arrays are the ``mnist1d`` package's, cached and rebuilt.

The reference is the package's own ``make_dataset(get_dataset_args())``,
called directly.  The set is built twice per module (once by gdlab into a
temporary cache folder, once by the package), about a second each; the cache
tests swap the generator for one that fails or returns the reference.
"""

import random
import sys

import numpy as np
import pytest

from gdlab import data
from gdlab.data import mnist1d

_package = pytest.importorskip("mnist1d.data", reason='an optional extra: '
                               'pip install "gdlab[mnist1d]"')
get_dataset_args, make_dataset = (_package.get_dataset_args,
                                  _package.make_dataset)


def _rng_states():
  return np.random.get_state(), random.getstate()


def _advance_rngs() -> None:
  np.random.random()
  random.random()


def _same_rng_states(a, b) -> bool:
  (np_a, py_a), (np_b, py_b) = a, b
  return (py_a == py_b and np_a[0] == np_b[0] and
          np.array_equal(np_a[1], np_b[1]) and tuple(np_a[2:]) == tuple(
              np_b[2:]))


@pytest.fixture(scope="module")
def reference():
  """The package's own build, as its README shows it.

  It moves the global random states (checked in
  ``test_the_global_rng_states_are_kept``).
  """
  _advance_rngs()
  before = _rng_states()
  raw = make_dataset(get_dataset_args())
  return dict(raw, moved=not _same_rng_states(before, _rng_states()))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """gdlab's first build into an empty cache, and the RNG states around it."""
  folder = tmp_path_factory.mktemp("mnist1d-cache")
  _advance_rngs()  # off the state the generator leaves, if it ran before
  before = _rng_states()
  arrays = mnist1d.arrays(cache_dir=folder)
  after = _rng_states()
  return {"folder": folder, "arrays": arrays, "before": before,
          "after": after}


def _fake_generator(monkeypatch, raw):
  """Replaces the generator with one that counts its calls, returns ``raw``."""
  calls = []

  def fake(args):
    calls.append(args)
    return raw
  monkeypatch.setattr(mnist1d.package(), "make_dataset", fake)
  return calls


def _assert_equal_to_package(arrays, ref):
  for ours, theirs in (("x_train", "x"), ("y_train", "y"),
                       ("x_test", "x_test"), ("y_test", "y_test")):
    np.testing.assert_array_equal(arrays[ours], ref[theirs], err_msg=ours)


def test_arrays_are_the_packages(built, reference):
  arrays = built["arrays"]
  assert arrays["x_train"].shape == (4000, 40)
  assert arrays["x_test"].shape == (1000, 40)
  assert arrays["y_train"].shape == (4000,) and arrays["y_test"].shape == (
      1000,)
  assert set(np.unique(arrays["y_train"])) == set(range(10))
  assert set(np.unique(arrays["y_test"])) == set(range(10))
  _assert_equal_to_package(arrays, reference)


def test_the_global_rng_states_are_kept(built, reference):
  assert _same_rng_states(built["before"], built["after"])
  # The package alone moves them: the check above can fail.
  assert reference["moved"]


def test_dataset_holds_the_packages_arrays(built, reference):
  ds = mnist1d.load_mnist1d(cache_dir=built["folder"])
  assert (ds.name, ds.task, ds.n_classes) == ("mnist1d", "multiclass", 10)
  assert (ds.n_train, ds.n_test, ds.n_features) == (4000, 1000, 40)
  assert ds.x_train.dtype == np.float64 and ds.y_train.dtype == np.int32
  _assert_equal_to_package({k: np.asarray(getattr(ds, k)) for k in
                            ("x_train", "y_train", "x_test", "y_test")},
                           reference)


def test_second_call_reads_the_cache(built, monkeypatch):
  files = list(built["folder"].glob("*.npz"))
  version = mnist1d.version()
  assert [f.name[:len(f"mnist1d-{version}-")] for f in files] == [
      f"mnist1d-{version}-"]
  assert not list(built["folder"].glob("*.tmp"))

  def fail(args):
    raise AssertionError("the generator ran although the cache holds the set")
  monkeypatch.setattr(mnist1d.package(), "make_dataset", fail)
  again = mnist1d.arrays(cache_dir=built["folder"])
  for key, value in built["arrays"].items():
    np.testing.assert_array_equal(again[key], value)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty",
                                    "wrong_shape", "other_key"])
def test_a_bad_cache_file_is_rebuilt(built, reference, tmp_path, monkeypatch,
                                     damage):
  source = next(built["folder"].glob("*.npz"))
  path = tmp_path / source.name
  good = source.read_bytes()
  if damage == "garbage":
    path.write_bytes(b"not an npz file" * 10)
  elif damage == "truncated":
    path.write_bytes(good[:len(good) // 2])
  elif damage == "empty":
    path.write_bytes(b"")
  else:
    arrays = dict(built["arrays"])
    key = mnist1d.cache_key(mnist1d.generator_args(), mnist1d.version())
    if damage == "wrong_shape":
      arrays["x_test"] = arrays["x_test"][:10]
    else:
      key = key.replace('"seed": 42', '"seed": 43')
    with open(path, "wb") as f:
      np.savez(f, key=np.asarray(key), **arrays)
  calls = _fake_generator(monkeypatch, reference)
  _assert_equal_to_package(mnist1d.arrays(cache_dir=tmp_path), reference)
  assert len(calls) == 1
  assert vars(calls[0]) == get_dataset_args(as_dict=True)
  # Rewritten: the next call reads it.
  _assert_equal_to_package(mnist1d.arrays(cache_dir=tmp_path), reference)
  assert len(calls) == 1
  assert [p.name for p in tmp_path.iterdir()] == [source.name]


def test_cache_folder_setting(tmp_path, monkeypatch):
  monkeypatch.delenv(mnist1d.ENV, raising=False)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert mnist1d.cache_folder() == tmp_path / "xdg" / "gdlab" / "data"
  monkeypatch.setenv(mnist1d.ENV, str(tmp_path / "mine"))
  assert mnist1d.cache_folder() == tmp_path / "mine"
  assert mnist1d.cache_folder(tmp_path / "arg") == tmp_path / "arg"
  for off in ("off", "0", "false", "NO"):
    monkeypatch.setenv(mnist1d.ENV, off)
    assert mnist1d.cache_folder() is None


def test_cache_off_builds_every_time(reference, monkeypatch, tmp_path):
  monkeypatch.setenv(mnist1d.ENV, "off")
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  calls = _fake_generator(monkeypatch, reference)
  mnist1d.arrays()
  mnist1d.arrays()
  assert len(calls) == 2 and not list(tmp_path.iterdir())


def test_cache_key_names_version_and_arguments():
  args = mnist1d.generator_args()
  assert args == get_dataset_args(as_dict=True)
  key = mnist1d.cache_key(args, "0.0.2")
  names = {mnist1d.cache_path(mnist1d.cache_folder("/c"), k, v).name
           for k, v in ((key, "0.0.2"),
                        (mnist1d.cache_key(args, "0.0.3"), "0.0.3"),
                        (mnist1d.cache_key(mnist1d.generator_args(0.3),
                                           "0.0.2"), "0.0.2"))}
  assert len(names) == 3
  assert mnist1d.generator_args(0.3)["train_split"] == pytest.approx(0.7)
  assert mnist1d.expected_shapes(args) == {
      "x_train": (4000, 40), "y_train": (4000,), "x_test": (1000, 40),
      "y_test": (1000,)}


def test_registry_and_smoke_subset(built, reference):
  ds = data.load("mnist1d", seed=1, smoke=True, cache_dir=built["folder"])
  assert (ds.n_train, ds.n_test) == (38, 10)
  assert data.load("mnist1d", n=100, seed=1,
                   cache_dir=built["folder"]).n_test == 20
  # The subsample's records are the package's, each part from its own part.
  for part, x_ref, y_ref in (("train", "x", "y"), ("test", "x_test",
                                                   "y_test")):
    x, y = np.asarray(getattr(ds, f"x_{part}")), getattr(ds, f"y_{part}")
    rows = [np.flatnonzero((reference[x_ref] == r).all(axis=1)) for r in x]
    assert all(len(i) == 1 for i in rows), part
    np.testing.assert_array_equal(y, reference[y_ref][np.concatenate(rows)])
  with pytest.raises(ValueError, match="n: expected an integer in"):
    data.load("mnist1d", n=5001, cache_dir=built["folder"])


def test_missing_package_says_how_to_install(monkeypatch, tmp_path):
  monkeypatch.setitem(sys.modules, "mnist1d", None)
  monkeypatch.setitem(sys.modules, "mnist1d.data", None)
  with pytest.raises(ImportError, match=r'pip install "gdlab\[mnist1d\]"'):
    data.load("mnist1d", cache_dir=tmp_path)
  assert not list(tmp_path.iterdir())
