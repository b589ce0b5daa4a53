"""The figure cache: a PNG drawn once is copied, not drawn again.

Drawing is most of what a report costs (0.1 to 0.5 s a figure, against
milliseconds to build the figure), and a run that is done again, or a
report that is written again, draws figures identical to the last ones.
:func:`gdlab.plots.save_png` therefore keeps every PNG it draws under a key
computed from the figure itself, and copies the kept file when a figure with
the same key is saved again.

The key is a SHA-256 of the figure's whole state as ``pickle`` sees it (every
artist, its data, colours, texts, transforms, locators and formatters), with
three changes that make it depend on the figure alone:

* the transforms' ``_parents`` (back-references keyed by ``id()``, the
  bookkeeping that invalidates cached transforms) are left out;
* functions (a ``FuncFormatter``'s, say) count by their code, defaults and
  closure values, not by their name, and so do the methods of classes
  defined in ``__main__``, so a function edited in a notebook is a new key;
* sets are written in sorted order (their own order changes from process to
  process).

To these add the versions of matplotlib, numpy and Pillow, the resolution,
the default font file and every ``rcParams`` value but the backend (some
are read while drawing).  The same figure gives the same key in every process; any change
to what is drawn gives another.  A figure that cannot be pickled is drawn
and not kept.  Files are written atomically (a temporary file renamed into
place), and an entry that is not a whole PNG is drawn again and replaced.

The folder is ``$GDLAB_FIGURE_CACHE`` when it names one (``off``, ``0``,
``false`` or ``no`` turn the cache off: every figure is drawn), else
``$XDG_CACHE_HOME/gdlab/figures`` or ``~/.cache/gdlab/figures``.  Past
:data:`MAX_BYTES`, the entries used longest ago are removed.  An unwritable
folder is not an error: the figure is drawn and not kept.
"""

from __future__ import annotations

import contextlib
import copyreg
import hashlib
import io
import os
import pickle
import shutil
import types
from pathlib import Path

import matplotlib
import numpy as np
import PIL
from matplotlib import font_manager
from matplotlib import transforms
from matplotlib.figure import Figure

from gdlab import _paths

ENV = "GDLAB_FIGURE_CACHE"
# The cache's size, past which the entries used longest ago are removed
# (down to three quarters of it).
MAX_BYTES = 256 * 2**20
_PNG_START = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
# What this process did: figures drawn, and figures copied from the cache.
counts = {"drawn": 0, "reused": 0}


def folder() -> Path | None:
  """The cache folder (see the module doc), or ``None`` when it is off."""
  return _paths.cache_folder(ENV, "figures")


def _code(code: types.CodeType) -> tuple:
  return (code.co_code, code.co_consts, code.co_names, code.co_varnames)


class _KeyPickler(pickle.Pickler):
  """A pickler whose output depends on the figure only (see the module doc).

  Its output is hashed, never read back.
  """

  def reducer_override(self, obj):
    if isinstance(obj, transforms.TransformNode):
      state = {k: v for k, v in obj.__getstate__().items()
               if k != "_parents"}
      return copyreg.__newobj__, (type(obj),), state
    if isinstance(obj, types.FunctionType):
      cells = tuple(c.cell_contents for c in obj.__closure__ or ())
      return tuple, ((obj.__module__, obj.__qualname__, obj.__code__,
                      obj.__defaults__, obj.__kwdefaults__, cells),)
    if isinstance(obj, types.MethodType):
      return tuple, ((obj.__self__, obj.__func__),)
    if isinstance(obj, types.CodeType):
      return tuple, (_code(obj),)
    if isinstance(obj, type) and obj.__module__ == "__main__":
      methods = {k: v for k, v in vars(obj).items()
                 if isinstance(v, (types.FunctionType, classmethod,
                                   staticmethod, property))}
      return tuple, ((obj.__qualname__, [b.__qualname__ for b in obj.__mro__],
                      sorted(methods.items())),)
    if isinstance(obj, (classmethod, staticmethod)):
      return tuple, ((type(obj).__name__, obj.__func__),)
    if isinstance(obj, property):
      return tuple, ((obj.fget, obj.fset, obj.fdel),)
    return NotImplemented

  # The C pickler writes sets without asking reducer_override.
  def persistent_id(self, obj):
    if type(obj) in (set, frozenset):
      return ("set", sorted(obj, key=repr))
    return None


def _pickled(fig: Figure) -> bytes | None:
  buffer = io.BytesIO()
  try:
    _KeyPickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(fig)
  except Exception:  # pylint: disable=broad-except
    return None  # A figure holding something unpicklable is not kept.
  return buffer.getvalue()


def key(fig: Figure, dpi: float) -> str | None:
  """The cache key of ``fig`` drawn at ``dpi`` (``None``: not cacheable)."""
  state = _pickled(fig)
  if state is None:
    return None
  h = hashlib.sha256()
  context = (matplotlib.__version__, np.__version__, PIL.__version__,
             float(dpi), font_manager.findfont(font_manager.FontProperties()),
             # Not the backend: reading it resolves it (imports pyplot), and
             # the figures draw on their own Agg canvas.
             sorted((k, repr(matplotlib.rcParams[k]))
                    for k in matplotlib.rcParams if k != "backend"))
  h.update(repr(context).encode())
  h.update(state)
  return h.hexdigest()


def _whole_png(path: Path) -> bool:
  try:
    with open(path, "rb") as f:
      if f.read(len(_PNG_START)) != _PNG_START:
        return False
      f.seek(-len(_PNG_END), os.SEEK_END)
      return f.read() == _PNG_END
  except OSError:
    return False


def fetch(entry: Path, path: Path) -> bool:
  """Copies the cache's ``entry`` to ``path``; False when it has none."""
  if not _whole_png(entry):
    return False
  try:
    shutil.copyfile(entry, path)
    os.utime(entry)  # used now: the last to be removed
  except OSError:
    return False
  counts["reused"] += 1
  return True


def store(path: Path, entry: Path) -> None:
  """Keeps the drawn ``path`` as ``entry``; an unwritable cache is skipped."""

  def copy(f):
    with open(path, "rb") as src:
      shutil.copyfileobj(src, f)
  if _paths.write_cache_file(entry, copy):
    prune(entry.parent)


def prune(where: Path, max_bytes: int | None = None) -> None:
  """Removes the entries used longest ago while ``where`` holds more than
  ``max_bytes`` (default :data:`MAX_BYTES`), down to three quarters of it."""
  limit = MAX_BYTES if max_bytes is None else max_bytes
  try:
    entries = [(e.stat().st_mtime, e.stat().st_size, e.path)
               for e in os.scandir(where)
               if e.is_file() and e.name.endswith(".png")]
  except OSError:
    return
  total = sum(size for _, size, _ in entries)
  if total <= limit:
    return
  for _, size, name in sorted(entries):
    if total <= 0.75 * limit:
      break
    with contextlib.suppress(OSError):
      os.unlink(name)
      total -= size


def entry_for(fig: Figure, dpi: float) -> Path | None:
  """Where the cache keeps ``fig`` drawn at ``dpi``; None when it is not
  kept (the cache is off, or the figure cannot be pickled)."""
  where = folder()
  if where is None:
    return None
  k = key(fig, dpi)
  return None if k is None else where / f"{k}.png"
