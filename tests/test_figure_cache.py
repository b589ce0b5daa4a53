"""The figure cache: a figure saved again is copied, and only an equal one.

A copy must be the PNG that drawing would write (checked against figures
drawn with the cache off); every change to what a figure shows must give a
new key (checked change by change); the key of a figure must not depend on
the process (checked in a process with another hash seed).
"""

import os
import subprocess
import sys
import threading
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from matplotlib import ticker

from gdlab import plots
from gdlab.history import History
from gdlab.plots import _cache

HERE = Path(__file__).resolve().parent


@pytest.fixture
def cache(tmp_path, monkeypatch):
  """A fresh, empty figure cache for the test; yields its folder."""
  folder = tmp_path / "figure-cache"
  monkeypatch.setenv(_cache.ENV, str(folder))
  monkeypatch.setitem(_cache.counts, "drawn", 0)
  monkeypatch.setitem(_cache.counts, "reused", 0)
  return folder


def _history(scale: float = 1.0) -> History:
  steps = {"step": np.arange(1, 201), "loss": scale / np.arange(1, 201),
           "grad_evals": np.ones(200)}
  epochs = {"epoch": np.arange(1, 11), "step": np.arange(20, 201, 20),
            "train_loss": scale / np.arange(20, 201, 20)}
  return History(steps, epochs, "max_epochs")


def _figure(**change):
  """A small figure; each keyword of ``change`` alters one thing in it."""
  fig = plots.InlineFigure(figsize=change.get("size", (4, 3)),
                           layout="constrained")
  ax = fig.add_subplot()
  x = np.linspace(0.0, 1.0, 50)
  y = x ** 2
  if "ulp" in change:
    y[7] = np.nextafter(y[7], 2.0)
  ax.plot(x, y, color=change.get("colour", "C0"), lw=change.get("lw", 1.5),
          label=change.get("label", "a run"))
  ax.set_title(change.get("title", "loss"))
  if "log" in change:
    ax.set_yscale("log")
  if "xlim" in change:
    ax.set_xlim(*change["xlim"])
  if "formatter" in change:
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(change["formatter"]))
  if "tags" in change:
    ax.lines[0].tags = change["tags"]  # a set: written in its own order
  ax.legend()
  return fig


def _suffix(digits):
  return lambda v, _: f"{v:.{digits}f} s"


def examples() -> dict[str, str]:
  """The keys of a few figures (this process's; another's must agree)."""
  return {
      "plain": _cache.key(_figure(), plots.DPI),
      "set": _cache.key(_figure(tags={f"t{i}" for i in range(40)}),
                        plots.DPI),
      "formatter": _cache.key(_figure(formatter=_suffix(2)), plots.DPI),
      "loss_curves": _cache.key(plots.loss_curves({"gd": _history()}),
                                plots.DPI),
  }


def test_a_figure_saved_again_is_copied_as_drawing_would_write_it(
    cache, tmp_path, monkeypatch):
  first = plots.loss_curves({"gd": _history()}, tmp_path / "a.png")
  assert _cache.counts == {"drawn": 1, "reused": 0}
  assert len(list(cache.glob("*.png"))) == 1
  # The same figure, built again: copied, not drawn.
  second = plots.loss_curves({"gd": _history()}, tmp_path / "sub" / "b.png")
  assert _cache.counts == {"drawn": 1, "reused": 1}
  assert second.read_bytes() == first.read_bytes()
  # What drawing writes, with the cache off: the same bytes.
  monkeypatch.setenv(_cache.ENV, "off")
  fresh = plots.loss_curves({"gd": _history()}, tmp_path / "c.png")
  assert _cache.counts == {"drawn": 2, "reused": 1}
  assert fresh.read_bytes() == first.read_bytes()
  # Another figure is drawn, and kept.
  monkeypatch.setenv(_cache.ENV, str(cache))
  plots.loss_curves({"gd": _history(2.0)}, tmp_path / "d.png")
  assert _cache.counts == {"drawn": 3, "reused": 1}
  assert len(list(cache.glob("*.png"))) == 2


CHANGES = {
    "one value by one ulp": {"ulp": True},
    "the colour": {"colour": "C1"},
    "the line width": {"lw": 1.0},
    "the title": {"title": "Loss"},
    "a legend label": {"label": "b run"},
    "the y scale": {"log": True},
    "the x limits": {"xlim": (0.0, 0.9)},
    "the figure size": {"size": (4, 3.1)},
    "a formatter": {"formatter": _suffix(2)},
    "a formatter's closure value": {"formatter": _suffix(3)},
    "a formatter's code": {"formatter": lambda v, _: f"{v:.2f} s!"},
}


def test_every_change_to_what_is_drawn_gives_another_key():
  base = _cache.key(_figure(), plots.DPI)
  assert base is not None
  assert _cache.key(_figure(), plots.DPI) == base  # built again: equal
  keys = {"none": base}
  for what, change in CHANGES.items():
    keys[what] = _cache.key(_figure(**change), plots.DPI)
  keys["the resolution"] = _cache.key(_figure(), 2 * plots.DPI)
  # A setting read while drawing, changed after the figure was made.
  fig = _figure()
  with matplotlib.rc_context({"path.simplify_threshold": 0.5}):
    keys["an rcParams value"] = _cache.key(fig, plots.DPI)
  assert None not in keys.values()
  assert len(set(keys.values())) == len(keys), keys


def test_the_key_is_the_same_in_another_process():
  env = dict(os.environ, PYTHONHASHSEED="12345")
  code = ("import json, test_figure_cache as t; "
          "print(json.dumps(t.examples()))")
  out = subprocess.run([sys.executable, "-c", code], cwd=HERE, env=env,
                       capture_output=True, text=True, check=True).stdout
  import json  # pylint: disable=g-import-not-at-top
  assert json.loads(out) == examples()


def test_a_figure_that_cannot_be_pickled_is_drawn_and_not_kept(
    cache, tmp_path):
  for name in ("a", "b"):
    fig = _figure()
    fig.lock = threading.Lock()
    assert _cache.key(fig, plots.DPI) is None
    plots.save_png(fig, tmp_path / f"{name}.png")
  assert _cache.counts == {"drawn": 2, "reused": 0}
  assert not cache.exists() or not list(cache.iterdir())


def test_a_damaged_entry_is_drawn_again_and_replaced(cache, tmp_path):
  path = plots.save_png(_figure(), tmp_path / "a.png")
  (entry,) = cache.glob("*.png")
  whole = entry.read_bytes()
  for damaged in (whole[:len(whole) // 2], b"", b"not a png" + whole[9:]):
    entry.write_bytes(damaged)
    again = plots.save_png(_figure(), tmp_path / "b.png")
    assert again.read_bytes() == path.read_bytes()
    assert entry.read_bytes() == whole
  assert _cache.counts == {"drawn": 4, "reused": 0}


def test_off_and_unwritable_caches_draw_every_figure(cache, tmp_path,
                                                      monkeypatch):
  blocker = tmp_path / "a file"
  blocker.write_text("")
  for setting in ("off", str(blocker / "figures")):
    monkeypatch.setenv(_cache.ENV, setting)
    plots.save_png(_figure(), tmp_path / "a.png")
    plots.save_png(_figure(), tmp_path / "b.png")
  assert _cache.counts == {"drawn": 4, "reused": 0}
  assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
  assert blocker.read_text() == ""


def test_the_cache_keeps_to_its_size_dropping_the_least_recently_used(
    cache, tmp_path):
  cache.mkdir()
  for i in range(8):
    entry = cache / f"{i}.png"
    entry.write_bytes(b"x" * 1000)
    os.utime(entry, (1000.0 + i, 1000.0 + i))
  (cache / "notes.txt").write_text("not an entry")
  _cache.prune(cache, max_bytes=10_000)  # 8000 bytes: nothing removed
  assert len(list(cache.glob("*.png"))) == 8
  # Entry 0 was used last: the oldest others go, to 3/4 of the limit
  # (3750 bytes: three entries).
  os.utime(cache / "0.png")
  _cache.prune(cache, max_bytes=5000)
  assert sorted(p.name for p in cache.glob("*.png")) == [
      "0.png", "6.png", "7.png"]
  assert (cache / "notes.txt").exists()
