"""Guarded folders: names, the marker, the lock, and atomic writes.

gdlab writes only into a new or empty folder or one it made, one process at
a time (:func:`check_out`, :func:`create`, :func:`locked`).  A folder that
gdlab made holds::

    gdlab.json         what the folder is (a run, an experiment, a sweep) and
                       the run's identity: fingerprints of its resolved
                       config and of its data (:func:`config_sha256`,
                       :func:`data_sha256`), and the gdlab version
    gdlab.lock         while a process writes the folder: its process id

with which a resume is refused when the config or data differ from the
run's (:func:`gdlab.results.check_resume`).

Every file is written atomically (:func:`atomic_write`: to a temporary file
in the same folder, then renamed, with the permissions the umask gives), so
an interrupted run leaves each file either complete or as it was before; the
temporary files a killed process leaves are not counted as the folder's
(:func:`contents`).  A file that cannot be read, or is damaged, is named in
one line by a :class:`FolderError` (:func:`read_text`, :func:`read_json`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

import gdlab
from gdlab import _paths
from gdlab import config as config_lib
from gdlab import parallel

MARKER = "gdlab.json"
LOCK = "gdlab.lock"
# Run, variant and experiment names become folder names.
NAME_CHARS = "letters, digits and _ - . = + , [ ] ( ) @"
_NAME = re.compile(r"^[A-Za-z0-9_\-.=+,\[\]()@]{1,200}$")


class FolderError(config_lib.ConfigError):
  """A folder that gdlab cannot write or resume: one line, exit code 2."""


# ----------------------------------------------------------------------------
# Writing atomically; reading with one-line errors.


def atomic_write(path: str | os.PathLike, data: str | bytes) -> None:
  """Writes ``data`` to ``path`` through a temporary file and a rename."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  mode = "wb" if isinstance(data, bytes) else "w"
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
  try:
    # mkstemp makes the file private (0600); a folder's files follow the
    # umask, as the figures matplotlib writes do.
    os.chmod(tmp, 0o666 & ~_paths.umask())
    with os.fdopen(fd, mode) as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def read_text(path: Path) -> str:
  """A file's text; a one-line :class:`FolderError` naming it when it cannot
  be read."""
  try:
    return path.read_text(encoding="utf-8")
  except UnicodeDecodeError:
    raise FolderError(f"{path}: expected UTF-8 text; got bytes that are "
                      f"not: the file is damaged.") from None
  except OSError as e:
    raise FolderError(f"{path}: cannot be read ({e.strerror}).") from None


def read_json(path: Path) -> Any:
  """A JSON file's content; a one-line :class:`FolderError` naming it when it
  cannot be read or parsed."""
  try:
    return json.loads(read_text(path))
  except json.JSONDecodeError as e:
    raise FolderError(f"{path}: expected JSON; got a syntax error at line "
                      f"{e.lineno}, column {e.colno} ({e.msg}): the file is "
                      f"damaged.") from None


# ----------------------------------------------------------------------------
# Names, fingerprints, the marker, --out, the lock.


def check_name(key: str, name: Any) -> str:
  """A run, variant or experiment name that is safe as one folder name."""
  if (not isinstance(name, str) or not _NAME.match(name) or
      name in (".", "..") or name.startswith(".")):
    raise config_lib.ConfigError(
        f"{key}: expected a folder name of 1-200 {NAME_CHARS}, not starting "
        f"with '.'; got {name!r}.")
  return name


def config_sha256(cfg: config_lib.RunConfig) -> str:
  """The fingerprint of a resolved run config: SHA-256 of its YAML text."""
  return hashlib.sha256(config_lib.dump(cfg).encode()).hexdigest()


def data_sha256(arrays) -> str:
  """The fingerprint of a run's data: SHA-256 of its arrays' bytes."""
  h = hashlib.sha256()
  for leaf in jax.tree_util.tree_leaves(arrays):
    a = np.ascontiguousarray(parallel.to_host(leaf))
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
  return h.hexdigest()


def read_marker(folder: str | os.PathLike) -> dict | None:
  """The folder's ``gdlab.json``, or None when it has none."""
  path = Path(folder) / MARKER
  if not path.is_file():
    return None
  marker = read_json(path)
  if not isinstance(marker, dict) or "kind" not in marker:
    raise FolderError(f"{path}: expected a JSON object with a 'kind'; got "
                      f"{type(marker).__name__}: the file is damaged.")
  return marker


_TEMPORARY = re.compile(r"^\.(config|metrics|steps|summary|trajectory|"
                        r"checkpoint|gdlab|report|[0-9]{9})\.[a-z]+\..+$")


def is_temporary(name: str) -> bool:
  """Whether ``name`` is that of a temporary file of a write
  (:func:`atomic_write`), such as one a killed process left."""
  return bool(_TEMPORARY.match(name))


def contents(folder: str | os.PathLike) -> list[str]:
  """A folder's entries, less a lock and the temporary files of writes that
  a killed process left (:func:`gdlab.results.clean_temporaries`)."""
  return sorted(p.name for p in Path(folder).iterdir()
                if p.name != LOCK and not is_temporary(p.name))


def _writable_ancestor(folder: Path) -> Path:
  parent = folder
  while not parent.exists():
    if parent.parent == parent:
      break
    parent = parent.parent
  return parent


def check_out(folder: str | os.PathLike, kind: str, *,
              resume: bool = False) -> None:
  """Checks that gdlab may write a ``kind`` folder (run, experiment, sweep).

  Allowed: a new folder, an empty one, or (with ``resume``) a folder of the
  same kind that gdlab made.  Refused, with one line: a file, a folder that
  cannot be written, a folder of the user's that is not empty, a gdlab
  folder without ``resume`` (nothing is replaced), and with ``resume`` a
  folder that does not exist or that gdlab did not make.  Creates nothing.
  """
  folder = Path(folder)
  if folder.exists() and not folder.is_dir():
    raise FolderError(f"--out: expected a folder; got {str(folder)!r}, "
                      f"which is a file.")
  base = _writable_ancestor(folder)
  if base.exists() and not base.is_dir():
    raise FolderError(f"--out: expected a folder; got {str(folder)!r}, "
                      f"inside the file {str(base)!r}.")
  if not os.access(base, os.W_OK | os.X_OK):
    raise FolderError(f"--out: cannot write in {str(base)!r} (permission "
                      f"denied); choose a folder you can write.")
  contents_ = contents(folder) if folder.is_dir() else []
  marker = read_marker(folder) if contents_ else None
  if resume:
    if not folder.is_dir():
      raise FolderError(f"--resume: expected the folder of an interrupted "
                        f"{kind}; got {str(folder)!r}, which does not exist.")
    if marker is None:
      raise FolderError(
          f"--resume: expected a folder that gdlab made for a {kind} "
          f"(holding {MARKER}); got {str(folder)!r}"
          + (", which is empty." if not contents_ else "."))
  elif contents_ and marker is None:
    raise FolderError(
        f"--out: expected a new or empty folder; got {str(folder)!r}, which "
        f"holds {len(contents_)} entries that gdlab did not write (such as "
        f"{contents_[0]!r}); gdlab does not write into other folders.")
  elif marker is not None:
    hint = (" pass --resume to continue it, or" if kind in ("run",
            "experiment") else "")
    raise FolderError(f"--out: {str(folder)!r} already holds a gdlab "
                      f"{marker['kind']};{hint} choose another folder.")
  if marker is not None and marker["kind"] != kind:
    raise FolderError(f"--resume: expected a gdlab {kind} folder; got "
                      f"{str(folder)!r}, which holds a {marker['kind']}.")


@contextlib.contextmanager
def removed_if_rejected(folder: str | os.PathLike):
  """Removes ``folder``, new when this began, if bad input (``ValueError``,
  ``TypeError``) stops the work before any run folder is written in it: a
  rejected config leaves nothing behind."""
  folder = Path(folder)
  new = not folder.exists() or not contents(folder)
  try:
    yield
  except (ValueError, TypeError):
    if new and folder.is_dir() and not (folder / "runs").exists():
      shutil.rmtree(folder, ignore_errors=True)
    raise


def make_folder(folder: Path) -> Path:
  """``folder.mkdir``, with a one-line error naming it when that fails."""
  try:
    folder.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise FolderError(f"--out: cannot make the folder {str(folder)!r} "
                      f"({e.strerror}); choose a folder you can "
                      f"write.") from None
  return folder


def create(folder: str | os.PathLike, kind: str, **fields: str | None
           ) -> Path:
  """Makes ``folder`` (if new) and writes its ``gdlab.json`` marker: the
  ``kind``, the gdlab version and ``fields`` (strings or None)."""
  folder = make_folder(Path(folder))
  marker = {"kind": kind, "gdlab": gdlab.__version__, **fields}
  atomic_write(folder / MARKER, json.dumps(marker, indent=2) + "\n")
  return folder


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


@contextlib.contextmanager
def locked(folder: str | os.PathLike):
  """Holds ``folder/gdlab.lock`` (this process's id) for the duration.

  A second writer is refused with one line naming the holder; a lock left
  by a process that no longer runs on this host is taken over.
  """
  folder = make_folder(Path(folder))
  path = folder / LOCK
  me = {"pid": os.getpid(), "host": socket.gethostname(),
        "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
  for _ in range(2):
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY,
                   0o666 & ~_paths.umask())
    except FileExistsError:
      try:
        holder = json.loads(path.read_text())
        pid, host = int(holder["pid"]), str(holder["host"])
      except (OSError, ValueError, KeyError, TypeError):
        holder, pid, host = {}, None, None
      if pid is not None and (host != me["host"] or _pid_alive(pid)):
        raise FolderError(
            f"--out: {str(folder)!r} is being written by another gdlab "
            f"process (pid {pid} on {host}, since "
            f"{holder.get('since', '?')}); wait for it to end, or remove "
            f"{str(path)!r} if that process is gone.") from None
      # A stale lock (its process is gone) or a damaged one.
      with contextlib.suppress(FileNotFoundError):
        path.unlink()
      continue
    with os.fdopen(fd, "w") as f:
      json.dump(me, f)
    break
  else:  # pragma: no cover - another process took it in between
    raise FolderError(f"--out: {str(folder)!r} is being written by another "
                      f"gdlab process.")
  try:
    yield folder
  finally:
    with contextlib.suppress(FileNotFoundError):
      path.unlink()


def is_gdlab_folder(folder: str | os.PathLike) -> bool:
  """Whether ``folder`` is one that gdlab made (it holds ``gdlab.json``)."""
  return (Path(folder) / MARKER).is_file()
