"""The figure cache: a figure gdlab drew once is copied, not drawn again.

Drawing is most of what a report costs (0.1 to 0.5 s a figure, against
milliseconds to build the figure), and a run that is done again, or a
report that is written again, draws figures identical to the last ones.
The figures gdlab draws itself (a figure function given a ``path``, the
reports, the analyses: :func:`gdlab.plots.finish`) are therefore kept under
a key computed from the figure, and a figure with the same key is copied
instead of drawn.  A figure the user hands to :func:`gdlab.plots.save_png`
is always drawn: it may hold code of the user's that the key cannot see
through (a function that reads a global the user changed, a class reloaded
from an edited module).

The key is a SHA-256 of:

* the figure's state as ``pickle`` sees it (every artist, its data, colours,
  texts, transforms, locators and formatters) with these changes: the
  transforms' ``_parents`` (back-references keyed by ``id()``) are left
  out; callback registries count by the callbacks they hold (pickling drops
  them); functions and classes that are not an installed library's
  (gdlab's, a notebook's, a script's, the user's modules) count by what
  they are, not by their name: a function by its whole code object,
  defaults, closure values and the globals its code names (modules by
  name), a class by what it and its bases define (methods, dunder ones
  too, by their code); an installed library's count by name and the
  library's version; sets are written in an order that does not depend on
  the process (artists by their place in the figure, other elements by
  ``repr``);
* what drawing reads besides the figure: every ``rcParams`` value but the
  backend, the named-colour table, the fonts matplotlib knows, numpy's print
  options, the numeric locale, FreeType's settings
  (``FREETYPE_PROPERTIES``), the resolution, and the versions of Python,
  matplotlib, FreeType, numpy, Pillow and zlib.

A figure that cannot be keyed is drawn and not kept: one that cannot be
pickled, one with TeX text (``text.usetex``: the output depends on the TeX
installation), one holding an image that has been drawn before (its cached
resampling is not pickled).  Entries are written atomically from the bytes
drawn (never read back from the output file), and an entry is used only
when its PNG chunks pass their CRC checks; one that does not is drawn again
and replaced.

The folder is ``$GDLAB_FIGURE_CACHE`` when it names one (``off``, ``0``,
``false`` or ``no`` turn the cache off: every figure is drawn), else
``$XDG_CACHE_HOME/gdlab/figures`` or ``~/.cache/gdlab/figures``.  Past
:data:`MAX_BYTES`, the entries used longest ago are removed.  An unwritable
folder is not an error: the figure is drawn and not kept; a read-only one
is read.
"""

from __future__ import annotations

import contextlib
import copyreg
import functools
import hashlib
import importlib.metadata
import io
import locale
import os
import pickle
import struct
import sys
import sysconfig
import time
import types
import zlib
from pathlib import Path

import matplotlib
import numpy as np
import PIL
from matplotlib import cbook
from matplotlib import colors
from matplotlib import font_manager
from matplotlib import ft2font
from matplotlib import image
from matplotlib import transforms
from matplotlib.artist import Artist
from matplotlib.figure import Figure

from gdlab import _paths

ENV = "GDLAB_FIGURE_CACHE"
# The cache's size, past which the entries used longest ago are removed
# (down to three quarters of it).
MAX_BYTES = 256 * 2**20
# Temporary files older than this (seconds) are left by killed writers.
STALE_TEMPORARY_S = 3600
_PNG_START = b"\x89PNG\r\n\x1a\n"
# What this process did: figures drawn, and figures copied from the cache.
counts = {"drawn": 0, "reused": 0}


# Class attributes that are code: counted even under a dunder name.
_METHODS = (types.FunctionType, classmethod, staticmethod, property)


class Unkeyable(Exception):
  """A figure holds something the key cannot account for."""


def folder() -> Path | None:
  """The cache folder (see the module doc), or ``None`` when it is off."""
  return _paths.cache_folder(ENV, "figures")


def _code(code: types.CodeType) -> tuple:
  """Everything of a code object but its name and place in a file."""
  return (code.co_code, code.co_consts, code.co_names, code.co_varnames,
          code.co_freevars, code.co_cellvars, code.co_argcount,
          code.co_posonlyargcount, code.co_kwonlyargcount, code.co_flags,
          getattr(code, "co_exceptiontable", b""))


def _global_names(code: types.CodeType) -> set[str]:
  names = set(code.co_names)
  for const in code.co_consts:
    if isinstance(const, types.CodeType):
      names |= _global_names(const)
  return names


def _library_folders() -> tuple[str, ...]:
  paths = sysconfig.get_paths()
  return tuple(os.path.realpath(paths[k]) + os.sep
               for k in ("stdlib", "platstdlib", "purelib", "platlib"))


_LIBRARIES = _library_folders()


def _own(module: str | None) -> bool:
  """Whether functions and classes of ``module`` count by their code:
  gdlab's and any that is not an installed library's (a notebook's or
  session's ``__main__``, a script's, a namespace package's, a module made
  at run time).  An installed library's count by name and the library's
  version (:func:`_version`)."""
  top = (module or "").split(".")[0]
  if top in ("gdlab", "__main__"):
    return True
  if top in sys.stdlib_module_names or top in sys.builtin_module_names:
    return False
  return top not in sys.modules or not _installed(top)


@functools.cache
def _installed(top: str) -> bool:
  """Whether the imported top-level module ``top`` lies in an installed
  library's folder (asked once per module: a figure meets a class or a
  function of the same few modules hundreds of times)."""
  found = sys.modules[top]
  file = getattr(found, "__file__", None)
  places = [file] if file else list(getattr(found, "__path__", None) or ())
  return bool(places) and all(
      os.path.realpath(p).startswith(_LIBRARIES) for p in places)


# Libraries whose versions are in every key (see _drawing_context).
_KEYED_LIBRARIES = frozenset({"builtins", "matplotlib", "mpl_toolkits",
                              "numpy", "PIL"})


@functools.cache
def _version(top: str) -> str:
  """The version of the installed library whose top-level module is
  ``top``; :class:`Unkeyable` when it cannot be told."""
  if top in _KEYED_LIBRARIES:
    return ""
  if top in sys.stdlib_module_names:
    return sys.version
  try:
    return importlib.metadata.version(top)
  except (importlib.metadata.PackageNotFoundError, ValueError):
    pass
  # The distribution is named otherwise than its module (slow: only here).
  names = importlib.metadata.packages_distributions().get(top)
  if not names:
    raise Unkeyable(f"the version of the library {top!r} is not known")
  return repr(sorted((n, importlib.metadata.version(n)) for n in names))


def _fresh(name: str) -> str:
  """A new string object equal to ``name``.

  ``pickle`` writes a string object met before as a reference to it, so its
  output depends on which equal strings are one object, and that differs
  from process to process for the names read off modules and functions.
  Fresh copies are never met before: always written out.
  """
  return name[:1] + name[1:]


class _KeyPickler(pickle.Pickler):
  """A pickler whose output depends on the figure only (see the module doc).

  Its output is hashed, never read back.
  """

  def __init__(self, file, fig: Figure):
    super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
    self._fig = fig
    self._artists: dict[int, int] | None = None
    # Functions and classes written out by their code, and not yet done: a
    # second meeting (recursion) writes their name only.
    self._open: set[int] = set()
    # The top-level modules of the libraries whose functions and classes
    # are written by name, with their versions (see :meth:`versions`).
    self._libraries: set[str] = set()

  def versions(self) -> list[tuple[str, str]]:
    return [(top, _version(top)) for top in sorted(self._libraries)]

  def _by_code(self, obj, reduction: tuple):
    """Writes ``reduction`` for ``obj``, or only ``obj``'s name while
    ``obj``'s own reduction is being written (a recursive function, a
    method naming its class)."""
    if id(obj) in self._open:
      return tuple, (("again", _fresh(obj.__module__),
                      _fresh(obj.__qualname__)),)
    self._open.add(id(obj))
    # Saved here, while ``obj`` is open: pickle saves a reduction's
    # arguments after ``reducer_override`` returns.
    buffer = io.BytesIO()
    inner = _KeyPickler(buffer, self._fig)
    inner._open, inner._artists = self._open, self._artists
    inner._libraries = self._libraries
    try:
      inner.dump(reduction)
    finally:
      self._open.discard(id(obj))
      self._artists = inner._artists
    return tuple, ((reduction[0], hashlib.sha256(buffer.getvalue()).digest()),)

  def _order(self, x) -> tuple:
    """A sort key of a set's element that no process's hashing changes."""
    if isinstance(x, (set, frozenset)):
      return ("set", tuple(sorted(self._order(e) for e in x)))
    if isinstance(x, Artist):
      # Axes (the sets of shared axes) by their place in the figure; other
      # artists by their place in a walk of it (which makes the axes'
      # ticks: only when a set needs it).
      if x in self._fig.axes:
        return ("axes", self._fig.axes.index(x))
      if self._artists is None:
        self._artists = {id(a): i for i, a in enumerate(self._fig.findobj())}
      if id(x) not in self._artists:
        raise Unkeyable(f"a set holds an artist outside the figure: {x!r}")
      return ("artist", self._artists[id(x)])
    return ("value", type(x).__qualname__, repr(x))

  def persistent_id(self, obj):
    # The C pickler writes sets without asking reducer_override.
    if isinstance(obj, (set, frozenset)):
      return ("set", sorted(obj, key=self._order))
    return None

  def reducer_override(self, obj):
    if isinstance(obj, transforms.TransformNode):
      state = {k: v for k, v in obj.__getstate__().items()
               if k != "_parents"}
      return copyreg.__newobj__, (type(obj),), state
    if isinstance(obj, cbook.CallbackRegistry):
      held = [(signal, [proxy() for proxy in by_id.values()])
              for signal, by_id in sorted(obj.callbacks.items())]
      return tuple, (("callbacks", held),)
    if isinstance(obj, image._ImageBase) and getattr(obj, "_imcache",
                                                     None) is not None:
      raise Unkeyable("an image drawn before (its resampling is cached)")
    if isinstance(obj, types.FunctionType):
      if not _own(obj.__module__):
        # By name (some, made at run time, cannot be found by it).
        self._libraries.add(obj.__module__.split(".")[0])
        return tuple, (("library function", _fresh(obj.__module__),
                        _fresh(obj.__qualname__)),)
      cells = tuple(c.cell_contents for c in obj.__closure__ or ())
      names = sorted(_global_names(obj.__code__) & obj.__globals__.keys())
      used = [(_fresh(n), obj.__globals__[n]) for n in names]
      return self._by_code(obj, ("function", _fresh(obj.__module__),
                                 _fresh(obj.__qualname__), obj.__code__,
                                 obj.__defaults__, obj.__kwdefaults__, cells,
                                 used))
    if isinstance(obj, types.MethodType):
      return tuple, (("method", obj.__self__, obj.__func__),)
    if isinstance(obj, types.CodeType):
      return tuple, (_code(obj),)
    if isinstance(obj, types.ModuleType):
      return tuple, (("module", _fresh(obj.__name__)),)
    if isinstance(obj, type):
      if not _own(obj.__module__):
        self._libraries.add(obj.__module__.split(".")[0])
        return NotImplemented
      # By what the class and its own bases define: methods (dunder ones
      # too) by their code, other attributes by value.
      attributes = [(_fresh(c.__qualname__), sorted(
          (_fresh(k), v) for k, v in vars(c).items()
          if not (k.startswith("__") and k.endswith("__"))
          or isinstance(v, _METHODS)))
                    for c in obj.__mro__ if _own(c.__module__)]
      return self._by_code(obj, (
          "class", _fresh(obj.__module__), _fresh(obj.__qualname__),
          [(_fresh(c.__module__), _fresh(c.__qualname__))
           for c in obj.__mro__], attributes))
    if isinstance(obj, (classmethod, staticmethod)):
      return tuple, ((type(obj).__name__, obj.__func__),)
    if isinstance(obj, property):
      return tuple, (("property", obj.fget, obj.fset, obj.fdel),)
    wrapped = getattr(obj, "__wrapped__", None)
    if isinstance(wrapped, types.FunctionType) and callable(obj):
      # A function behind a wrapper object (functools.cache's): by the
      # wrapper's kind and the function, not by the wrapper's name.
      return tuple, (("wrapped", _fresh(type(obj).__module__),
                      _fresh(type(obj).__qualname__), wrapped),)
    return NotImplemented


def _pickled(fig: Figure) -> tuple[bytes, list[tuple[str, str]]]:
  """The figure as the key sees it, and the versions of the libraries whose
  code it holds by name."""
  buffer = io.BytesIO()
  pickler = _KeyPickler(buffer, fig)
  try:
    pickler.dump(fig)
    versions = pickler.versions()
  except Unkeyable:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise Unkeyable(f"the figure cannot be pickled: {e!r}") from e
  return buffer.getvalue(), versions


def _drawing_context(dpi: float) -> bytes:
  """What drawing reads besides the figure (see the module doc)."""
  params = matplotlib.rcParams
  if params["text.usetex"]:
    raise Unkeyable("TeX text: the output depends on the TeX installation")
  fonts = sorted((f.fname, f.name, f.style, f.weight, f.stretch)
                 for f in font_manager.fontManager.ttflist)
  context = (
      sys.version, matplotlib.__version__, ft2font.__freetype_version__,
      np.__version__, PIL.__version__, zlib.ZLIB_RUNTIME_VERSION, float(dpi),
      # FreeType's hinting and rendering settings.
      os.environ.get("FREETYPE_PROPERTIES"),
      # Not the backend: reading it resolves it (imports pyplot), and the
      # figures draw on their own Agg canvas.
      sorted((k, repr(params[k])) for k in params if k != "backend"),
      sorted(colors.get_named_colors_mapping().items()), fonts,
      sorted(np.get_printoptions().items(), key=lambda kv: kv[0]),
      locale.setlocale(locale.LC_NUMERIC))
  return repr(context).encode()


def key(fig: Figure, dpi: float) -> str | None:
  """The cache key of ``fig`` drawn at ``dpi`` (``None``: not cacheable)."""
  try:
    context, (state, versions) = _drawing_context(dpi), _pickled(fig)
  except Unkeyable:
    return None
  h = hashlib.sha256(context)
  h.update(state)
  h.update(repr(versions).encode())
  return h.hexdigest()


def whole_png(data: bytes) -> bool:
  """Whether ``data`` is a PNG whose every chunk passes its CRC, to IEND."""
  if not data.startswith(_PNG_START):
    return False
  at = len(_PNG_START)
  while at + 12 <= len(data):
    length, kind = struct.unpack(">I4s", data[at:at + 8])
    end = at + 8 + length
    if end + 4 > len(data):
      return False
    (crc,) = struct.unpack(">I", data[end:end + 4])
    if zlib.crc32(data[at + 4:end]) != crc:
      return False
    if kind == b"IEND":
      return end + 4 == len(data)
    at = end + 4
  return False


def entry_for(fig: Figure, dpi: float) -> Path | None:
  """Where the cache keeps ``fig`` drawn at ``dpi``; None when it is not
  kept (the cache is off, or the figure cannot be keyed)."""
  where = folder()
  if where is None:
    return None
  k = key(fig, dpi)
  return None if k is None else where / f"{k}.png"


def read(entry: Path) -> bytes | None:
  """The PNG kept as ``entry``, or None when there is none, or not whole."""
  try:
    data = entry.read_bytes()
  except OSError:
    return None
  if not whole_png(data):
    return None
  with contextlib.suppress(OSError):  # a read-only cache is still read
    os.utime(entry)  # used now: the last to be removed
  counts["reused"] += 1
  return data


def write(entry: Path, data: bytes) -> None:
  """Keeps ``data`` as ``entry``; an unwritable cache is skipped."""
  if _paths.write_cache_file(entry, lambda f: f.write(data)):
    prune(entry.parent)


def prune(where: Path, max_bytes: int | None = None) -> None:
  """Removes the entries used longest ago while ``where`` holds more than
  ``max_bytes`` (default :data:`MAX_BYTES`), down to three quarters of it,
  and the temporary files of writers killed over an hour ago."""
  limit = MAX_BYTES if max_bytes is None else max_bytes
  now = time.time()
  entries = []
  try:
    for e in os.scandir(where):
      with contextlib.suppress(OSError):
        if not e.is_file():
          continue
        stat = e.stat()
        if e.name.endswith(".tmp") and now - stat.st_mtime > STALE_TEMPORARY_S:
          os.unlink(e.path)
        elif e.name.endswith(".png"):
          entries.append((stat.st_mtime, stat.st_size, e.path))
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
    # Gone either way: removed here, or by another process pruning too.
    total -= size
