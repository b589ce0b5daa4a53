"""Where gdlab keeps what it caches for the user (compiled programs, data)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

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


def umask() -> int:
  """The process's umask (read without changing it)."""
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def write_cache_file(file: Path, write: Callable[[BinaryIO], None]) -> bool:
  """Writes a cache file atomically: ``write`` fills a temporary file in the
  same folder, which is then renamed to ``file`` (two processes filling the
  cache at once leave one whole file).  The file follows the umask.

  Returns:
    False, leaving nothing behind, when the folder cannot be written: a cache
    that cannot be filled is not an error.
  """
  try:
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.",
                               suffix=".tmp")
  except OSError:
    return False
  try:
    with os.fdopen(fd, "wb") as f:
      write(f)
    os.chmod(tmp, 0o666 & ~umask())  # readable as the umask allows, not 0600
    os.replace(tmp, file)
  except OSError:
    with contextlib.suppress(OSError):
      os.unlink(tmp)
    return False
  return True
