"""Progress: bars where someone watches, plain lines in logs, result lines."""

import io
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdlab import (cli, config, loop, models, progress, report, run,
                   stopping, sweep)
from gdlab.objective import Objective
from gdlab.optim.gd import gradient_descent

TINY = Path(__file__).parent / "configs" / "tiny.yaml"
RATE = re.compile(r"([\d,.]+) steps/s")


class _Terminal(io.StringIO):

  def isatty(self):
    return True


class _Clock:
  """A clock the test moves by hand."""

  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


def _regression(n=64, d=3, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d))
  y = x @ rng.normal(size=(d, 1)) + 0.5 + 0.1 * rng.normal(size=(n, 1))
  return jnp.asarray(x), jnp.asarray(y)


def _fit(lr=0.05, criteria=None, **kwargs):
  x, y = _regression()
  obj = Objective(models.linear_regression(3), "mse")
  return loop.fit(obj, gradient_descent(lr), (x, y),
                  key=jax.random.PRNGKey(0), **kwargs,
                  criteria=criteria or stopping.Criteria(max_epochs=10))


def _rate(line: str) -> float:
  return float(RATE.search(line).group(1).replace(",", ""))


@pytest.mark.parametrize("show,terminal,notebook,expected", [
    (None, True, False, "bar"), (None, False, False, None),
    (None, False, True, "bar"), (True, False, False, "lines"),
    (True, True, False, "bar"), (False, True, False, None),
    (False, False, True, None)])
def test_mode(show, terminal, notebook, expected, monkeypatch):
  monkeypatch.setattr(progress, "in_notebook", lambda: notebook)
  stream = _Terminal() if terminal else io.StringIO()
  assert progress.mode(show, stream) == expected


def test_lines_come_at_the_period_and_at_the_end():
  clock, stream = _Clock(), io.StringIO()
  bar = progress.Progress(10, label="exp/run", show=True, stream=stream,
                          every=10, clock=clock)
  for t, n in [(1, 1), (5, 2), (11, 3), (15, 4), (22, 5), (25, 6)]:
    clock.now = t
    bar.update(n, f"step {n}")
  clock.now = 26
  bar.close("stopped at epoch 6: loss_tol reached")
  lines = stream.getvalue().splitlines()
  assert [line.split(",")[0] for line in lines] == [
      "exp/run: 1/10 epochs", "exp/run: 3/10 epochs", "exp/run: 5/10 epochs",
      "exp/run: 6/10 epochs", "exp/run: stopped at epoch 6: loss_tol reached"]
  # ETA from the wall time per epoch so far: 22 s for 5 epochs, 5 to go.
  assert lines[2] == "exp/run: 5/10 epochs, step 5, ETA 00:22"
  assert "\r" not in stream.getvalue() and "\x1b" not in stream.getvalue()


def test_fit_lines_name_the_run_and_its_steps_per_second():
  stream = io.StringIO()
  result = _fit(regime="sgd", chunk_epochs=2,
                progress=progress.Options(show=True, label="demo/gd",
                                          stream=stream, every=0))
  lines = stream.getvalue().splitlines()
  assert [line.split(",")[0] for line in lines] == [
      f"demo/gd: {e}/10 epochs" for e in (2, 4, 6, 8, 10)]
  assert all(" loss " in line and "steps/s" in line for line in lines)
  # Steps per second of compiled code, compile time left out: those of
  # summary.json.
  expected = result.history.steps_per_second
  assert _rate(lines[-1]) == pytest.approx(expected, rel=0.1)


def test_bar_on_a_terminal_names_the_run():
  stream = _Terminal()
  _fit(chunk_epochs=5, progress=progress.Options(label="demo/gd",
                                                 stream=stream))
  text = stream.getvalue()
  assert "demo/gd:" in text and "10/10 epochs" in text
  assert "steps/s" in text and "loss" in text


@pytest.mark.parametrize("show", [False, None])
def test_fit_prints_nothing_off_a_terminal(show, capsys):
  _fit(progress=show)
  assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("lr,criteria,expected", [
    (5.0, stopping.Criteria(max_epochs=5000),
     r"diverged \(loss \S+ > 1e\+06 x first loss \S+\)"),
    (0.05, stopping.Criteria(max_epochs=5000, loss_tol=0.05),
     r"loss_tol reached \(loss \S+ <= 0.05\)"),
    (0.05, stopping.Criteria(max_epochs=5000, max_steps=7),
     r"max_steps reached \(7 steps\)")])
def test_early_stops_say_why(lr, criteria, expected):
  stream = io.StringIO()
  result = _fit(lr, criteria, progress=progress.Options(
      show=True, label="demo/gd", stream=stream))
  last = stream.getvalue().splitlines()[-1]
  epoch = progress.last_epoch(result.history)
  assert re.fullmatch(f"demo/gd: stopped at epoch {epoch}: {expected}",
                      last), last


def test_a_spent_epoch_budget_says_nothing_more():
  stream = io.StringIO()
  _fit(progress=progress.Options(show=True, stream=stream))
  assert "stopped" not in stream.getvalue()


def test_a_run_prints_its_result_line(tmp_path, capsys):
  cfg = config.resolve_runs(config.load(TINY), smoke=True)[0]
  result = run.run(cfg, tmp_path / "gd", plots=False)
  out, err = capsys.readouterr()
  h = result.history
  assert out.splitlines() == [progress.result_line("gd", h)]
  assert out.startswith(f"gd: max_epochs after 2 epochs ({h.num_steps} "
                        f"steps); train loss ")
  assert "compiling" in out and "training" in out
  assert err.splitlines()[-1].startswith("gd: 2/2 epochs, loss ")
  assert _rate(err.splitlines()[-1]) == pytest.approx(h.steps_per_second,
                                                      rel=0.1)


def test_the_command_prints_results_and_the_table(tmp_path, capsys,
                                                  monkeypatch):
  # The figures take seconds and are not what this test checks.
  monkeypatch.setattr(report, "run_report", lambda *a, **k: None)
  monkeypatch.setattr(report, "compare", lambda *a, **k: None)
  out_dir = tmp_path / "exp"
  assert cli.main(["run", str(TINY), "--smoke", "--out", str(out_dir)]) == 0
  out, err = capsys.readouterr()
  for name in ("gd", "momentum"):
    assert f"tiny/{name}: max_epochs after 2 epochs" in out
    assert f"tiny/{name}: 2/2 epochs, loss " in err
  assert "| run | stop reason |" in out and "| momentum | max_epochs |" in out
  assert out.rstrip().endswith(f"plots:   {out_dir / 'plots'}")
  assert "|" not in err


def test_a_sweep_shows_its_groups(tmp_path, capsys):
  sweep.run_sweep(config.load(TINY), tmp_path / "s", smoke=True,
                  report=False)
  _, err = capsys.readouterr()
  lines = err.splitlines()
  assert any(re.match(r"tiny sweep: 2/2 epochs, 0/4 running, [\d,.]+ "
                      r"steps/s", line) for line in lines), err
  assert lines[-1] == "tiny sweep: 4 runs stopped: 4 max_epochs"


def test_check_grads_goes_through_the_shared_progress():
  stream = io.StringIO()
  on_row = cli._RowProgress(stream, every=0)  # pylint: disable=protected-access
  for i in range(3):
    on_row(i, 3, None)
  assert isinstance(on_row.progress, progress.Progress)
  assert [line.split(",")[0] for line in stream.getvalue().splitlines()] == [
      "check-grads: 1/3 rows", "check-grads: 2/3 rows",
      "check-grads: 3/3 rows"]
  terminal = _Terminal()
  on_row = cli._RowProgress(terminal)  # pylint: disable=protected-access
  for i in range(3):
    on_row(i, 3, None)
  assert on_row.progress.mode is None and on_row.bar.n == 3
  assert "check-grads:" in terminal.getvalue()
  assert "3/3 rows" in terminal.getvalue()


def test_options_reject_other_types():
  with pytest.raises(TypeError, match="progress: expected None, True, False"):
    progress.options("yes")
