"""JAX's persistent compilation cache, in a per-user folder.

The ``gdlab`` command and :func:`gdlab.fit` turn on JAX's persistent
compilation cache, so that a program compiled once (a run's chunk program, a
sweep's vmapped program) is read back from disk by the next process instead
of being compiled again.  The folder is, in order:

* ``$GDLAB_COMPILATION_CACHE`` when it names a folder;
* ``$XDG_CACHE_HOME/gdlab/jax`` or ``~/.cache/gdlab/jax``.

``GDLAB_COMPILATION_CACHE=off`` (or ``0``, ``false``, ``no``) turns it off,
and so does :func:`disable`.  A cache folder the user gave JAX already
(``jax.config.update("jax_compilation_cache_dir", ...)`` or
``JAX_COMPILATION_CACHE_DIR``) is left as it is.
"""

from __future__ import annotations

from pathlib import Path

import jax

from gdlab import _paths

ENV = "GDLAB_COMPILATION_CACHE"
_state = {"enabled": None, "disabled": False}


def folder() -> Path | None:
  """The cache folder gdlab uses, or ``None`` when it is turned off."""
  if _state["disabled"]:
    return None
  return _paths.cache_folder(ENV, "jax")


def enable() -> Path | None:
  """Turns the persistent cache on (once per process); returns its folder."""
  if _state["enabled"] is not None:
    return _state["enabled"]
  path = folder()
  if path is None:
    return None
  if jax.config.jax_compilation_cache_dir:
    _state["enabled"] = Path(jax.config.jax_compilation_cache_dir)
    return _state["enabled"]
  try:
    path.mkdir(parents=True, exist_ok=True)
  except OSError:
    return None  # An unwritable home: run without the cache.
  jax.config.update("jax_compilation_cache_dir", str(path))
  # Every program, however quick to compile: a run's programs are small.
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  _state["enabled"] = path
  return path


def disable() -> None:
  """Turns gdlab's use of the persistent cache off for this process."""
  _state["disabled"] = True
  if _state["enabled"] is not None:
    jax.config.update("jax_compilation_cache_dir", None)
    _state["enabled"] = None
