"""Bad data is refused where it enters, on the host, before anything compiles.

One table of bad data per entry point: ``gdlab.fit``'s tuple path,
``gdlab.data.Dataset`` construction, the IDX loader and the config builders.
Every refusal is a one-line ``ValueError`` (``TypeError`` for a dtype) naming
the array, and no XLA program is built or compiled before it.  The data are
NumPy arrays, so putting them on the device compiles nothing either.
"""

import contextlib
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdlab import build, config, data, loop, models, stopping, sweep
from gdlab.objective import Objective
from gdlab.optim import gradient_descent

TINY = Path(__file__).parent / "configs" / "tiny.yaml"
EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
N, D, K = 20, 3, 3
COMPILE_EVENTS = ("/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")


@contextlib.contextmanager
def _no_compilation():
  """Fails if XLA builds or compiles a program inside the block."""
  events = []

  def listener(event, duration, **kwargs):
    del duration
    if event in COMPILE_EVENTS:
      events.append((event, kwargs.get("fun_name")))

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  assert not events, events


def _x(n=N, d=D):
  return np.random.default_rng(0).standard_normal((n, d))


def _classes(n=N):
  return (np.arange(n) % K).astype(np.int32)


def _zero_one(n=N):
  return (np.arange(n) % 2).astype(np.float64)


def _with(a, index, value):
  a = a.copy()
  a[index] = value
  return a


def _mlp(loss, n_out, **kw):
  return Objective(models.mlp((D, 4, n_out), "tanh", **kw), loss)


SOFTMAX = lambda: _mlp("softmax_cross_entropy", K)
BCE = lambda: _mlp("binary_cross_entropy", 1)
HINGE = lambda: _mlp("hinge", 1)
MSE = lambda: _mlp("mse", 1)

# (id, objective, data tuple, error type, the message, or its start).
FIT_CASES = [
    ("nan_in_x_train", SOFTMAX,
     lambda: (_with(_with(_x(), (12, 0), np.nan), (13, 2), np.inf),
              _classes()), ValueError,
     "x_train: expected finite values; got 2 NaN/inf entries, the first at "
     "index (12, 0). Clean the data, or pass check_finite=False."),
    ("inf_in_y_train", MSE,
     lambda: (_x(), _with(np.ones((N, 1)), (4, 0), -np.inf)), ValueError,
     "y_train: expected finite values; got 1 NaN/inf entry, at index (4, 0). "
     "Clean the data, or pass check_finite=False."),
    ("nan_in_x_test", SOFTMAX,
     lambda: (_x(), _classes(), _with(_x(5), (3, 1), np.nan), _classes(5)),
     ValueError, "x_test: expected finite values; got 1 NaN/inf entry, at "
     "index (3, 1)."),
    ("empty_training_set", SOFTMAX, lambda: (_x(0), _classes(0)), ValueError,
     "x_train: expected at least one training record; got shape (0, 3)."),
    ("empty_test_set", SOFTMAX,
     lambda: (_x(), _classes(), _x(0), _classes(0)), ValueError,
     "x_test: expected at least one test record, or no test set (x_test and "
     "y_test None); got shape (0, 3)."),
    ("test_width", SOFTMAX,
     lambda: (_x(), _classes(), _x(5, D + 1), _classes(5)), ValueError,
     "x_test: expected records of shape (3,), as in x_train; got shape "
     "(5, 4)."),
    ("test_labels_missing", SOFTMAX,
     lambda: (_x(), _classes(), _x(5), None), ValueError,
     "x_test, y_test: expected both (a test set) or neither; got only "
     "x_test."),
    ("labels_per_record", SOFTMAX, lambda: (_x(), _classes(N - 1)),
     ValueError, "y_train: expected one label per record of x_train (20 "
     "rows); got shape (19,)."),
    ("class_7_of_3", SOFTMAX, lambda: (_x(), _with(_classes(), 4, 7)),
     ValueError, "y_train: expected class indices in [0, 3) for loss "
     "'softmax_cross_entropy' on a model with 3 outputs; got 1 entry that is "
     "not: 7 at index (4,)."),
    ("class_minus_1", SOFTMAX, lambda: (_x(), _with(_classes(), 2, -1)),
     ValueError, "y_train: expected class indices in [0, 3) for loss "
     "'softmax_cross_entropy' on a model with 3 outputs; got 1 entry that is "
     "not: -1 at index (2,)."),
    ("test_class_out_of_range", SOFTMAX,
     lambda: (_x(), _classes(), _x(5), _with(_classes(5), 1, 3)), ValueError,
     "y_test: expected class indices in [0, 3)"),
    ("softmax_on_one_output", lambda: _mlp("softmax_cross_entropy", 1),
     lambda: (_x(), _zero_one().astype(np.int32)), ValueError,
     "y_hat: expected at least 2 model outputs (one per class) for loss "
     "'softmax_cross_entropy'; got 1, on which the loss is 0 whatever the "
     "parameters. Give the model one output per class, or use loss "
     "'binary_cross_entropy' with 0/1 labels."),
    ("multiclass_hinge_on_one_output", lambda: _mlp("multiclass_hinge", 1),
     lambda: (_x(), np.zeros(N, np.int32)), ValueError,
     "y_hat: expected at least 2 model outputs (one per class) for loss "
     "'multiclass_hinge'"),
    ("bce_label_2", BCE, lambda: (_x(), _classes().astype(np.float64)),
     ValueError, "y_train: expected labels in {0, 1} (or probabilities in "
     "[0, 1]) for loss 'binary_cross_entropy'; got 6 entries that are not, "
     "the first 2.0 at index (2,)."),
    ("bce_pm1_labels", BCE, lambda: (_x(), 2 * _zero_one() - 1), ValueError,
     "y_train: expected labels in {0, 1} (or probabilities in [0, 1]) for "
     "loss 'binary_cross_entropy'; got 10 entries that are not, the first "
     "-1.0 at index (0,)."),
    ("hinge_01_labels", HINGE, lambda: (_x(), _zero_one()[:, None]),
     ValueError, "y_train: expected labels in {-1, +1} for loss 'hinge'; got "
     "0/1 labels (10 zeros, on which the hinge loss is constant). Map them "
     "with y = 2*y - 1 (gdlab.data.to_pm1), or load the data set with "
     "labels='pm1'."),
    ("hinge_label_2", HINGE, lambda: (_x(), _with(2 * _zero_one() - 1, 5, 2)),
     ValueError, "y_train: expected labels in {-1, +1} for loss 'hinge'; got "
     "1 entry that is not: 2.0 at index (5,)."),
    ("output_width", MSE, lambda: (_x(), np.ones((N, 2))), ValueError,
     "y_train: expected labels of shape (20, 1) (or (20,) since k = 1) for "
     "loss 'mse' and model output of shape (20, 1); got shape (20, 2)."),
    ("input_width", SOFTMAX, lambda: (_x(N, D + 2), _classes()), ValueError,
     "x: expected inputs of shape (n, 3) for an MLP"),
    ("float_class_labels", lambda: _mlp("multiclass_hinge", K),
     lambda: (_x(), _classes().astype(np.float64)), TypeError,
     "y_train: expected integer class labels of shape (20,)"),
]


@pytest.mark.parametrize("objective,arrays,error,message",
                         [c[1:] for c in FIT_CASES],
                         ids=[c[0] for c in FIT_CASES])
def test_fit_refuses_bad_data_before_compiling(objective, arrays, error,
                                               message):
  obj, arrays, key = objective(), arrays(), jax.random.PRNGKey(0)
  with _no_compilation(), pytest.raises(error) as info:
    loop.fit(obj, gradient_descent(0.1), arrays, key=key,
             criteria=stopping.Criteria(max_epochs=1))
  text = str(info.value)
  assert text.startswith(message) and "\n" not in text, text


def test_check_finite_false_trains_on_nan():
  """The opt-out: the NaN reaches the loss, and the run reports it."""
  x = _with(_x(), (0, 0), np.nan)
  obj = Objective(models.linear_regression(D), "mse")
  run = loop.fit(obj, gradient_descent(0.1), (x, np.ones((N, 1))),
                 key=jax.random.PRNGKey(0), check_finite=False,
                 criteria=stopping.Criteria(max_epochs=1))
  assert run.stop_reason == "diverged"


def test_float64_data_into_a_float32_model_is_cast_with_a_warning():
  """The dtype rule: data take the parameters' float dtype, and a cast
  warns once, at the caller's line."""
  obj = _mlp("softmax_cross_entropy", K, dtype=jnp.float32)
  params = jax.eval_shape(obj.model.init, jax.random.PRNGKey(0))
  x, y = _x(), _classes()
  with _no_compilation(), pytest.warns(UserWarning) as record:
    out = loop.as_data((x, y, x, y), obj, params)
  assert [str(w.message) for w in record] == [
      "data: x_train and x_test are float64 but the model's parameters are "
      "float32; the data were cast to float32. Cast them yourself, or use "
      "float64 parameters, to avoid this warning."]
  assert record[0].filename == __file__
  assert out.x_train.dtype == out.x_test.dtype == jnp.float32
  assert out.y_train.dtype == np.int32  # labels are not floats: kept
  np.testing.assert_array_equal(out.x_train, x.astype(np.float32))
  # Through fit, the warning points at the line that called fit.
  with pytest.warns(UserWarning) as record, pytest.raises(ValueError):
    loop.fit(obj, gradient_descent(0.1), (x, _with(y, 0, 9)),
             key=jax.random.PRNGKey(0))
  assert record[0].filename == __file__
  # Data already in the parameters' dtype: no cast, no warning.
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    loop.as_data((x.astype(np.float32), y), obj, params)
    loop.as_data((x, y), _mlp("softmax_cross_entropy", K),
                 jax.eval_shape(_mlp("softmax_cross_entropy", K).model.init,
                                jax.random.PRNGKey(0)))


# ----------------------------------------------------------------------------
# Dataset construction.


def _dataset(**changes):
  """A valid multiclass set (NumPy arrays), with ``changes`` applied."""
  fields = dict(x_train=_x(), y_train=_classes(), x_test=_x(5),
                y_test=_classes(5), name="t", task="multiclass", n_classes=K)
  fields.update(changes)
  return data.Dataset(**fields)


def _binary(labels, y):
  return dict(task="binary", n_classes=2, labels=labels, y_train=y,
              y_test=np.ones((5, 1)))


DATASET_CASES = [
    ("nan_in_x_train",
     dict(x_train=_with(_x(), (12, 0), np.nan)), ValueError,
     "x_train: expected finite values; got 1 NaN/inf entry, at index "
     "(12, 0). Clean the data, or pass check_finite=False."),
    ("inf_in_x_test", dict(x_test=_with(_x(5), (1, 2), np.inf)), ValueError,
     "x_test: expected finite values; got 1 NaN/inf entry, at index (1, 2)."),
    ("empty_training_set", dict(x_train=_x(0), y_train=_classes(0)),
     ValueError,
     "x_train: expected at least one training record; got shape (0, 3)."),
    ("empty_test_set", dict(x_test=_x(0), y_test=_classes(0)), ValueError,
     "x_test: expected at least one test record"),
    ("test_width", dict(x_test=_x(5, 2)), ValueError,
     "x_test: expected records of shape (3,), as in x_train; got shape "
     "(5, 2)."),
    ("class_7_of_3", dict(y_train=_with(_classes(), 4, 7)), ValueError,
     "y_train: expected class indices in [0, 3) (n_classes = 3); got 1 entry "
     "that is not: 7 at index (4,)."),
    ("test_class_minus_1", dict(y_test=_with(_classes(5), 0, -1)), ValueError,
     "y_test: expected class indices in [0, 3) (n_classes = 3); got 1 entry "
     "that is not: -1 at index (0,)."),
    ("float_class_labels", dict(y_train=_classes().astype(float)), TypeError,
     "y_train: expected integer class indices for a 'multiclass' data set; "
     "got dtype float64."),
    ("binary_label_2", _binary("01", _with(_zero_one()[:, None], (3, 0), 2)),
     ValueError, "y_train: expected labels in {0, 1} (labels='01'); got 1 "
     "entry that is not: 2.0 at index (3, 0)."),
    ("pm1_label_0", _binary("pm1", _zero_one()[:, None]), ValueError,
     "y_train: expected labels in {-1, +1} (labels='pm1'); got 10 entries "
     "that are not, the first 0.0 at index (0, 0)."),
    ("unknown_task", dict(task="ranking"), ValueError,
     "task: expected one of 'regression', 'binary', 'multiclass'; got "
     "'ranking'."),
    ("labels_on_multiclass", dict(labels="01"), ValueError,
     "labels: expected None for a 'multiclass' data set"),
]


@pytest.mark.parametrize("changes,error,message",
                         [c[1:] for c in DATASET_CASES],
                         ids=[c[0] for c in DATASET_CASES])
def test_dataset_construction_refuses_bad_data(changes, error, message):
  with _no_compilation(), pytest.raises(error) as info:
    _dataset(**changes)
  assert str(info.value).startswith(message), str(info.value)


def test_dataset_opt_out_and_pytree_rebuilds():
  """``check_finite=False`` keeps NaN (and fit then needs it too); JAX
  rebuilds a set from tracers or new leaves without checking it."""
  ds = _dataset(x_train=_with(_x(), (0, 0), np.nan), check_finite=False)
  with pytest.raises(ValueError, match=r"^x_train: expected finite"):
    loop.as_data(ds)
  assert np.isnan(loop.as_data(ds, check_finite=False).x_train[0, 0])
  good = _dataset()
  nan = jax.tree_util.tree_map(lambda a: a * np.nan, good)
  assert isinstance(nan, data.Dataset) and nan.task == "multiclass"
  assert jax.jit(lambda d: d.x_train.shape[0])(good) == N
  leaves, treedef = jax.tree_util.tree_flatten(good)
  assert jax.tree_util.tree_unflatten(treedef, leaves).n_classes == K
  assert [jax.tree_util.keystr(p) for p, _ in
          jax.tree_util.tree_flatten_with_path(good)[0]] == [
              ".x_train", ".y_train", ".x_test", ".y_test"]


# ----------------------------------------------------------------------------
# The IDX loader.


def test_idx_loader_refuses_nan_pixels_and_empty_files(tmp_path):
  images, labels = tmp_path / "images.idx", tmp_path / "labels.idx"
  pixels = np.zeros((6, 2, 2), np.float32)
  pixels[4, 1, 0] = np.nan
  data.write_idx(images, pixels)
  data.write_idx(labels, np.arange(6, dtype=np.uint8) % 3)
  with _no_compilation(), pytest.raises(ValueError) as info:
    data.load_mnist_idx(images, labels, n_classes=3)
  assert str(info.value) == (
      f"images_path: expected finite values; got 1 NaN/inf entry, at index "
      f"(4, 1, 0). Clean {str(images)!r}, or pass check_finite=False.")
  ds = data.load_mnist_idx(images, labels, n_classes=3, check_finite=False)
  assert np.isnan(np.asarray(ds.x_train)).sum() + np.isnan(
      np.asarray(ds.x_test)).sum() == 1
  data.write_idx(images, np.zeros((0, 2, 2), np.uint8))
  data.write_idx(labels, np.zeros((0,), np.uint8))
  with pytest.raises(ValueError, match=r"^images_path: expected at least one "
                     r"image in .*; got shape \(0, 2, 2\)\.$"):
    data.load_mnist_idx(images, labels, n_classes=3)


# ----------------------------------------------------------------------------
# The config path: data and loss meet in gdlab.build.


def _config(**sets):
  base = config.load(TINY).base
  return config.apply_overrides(base, sets)


CONFIG_CASES = [
    ("hinge_on_01_moons", {"data.name": "moons", "loss.name": "hinge"},
     "y_train: expected labels in {-1, +1} for loss 'hinge'; got 0/1 labels "
     "(19 zeros, on which the hinge loss is constant). Map them with "
     "y = 2*y - 1 (gdlab.data.to_pm1), or load the data set with "
     "labels='pm1'."),
    ("softmax_on_binary_moons",
     {"data.name": "moons", "loss.name": "softmax_cross_entropy"},
     "y_hat: expected at least 2 model outputs (one per class) for loss "
     "'softmax_cross_entropy'; got 1"),
    ("bce_on_pm1_moons", {"data.name": "moons", "data.labels": "pm1",
                          "loss.name": "binary_cross_entropy"},
     "y_train: expected labels in {0, 1} (or probabilities in [0, 1]) for "
     "loss 'binary_cross_entropy'"),
]


@pytest.mark.parametrize("sets,message", [c[1:] for c in CONFIG_CASES],
                         ids=[c[0] for c in CONFIG_CASES])
def test_config_builders_refuse_data_the_loss_cannot_take(sets, message):
  cfg = _config(**sets)
  # Drawing a data set from an int seed makes a jax.random key (compiled
  # once per process); what follows the draw compiles nothing.
  data.load(cfg.data.name, smoke=True)
  with _no_compilation():
    for build_it in (lambda: build.problem(cfg, smoke=True),
                     lambda: sweep.group_plan([cfg], [], smoke=True)):
      with pytest.raises(ValueError) as info:
        build_it()
      assert str(info.value).startswith(message), str(info.value)


def test_every_experiment_config_passes_the_checks():
  """Each run of each experiment (smoke size) builds: its data fit its loss
  and model."""
  for path in sorted(EXPERIMENTS.glob("*.yaml")):
    exp = config.load(path)
    for cfg in config.resolve_runs(exp, smoke=True):
      p = build.problem(cfg, smoke=True)
      if not build.is_function_problem(cfg):
        assert p.objective.loss == cfg.loss.name, (path.name, cfg.name)
