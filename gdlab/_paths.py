"""Where gdlab keeps what it caches for the user (compiled programs, data)."""

from __future__ import annotations

import os
from pathlib import Path

# Values of a cache's environment variable that turn the cache off.
OFF = ("off", "0", "false", "no")


def cache_folder(env: str, name: str) -> Path | None:
  """A cache folder: ``$env`` when it names one (``None`` for a value of
  :data:`OFF`), else ``$XDG_CACHE_HOME/gdlab/<name>`` or
  ``~/.cache/gdlab/<name>``; ``None`` when no home folder can be found."""
  setting = os.environ.get(env, "").strip()
  if setting.lower() in OFF:
    return None
  if setting:
    return Path(setting).expanduser()
  base = os.environ.get("XDG_CACHE_HOME")
  if not base:
    try:
      base = Path.home() / ".cache"
    except RuntimeError:  # no home folder to be found: no cache
      return None
  return Path(base) / "gdlab" / name
