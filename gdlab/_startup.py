"""The ``gdlab`` command's first moments: signals before the imports.

Importing gdlab (JAX, optax, flax) takes seconds.  When the process is the
``gdlab`` command, SIGINT and SIGTERM in that time end it with one line and
exit status ``128 + signal`` -- nothing has been written yet -- instead of a
traceback or a silent kill.  ``gdlab.cli.main`` takes over with
:mod:`gdlab.interrupts` as soon as it starts.  Library users are not
affected: this runs only for the command (``gdlab``, ``python -m gdlab.cli``).
"""

import os
import signal
import sys


def _handler(signum, frame):
  del frame
  os.write(2, b"\ngdlab: interrupted while starting; nothing was written\n")
  os._exit(128 + signum)  # pylint: disable=protected-access


def is_command() -> bool:
  """Whether this process is the gdlab command (``gdlab ...`` or
  ``python -m gdlab.cli ...``), not a program that imports gdlab."""
  argv0 = sys.argv[0] if sys.argv else ""
  if os.path.basename(argv0) == "gdlab":
    return True
  # `python -m gdlab.cli` imports the package while argv[0] is still "-m";
  # the interpreter's own command line says which module it runs.
  orig = list(getattr(sys, "orig_argv", ()))
  for i, arg in enumerate(orig[:-1]):
    if arg == "-m":
      return orig[i + 1] in ("gdlab.cli", "gdlab")
  return False


def install() -> None:
  for s in (signal.SIGINT, signal.SIGTERM):
    signal.signal(s, _handler)
