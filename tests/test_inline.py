"""What a notebook shows: short reprs, HTML tables, figures, DataFrames."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from matplotlib.figure import Figure

from gdlab import (gradcheck, history, loop, metrics_log, models, plots,
                   results, stopping)
from gdlab.analyses import engines, subgradient
from gdlab.history import History
from gdlab.objective import Objective
from gdlab.optim.gd import gradient_descent

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _history(n_epochs=40, steps_per_epoch=300, test=True) -> History:
  """A long synthetic history: 12,000 steps, 40 epochs."""
  n = n_epochs * steps_per_epoch
  k = np.arange(n)
  loss = 2.0 * 0.999 ** k
  steps = {"loss": loss, "grad_norm": np.sqrt(loss),
           "update_norm": 0.1 * np.sqrt(loss), "step_size": np.full(n, 0.1),
           "fun_evals": np.ones(n), "grad_evals": np.ones(n)}
  e = np.arange(1.0, n_epochs + 1)
  last = loss[steps_per_epoch - 1::steps_per_epoch]
  nan = np.full(n_epochs, np.nan)
  epochs = {"epoch": e, "step": e * steps_per_epoch,
            "fun_evals": e * steps_per_epoch, "grad_evals": e * steps_per_epoch,
            "train_loss": last, "test_loss": 1.5 * last if test else nan,
            "train_accuracy": 1 - last / 4, "test_accuracy": 0.97 - last / 4
            if test else nan, "time": 0.03 * e}
  return History(steps, epochs, "max_epochs", compile_time=0.8, run_time=1.2)


def _run_folder(root, name="gd", h=None):
  """A run folder as ``gdlab run`` writes one (metrics and summary)."""
  h = h or _history()
  run = root / name
  run.mkdir(parents=True)
  metrics_log.write_metrics(run, h.steps, h.epochs)
  results.write_json(run / results.SUMMARY, {
      "name": name, "stop_reason": h.stop_reason, "steps": h.num_steps,
      "epochs": h.num_epochs, "final": h.final,
      "compile_time": h.compile_time, "run_time": h.run_time,
      "steps_per_second": h.steps_per_second})
  return run


def _check_short(text: str, title: str) -> None:
  assert text.startswith(f"{title}(") and text.endswith(")"), text
  assert len(text) < 300, text
  assert "\n" not in text and "[" not in text and "array" not in text.lower()


# ----------------------------------------------------------------------------
# Reprs and HTML tables.


def test_history_repr_is_one_short_line():
  h = _history()
  text = repr(h)
  _check_short(text, "History")
  assert text == ("History(stop_reason='max_epochs', steps=12000, epochs=40, "
                  "train_loss=1.223e-05, test_loss=1.834e-05, "
                  "train_accuracy=1, test_accuracy=0.97, "
                  "compile_time=0.8s, run_time=1.2s)")
  assert repr(history.empty_history()) == (
      "History(stop_reason='running', steps=0, epochs=0, compile_time=0s, "
      "run_time=0s)")


def test_headline_leaves_out_what_does_not_apply():
  h = _history(test=False)
  assert "test_loss" not in h.headline and "test_accuracy" not in repr(h)
  # No per-epoch metric at all: the last step's loss stands in.
  h.epochs = {k: np.full_like(v, np.nan) if k in history.EPOCH_METRICS else v
              for k, v in h.epochs.items()}
  assert h.headline["loss"] == h.steps["loss"][-1]
  assert "loss=1.223e-05," in repr(h)


def test_history_html_is_a_table_of_the_headline():
  h = _history()
  h.stop_reason = "<diverged & co>"
  page = h._repr_html_()
  assert page.startswith("<table>") and page.endswith("</table>")
  assert "<caption>History</caption>" in page
  assert "&lt;diverged &amp; co&gt;" in page  # escaped
  for label in ("stop reason", "steps", "epochs", "final test accuracy",
                "compile time (s)", "run time (s)", "steps/s"):
    assert f">{label}</th>" in page, label
  assert ">12000</td>" in page and ">1e+04</td>" in page  # steps/s
  assert len(page) < 2_000


def test_derived_values_are_properties():
  h = _history()
  for name in ("final", "headline", "num_steps", "num_epochs",
               "steps_per_second"):
    assert isinstance(getattr(History, name), property), name
  assert h.num_steps == 12_000 and h.num_epochs == 40
  assert h.steps_per_second == pytest.approx(10_000)
  final = h.final
  assert final["stop_reason"] == "max_epochs" and final["steps"] == 12_000
  assert final["epoch"] == 40 and final["train_loss"] == h.epochs[
      "train_loss"][-1]
  assert final["run_time"] == 1.2 and final["compile_time"] == 0.8


def test_fit_result_shows_its_headline_and_stays_a_named_tuple():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(40, 2)))
  y = jnp.asarray((rng.uniform(size=(40, 1)) < 0.5).astype(float))
  obj = Objective(models.mlp((2, 1)), "binary_cross_entropy", "mean")
  result = loop.fit(obj, gradient_descent(0.1), (x, y, x, y),
                    key=jax.random.PRNGKey(0),
                    criteria=stopping.Criteria(max_epochs=3))
  text = repr(result)
  _check_short(text, "FitResult")
  assert text.startswith("FitResult(stop_reason='max_epochs', steps=3, "
                         "epochs=3, train_loss=")
  assert str(result) == text
  page = result._repr_html_()
  assert page.startswith("<table>") and "<caption>FitResult</caption>" in page
  assert ">max_epochs</td>" in page
  params, opt_state, h, stop_reason, carry = result  # still unpacks
  assert isinstance(result, tuple) and result._fields[2] == "history"
  assert stop_reason == "max_epochs" and h is result.history


def test_run_record_shows_name_folder_and_headline(tmp_path):
  rec = results.load_run(_run_folder(tmp_path))
  text = repr(rec)
  _check_short(text, "RunRecord")
  assert text.startswith(f"RunRecord(name='gd', path='{tmp_path / 'gd'}', "
                         f"stop_reason='max_epochs', steps=12000, epochs=40,")
  assert text.endswith("compile_time=0.8s, run_time=1.2s)")
  page = rec._repr_html_()
  assert page.startswith("<table>") and "<caption>RunRecord</caption>" in page
  for cell in ("gd", str(tmp_path / "gd"), "max_epochs", "12000", "40"):
    assert f">{cell}</td>" in page, cell
  assert rec.history.headline == _history().headline


# ----------------------------------------------------------------------------
# DataFrames.


def test_to_dataframe_round_trips_the_metrics(tmp_path):
  pytest.importorskip("pandas", reason="pandas, an optional extra, is not "
                      "installed")
  h = _history()
  rec = results.load_run(_run_folder(tmp_path, h=h))
  for source in (h, rec):
    epochs = source.to_dataframe()
    assert len(epochs) == 40
    for k, v in h.epochs.items():
      np.testing.assert_array_equal(epochs[k].to_numpy(), v)
    steps = source.to_dataframe("step")
    assert list(steps.columns)[0] == "step" and len(steps) == 12_000
    np.testing.assert_array_equal(steps["step"].to_numpy(),
                                  np.arange(1, 12_001))
    for k, v in h.steps.items():
      np.testing.assert_array_equal(steps[k].to_numpy(), v)
  # Logged parameters (one array per step) are not a column.
  h.steps["params"] = np.zeros((12_000, 2))
  assert "params" not in h.to_dataframe("step")


def test_to_dataframe_errors(monkeypatch):
  h = _history()
  with pytest.raises(ValueError, match="kind: expected one of 'epoch', "
                     "'step'; got 'epochs'"):
    h.to_dataframe("epochs")
  # Without pandas: a None entry in sys.modules makes its import fail.
  monkeypatch.setitem(sys.modules, "pandas", None)
  with pytest.raises(ImportError, match="pip install pandas"):
    h.to_dataframe()


# ----------------------------------------------------------------------------
# Figures: returned unsaved without a path, written with one.


def _grad_rows():
  return [gradcheck.Row(a, l, "neuron", 1, "mean", 1e-14, 1e-9, True)
          for a in ("relu", "tanh") for l in ("mse", "softmax_ce")]


FIGURES = {
    "loss_curves": lambda p: plots.loss_curves({"gd": _history()}, p,
                                               x="epoch", y="train_loss"),
    "step_sizes": lambda p: plots.step_sizes({"gd": _history(2, 5)}, p),
    "sensitivity": lambda p: plots.sensitivity(
        [0.1, 1.0, 10.0], [1.0, 0.1, np.inf], p, "learning rate"),
    "surface": lambda p: plots.surface(
        "rosenbrock", {"gd": np.array([[-1.0, 1.5], [0.0, 0.5], [1.0, 1.0]])},
        p, num=30),
    "fbest_gap": lambda p: subgradient.fbest_gap(
        {"constant": 1.0 + 1 / np.arange(1.0, 50)}, 1.0, None, p),
    "gradcheck_table": lambda p: engines.gradcheck_table(_grad_rows(), p),
}


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_figure_without_a_path_is_returned_unsaved(name, tmp_path,
                                                   monkeypatch):
  monkeypatch.chdir(tmp_path)
  fig = FIGURES[name](None)
  assert isinstance(fig, Figure) and isinstance(fig, plots.InlineFigure)
  assert fig.axes
  assert list(tmp_path.iterdir()) == []  # nothing written
  assert fig._repr_png_().startswith(PNG_MAGIC)  # what a notebook shows


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_figure_with_a_path_is_saved(name, tmp_path):
  path = tmp_path / "sub" / f"{name}.png"
  assert FIGURES[name](path) == path
  assert path.read_bytes().startswith(PNG_MAGIC)


def test_the_inline_png_is_the_saved_file(tmp_path):
  fig = FIGURES["loss_curves"](None)
  path = plots.save_png(fig, tmp_path / "a.png")
  assert fig._repr_png_() == path.read_bytes()
  assert FIGURES["loss_curves"](tmp_path / "b.png").read_bytes() == \
      path.read_bytes()
  # Shown inline first, a figure is laid out as the file is (the legend
  # outside the axes needs the layout): the same picture.
  shown = FIGURES["loss_curves"](None)._repr_png_()
  assert shown == FIGURES["loss_curves"](tmp_path / "c.png").read_bytes()
