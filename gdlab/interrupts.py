"""Ctrl-C and SIGTERM, acted on at safe points.

A ``KeyboardInterrupt`` raised wherever Python happens to be when a signal
arrives can land inside XLA's compiler (and crash the process) or between two
files of a run folder.  Inside :func:`deferred`, SIGINT and SIGTERM only set a
flag; the code polls it with :func:`check` where stopping is safe (between
chunks, between runs, between figures), which raises :class:`Interrupted`.

A second signal stops at once: the ``gdlab`` command (``hard_exit``) ends the
process (``os._exit``) with exit status ``128 + signal`` -- every file gdlab
writes is written atomically and the checkpoint says which metric rows it
covers, so the folder is still valid and ``--resume`` continues from its last
checkpoint; in a notebook or script, Python's ``KeyboardInterrupt`` is raised
where the program is, as without gdlab, and the kernel lives on.

Outside :func:`deferred` (or off the main thread) nothing changes: Python's
own ``KeyboardInterrupt`` is raised as usual.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
  """Raised at a safe point after SIGINT or SIGTERM (``signum``)."""

  def __init__(self, signum: int = signal.SIGINT):
    super().__init__(signal.Signals(signum).name)
    self.signum = signum


class _State:
  depth = 0
  pending: int | None = None
  last: int | None = None
  previous: dict = {}
  hard_exit = False
  # What a second signal prints before the process ends.
  farewell = "the folder is valid up to its last checkpoint"


_state = _State()


def _write(text: str) -> None:
  # os.write: safe in a signal handler, unbuffered, no lock to re-enter.
  try:
    os.write(sys.stderr.fileno(), text.encode())
  except (OSError, ValueError, AttributeError):
    pass


def _handler(signum, frame) -> None:
  del frame
  if _state.pending is None:
    _state.pending = _state.last = signum
    name = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
    _write(f"\ngdlab: {name}: stopping at the next safe point (press "
           f"Ctrl-C again to stop at once)\n")
    return
  if not _state.hard_exit:
    raise KeyboardInterrupt
  _write(f"\ngdlab: stopped at once; {_state.farewell}\n")
  os._exit(128 + signum)  # pylint: disable=protected-access


@contextlib.contextmanager
def deferred(farewell: str | None = None, *,
             hard_exit: bool = False) -> Iterator[None]:
  """Defers SIGINT and SIGTERM to :func:`check` for the duration.

  Nests: an inner ``deferred`` keeps the outer's handlers.  On leaving the
  outermost one, a signal that no :func:`check` consumed is raised as
  :class:`Interrupted` (unless an exception is already on its way).

  Args:
    farewell: what a second signal prints about the state left behind.
    hard_exit: a second signal ends the process at once (the outermost
      ``deferred`` decides); otherwise it raises ``KeyboardInterrupt``.
  """
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  outer = _state.depth == 0
  old_farewell = _state.farewell
  if farewell is not None:
    _state.farewell = farewell
  if outer:
    _state.pending = None
    _state.hard_exit = hard_exit
    _state.previous = {s: signal.signal(s, _handler) for s in SIGNALS}
  _state.depth += 1
  ok = False
  try:
    yield
    ok = True
  finally:
    _state.depth -= 1
    _state.farewell = old_farewell
    if outer:
      for s, h in _state.previous.items():
        signal.signal(s, h)
      pending, _state.pending = _state.pending, None
      if ok and pending is not None:
        raise Interrupted(pending)  # pylint: disable=lost-exception


def pending() -> int | None:
  """The signal received and not yet acted on, if any."""
  return _state.pending


def check() -> None:
  """Raises :class:`Interrupted` if a signal arrived (the flag stays set)."""
  if _state.pending is not None:
    raise Interrupted(_state.pending)


def consume() -> None:
  """Marks a pending signal as acted on (the caller stopped because of it)."""
  _state.pending = None


def last_signal() -> int | None:
  """The last signal :func:`deferred` received in this process, if any."""
  return _state.last


def exit_code(error: BaseException | None = None) -> int:
  """``128 + signal`` for an interruption: 130 for Ctrl-C, 143 for SIGTERM."""
  signum = getattr(error, "signum", None) or _state.last or signal.SIGINT
  return 128 + int(signum)
