"""The data cache: arrays that take time to make, kept as ``.npz`` files.

A data set that is built by a generator (MNIST-1D) or read through a slow
library (scikit-learn's bundled sets: importing scikit-learn takes longer
than a small run trains) is kept, after its first use, in one ``.npz`` file
per build, named by what built it and a hash of a key: a canonical text of
the package, its version and the arguments.  The key is stored in the file,
and a file whose key or shapes differ, or that cannot be read, is not used
(it is rebuilt and replaced).  Files are written atomically (a temporary
file renamed into place), so two processes filling the cache at once leave
one complete file.

The folder is, in order:

* ``cache_dir`` when given;
* ``$GDLAB_DATA_CACHE`` when it names a folder (``off``, ``0``, ``false`` or
  ``no`` turn the cache off: every call builds the arrays);
* ``$XDG_CACHE_HOME/gdlab/data`` or ``~/.cache/gdlab/data``.

An unwritable folder is not an error: the arrays are built and not kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from gdlab import _paths

ENV = "GDLAB_DATA_CACHE"


def folder(cache_dir: str | os.PathLike | None = None) -> Path | None:
  """The cache folder (see the module doc), or ``None`` when it is off."""
  if cache_dir is not None:
    return Path(cache_dir).expanduser()
  return _paths.cache_folder(ENV, "data")


def key(package: str, version: str, args: Mapping[str, Any]) -> str:
  """The canonical text that names one build."""
  return json.dumps({"package": package, "version": version,
                     "args": dict(args)}, sort_keys=True)


def path(where: Path, prefix: str, key_text: str) -> Path:
  """``where/<prefix>-<hash of key_text>.npz``."""
  digest = hashlib.sha256(key_text.encode()).hexdigest()[:16]
  return where / f"{prefix}-{digest}.npz"


def read(file: Path, key_text: str, shapes: Mapping[str, tuple[int, ...]]
         ) -> dict[str, np.ndarray] | None:
  """The arrays of a cache file, or ``None`` when it is missing or not right.

  Args:
    file: the cache file.
    key_text: the key it must hold.
    shapes: the names of the arrays it must hold and their shapes (``None``
      for a shape not known in advance).
  """
  try:
    with np.load(file, allow_pickle=False) as f:
      if str(f["key"]) != key_text:
        return None
      arrays = {k: f[k] for k in shapes}
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
    return None
  if any(s is not None and arrays[k].shape != tuple(s)
         for k, s in shapes.items()):
    return None
  return arrays


def write(file: Path, key_text: str, arrays: Mapping[str, np.ndarray]) -> None:
  """Writes a cache file atomically; an unwritable folder is skipped."""
  _paths.write_cache_file(
      file, lambda f: np.savez(f, key=np.asarray(key_text), **arrays))


def cached(file: Path | None, key_text: str,
           shapes: Mapping[str, tuple[int, ...] | None],
           build: Callable[[], Mapping[str, np.ndarray]]
           ) -> dict[str, np.ndarray]:
  """The arrays in ``file`` when it holds them, else ``build()``, kept there.

  ``file`` ``None`` (the cache is off) always builds.
  """
  if file is not None:
    found = read(file, key_text, shapes)
    if found is not None:
      return found
  built = {k: np.asarray(v) for k, v in build().items()}
  if file is not None:
    write(file, key_text, built)
  return built
