"""The gradient check: one compiled program per structure, the same errors as
a direct computation, and the ``check-grads`` command around it."""

import collections
import contextlib
import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import helpers

from gdlab import cli, gradcheck, losses
from gdlab.analyses import engines
from gdlab.objective import Objective, value_and_grad_fn

pytestmark = pytest.mark.strict_promotion

BUILD = "/jax/core/compile/jaxpr_to_mlir_module_duration"
COMPILE = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def _counting():
  """Counts JAX's program builds and compilations by ``(event, function)``.

  A build (a lowering) happens once per program JAX has not seen in this
  process; its compilation may come from the persistent cache instead.
  """
  counts = collections.Counter()

  def listener(event, duration, **kwargs):
    del duration
    counts[event, kwargs.get("fun_name", "")] += 1

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield counts
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


def _total(counts, event: str, name: str = "") -> int:
  return sum(v for (e, f), v in counts.items() if e == event and name in f)


def test_grid_builds_one_program_per_structure():
  # n=5: structures that no other test builds, so the count starts at zero.
  grid = dict(activation_names=("tanh", "relu", "sigmoid"),
              loss_names=("mse", "softmax_cross_entropy", "hinge"),
              biases=("per_neuron", "none"), depths=(0, 1), n=5)
  calls = []
  with _counting() as counts:
    rows = gradcheck.grid(**grid, on_row=lambda *a: calls.append(a))
  assert len(rows) == 36 and all(r.passed for r in rows)
  # Activations and losses are traced: one program per bias and depth.
  assert _total(counts, BUILD, "_grid_row_errors") == 4
  assert _total(counts, COMPILE, "_grid_row_errors") <= 4
  assert [(i, total) for i, total, _ in calls] == [(i, 36) for i in range(36)]
  assert [row for _, _, row in calls] == rows
  # Other problems of the same structures: nothing is built or compiled.
  with _counting() as counts:
    again = gradcheck.grid(**grid, seed=1)
  assert _total(counts, BUILD) == 0 and _total(counts, COMPILE) == 0
  assert [r[:5] for r in again] == [r[:5] for r in rows]
  assert [r.vs_autodiff for r in again] != [r.vs_autodiff for r in rows]


def test_check_gradients_shares_a_program_across_activations():
  with _counting() as counts:
    for act in ("elu", "swish", "gelu"):
      model = gradcheck.grid_model(act, "huber", "per_layer", 2)
      params, x, y = gradcheck.random_problem(model, "huber",
                                              jax.random.PRNGKey(7), 6)
      assert gradcheck.check_gradients(Objective(model, "huber"), params, x,
                                       y).passed
  assert _total(counts, BUILD, "_objective_errors") == 1


def _reference(objective, params, x, y, fd_step):
  """Per-leaf errors computed directly: each engine on its own, NumPy after.

  The three gradients come from one program of this test's own (not
  gradcheck's), compiled once rather than operation by operation.
  """
  def gradients(params, x, y):
    value, manual = value_and_grad_fn(objective, "manual")(params, x, y)
    _, auto = value_and_grad_fn(objective, "autodiff")(params, x, y)
    fd = gradcheck.finite_difference_grad(
        lambda p: objective.value(p, x, y), params, fd_step)
    return value, manual, auto, fd
  value, manual, auto, fd = helpers.jit_once(gradients)(params, x, y)
  leaves = [[np.asarray(g) for g in jax.tree_util.tree_leaves(t)]
            for t in (manual, auto, fd)]
  floor = 1e-4 * max(np.max(np.abs(g)) for g in leaves[1])
  noise = 10 * np.finfo(np.float64).eps * abs(float(value)) / fd_step
  e_auto, e_fd = [], []
  for m, a, f in zip(*leaves):
    e_auto.append(np.max(np.abs(m - a)) /
                  max(np.max(np.abs(m)), np.max(np.abs(a)), floor))
    e_fd.append(max(np.max(np.abs(m - f)) - noise, 0.0) /
                max(np.max(np.abs(m)), np.max(np.abs(f)), floor))
  return float(value), e_auto, e_fd


# (activation, loss, bias, depth, reduction, penalty): every label kind,
# every bias arrangement, both reductions, a penalty.
ROWS = [
    ("tanh", "mse", "per_neuron", 1, "mean", None),
    ("sigmoid", "softmax_cross_entropy", "per_layer", 3, "mean", None),
    ("relu", "multiclass_hinge", "shared", 0, "sum", None),
    ("gelu", "binary_cross_entropy", "none", 1, "sum", None),
    ("elu", "hinge", "per_neuron", 3, "mean", None),
    ("softplus", "huber", "shared", 1, "mean", losses.Penalty("l2", 0.3)),
]


@pytest.mark.parametrize("i,act,loss,bias,depth,red,penalty",
                         [(i, *row) for i, row in enumerate(ROWS)])
def test_grid_rows_match_a_direct_computation(i, act, loss, bias, depth, red,
                                              penalty):
  key = jax.random.fold_in(jax.random.PRNGKey(3), i)
  row = gradcheck.grid_row(act, loss, bias, depth, red, penalty, key)
  model = gradcheck.grid_model(act, loss, bias, depth)
  params, x, y = gradcheck.random_problem(model, loss, key)
  _, e_auto, e_fd = _reference(Objective(model, loss, red, penalty), params,
                               x, y, gradcheck.FD_STEP)
  # Rounding error of two engines compiled differently, against 1e-10.
  assert row.vs_autodiff == pytest.approx(max(e_auto), abs=1e-11)
  assert row.vs_finite_diff == pytest.approx(max(e_fd), abs=1e-11)
  assert row.passed


@pytest.mark.parametrize("i,act,loss,bias,depth,red,penalty",
                         [(i, *row) for i, row in enumerate(ROWS)])
def test_check_gradients_matches_a_direct_computation(i, act, loss, bias,
                                                      depth, red, penalty):
  """A coarse step, so that the finite differences are off by much more
  than rounding error, and the errors can be compared closely."""
  model = gradcheck.grid_model(act, loss, bias, depth)
  params, x, y = gradcheck.random_problem(
      model, loss, jax.random.fold_in(jax.random.PRNGKey(4), i))
  objective = Objective(model, loss, red, penalty)
  result = gradcheck.check_gradients(objective, params, x, y, fd_step=1e-3)
  value, e_auto, e_fd = _reference(objective, params, x, y, 1e-3)
  assert result.value == pytest.approx(value, rel=1e-13)
  assert [leaf.path for leaf in result.leaves] == [
      jax.tree_util.keystr(p) for p, _ in
      jax.tree_util.tree_leaves_with_path(params)]
  if act != "relu":  # Else piecewise linear: exact differences.
    assert max(e_fd) > 1e-9  # Well above rounding error.
  np.testing.assert_allclose([leaf.vs_finite_diff for leaf in result.leaves],
                             e_fd, rtol=1e-5, atol=1e-12)
  np.testing.assert_allclose([leaf.vs_autodiff for leaf in result.leaves],
                             e_auto, rtol=0, atol=1e-11)
  assert result.passed == (result.max_vs_autodiff <= gradcheck.AUTODIFF_TOL
                           and result.max_vs_finite_diff <= gradcheck.FD_TOL)


def test_grid_is_reproducible_and_follows_random_problem():
  grid = dict(activation_names=("swish",), loss_names=("absolute",),
              biases=("per_layer",), depths=(1, 3))
  assert gradcheck.grid(**grid, seed=5) == gradcheck.grid(**grid, seed=5)
  key = jax.random.fold_in(jax.random.PRNGKey(5), 1)
  assert gradcheck.grid(**grid, seed=5)[1] == gradcheck.grid_row(
      "swish", "absolute", "per_layer", 3, "mean", None, key)


def test_relative_errors_floor_and_noise():
  a = {"w": jnp.array([1.0, -2.0]), "b": jnp.array([1e-9])}
  b = {"w": jnp.array([1.0, -2.5]), "b": jnp.array([0.0])}
  # Leaves in tree order: b, then w.
  assert gradcheck.relative_errors(a, b, 0.0) == pytest.approx([1.0, 0.2])
  assert gradcheck.relative_errors(a, b, 1e-4) == pytest.approx([1e-5, 0.2])
  assert gradcheck.relative_errors(a, b, 1e-4, noise=0.1) == pytest.approx(
      [0.0, 0.16])
  zero = {"w": jnp.zeros(2)}
  assert gradcheck.relative_errors(zero, zero, 0.0) == [0.0]


# ----------------------------------------------------------------------------
# gdlab check-grads.


@pytest.fixture
def _no_disk_cache(monkeypatch):
  monkeypatch.setenv("GDLAB_COMPILATION_CACHE", "off")


@pytest.mark.parametrize("depths", ["-1", "0,-2", "1,x", ","])
def test_check_grads_rejects_bad_depths(depths, capsys, _no_disk_cache):
  code = cli.main(["check-grads", "--depths", depths])
  err = capsys.readouterr().err
  assert code == 2
  assert err.count("\n") == 1, err
  assert "--depths: expected" in err and ">= 0" in err and repr(depths) in err


def test_check_grads_progress_goes_to_stderr(capsys, monkeypatch,
                                             _no_disk_cache):
  monkeypatch.setattr(cli, "PROGRESS_SECONDS", 0.0)
  code = cli.main(["check-grads", "--activations", "tanh", "--losses",
                   "mse,hinge", "--biases", "none", "--depths", "0"])
  out, err = capsys.readouterr()
  assert code == 0
  assert "2/2 rows pass" in out and "check-grads:" not in out
  assert [line.split(",")[0] for line in err.splitlines()] == [
      "check-grads: 1/2 rows", "check-grads: 2/2 rows"]


class _Terminal(io.StringIO):

  def isatty(self):
    return True


def test_progress_bar_on_a_terminal():
  pytest.importorskip("tqdm")
  stream = _Terminal()
  progress = cli._RowProgress(stream)  # pylint: disable=protected-access
  for i in range(3):
    progress(i, 3, None)
  assert "check-grads" in stream.getvalue() and "0/3" in stream.getvalue()
  assert progress.bar.n == 3 and progress.bar.disable  # Done and closed.


def test_the_precision_follows_the_backend():
  assert gradcheck.precision("cpu") == gradcheck.FLOAT64
  assert gradcheck.precision("gpu") == gradcheck.FLOAT64
  tpu = gradcheck.precision("tpu")
  assert tpu.dtype == "float32" and "no float64" in tpu.why
  # float32 asked for on a backend with float64 keeps its tolerances.
  asked = gradcheck.precision("cpu", "float32")
  assert asked.dtype == "float32" and asked.autodiff_tol == tpu.autodiff_tol
  with pytest.raises(ValueError, match="dtype: expected 'auto'"):
    gradcheck.precision("cpu", "float16")


def test_a_row_passes_by_its_precisions_tolerances():
  key = jax.random.PRNGKey(0)
  row = gradcheck.grid_row("tanh", "mse", "per_neuron", 1, "mean", None, key)
  assert row.passed and 0 < row.vs_autodiff
  strict = gradcheck.FLOAT64._replace(autodiff_tol=row.vs_autodiff / 2)
  assert not gradcheck.grid_row("tanh", "mse", "per_neuron", 1, "mean", None,
                                key, precision=strict).passed


# ----------------------------------------------------------------------------
# The figure of the grid (the experiment backprop_vs_autodiff).


def test_figure_shows_the_raw_finite_difference_error():
  # The structure (per_neuron, depth 1, n=8) of the rows checked above.
  acts, loss_names = ("tanh", "relu"), ("mse", "softmax_cross_entropy")
  rows = gradcheck.grid(acts, loss_names, ["per_neuron"], [1])
  fig = engines.gradcheck_table(rows)
  auto, fd = [ax for ax in fig.axes if ax.images]
  assert "jax.grad" in auto.get_title()
  assert "finite differences" in fd.get_title()
  raw = np.array([[r.fd_raw for r in rows if r.activation == a]
                  for a in acts])
  noise = np.array([[r.fd_noise for r in rows if r.activation == a]
                    for a in acts])
  # Each cell is one row: the raw error, not the error less the noise
  # (which is 0 for these rows, drawn at the bottom of the scale).
  assert all(r.vs_finite_diff == 0 for r in rows)
  shown = np.asarray(fd.images[0].get_array())
  np.testing.assert_allclose(shown, np.log10(raw), rtol=1e-12)
  assert np.all(shown > -12) and np.all(raw < noise)
  texts = sorted(t.get_text() for t in fd.texts)
  assert texts == sorted(f"{e:.0e}\n< {n:.0e}"
                         for e, n in zip(raw.ravel(), noise.ravel()))
  np.testing.assert_allclose(
      np.asarray(auto.images[0].get_array()),
      np.log10(np.maximum([[r.vs_autodiff for r in rows
                            if r.activation == a] for a in acts], 1e-18)))
  assert "raw" in fd.images[0].colorbar.ax.get_ylabel()
  width, _ = fig.get_size_inches()
  assert width <= 14
