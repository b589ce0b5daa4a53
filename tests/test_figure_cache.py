"""The figure cache: a figure written again is copied, and only an equal one.

A copy must be the PNG that drawing would write (checked against figures
drawn with the cache off); every change to what a figure shows, in the
figure or in what drawing reads besides it, must give a new key or none
(checked change by change); the key of a figure must not depend on the
process (checked in a process with another hash seed).
"""

import importlib
import io
import json
import os
import subprocess
import sys
import threading
import types
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from matplotlib import colors
from matplotlib import font_manager
from matplotlib import ticker
import tqdm

from gdlab import plots
from gdlab.history import History
from gdlab.plots import _cache

HERE = Path(__file__).resolve().parent
UNIT = "s"  # read by _with_unit: a global that a formatter uses


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
  ax, other = fig.subplots(1, 2, sharey=True)  # a set of shared axes
  x = np.linspace(0.0, 1.0, 50)
  y = x ** 2
  if "ulp" in change:
    y[7] = np.nextafter(y[7], 2.0)
  ax.plot(x, y, color=change.get("colour", "C0"), lw=change.get("lw", 1.5),
          label=change.get("label", "a run"))
  other.plot(x, 1 - y, color="tab:red")
  ax.set_title(change.get("title", "loss"))
  if "log" in change:
    ax.set_yscale("log")
  if "xlim" in change:
    ax.set_xlim(*change["xlim"])
  if "formatter" in change:
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(change["formatter"]))
  if "tags" in change:
    ax.lines[0].tags = change["tags"]  # a set: written in its own order
  if "on_draw" in change:
    fig.canvas.mpl_connect("draw_event", change["on_draw"])
  ax.legend()
  return fig


def _suffix(digits):
  return lambda v, _: f"{v:.{digits}f} s"


def _with_unit(v, _):
  return f"{v:.1f} {UNIT}"


def examples() -> dict[str, str]:
  """The keys of a few figures (this process's; another's must agree)."""
  tags = {f"t{i}" for i in range(40)} | {frozenset({"a", "b", "c", "d"})}
  return {
      "plain": _cache.key(_figure(), plots.DPI),
      "sets": _cache.key(_figure(tags=tags), plots.DPI),
      "formatter": _cache.key(_figure(formatter=_with_unit), plots.DPI),
      "loss_curves": _cache.key(plots.loss_curves({"gd": _history()}),
                                plots.DPI),
      "tracked": _cache.key(plots.tracked({"gd": _tracked_history()}),
                            plots.DPI),
  }


def _tracked_history() -> History:
  h = _history()
  h.epochs["sharpness"] = np.linspace(1.0, 2.0, 10)
  h.epochs["hessian_trace"] = np.linspace(5.0, 3.0, 10)
  return h


def test_a_figure_written_again_is_copied_as_drawing_would_write_it(
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


def test_save_png_always_draws(cache, tmp_path):
  # A figure handed to save_png may hold the user's own code: never copied.
  for name in ("a", "b"):
    plots.save_png(_figure(), tmp_path / f"{name}.png")
  assert _cache.counts == {"drawn": 2, "reused": 0}
  assert not cache.exists()


def _draws(word):
  def on_draw(event):
    event.canvas.figure.text(0.5, 0.5, word).draw(event.renderer)
  return on_draw


def _with_argcount():
  return lambda v, *p: f"{v}"


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
    "a formatter's signature": {"formatter": lambda v, p: f"{v}"},
    "a formatter's other signature": {"formatter": _with_argcount()},
    "a draw-time callback": {"on_draw": _draws("A")},
    "what a draw-time callback draws": {"on_draw": _draws("B")},
}


def test_every_change_to_what_is_drawn_gives_another_key(monkeypatch):
  base = _cache.key(_figure(), plots.DPI)
  assert base is not None
  assert _cache.key(_figure(), plots.DPI) == base  # built again: equal
  fig = _figure()
  assert _cache.key(fig, plots.DPI) == _cache.key(fig, plots.DPI) == base
  keys = {"none": base}
  for what, change in CHANGES.items():
    keys[what] = _cache.key(_figure(**change), plots.DPI)
  keys["the resolution"] = _cache.key(_figure(), 2 * plots.DPI)
  # A global that a formatter reads, changed (a notebook cell run again).
  keys["a formatter reading a global"] = _cache.key(
      _figure(formatter=_with_unit), plots.DPI)
  monkeypatch.setattr(sys.modules[__name__], "UNIT", "ms")
  keys["that global changed"] = _cache.key(_figure(formatter=_with_unit),
                                           plots.DPI)
  # What drawing reads besides the figure, changed after it was made (and
  # keyed: matplotlib makes some of a figure's paths when first asked for
  # them, under the rcParams of that moment).
  fig = _figure()
  assert _cache.key(fig, plots.DPI) == base
  with matplotlib.rc_context({"path.simplify_threshold": 0.5}):
    keys["an rcParams value"] = _cache.key(fig, plots.DPI)
  monkeypatch.setitem(colors.get_named_colors_mapping(), "tab:red",
                      "#00ff00")
  keys["a named colour"] = _cache.key(fig, plots.DPI)
  monkeypatch.undo()
  monkeypatch.setattr(font_manager.fontManager, "ttflist",
                      font_manager.fontManager.ttflist[:-1])
  keys["the fonts matplotlib knows"] = _cache.key(fig, plots.DPI)
  monkeypatch.undo()
  with np.printoptions(legacy="1.13"):
    keys["numpy's print options"] = _cache.key(fig, plots.DPI)
  assert None not in keys.values(), keys
  assert len(set(keys.values())) == len(keys), keys
  assert _cache.key(fig, plots.DPI) == base  # all undone


CELL = """
import functools

UNIT = "s"

def with_unit(v, _):
  return f"{v:.1f} {UNIT}"

@functools.cache
def cached(v, _):
  return f"{v:.1f} %s"

class Seconds:
  def __call__(self, v, _):
    return f"{v:.1f} %s"
"""


def test_code_of_a_notebook_and_of_the_users_modules_counts_by_what_it_is(
    tmp_path, monkeypatch):
  keys = {}
  # A notebook's __main__ has no file (IPython's): its code counts by what
  # it is, as a script's does.  A cell run again with another global, or
  # another dunder method.
  notebook = types.ModuleType("__main__")
  monkeypatch.setitem(sys.modules, "__main__", notebook)
  exec(CELL % ("s", "s"), notebook.__dict__)  # pylint: disable=exec-used
  keys["notebook function"] = _cache.key(
      _figure(formatter=notebook.with_unit), plots.DPI)
  keys["notebook class"] = _cache.key(
      _figure(formatter=notebook.Seconds()), plots.DPI)
  keys["notebook cached function"] = _cache.key(
      _figure(formatter=notebook.cached), plots.DPI)
  notebook.UNIT = "ms"
  keys["its global changed"] = _cache.key(
      _figure(formatter=notebook.with_unit), plots.DPI)
  exec(CELL % ("ms", "ms"), notebook.__dict__)  # pylint: disable=exec-used
  keys["its __call__ changed"] = _cache.key(
      _figure(formatter=notebook.Seconds()), plots.DPI)
  keys["its cached function changed"] = _cache.key(
      _figure(formatter=notebook.cached), plots.DPI)
  # A module of the user's, in a namespace package, edited and reloaded.
  package = tmp_path / "users_styles"
  package.mkdir()
  (package / "units.py").write_text(CELL % ("s", "s"))
  monkeypatch.syspath_prepend(str(tmp_path))
  units = importlib.import_module("users_styles.units")
  assert getattr(sys.modules["users_styles"], "__file__", None) is None
  keys["module class"] = _cache.key(_figure(formatter=units.Seconds()),
                                    plots.DPI)
  (package / "units.py").write_text(CELL % ("min", "min"))
  importlib.reload(units)
  keys["module class edited"] = _cache.key(
      _figure(formatter=units.Seconds()), plots.DPI)
  # An installed library's function counts by name and the library's
  # version.
  formatter = tqdm.tqdm.format_sizeof
  keys["library function"] = _cache.key(_figure(formatter=formatter),
                                        plots.DPI)
  assert _cache.key(_figure(formatter=formatter), plots.DPI) == keys[
      "library function"]
  monkeypatch.setattr(_cache, "_version", lambda top: f"{top} 99.0")
  keys["another version of it"] = _cache.key(_figure(formatter=formatter),
                                             plots.DPI)
  monkeypatch.setenv("FREETYPE_PROPERTIES", "truetype:interpreter-version=35")
  keys["FreeType's settings"] = _cache.key(_figure(), plots.DPI)
  assert None not in keys.values(), keys
  assert len(set(keys.values())) == len(keys), keys


def test_a_recursive_function_is_keyed_by_its_code():
  def countdown(v, pos):
    return countdown(v - 1, pos) if v > 0 else f"{pos}"
  one = _cache.key(_figure(formatter=countdown), plots.DPI)
  assert one is not None
  assert _cache.key(_figure(formatter=countdown), plots.DPI) == one


def test_figures_that_cannot_be_keyed_are_not():
  fig = _figure()
  fig.lock = threading.Lock()  # not picklable
  assert _cache.key(fig, plots.DPI) is None
  with matplotlib.rc_context({"text.usetex": True}):
    assert _cache.key(_figure(), plots.DPI) is None
  # An image drawn before holds a resampling that pickling drops.
  fig = plots.InlineFigure(figsize=(2, 2))
  im = fig.add_subplot().pcolorfast([0.0, 1.0, 3.0, 6.0, 10.0],
                                    [0.0, 1.0, 2.0, 3.0],
                                    np.arange(12.0).reshape(3, 4))
  assert _cache.key(fig, plots.DPI) is not None
  fig.savefig(io.BytesIO(), format="png")
  im.get_array()[:] = 1.0
  assert _cache.key(fig, plots.DPI) is None


def test_the_key_is_the_same_in_other_processes():
  code = ("import json, test_figure_cache as t; "
          "print(json.dumps(t.examples()))")
  ours = examples()
  assert None not in ours.values()
  for seed in ("12345", "7"):
    env = dict(os.environ, PYTHONHASHSEED=seed)
    out = subprocess.run([sys.executable, "-c", code], cwd=HERE, env=env,
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == ours, seed


def test_a_figure_that_cannot_be_keyed_is_drawn_and_not_kept(cache,
                                                              tmp_path):
  for name in ("a", "b"):
    fig = _figure()
    fig.lock = threading.Lock()
    plots.finish(fig, tmp_path / f"{name}.png")
  assert _cache.counts == {"drawn": 2, "reused": 0}
  assert not cache.exists() or not list(cache.iterdir())


def test_a_damaged_entry_is_drawn_again_and_replaced(cache, tmp_path):
  path = plots.finish(_figure(), tmp_path / "a.png")
  (entry,) = cache.glob("*.png")
  whole = entry.read_bytes()
  middle = bytearray(whole)
  middle[len(whole) // 2] ^= 0xFF
  for damaged in (whole[:len(whole) // 2], b"", b"not a png" + whole[9:],
                  bytes(middle), whole + b"\x00"):
    entry.write_bytes(damaged)
    again = plots.finish(_figure(), tmp_path / "b.png")
    assert again.read_bytes() == path.read_bytes()
    assert entry.read_bytes() == whole
  assert _cache.counts == {"drawn": 6, "reused": 0}


def test_the_entry_is_what_was_drawn_not_what_the_path_holds_later(
    cache, tmp_path, monkeypatch):
  # Another writer replaces the output file between drawing and keeping.
  write = _cache.write

  def late(entry, data):
    (tmp_path / "a.png").write_bytes(b"another writer's file")
    write(entry, data)
  monkeypatch.setattr(_cache, "write", late)
  plots.finish(_figure(), tmp_path / "a.png")
  (entry,) = cache.glob("*.png")
  monkeypatch.setenv(_cache.ENV, "off")
  assert entry.read_bytes() == plots.finish(_figure(),
                                            tmp_path / "b.png").read_bytes()


def test_off_unwritable_and_read_only_caches(cache, tmp_path, monkeypatch):
  blocker = tmp_path / "a file"
  blocker.write_text("")
  for setting in ("off", str(blocker / "figures")):
    monkeypatch.setenv(_cache.ENV, setting)
    plots.finish(_figure(), tmp_path / "a.png")
    plots.finish(_figure(), tmp_path / "b.png")
  assert _cache.counts == {"drawn": 4, "reused": 0}
  assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
  assert blocker.read_text() == ""
  # A cache that cannot be touched (a shared, read-only one) is still read.
  monkeypatch.setenv(_cache.ENV, str(cache))
  plots.finish(_figure(), tmp_path / "c.png")

  def refuse(*args, **kwargs):
    raise PermissionError("read-only")
  monkeypatch.setattr(os, "utime", refuse)
  plots.finish(_figure(), tmp_path / "d.png")
  assert _cache.counts == {"drawn": 5, "reused": 1}


def test_the_cache_keeps_to_its_size_dropping_the_least_recently_used(
    cache, monkeypatch):
  cache.mkdir()
  for i in range(8):
    entry = cache / f"{i}.png"
    entry.write_bytes(b"x" * 1000)
    os.utime(entry, (1000.0 + i, 1000.0 + i))
  (cache / "notes.txt").write_text("not an entry")
  (cache / ".0.png.fresh.tmp").write_text("a writer at work")
  (cache / ".1.png.old.tmp").write_text("a writer killed long ago")
  os.utime(cache / ".1.png.old.tmp", (1000.0, 1000.0))
  _cache.prune(cache, max_bytes=10_000)  # 8000 bytes: no entry removed
  assert len(list(cache.glob("*.png"))) == 8
  assert sorted(p.name for p in cache.glob(".*.tmp")) == [".0.png.fresh.tmp"]
  # Entry 0 was used last: the oldest others go, to 3/4 of the limit
  # (3750 bytes: three entries).  Another process pruning at the same time
  # has removed entry 1 already: it counts as gone, nothing more is removed.
  os.utime(cache / "0.png")
  unlink = os.unlink

  def raced(path):
    if Path(path).name == "1.png":
      unlink(path)
      raise FileNotFoundError(path)
    unlink(path)
  monkeypatch.setattr(os, "unlink", raced)
  _cache.prune(cache, max_bytes=5000)
  assert sorted(p.name for p in cache.glob("*.png")) == [
      "0.png", "6.png", "7.png"]
  assert (cache / "notes.txt").exists()
